/* eval_cmd.c - `kfac eval NETFILE --load FILE`: the test loss and accuracy
 * (or reconstruction error) of the parameters in a checkpoint. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void eval_usage(FILE *f)
{
    fprintf(f, "usage: kfac eval NETFILE --load FILE [--data DIR] [--threads N]\n"
               "\n"
               "Loads the parameters of a checkpoint written by `kfac train --save` for\n"
               "the network of NETFILE and prints its test loss and test accuracy (or,\n"
               "for the autoencoder, the reconstruction error: squared error per image).\n"
               "\n"
               "  --load FILE     the checkpoint (required)\n"
               "  --data DIR      directory with t10k-images-idx3-ubyte, ... [%s]\n"
               "  --threads N     OpenMP/OpenBLAS threads, 1..1024 [all cores]\n",
            KFAC_DEFAULT_DATA_DIR);
}

int cmd_eval(int argc, char **argv)
{
    const char *netfile = NULL, *load = NULL, *data = KFAC_DEFAULT_DATA_DIR;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a, *value;
        size_t len;
        switch (cli_next_arg("eval", argc, argv, &i, &netfile, &a, &len, &value)) {
        case CLI_ARG_HELP:
            eval_usage(stdout);
            return EXIT_OK;
        case CLI_ARG_ERROR:
            return EXIT_USAGE;
        case CLI_ARG_NETFILE:
            continue;
        case CLI_ARG_OPTION:
            break;
        }
        if (cli_opt_is(a, len, "--load"))
            load = value;
        else if (cli_opt_is(a, len, "--data"))
            data = value;
        else if (!cli_opt_is(a, len, "--threads")) {
            cli_error("eval: unknown option '%.*s' (try 'kfac eval --help')", (int)len, a);
            return EXIT_USAGE;
        } else if (cli_parse_int(value, 1, 1024, &threads)) {
            cli_error("eval: --threads '%s': expected an integer in [1, 1024]", value);
            return EXIT_USAGE;
        }
    }
    if (!netfile || !load) {
        cli_error("eval: %s (try 'kfac eval --help')", !netfile ? "no NETFILE given" : "--load FILE is required");
        return EXIT_USAGE;
    }
    if (threads > 0)
        kfac_set_threads((int)threads);

    kfac_net_spec spec;
    kfac_train_params p;
    kfac_status st = kfac_netfile_load(netfile, &spec, &p);
    if (st != KFAC_OK) {
        cli_error("%s", kfac_last_error());
        return cli_status_exit(st);
    }
    /* the checkpoint first: a bad one is reported before the data loads */
    kfac_net *net = NULL;
    kfac_dataset test = {0};
    int code = EXIT_OK;
    if ((st = kfac_net_new(&spec, 1000, &net)) != KFAC_OK || (st = kfac_net_load_checkpoint(net, load)) != KFAC_OK ||
        (st = kfac_mnist_load(data, "t10k", &test)) != KFAC_OK) {
        cli_error("%s", kfac_last_error());
        code = cli_status_exit(st);
        goto done;
    }
    double loss, metric;
    if ((st = kfac_evaluate(net, &test, &loss, &metric)) != KFAC_OK) {
        cli_error("%s: data %s: %s", netfile, data, kfac_last_error());
        code = cli_status_exit(st);
        goto done;
    }
    printf("# %s with %s: %d test example%s of %s\n", netfile, load, test.n, KFAC_S(test.n), data);
    printf("test_loss %.6f %s %.4f\n", loss, spec.loss == KFAC_LOSS_SOFTMAX_XENT ? "test_acc" : "recon_err", metric);
done:
    kfac_net_free(net);
    kfac_dataset_free(&test);
    return code;
}
