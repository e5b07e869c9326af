/* main.c - the kfac program: dispatches sub-commands; all printing lives
 * in src/cli, never in the library. */
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
            "  compare NETFILE [options] train with several optimizers (kfac,momentum)\n"
            "                            and print them side by side\n"
            "  eval NETFILE --load FILE  test loss and accuracy of a checkpoint's parameters\n"
            "  check NETFILE [options]   measure K-FAC against the exact natural gradient\n"
            "                            on a tiny network (nets/tiny.net) and real data\n"
            "  help, --help, -h          this text; `kfac train --help` for the options\n"
            "  --version                 print the library version\n"
            "\n"
            "exit status: 0 success, 1 runtime failure (writing output, memory),\n"
            "2 bad command line, 3 bad input file (net file, data, checkpoint),\n"
            "4 training diverged, 5 a `kfac check` measurement outside its tolerance.\n");
}

int cli_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

cli_arg_kind cli_next_arg(const char *cmd, int argc, char **argv, int *i, const char **netfile, const char **name,
                          size_t *len, const char **value)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h"))
        return CLI_ARG_HELP;
    if (strncmp(a, "--", 2) != 0) {
        if (*netfile) {
            cli_error("%s: unexpected argument '%s' (one NETFILE only)", cmd, a);
            return CLI_ARG_ERROR;
        }
        *netfile = a;
        return CLI_ARG_NETFILE;
    }
    const char *eq = strchr(a, '=');
    *name = a;
    *len = eq ? (size_t)(eq - a) : strlen(a);
    *value = eq ? eq + 1 : (*i + 1 < argc ? argv[++*i] : NULL);
    if (!*value || !**value) {
        cli_error("%s: %.*s needs a value", cmd, (int)*len, a);
        return CLI_ARG_ERROR;
    }
    return CLI_ARG_OPTION;
}

int cli_opt_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && !strncmp(name, want, len);
}

static void verror(int local, const char *fmt, va_list ap)
{
    if (cli_rank() != 0 && !local)
        return;
    if (cli_ranks() > 1 && cli_rank() != 0)
        fprintf(stderr, "kfac (rank %d): ", cli_rank());
    else
        fputs("kfac: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(0, fmt, ap);
    va_end(ap);
}

void cli_error_local(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(1, fmt, ap);
    va_end(ap);
}

int cli_status_exit(kfac_status st)
{
    switch (st) {
    case KFAC_OK:
        return EXIT_OK;
    case KFAC_ERR_IO: /* reading: writes map their own failures */
    case KFAC_ERR_PARSE:
    case KFAC_ERR_FORMAT:
    case KFAC_ERR_SHAPE:
        return EXIT_INPUT;
    case KFAC_ERR_INVALID_ARG:
        return EXIT_USAGE;
    case KFAC_ERR_NUMERIC:
        return EXIT_DIVERGED;
    default:
        return EXIT_RUNTIME;
    }
}

int cli_load_data(const char *dir, kfac_dataset *train, kfac_dataset *test)
{
    kfac_status st;
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    int code = EXIT_OK;
    if ((st = kfac_mnist_load(dir, "train", train)) != KFAC_OK || (st = kfac_mnist_load(dir, "t10k", test)) != KFAC_OK) {
        cli_error_local("%s", kfac_last_error());
        code = cli_status_exit(st);
    } else if (test->features != train->features) {
        /* the test set is only read after the first epoch: a mismatch
         * found then would cost that epoch */
        cli_error_local("%s: the t10k images are %dx%d but the train images are %dx%d", dir, test->rows,
                        test->cols, train->rows, train->cols);
        code = EXIT_INPUT;
    }
    /* every rank reads the data itself: all go on, or none */
    int agreed = cli_mpi_agree(code);
    if (agreed != EXIT_OK && code == EXIT_OK)
        cli_error("%s: another process could not load the data", dir);
    if (agreed != EXIT_OK) {
        kfac_dataset_free(train);
        kfac_dataset_free(test);
    }
    return agreed;
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

const char *cli_wait_policy(void)
{
    static char buf[160];
    const char *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    snprintf(buf, sizeof buf, "%s%.60s%s%s%.60s", policy ? "OMP_WAIT_POLICY=" : "", policy ? policy : "",
             policy && spin ? ", " : "", spin ? "GOMP_SPINCOUNT=" : "", spin ? spin : "");
    return buf;
}

int main(int argc, char **argv)
{
    bound_spin_wait(argv);
    cli_mpi_start(&argc, &argv);
    int code = dispatch(argc, argv);
    cli_mpi_stop();
    return code;
}
