/* cli_util.c - what the kfac program's commands share: the option parser
 * (getopt_long over each command's table), strict number parsing, error
 * printing and exit statuses, loading the data, the wait policy. */
/* realpath is XSI */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* "--name=value" or "--name" -> "--name" (into buf) */
static const char *option_text(const char *arg, char *buf, size_t size)
{
    snprintf(buf, size, "%.*s", (int)strcspn(arg, "="), arg);
    return buf;
}

/* name is one of opts without a value (--quiet) */
static int is_flag(const cli_opt *opts, int n_opts, const char *name)
{
    for (int k = 0; k < n_opts; k++)
        if (!opts[k].has_value && !strcmp(opts[k].name, name))
            return 1;
    return 0;
}

int cli_getopt(const char *cmd, int argc, char **argv, const cli_opt *opts, int n_opts, cli_args *out)
{
    memset(out, 0, sizeof *out);
    struct option *lo = calloc((size_t)n_opts + 2, sizeof *lo);
    out->v = calloc((size_t)argc + 1, sizeof *out->v);
    if (!lo || !out->v) {
        free(lo);
        cli_args_free(out);
        cli_error("%s: out of memory", cmd);
        return EXIT_RUNTIME;
    }
    for (int k = 0; k < n_opts; k++)
        lo[k] = (struct option){opts[k].name + 2, opts[k].has_value ? required_argument : no_argument, NULL, 256 + k};
    lo[n_opts] = (struct option){"help", no_argument, NULL, 'h'};
    char text[128];
    int code = -1, positional_only = 0;
    opterr = 0; /* our messages, not getopt's */
    optind = 0; /* a fresh scan */
    while (code < 0) {
        int at = optind > 0 ? optind : 1;
        if (at >= argc)
            break;
        const char *word = argv[at];
        /* "+": stop at the first word that is not an option instead of
         * moving it, so that `at` is always the word read */
        int c = positional_only ? -1 : getopt_long(argc, argv, "+:h", lo, NULL);
        if (c == -1) {
            if (!positional_only && optind > at && !strcmp(argv[optind - 1], "--"))
                positional_only = 1; /* "--": the rest are files */
            if (optind >= argc)
                break;
            if (out->netfile) {
                cli_error("%s: unexpected argument '%s' (one NETFILE only)", cmd, argv[optind]);
                code = EXIT_USAGE;
            }
            out->netfile = argv[optind++];
            continue;
        }
        int k = c - 256;
        /* a long option is taken whole: no abbreviations, so that a new
         * option never changes what an old command line means */
        if (k >= 0 && k < n_opts && strcmp(option_text(word, text, sizeof text), opts[k].name) != 0)
            c = '?';
        if (c == 'h') {
            out->help = 1;
            break;
        }
        if (c == ':' || (k >= 0 && k < n_opts && opts[k].has_value && (!optarg || !*optarg))) {
            cli_error("%s: %s needs a value", cmd, option_text(word, text, sizeof text));
            code = EXIT_USAGE;
        } else if (c == '?' && strchr(word, '=') && is_flag(opts, n_opts, option_text(word, text, sizeof text))) {
            cli_error("%s: %s takes no value", cmd, text);
            code = EXIT_USAGE;
        } else if (c == '?' || k < 0 || k >= n_opts) {
            cli_error("%s: unknown option '%s' (try 'kfac %s --help')", cmd, option_text(word, text, sizeof text),
                      cmd);
            code = EXIT_USAGE;
        } else {
            out->v[out->n].id = opts[k].id;
            out->v[out->n].name = opts[k].name;
            out->v[out->n++].value = opts[k].has_value ? optarg : NULL;
        }
    }
    free(lo);
    if (code < 0 && !out->help && !out->netfile) {
        cli_error("%s: no NETFILE given (try 'kfac %s --help')", cmd, cmd);
        code = EXIT_USAGE;
    }
    if (code >= 0)
        cli_args_free(out);
    return code;
}

