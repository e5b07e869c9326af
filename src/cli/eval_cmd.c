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
               "  --data PATH     directory with t10k-images-idx3-ubyte, ... or test.csv,\n"
               "                  or one CSV file [%s]\n"
               "  --threads N     OpenMP/OpenBLAS threads, 1..1024 [all cores]\n",
            KFAC_DEFAULT_DATA_DIR);
}

int cmd_eval(int argc, char **argv)
{
    enum { O_LOAD, O_DATA, O_THREADS };
    static const cli_opt opts[] = {{"--load", 1, O_LOAD}, {"--data", 1, O_DATA}, {"--threads", 1, O_THREADS}};
    const char *load = NULL, *data = KFAC_DEFAULT_DATA_DIR;
    long threads = 0;
    cli_args args;
    int code = cli_getopt("eval", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &args);
    if (code >= 0)
        return code;
    if (args.help) {
        cli_args_free(&args);
        eval_usage(stdout);
        return EXIT_OK;
    }
    const char *netfile = args.netfile;
    for (int k = 0; k < args.n && code < 0; k++) {
        const char *value = args.v[k].value;
        if (args.v[k].id == O_LOAD)
            load = value;
        else if (args.v[k].id == O_DATA)
            data = value;
        else if (cli_parse_int(value, 1, 1024, &threads)) {
            cli_error("eval: --threads '%s': expected an integer in [1, 1024]", value);
            code = EXIT_USAGE;
        }
    }
    cli_args_free(&args);
    if (code >= 0)
        return code;
    if (!load) {
        cli_error("eval: --load FILE is required (try 'kfac eval --help')");
        return EXIT_USAGE;
    }
    if (threads > 0)
        cli_set_threads(threads);

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
    code = EXIT_OK;
    if ((st = kfac_net_new(&spec, 1000, &net)) != KFAC_OK || (st = kfac_net_load_checkpoint(net, load)) != KFAC_OK ||
        (st = kfac_data_load(data, "t10k", cli_classes(&spec), p.label_column, &test)) != KFAC_OK) {
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
