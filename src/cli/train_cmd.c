/* train_cmd.c - `kfac train`: load a net file and the data, apply flag
 * overrides, train, and print (and optionally log) one line per epoch. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* What `train` and `compare` take from the command line. */
typedef enum { MODE_TRAIN, MODE_COMPARE } cli_mode;

typedef struct train_opts {
    const char *netfile, *data, *log_path, *optimizers;
    const char *save_path, *resume_path; /* train only */
    long save_every;                     /* epochs between saves; 0: at the end */
    int quiet;
    kfac_net_spec spec;
    kfac_train_params p;
} train_opts;

/* "  --flag ARG          text" with text wrapped at 79 columns, never at
 * an NBSP (printed as a space) */
enum { NBSP = 1 };
static void help_line(FILE *f, const char *head, const char *text)
{
    enum { INDENT = 22, WIDTH = 79 };
    int col = fprintf(f, "  %s", head);
    if (col >= INDENT) {
        fputc('\n', f);
        col = 0;
    }
    fprintf(f, "%*s", INDENT - col, "");
    col = INDENT;
    for (const char *w = text; *w;) {
        size_t len = strcspn(w, " ");
        if (col > INDENT && col + 1 + (int)len > WIDTH) {
            fprintf(f, "\n%*s", INDENT, "");
            col = INDENT;
        } else if (col > INDENT) {
            fputc(' ', f);
            col++;
        }
        for (size_t i = 0; i < len; i++)
            fputc(w[i] == NBSP ? ' ' : w[i], f);
        col += (int)len;
        w += len;
        w += strspn(w, " ");
    }
    fputc('\n', f);
}

/* The flags of one section of the library's parameter table, with their
 * ranges and defaults */
static void param_help(FILE *f, const char *section, cli_mode mode)
{
    for (int i = 0; i < kfac_param_count(); i++) {
        kfac_param_info in;
        if (kfac_param_get_info(i, &in) != KFAC_OK || strcmp(in.section, section) != 0 ||
            (mode == MODE_COMPARE && !strcmp(in.flag, "--optimizer")))
            continue;
        char head[64], text[512];
        snprintf(head, sizeof head, "%s %s", in.flag, in.arg);
        if (in.range[0] == '[' || in.range[0] == '(') /* keep "[1, 1000000]" whole */
            for (char *c = in.range; *c; c++)
                *c = *c == ' ' ? NBSP : *c;
        snprintf(text, sizeof text, "%s; %s [%s]", in.doc, in.range, in.def);
        help_line(f, head, text);
    }
}

static void train_usage(FILE *f, cli_mode mode)
{
    if (mode == MODE_TRAIN)
        fprintf(f, "usage: kfac train NETFILE [options]\n"
                   "\n"
                   "Trains the network described in NETFILE on an MNIST-format data set and\n"
                   "prints, after each epoch: epoch, training seconds so far (evaluation\n"
                   "excluded), mean training loss, test loss and test accuracy (or, for the\n"
                   "autoencoder, the test reconstruction error: squared error per image).\n"
                   "Flags override the [train] and [kfac] sections of NETFILE.\n");
    else
        fprintf(f, "usage: kfac compare NETFILE [--optimizers LIST] [options]\n"
                   "\n"
                   "Trains NETFILE once with each optimizer of LIST (default kfac,momentum),\n"
                   "same seed, data order and threads, printing each epoch as `train` does,\n"
                   "then a side-by-side table. K-FAC takes its learning rate from [kfac] lr\n"
                   "when set, the others from [train] lr.\n"
                   "\n"
                   "  --optimizers LIST   comma-separated optimizer names [kfac,momentum]\n");
    fprintf(f, "\n"
            "options:\n"
            "  --data PATH         directory with train-images-idx3-ubyte, ... (gzipped\n"
            "                      or not), or with train.csv and test.csv; or one CSV\n"
            "                      file, a training set alone (no test columns) [%s]\n"
            "  --threads N         OpenMP/OpenBLAS threads, 1..1024 [all cores]\n"
            "  --log FILE.csv      also write epoch,seconds,train_loss,test_loss,test_acc\n"
            "                      (recon_err for the autoencoder, as on stdout;\n"
            "                      then val_loss,val_acc with --val-fraction;\n"
            "                      compare writes one file per optimizer,\n"
            "                      FILE-NAME.csv); with --resume the new epochs are\n"
            "                      appended to FILE, which must hold the header and\n"
            "                      exactly the checkpoint's epochs (else exit 3),\n"
            "                      or, if FILE does not exist, start it\n", KFAC_DEFAULT_DATA_DIR);
    if (mode == MODE_TRAIN)
        fprintf(f, "  --save FILE         write a checkpoint at the end, atomically (and when\n"
                   "                      SIGINT or SIGTERM stops the run: exit 130, 143)\n"
                   "  --save-every N      also every N epochs [only at the end]\n"
                   "  --resume FILE       go on from a checkpoint of the same network\n"
                   "                      and optimizer, up to --epochs in all; bit-identical\n"
                   "                      to an uninterrupted run at the same thread count;\n"
                   "                      none left: says so, exit 0, no file touched\n");
    fprintf(f, "  --quiet             no progress line on a terminal\n"
               "  --help              this text\n"
               "\n"
               "training ([train] section of NETFILE; [default when NETFILE does not set it]):\n");
    param_help(f, "train", mode);
    fprintf(f, "\nK-FAC (--optimizer kfac; the [kfac] section of NETFILE):\n");
    param_help(f, "kfac", mode);
    fprintf(f, "\nA run is reproducible for a given seed and thread count.\n");
}

