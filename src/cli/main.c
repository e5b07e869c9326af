/* main.c - the kfac program: dispatches sub-commands; all printing lives
 * in src/cli, never in the library. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kfac COMMAND [ARGS]\n"
            "\n"
            "Train multi-layer perceptrons with K-FAC-ready recording and first-order\n"
            "optimizers (sgd, momentum, nesterov, adam), on OpenBLAS.\n"
            "\n"
            "commands:\n"
            "  train NETFILE [options]   train a network described in NETFILE (see nets/)\n"
            "  help, --help, -h          this text; `kfac train --help` for the options\n"
            "  --version                 print the library version\n"
            "\n"
            "exit status: 0 success, 1 runtime failure (writing output, memory),\n"
            "2 bad command line, 3 bad input file (net file, data), 4 training diverged.\n");
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

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("kfac: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
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

int main(int argc, char **argv)
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
        printf("kfac %s\n", KFAC_VERSION_STRING);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "train"))
        return cmd_train(argc - 1, argv + 1);
    cli_error("unknown command '%s' (try 'kfac --help')", cmd);
    return EXIT_USAGE;
}
