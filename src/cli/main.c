/* main.c - the kfac program: dispatches sub-commands (the helpers they
 * share are in cli_util.c); all printing lives in src/cli, never in the
 * library. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kfac COMMAND [ARGS]\n"
            "\n"
            "Train multi-layer perceptrons with K-FAC (Kronecker-factored natural\n"
            "gradient) or first-order optimizers (sgd, momentum, nesterov, adam), on\n"
            "OpenBLAS.\n"
            "\n"
            "commands:\n"
            "  train NETFILE [options]   train a network described in NETFILE (see nets/)\n"
            "  compare NETFILE [options]\n"
            "                            train with several optimizers (kfac,momentum)\n"
            "                            and print them side by side\n"
            "  eval NETFILE --load FILE  test loss and accuracy of a checkpoint's parameters\n"
            "  check NETFILE [options]   measure K-FAC against the exact natural gradient\n"
            "                            on real data: explicit F on a tiny network,\n"
            "                            conjugate gradients at any size\n"
            "  help, --help, -h          this text; `kfac train --help` for the options\n"
            "  --version                 print the library version\n"
            "\n"
            "exit status: 0 success, 1 runtime failure (writing output, memory),\n"
            "2 bad command line, 3 bad input file (net file, data, checkpoint),\n"
            "4 training diverged, 5 a `kfac check` measurement outside its tolerance,\n"
            "130 or 143 `train` or `compare` stopped by SIGINT (Ctrl-C) or SIGTERM at the\n"
            "end of a step (with --save, after writing the checkpoint: --resume goes on).\n"
            "A closed standard output (`| head`) ends the output, not the run.\n");
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("kfac %s\n", kfac_version());
        return EXIT_OK;
    }
    if (!strcmp(cmd, "train"))
        return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "check"))
        return cmd_check(argc - 1, argv + 1);
    if (!strcmp(cmd, "compare"))
        return cmd_compare(argc - 1, argv + 1);
    cli_error("unknown command '%s' (try 'kfac --help')", cmd);
    return EXIT_USAGE;
}

/* libgomp's idle threads spin GOMP_SPINCOUNT times (300000 unless set,
 * about 3 ms on the 2-core target) before they sleep. When another
 * process holds one of the cores, the thread sharing it is descheduled for
 * whole time slices while the other spins for it: an epoch of fmnist-mlp
 * took 9-12x its idle time. With 3000 spins (about 30 us there) it takes
 * 2.2-2.6x, and the idle epoch 0-2% longer, within the noise (1000: 2.0-2.3x
 * loaded, 1-4% idle; 10000: idle unchanged, 2.5-2.8x loaded; passive:
 * 1.9-2.5x loaded, 11-16% idle). libgomp reads the variable once, as it
 * is loaded, so unless the user chose a wait policy the program sets it
 * and runs itself again: once, as the variable is then set (about 3 ms).
 * If exec fails it goes on as it is. */
#define CLI_SPINCOUNT "3000"

static void bound_spin_wait(char **argv)
{
    /* the file /proc/self/exe names, not the link itself: under valgrind
     * the link is valgrind, while reading it gives the program */
    char exe[PATH_MAX];
    ssize_t n;
    if (getenv("GOMP_SPINCOUNT") || getenv("OMP_WAIT_POLICY") ||
        (n = readlink("/proc/self/exe", exe, sizeof exe - 1)) <= 0 ||
        setenv("GOMP_SPINCOUNT", CLI_SPINCOUNT, 1) != 0)
        return;
    exe[n] = '\0';
    execv(exe, argv);
    unsetenv("GOMP_SPINCOUNT");
}

int main(int argc, char **argv)
{
    bound_spin_wait(argv);
    /* a reader that goes (`kfac train ... | head`) ends the output, not
     * the run: its checkpoint and log are still written */
    cli_sigpipe_ignore();
    cli_mpi_start(&argc, &argv);
    int code = dispatch(argc, argv);
    /* never report success after losing output (`kfac eval > /dev/full`) */
    if (cli_stdout_failed() && code == EXIT_OK)
        code = EXIT_RUNTIME;
    cli_mpi_stop();
    return code;
}