/* The last column, on stdout and in the log: the accuracy of a classifier,
 * the reconstruction error of the autoencoder (any other loss). */
static const char *metric_name(const kfac_net_spec *s)
{
    return s->loss == KFAC_LOSS_SOFTMAX_XENT ? "test_acc" : "recon_err";
}

/* The columns of stdout and the log: epoch, seconds, train_loss, then the
 * test set's two when there is one (not for one CSV file), then the
 * validation set's two when val_fraction > 0. */
typedef struct columns {
    int test, val;
    const char *metric, *val_metric;
} columns;

static columns columns_of(const kfac_net_spec *spec, const kfac_train_params *p, const kfac_dataset *test)
{
    int classify = spec->loss == KFAC_LOSS_SOFTMAX_XENT;
    columns c = {test->n > 0, p->val_fraction > 0, metric_name(spec), classify ? "val_acc" : "val_recon_err"};
    return c;
}

static void csv_header(const columns *c, char *buf, size_t size)
{
    snprintf(buf, size, "epoch,seconds,train_loss%s%s%s%s\n", c->test ? ",test_loss," : "", c->test ? c->metric : "",
             c->val ? ",val_loss," : "", c->val ? c->val_metric : "");
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* After every step: the progress line on a terminal (progress.c), redrawn
 * when the percentage changes or after half a second; and a stop once
 * SIGINT or SIGTERM came (interrupt.c), at the end of this step. */
typedef struct progress {
    const kfac_trainer *tr;
    int bar, epochs;
    int last_pct;
    double start, last; /* when this call of the epoch began; last drawn */
    long examples0;     /* examples of the epoch done before it */
} progress;

static int on_step(void *user, long step, long steps)
{
    progress *pr = user;
    (void)step, (void)steps;
    kfac_epoch_position pos;
    if (pr->bar && kfac_trainer_position(pr->tr, &pos) == KFAC_OK) {
        double t = now();
        int pct = (int)(100 * pos.examples / pos.total);
        if (pct != pr->last_pct || t - pr->last >= 0.5) {
            char line[160];
            double rate = t > pr->start ? (double)(pos.examples - pr->examples0) / (t - pr->start) : 0.0;
            cli_progress_format(line, sizeof line, pos.epoch, pr->epochs, pos.examples, pos.total, pos.mean_loss,
                                rate);
            fprintf(stderr, "\r%s\033[K", line);
            fflush(stderr);
            pr->last_pct = pct;
            pr->last = t;
        }
    }
    return cli_signal_pending() != 0;
}

/* The CSV log is rewritten whole after every epoch into a temporary file
 * that is then renamed over FILE: a reader never sees half a file. */
static int write_log(const char *path, const char *text)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path) >= (int)sizeof tmp)
        return -1;
    int fd = mkstemp(tmp);
    if (fd < 0)
        return -1;
    /* mkstemp makes it 0600; the log gets the mode open() would give */
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask);
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* One epoch's row at the end of the log text (grown to fit). */
static int log_append(char **text, const kfac_epoch_stats *s, const columns *c)
{
    char row[256], test[64] = "", val[64] = "";
    if (c->test)
        snprintf(test, sizeof test, ",%.6f,%.6f", s->test_loss, s->test_acc);
    if (c->val)
        snprintf(val, sizeof val, ",%.6f,%.6f", s->val_loss, s->val_acc);
    int n = snprintf(row, sizeof row, "%d,%.3f,%.6f%s%s\n", s->epoch, s->seconds, s->train_loss, test, val);
    size_t used = strlen(*text);
    char *t = n < 0 || n >= (int)sizeof row ? NULL : realloc(*text, used + (size_t)n + 1);
    if (!t)
        return -1;
    memcpy(t + used, row, (size_t)n + 1);
    *text = t;
    return 0;
}

/* A resumed run appends to its log, which must be this run's so far: this
 * network's header and exactly the checkpoint's `epochs` rows, numbered 1
 * to epochs. EXIT_OK with *text the log (malloc'ed), or NULL when there is
 * no such file (the log then starts with the new epochs); else the
 * problem is reported, its exit status returned, and nothing written. */