void cli_args_free(cli_args *a)
{
    free(a->v);
    a->v = NULL;
    a->n = 0;
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

static void verror(int local, const char *fmt, va_list ap)
{
    if (cli_rank() != 0 && !local)
        return;
    if (cli_ranks() > 1 && cli_rank() != 0)
        fprintf(stderr, "kfac (rank %d): ", cli_rank());
    else
        fputs("kfac: ", stderr);
    /* one line whatever the names in it hold: control characters (a
     * newline in a file name) are written as escapes */
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    for (const unsigned char *c = (const unsigned char *)msg; *c; c++)
        if (*c == '\n')
            fputs("\\n", stderr);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(stderr, "\\x%02x", *c);
        else
            fputc(*c, stderr);
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

int cli_classes(const kfac_net_spec *spec)
{
    int units = kfac_net_spec_outputs(spec);
    /* a classifier's classes are its outputs; labels beyond are errors.
     * Other losses ignore the labels (and a network of more outputs than
     * labels can name fails its fit with the count the data has). */
    return spec->loss == KFAC_LOSS_SOFTMAX_XENT && units <= KFAC_MAX_CLASSES ? units : 0;
}

int cli_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode);
}

int cli_load_data(const char *path, const kfac_net_spec *spec, const kfac_train_params *p, kfac_dataset *train,
                  kfac_dataset *test)
{
    kfac_status st;
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    int code = EXIT_OK, classes = cli_classes(spec);
    /* one CSV file: a training set, and no test set */
    if ((st = kfac_data_load(path, "train", classes, p->label_column, train)) != KFAC_OK ||
        (!cli_is_file(path) && (st = kfac_data_load(path, "t10k", classes, p->label_column, test)) != KFAC_OK)) {
        cli_error_local("%s", kfac_last_error());
        code = cli_status_exit(st);
    } else if (test->n > 0 && test->features != train->features) {
        /* the test set is only read after the first epoch: a mismatch
         * found then would cost that epoch */
        if (train->rows == 1 || test->rows == 1)
            cli_error_local("%s: the test set has %d feature%s but the training set %d", path, test->features,
                            KFAC_S(test->features), train->features);
        else
            cli_error_local("%s: the t10k images are %dx%d but the train images are %dx%d", path, test->rows,
                            test->cols, train->rows, train->cols);
        code = EXIT_INPUT;
    }
    /* every rank reads the data itself: all go on, or none */
    int agreed = cli_mpi_agree(code);
    if (agreed != EXIT_OK && code == EXIT_OK)
        cli_error("%s: another process could not load the data", path);
    if (agreed != EXIT_OK) {
        kfac_dataset_free(train);
        kfac_dataset_free(test);
    }
    return agreed;
}

const char *cli_wait_policy(void)
{
    static char buf[160];
    const char *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    snprintf(buf, sizeof buf, "%s%.60s%s%s%.60s", policy ? "OMP_WAIT_POLICY=" : "", policy ? policy : "",
             policy && spin ? ", " : "", spin ? "GOMP_SPINCOUNT=" : "", spin ? spin : "");
    return buf;
}

void cli_set_threads(long threads)
{
    kfac_set_threads((int)threads);
    int got = kfac_get_threads();
    if (got < threads) /* say so, and why: --help promises 1..1024 */
        fprintf(stderr, "kfac: --threads %ld: %s; using %d\n", threads,
                *kfac_threads_note() ? kfac_threads_note() : "fewer threads run", got);
}

/* dir/base of path with dir resolved (symbolic links, "..") where it
 * exists: two names of one place compare equal */
static void canonical(const char *path, char *out, size_t size)
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1, slash ? path : ".");
    snprintf(out, size, "%s/%s", realpath(dir, real) ? real : dir, base);
}

int cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) /* links, hard or symbolic */
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char ca[PATH_MAX + 256], cb[PATH_MAX + 256];
    canonical(a, ca, sizeof ca);
    canonical(b, cb, sizeof cb);
    return strcmp(ca, cb) == 0;
}

int cli_check_output(const char *cmd, const char *flag, const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1, slash ? path : ".");
    struct stat st;
    const char *problem = NULL;
    long name_max = pathconf(dir, _PC_NAME_MAX);
    /* the file is written as path.tmpXXXXXX first, then renamed */
    size_t tmp = strlen(".tmpXXXXXX");
    if (!*base)
        problem = "names a directory, not a file";
    else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        problem = "is a directory";
    else if (access(dir, W_OK | X_OK) != 0)
        problem = errno == ENOENT ? "its directory does not exist" : "its directory cannot be written";
    else if (strlen(base) + tmp > (size_t)(name_max > 0 ? name_max : NAME_MAX) || strlen(path) + tmp >= PATH_MAX)
        problem = "the name is too long for its temporary file (the name plus .tmpXXXXXX)";
    if (!problem)
        return -1;
    cli_error("%s: %s '%s': %s", cmd, flag, path, problem);
    return EXIT_RUNTIME;
}