static int read_resumed_log(const char *path, const char *header, const char *ckpt, int epochs, char **text)
{
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f && errno == ENOENT)
        return EXIT_OK;
    size_t len = 0, cap = 4096, got;
    char *buf = f ? malloc(cap + 1) : NULL;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0)
        if ((len += got) == cap) {
            char *more = realloc(buf, (cap *= 2) + 1);
            if (!more)
                free(buf);
            buf = more;
        }
    int e = errno, failed = !f || (buf && ferror(f));
    if (f)
        fclose(f);
    if (failed || !buf) {
        free(buf);
        cli_error("%s: cannot read the log to append to: %s", path, failed ? strerror(e) : "out of memory");
        return failed ? EXIT_INPUT : EXIT_RUNTIME;
    }
    buf[len] = '\0';
    char problem[256] = "";
    size_t hlen = strlen(header);
    int want_fields = 1; /* the header's */
    for (const char *c = header; *c; c++)
        want_fields += *c == ',';
    int rows = 0;
    for (size_t i = hlen; i < len; i++)
        rows += buf[i] == '\n';
    if (memchr(buf, '\0', len))
        snprintf(problem, sizeof problem, "it is not text (a NUL byte)");
    else if (len < hlen || memcmp(buf, header, hlen) != 0)
        snprintf(problem, sizeof problem, "its first line is '%.*s', not '%.*s'",
                 (int)(strcspn(buf, "\n") > 60 ? 60 : strcspn(buf, "\n")), buf, (int)hlen - 1, header);
    else if (len > hlen && buf[len - 1] != '\n')
        snprintf(problem, sizeof problem, "its last line, line %d, is incomplete", rows + 2);
    else if (rows != epochs)
        snprintf(problem, sizeof problem, "it has %d epoch row%s but the checkpoint %s has %d epoch%s", rows,
                 KFAC_S(rows), ckpt, epochs, KFAC_S(epochs));
    /* each row: its epoch number, then the header's other fields */
    int row = 0;
    for (const char *line = buf + hlen; !*problem && *line; line = strchr(line, '\n') + 1) {
        int n = (int)strcspn(line, "\n"), fields = 1;
        row++;
        for (int i = 0; i < n; i++)
            fields += line[i] == ',';
        char *end;
        long epoch = strtol(line, &end, 10);
        if (fields != want_fields)
            snprintf(problem, sizeof problem, "line %d, '%.*s', has %d field%s, not %d", row + 1, n > 60 ? 60 : n,
                     line, fields, KFAC_S(fields), want_fields);
        else if (epoch != row || *end != ',')
            snprintf(problem, sizeof problem, "line %d, '%.*s', is not epoch %d", row + 1, n > 60 ? 60 : n, line,
                     row);
    }
    if (*problem) {
        free(buf);
        cli_error("%s: cannot append to this log: %s", path, problem);
        return EXIT_INPUT;
    }
    *text = buf;
    return EXIT_OK;
}

static void describe(const char *netfile, const kfac_net_spec *s, const kfac_train_params *p)
{
    char arch[1024];
    kfac_net_spec_describe(s, arch, sizeof arch);
    printf("# %s: %s, %s init\n", netfile, arch, kfac_init_name(s->init));
    int kf = p->optimizer == KFAC_OPT_KFAC;
    kfac_optim_params op; /* what this optimizer runs with: [train] and its own section */
    kfac_train_params_resolve(p, &op);
    printf("# %s lr %g", kfac_optimizer_name(p->optimizer), (double)op.lr);
    if (p->optimizer == KFAC_OPT_MOMENTUM || p->optimizer == KFAC_OPT_NESTEROV || kf)
        printf(" momentum %g", (double)op.momentum);
    if (p->optimizer == KFAC_OPT_ADAM)
        printf(" beta1 %g beta2 %g eps %g", (double)op.beta1, (double)op.beta2, (double)op.eps);
    if (op.weight_decay > 0)
        printf(" weight_decay %g", (double)op.weight_decay);
    const char *wait = cli_wait_policy();
    int threads = kfac_get_threads();
    printf(", batch %d, %d epoch%s, seed %llu, %d thread%s%s%s%s\n", p->batch, p->epochs, KFAC_S(p->epochs),
           (unsigned long long)p->seed, threads, KFAC_S(threads), *wait ? " (" : "", wait, *wait ? ")" : "");
    if (p->optimizer == KFAC_OPT_KFAC) {
        const kfac_kfac_params *k = &p->kfac;
        char share[32] = "the whole";
        if (k->stat_fraction < 1.0f)
            snprintf(share, sizeof share, "%g of the", (double)k->stat_fraction);
        printf("# kfac: damping %g, decay %g, T_cov %d, T_inv %d, statistics on %s batch, %s Fisher, "
               "%s inverses, %s rule",
               (double)k->damping, (double)k->decay, k->cov_every, k->inv_every, share, kfac_fisher_name(k->fisher),
               kfac_inversion_name(k->inversion), kfac_step_rule_name(k->rule));
        if (k->rule == KFAC_RULE_KL_CLIP)
            printf(" (kl_clip %g)\n", (double)k->kl_clip);
        else
            printf(" (damping adapted every %d step%s)\n", k->lm_every, KFAC_S(k->lm_every));
    }
}

/* K-FAC's account of the run: where its time went and what it needed. */
static void describe_kfac(const kfac_trainer *tr, kfac_step_rule rule)
{
    kfac_kfac_stats k;
    if (kfac_trainer_kfac_stats(tr, &k) != KFAC_OK)
        return;
    printf("# kfac: %ld statistics round%s, %ld inversion%s", k.stats_rounds, KFAC_S(k.stats_rounds), k.inversions,
           KFAC_S(k.inversions));
    if (k.fallbacks)
        printf(" (fallbacks:%s%s%s)", k.fallbacks & KFAC_FALLBACK_DOUBLE ? " double" : "",
               k.fallbacks & KFAC_FALLBACK_DAMPING ? " more damping" : "",
               k.fallbacks & KFAC_FALLBACK_EIGEN_CLIP ? " eigenvalue clipping" : "");
    if (k.damping_retries)
        /* the quadratic rule also raises it when the model promises more
         * than the loss (docs/algorithm.md §5.2), reusing the direction */
        printf(", %ld %s with more damping", k.damping_retries,
               rule == KFAC_RULE_QUADRATIC
                   ? (k.damping_retries == 1 ? "quadratic model (or direction) solved again"
                                             : "quadratic models (or directions) solved again")
                   : (k.damping_retries == 1 ? "direction redone" : "directions redone"));
    printf("; seconds: statistics %.2f, inversions %.2f, preconditioning %.2f, F-vector products %.2f; "
           "damping %g\n",
           k.seconds_stats, k.seconds_invert, k.seconds_precond, k.seconds_fvp, k.damping);
    /* per layer: the ranks of the inverses of A and G, and the form the
     * cost model chose (batch rows of abar and g, or the gradient) */
    printf("# kfac: layers (rank of A^-1, rank of G^-1, form (MFLOP batch/weights)):");
    for (int l = 0; l < k.n_layers; l++) {
        printf(" %d:%d,%d,%s", l + 1, k.rank_a[l], k.rank_g[l], k.batch_form[l] ? "batch" : "weights");
        if (k.flops_batch[l] > 0)
            printf("(%.1f/%.1f)", k.flops_batch[l] / 1e6, k.flops_weights[l] / 1e6);
    }
    printf("\n");
}

/* A flag of the parameter table: section.key, the name the library reads */
static void param_name(const kfac_param_info *in, char *buf, size_t size)
{
    snprintf(buf, size, "%s.%s", in->section, in->key);
}

/* Parse NETFILE and flags into o: the program's own options, and every
 * flag of the library's parameter table, applied in order over the net
 * file. Returns -1 to go on, else an exit status (help printed, or an
 * error reported). */
static int parse_args(int argc, char **argv, cli_mode mode, train_opts *o)
{
    enum { O_DATA, O_LOG, O_OPTIMIZERS, O_SAVE, O_SAVE_EVERY, O_RESUME, O_THREADS, O_QUIET, O_PARAM };
    memset(o, 0, sizeof *o);
    o->data = KFAC_DEFAULT_DATA_DIR;
    o->optimizers = "kfac,momentum";
    const char *cmd = mode == MODE_TRAIN ? "train" : "compare";
    int n_params = kfac_param_count(), n = 0;
    cli_opt *opts = malloc(sizeof *opts * (size_t)(O_PARAM + n_params));
    if (!opts) {
        cli_error("%s: out of memory", cmd);
        return EXIT_RUNTIME;
    }
    opts[n++] = (cli_opt){"--data", 1, O_DATA};
    opts[n++] = (cli_opt){"--log", 1, O_LOG};
    opts[n++] = (cli_opt){"--threads", 1, O_THREADS};
    opts[n++] = (cli_opt){"--quiet", 0, O_QUIET};
    if (mode == MODE_COMPARE) {
        opts[n++] = (cli_opt){"--optimizers", 1, O_OPTIMIZERS};
    } else { /* checkpoints belong to one run */
        opts[n++] = (cli_opt){"--save", 1, O_SAVE};
        opts[n++] = (cli_opt){"--save-every", 1, O_SAVE_EVERY};
        opts[n++] = (cli_opt){"--resume", 1, O_RESUME};
    }
    for (int i = 0; i < n_params; i++) {
        kfac_param_info in;
        /* one optimizer for train, a list for compare */
        if (kfac_param_get_info(i, &in) == KFAC_OK && !(mode == MODE_COMPARE && !strcmp(in.flag, "--optimizer")))
            opts[n++] = (cli_opt){in.flag, 1, O_PARAM + i};
    }
    cli_args args;
    int code = cli_getopt(cmd, argc, argv, opts, n, &args);
    free(opts); /* the names are the library's and literals */
    if (code >= 0)
        return code;
    if (args.help) {
        cli_args_free(&args);
        train_usage(stdout, mode);
        return EXIT_OK;
    }
    o->netfile = args.netfile;
    long threads = 0;
    for (int k = 0; k < args.n && code < 0; k++) {
        const char *v = args.v[k].value;
        switch (args.v[k].id) {
        case O_DATA:
            o->data = v;
            break;
        case O_LOG:
            o->log_path = v;
            break;
        case O_OPTIMIZERS:
            o->optimizers = v;
            break;
        case O_SAVE:
            o->save_path = v;
            break;
        case O_RESUME:
            o->resume_path = v;
            break;
        case O_QUIET:
            o->quiet = 1;
            break;
        case O_SAVE_EVERY:
            if (cli_parse_int(v, 1, 100000, &o->save_every)) {
                cli_error("%s: --save-every '%s': expected an integer in [1, 100000]", cmd, v);
                code = EXIT_USAGE;
            }
            break;
        case O_THREADS:
            if (cli_parse_int(v, 1, 1024, &threads)) {
                cli_error("%s: --threads '%s': expected an integer in [1, 1024]", cmd, v);
                code = EXIT_USAGE;
            }
            break;
        }
    }
    if (code < 0 && o->save_every && !o->save_path) {
        cli_error("%s: --save-every needs --save FILE", cmd);
        code = EXIT_USAGE;
    }
    /* the outputs before anything runs: a run must not end in an output
     * that cannot be written, or in one file written as two (the log is
     * written, or read for a resume, before the first epoch anyway).
     * --save may be --resume's file (go on and save back); the log may be
     * neither. */
    if (code < 0 && o->save_path)
        code = cli_check_output(cmd, "--save", o->save_path);
    const char *clash = !o->log_path ? NULL
                        : o->save_path && cli_same_file(o->log_path, o->save_path)     ? "--save"
                        : o->resume_path && cli_same_file(o->log_path, o->resume_path) ? "--resume"
                                                                                        : NULL;
    if (code < 0 && clash) {
        cli_error("%s: --log '%s' is %s's file too: give each its own", cmd, o->log_path, clash);
        code = EXIT_USAGE;
    }
    kfac_train_params *p = &o->p;
    kfac_status st;
    if (code < 0 && (st = kfac_netfile_load(o->netfile, &o->spec, p)) != KFAC_OK) {
        cli_error("%s", kfac_last_error());
        code = cli_status_exit(st);
    }
    kfac_train_params defaults;
    kfac_train_params_init(&defaults);
    for (int k = 0; k < args.n && code < 0; k++) {
        if (args.v[k].id < O_PARAM)
            continue;
        kfac_param_info in;
        char name[64], def[64];
        kfac_param_get_info(args.v[k].id - O_PARAM, &in);
        param_name(&in, name, sizeof name);
        if (kfac_train_params_set(p, name, args.v[k].value) != KFAC_OK) {
            cli_error("%s: %s '%s': %s", cmd, in.flag, args.v[k].value, kfac_last_error());
            code = EXIT_USAGE;
            continue;
        }
        /* the flag wins over the net file's sections: --lr over [kfac] lr
         * and over every optimizer's own [adam] lr, ... */
        if (in.resets && kfac_train_params_get(&defaults, in.resets, def, sizeof def) == KFAC_OK)
            kfac_train_params_set(p, in.resets, def);
        for (int j = 0; !strcmp(in.section, "train") && j < KFAC_OPT_COUNT; j++) {
            snprintf(name, sizeof name, "%s.%s", kfac_optimizer_name((kfac_optimizer_kind)j), in.key);
            kfac_train_params_set(p, name, "inherit"); /* refused where there is no such setting */
        }
    }
    cli_args_free(&args);
    if (code >= 0)
        return code;
    if (threads > 0)
        cli_set_threads(threads);
    return -1;
}

static int save(const kfac_trainer *tr, const char *path)
{
    if (kfac_trainer_save(tr, path) != KFAC_OK) {
        cli_error("%s", kfac_last_error());
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

/* One training run, printing a line per epoch (and the CSV log); the
 * epochs' figures go to rec (p->epochs entries) when it is not NULL. */
/* The CSV log at the start: its header (or, resuming, the log so far,
 * checked against the checkpoint) written now, so that a path that cannot
 * be written fails before training, not after. */
static int open_log(const char *log_path, const columns *cols, const char *resume_path, int done_epochs,
                    char **log_text)
{
    char header[128];
    int code = EXIT_OK;
    csv_header(cols, header, sizeof header);
    if (resume_path)
        code = read_resumed_log(log_path, header, resume_path, done_epochs, log_text);
    if (code == EXIT_OK && !*log_text && !(*log_text = strdup(header))) {
        cli_error("out of memory");
        code = EXIT_RUNTIME;
    }
    if (code == EXIT_OK && write_log(log_path, *log_text) != 0) {
        cli_error("%s: cannot write: %s", log_path, strerror(errno));
        code = EXIT_RUNTIME;
    }
    return code;
}

/* The lines before the first epoch: the run's settings, the process
 * group, the data's split, where a resume starts, the column names. */
static void print_preamble(const train_opts *o, const kfac_train_params *p, const kfac_dataset *train,
                           const kfac_dataset *test, const columns *cols, const kfac_trainer *tr, int done_epochs)
{
    describe(o->netfile, &o->spec, p);
    if (cli_ranks() > 1) {
        int lo = p->batch / cli_ranks(), hi = (p->batch + cli_ranks() - 1) / cli_ranks(), threads = kfac_get_threads();
        char rows[32];
        snprintf(rows, sizeof rows, lo == hi ? "%d" : "%d-%d", lo, hi);
        printf("# %d MPI processes, each %s row%s of every batch of %d (%d thread%s each)\n", cli_ranks(), rows,
               KFAC_S(hi), p->batch, threads, KFAC_S(threads));
    }
    if (cols->val) {
        /* the trainer's split: the last val_fraction, to the nearest example */
        int n_val = (int)lround((double)p->val_fraction * train->n);
        printf("# data %s: %d training, %d validation example%s (the last %g of the training set), ", o->data,
               train->n - n_val, n_val, KFAC_S(n_val), (double)p->val_fraction);
        if (cols->test)
            printf("%d test example%s\n", test->n, KFAC_S(test->n));
        else
            printf("no test set\n");
    } else if (cols->test) {
        printf("# data %s: %d training, %d test example%s\n", o->data, train->n, test->n, KFAC_S(test->n));
    } else {
        printf("# data %s: %d training example%s, no test set\n", o->data, train->n, KFAC_S(train->n));
    }
    kfac_epoch_position pos;
    kfac_trainer_position(tr, &pos);
    if (o->resume_path)
        printf("# resumed from %s after epoch %d\n", o->resume_path, done_epochs);
    if (o->resume_path && pos.examples > 0)
        printf("# and %ld of the %ld examples of epoch %d (stopped there)\n", pos.examples, pos.total, pos.epoch);
    printf("%5s %9s %11s", "epoch", "seconds", "train_loss");
    if (cols->test)
        printf(" %11s %10s", "test_loss", cols->metric);
    if (cols->val)
        printf(" %11s %13s", "val_loss", cols->val_metric);
    printf("\n");
    cli_stdout_flush();
}

static void print_row(const kfac_epoch_stats *s, const columns *cols)
{
    printf("%5d %9.2f %11.6f", s->epoch, s->seconds, s->train_loss);
    if (cols->test)
        printf(" %11.6f %10.4f", s->test_loss, s->test_acc);
    if (cols->val)
        printf(" %11.6f %13.4f", s->val_loss, s->val_acc);
    printf("\n");
    cli_stdout_flush();
}

/* Stopped by a signal at the end of a step: saved where it stands, which a
 * resume continues bit-identically (kfac_trainer_position); the exit
 * status the signal's (README), agreed by the group. */
static int stop_on_signal(const kfac_trainer *tr, int sig, int trained, const char *save_path)
{
    kfac_epoch_position pos;
    kfac_trainer_position(tr, &pos);
    char where[128];
    int code = EXIT_OK;
    if (pos.examples > 0)
        snprintf(where, sizeof where, "in epoch %d, after %ld of its %ld examples", pos.epoch, pos.examples,
                 pos.total);
    else
        snprintf(where, sizeof where, "after epoch %d", pos.epoch - 1);
    if (!trained) /* nothing new to save */
        cli_error("%s: stopped before training; nothing saved", cli_signal_name(sig));
    else if (save_path && (code = save(tr, save_path)) == EXIT_OK)
        cli_error("%s: stopped %s; saved %s (--resume %s goes on)", cli_signal_name(sig), where, save_path,
                  save_path);
    else if (!save_path)
        cli_error("%s: stopped %s; nothing saved (no --save)", cli_signal_name(sig), where);
    return cli_mpi_agree(code == EXIT_OK ? cli_signal_exit(sig) : code);
}

/* The test set's loss and metric after an epoch; parameters that are
 * finite but so large that the test or validation loss is not have
 * diverged as much, and are not worth a checkpoint. */
static int evaluate_epoch(kfac_trainer *tr, const kfac_dataset *test, const columns *cols, kfac_epoch_stats *s)
{
    kfac_status st;
    if (cols->test && (st = kfac_evaluate(kfac_trainer_net(tr), test, &s->test_loss, &s->test_acc)) != KFAC_OK) {
        cli_error("evaluation: %s", kfac_last_error());
        return cli_status_exit(st);
    }
    if (!isfinite(s->test_loss) || !isfinite(s->val_loss)) {
        cli_error("training diverged: %s loss is %g after epoch %d", isfinite(s->test_loss) ? "validation" : "test",
                  isfinite(s->test_loss) ? s->val_loss : s->test_loss, s->epoch);
        return EXIT_DIVERGED;
    }
    return EXIT_OK;
}

/* The epoch's row added to the log, which is rewritten whole (write_log) */
static int log_epoch(const char *log_path, char **log_text, const kfac_epoch_stats *s, const columns *cols)
{
    if (log_append(log_text, s, cols) != 0 || write_log(log_path, *log_text) != 0) {
        cli_error("%s: cannot write: %s", log_path, strerror(errno));
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

static int run(const train_opts *o, const kfac_train_params *p, const char *log_path, const kfac_dataset *train,
               const kfac_dataset *test, kfac_epoch_stats *rec)
{
    int code = EXIT_OK;
    char *log_text = NULL;
    kfac_trainer *tr = NULL;
    kfac_status st;
    if ((st = kfac_trainer_new(&o->spec, p, train, &tr)) != KFAC_OK) {
        if (st == KFAC_ERR_SHAPE && strstr(kfac_last_error(), "data")) /* the data does not fit the network */
            cli_error("%s: data %s: %s", o->netfile, o->data, kfac_last_error());
        else
            cli_error("%s: %s", o->netfile, kfac_last_error());
        return cli_status_exit(st);
    }
    /* under mpirun every rank trains its slice of each batch (README,
     * "Running on a cluster"); rank 0 alone logs and saves */
    const void *comm = cli_mpi_comm();
    if (comm && (st = kfac_trainer_set_mpi_comm(tr, comm)) != KFAC_OK) {
        cli_error("%s", kfac_last_error());
        code = cli_status_exit(st);
        goto done;
    }
    const char *save_path = cli_rank() == 0 ? o->save_path : NULL;
    if (cli_rank() != 0)
        log_path = NULL;
    if (o->resume_path && (st = kfac_trainer_load(tr, o->resume_path)) != KFAC_OK) {
        cli_error_local("%s", kfac_last_error()); /* a rank may fail alone */
        code = cli_status_exit(st);
        goto done;
    }
    int done_epochs = kfac_trainer_epochs_done(tr);
    if (o->resume_path && done_epochs >= p->epochs) {
        /* no epoch to train: no file is touched */
        cli_error("nothing to do: the checkpoint already has %d epoch%s", done_epochs, KFAC_S(done_epochs));
        goto done;
    }
    columns cols = columns_of(&o->spec, p, test);
    if (log_path)
        code = open_log(log_path, &cols, o->resume_path, done_epochs, &log_text);
    if ((code = cli_mpi_agree(code)) != EXIT_OK)
        goto done;
    print_preamble(o, p, train, test, &cols, tr, done_epochs);
    kfac_epoch_position pos;
    int bar = !o->quiet && cli_rank() == 0 && isatty(STDERR_FILENO), sig = 0, trained = 0;
    for (int e = done_epochs + 1; e <= p->epochs && !sig; e++) {
        kfac_epoch_stats s;
        kfac_trainer_position(tr, &pos);
        progress pr = {tr, bar, p->epochs, -1, now(), 0.0, pos.examples};
        /* a signal before the epoch: not one step more */
        st = KFAC_OK;
        if (!(sig = cli_mpi_agree(cli_signal_pending()))) {
            st = kfac_trainer_epoch(tr, on_step, &pr, &s);
            trained = 1;
        }
        if (bar)
            fputs("\r\033[K", stderr);
        if (st != KFAC_OK) {
            cli_error("%s", kfac_last_error());
            code = cli_status_exit(st);
            goto done;
        }
        /* every rank stopped at the same step; rank 0 may be the one
         * that had the signal */
        sig = cli_mpi_agree(cli_signal_pending());
        kfac_trainer_position(tr, &pos);
        if (sig && (pos.examples > 0 || kfac_trainer_epochs_done(tr) < e))
            break; /* an unfinished epoch: saved as it stands, not logged */
        if ((code = evaluate_epoch(tr, test, &cols, &s)) != EXIT_OK)
            goto done;
        print_row(&s, &cols);
        if (rec)
            rec[e - 1] = s;
        if (save_path && o->save_every && e % o->save_every == 0 && e < p->epochs && !sig)
            code = save(tr, save_path);
        if (code == EXIT_OK && log_text)
            code = log_epoch(log_path, &log_text, &s, &cols);
        /* rank 0's save or log failing stops every rank */
        if ((code = cli_mpi_agree(code)) != EXIT_OK)
            goto done;
        if (s.early_stop) { /* every rank computed the same losses */
            printf("# early stop after epoch %d: the validation loss has not improved for %d epoch%s "
                   "(lowest at epoch %d)\n",
                   s.epoch, s.epoch - s.best_epoch, KFAC_S(s.epoch - s.best_epoch), s.best_epoch);
            break; /* compare's table: the epochs not run stay empty (epoch 0) */
        }
    }
    if (sig) {
        code = stop_on_signal(tr, sig, trained, save_path);
        goto done;
    }
    describe_kfac(tr, p->kfac.rule);
    if (save_path)
        code = save(tr, save_path);
    code = cli_mpi_agree(code);
done:
    free(log_text);
    kfac_trainer_free(tr);
    return code;
}

int cmd_train(int argc, char **argv)
{
    train_opts o;
    int code = parse_args(argc, argv, MODE_TRAIN, &o);
    if (code >= 0)
        return code;
    kfac_dataset train, test;
    cli_signals_install();
    if ((code = cli_load_data(o.data, &o.spec, &o.p, &train, &test)) != EXIT_OK)
        return code;
    code = run(&o, &o.p, o.log_path, &train, &test, NULL);
    kfac_dataset_free(&train);
    kfac_dataset_free(&test);
    return code;
}

int cmd_compare(int argc, char **argv)
{
    enum { MAX_OPT = 8 };
    train_opts o;
    int code = parse_args(argc, argv, MODE_COMPARE, &o);
    if (code >= 0)
        return code;
    /* the list, checked whole before any training */
    kfac_optimizer_kind kinds[MAX_OPT];
    int n = 0;
    char list[256];
    if (snprintf(list, sizeof list, "%s", o.optimizers) >= (int)sizeof list) {
        cli_error("compare: --optimizers: list too long");
        return EXIT_USAGE;
    }
    /* each NAME[:key=value...]: the settings are that optimizer's own
     * ("adam:lr=0.001" is the net file's [adam] lr = 0.001) */
    kfac_train_params own[MAX_OPT];
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *rest = strchr(tok, ':');
        if (rest)
            *rest++ = '\0';
        if (n == MAX_OPT || kfac_optimizer_from_name(tok, &kinds[n]) != KFAC_OK) {
            cli_error("compare: --optimizers '%s': %s", o.optimizers,
                      n == MAX_OPT ? "at most 8 optimizers" : kfac_last_error());
            return EXIT_USAGE;
        }
        own[n] = o.p;
        own[n].optimizer = kinds[n];
        for (char *s2 = NULL, *kv = rest ? strtok_r(rest, ":", &s2) : NULL; kv; kv = strtok_r(NULL, ":", &s2)) {
            char *eq = strchr(kv, '='), name[96];
            if (eq)
                *eq = '\0';
            snprintf(name, sizeof name, "%s.%s", tok, kv);
            if (!eq || kfac_train_params_set(&own[n], name, eq + 1) != KFAC_OK) {
                cli_error("compare: --optimizers '%s': %s: %s", o.optimizers, kv,
                          eq ? kfac_last_error() : "expected key=value");
                return EXIT_USAGE;
            }
        }
        n++;
    }
    if (n == 0) {
        cli_error("compare: --optimizers '%s': no optimizer named", o.optimizers);
        return EXIT_USAGE;
    }
    kfac_dataset train, test;
    cli_signals_install();
    if ((code = cli_load_data(o.data, &o.spec, &o.p, &train, &test)) != EXIT_OK)
        return code;
    kfac_epoch_stats *rec = calloc((size_t)n * (size_t)o.p.epochs, sizeof *rec);
    if (!rec) {
        cli_error("out of memory");
        code = EXIT_RUNTIME;
        goto done;
    }
    for (int k = 0; k < n && code == EXIT_OK; k++) {
        kfac_train_params p = own[k];
        char log_path[4096];
        if (o.log_path) {
            /* run.csv -> run-kfac.csv */
            const char *dot = strrchr(o.log_path, '.');
            int stem = dot && !strchr(dot, '/') ? (int)(dot - o.log_path) : (int)strlen(o.log_path);
            snprintf(log_path, sizeof log_path, "%.*s-%s%s", stem, o.log_path, kfac_optimizer_name(kinds[k]),
                     dot && !strchr(dot, '/') ? dot : ".csv");
        }
        if (k > 0)
            printf("\n");
        code = run(&o, &p, o.log_path ? log_path : NULL, &train, &test, rec + (size_t)k * o.p.epochs);
    }
    if (code == EXIT_OK) {
        int threads = kfac_get_threads();
        printf("\n# side by side: %s, seed %llu, %d thread%s\n%5s", o.netfile, (unsigned long long)o.p.seed, threads,
               KFAC_S(threads), "");
        for (int k = 0; k < n; k++) { /* each with its own settings */
            kfac_optim_params op;
            char label[64];
            kfac_train_params_resolve(&own[k], &op);
            snprintf(label, sizeof label, "%s lr %g", kfac_optimizer_name(kinds[k]), (double)op.lr);
            printf(" | %-30s", label);
        }
        printf("\n%5s", "epoch");
        /* the test set's metric, or without one the validation set's */
        columns cols = columns_of(&o.spec, &o.p, &test);
        for (int k = 0; k < n; k++)
            printf(" | %8s %11s %9s", "seconds", "train_loss", cols.test || !cols.val ? cols.metric : cols.val_metric);
        printf("\n");
        for (int e = 0; e < o.p.epochs; e++) {
            printf("%5d", e + 1);
            for (int k = 0; k < n; k++) {
                const kfac_epoch_stats *s = &rec[(size_t)k * o.p.epochs + e];
                if (s->epoch == 0) /* stopped early */
                    printf(" | %8s %11s %9s", "-", "-", "-");
                else
                    printf(" | %8.2f %11.6f %9.4f", s->seconds, s->train_loss,
                           cols.test || !cols.val ? s->test_acc : s->val_acc);
            }
            printf("\n");
        }
    }
done:
    free(rec);
    kfac_dataset_free(&train);
    kfac_dataset_free(&test);
    return code;
}
