/* bench_suite.c - the optimizer benchmark users read (issue 4): time to a
 * target on Fashion-MNIST (nets/fmnist-mlp) for SGD-momentum, Nesterov and
 * Adam over stated learning-rate grids against K-FAC with its defaults, on
 * the deep autoencoder (nets/mnist-autoencoder) Nesterov SGD against
 * K-FAC, and on the convolutional nets/fmnist-cnn (issue 15) SGD,
 * SGD-momentum, Nesterov, Adam and K-FAC over small grids; CSV per run,
 * gnuplot charts, and RESULTS.md.
 *
 * Each run is a forked child (same seed, data order, threads and evaluation
 * for all), so wait4 reports its own peak memory. The parent never enters
 * OpenMP: a fork after OpenMP was used can hang.
 *
 * usage: bench_suite [--quick] [--report-only] [--out DIR] [--results FILE]
 *                    [--data DIR] [--include FILE]... [--cnn-epochs N]
 *                    [--cnn-grid 1|2] [--cnn-examples N] [--cnn-only]
 *                    [--run PARTS]
 *   --cnn-epochs 0 leaves the CNN out; --cnn-grid 1 runs the first point
 *   of each of its grids only; --cnn-examples N trains it on the first N
 *   training images (a smoke test, not the benchmark); --cnn-only runs the
 *   CNN alone (FILE then has its section alone: give one of its own).
 *   --report-only rebuilds the table and charts from the runs already in DIR.
 *   CSVs and charts go to DIR, the table to FILE (default DIR/RESULTS.md);
 *   --include adds a text file (throughput benchmarks) to the table.
 *   --run PARTS runs only the listed parts (a comma list of mlp, ae, cnn,
 *   modes; default all) and reads the others' runs back from DIR, as
 *   --report-only does, so one part can be re-measured and the whole
 *   table rebuilt. "modes" is K-FAC in each inversion mode on the
 *   classifier and the autoencoder (issue 17). */
/* wait4 is BSD: it gives a child's resource use */
#define _DEFAULT_SOURCE
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kfac.h"
#include "plural.h"

#define MAX_EPOCHS 400 /* rows of a run */
#define MAX_RUNS 96 /* 72 in a whole make bench */

/* One run's configuration and what it measured. */
typedef struct run {
    const char *problem; /* "fmnist-mlp", "autoencoder" or "fmnist-cnn" */
    const char *netfile;
    kfac_optimizer_kind opt;
    float lr;            /* 0: the net file's (K-FAC: its [kfac] lr) */
    float damping;       /* K-FAC: 0: the net file's */
    int batch;           /* 0: the net file's */
    int repeat;          /* 0 for the first run of a configuration */
    int inversion;       /* K-FAC: a kfac_inversion, or -1: the net file's */
    int part;            /* PART_*: which --run part measures it */
    const char *tag;     /* NULL, or appended to the CSV's name */
    int budget;          /* the classifier's epochs for this run (0: the part's) */
    char csv[512];
    /* read back from the CSV */
    int epochs;          /* rows read (epochs, or quarter epochs) */
    long iterations[MAX_EPOCHS];
    double epoch_of[MAX_EPOCHS];
    double seconds[MAX_EPOCHS], train_loss[MAX_EPOCHS], test_loss[MAX_EPOCHS], test_metric[MAX_EPOCHS];
    double eval_loss[MAX_EPOCHS], eval_metric[MAX_EPOCHS]; /* on a training subset */
    double peak_mib;
    int failed;          /* diverged or error */
} run;

typedef struct config {
    int quick;
    int report_only;       /* tables and charts from the CSVs already there */
    const char *out, *data, *results;
    char prefix[512];      /* DIR as seen from FILE's folder, for links */
    int clf_epochs;        /* classifier budget */
    double ae_seconds;     /* autoencoder budget, training seconds */
    int ae_eval_n;         /* training images evaluated after each epoch */
    int cnn_epochs;        /* the CNN's budget (0: no CNN runs) */
    int cnn_grid;          /* points of each CNN grid: 1 or 2 */
    int cnn_examples;      /* the CNN's training images (0: all) */
    int cnn_test_n;        /* the CNN's test images evaluated (0: all) */
    int cnn_only;          /* the CNN's runs and section alone */
    unsigned parts;        /* PART_* bits --run measures; the rest are read back */
} config;

enum { PART_MLP = 1, PART_AE = 2, PART_CNN = 4, PART_MODES = 8, PART_ALL = 15 };

/* The CNN's targets (issue 15: "at least 0.90 test accuracy"); a CNN run
 * stops once it has reached both. The loss target was set before the
 * first full run, at about where fmnist_2c2d's epoch-3 mean is expected. */
#define CNN_TARGET_LOSS 0.30
#define CNN_TARGET_ACC 0.90

/* the classifier's point for the inversion modes' runs */
#define MODES_BATCH 512
#define MODES_DAMPING 0.03f

/* ------------------------------------------------------------- children */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The autoencoder's curves are evaluated every quarter epoch from the
 * progress callback; the time that takes is kept out of the training
 * seconds. */
typedef struct probe {
    FILE *f;
    kfac_trainer *t;
    const kfac_dataset *test, *sub;
    int epoch;
    long every, steps_per_epoch;
    double epoch_start;  /* clock at the start of this epoch */
    double trained;      /* training seconds before this epoch */
    double eval_epoch;   /* evaluation seconds inside this epoch */
} probe;

static void probe_row(probe *pr, long step_in_epoch, double seconds, double train_loss)
{
    double t0 = now(), tl, tm, el, em;
    kfac_evaluate(kfac_trainer_net(pr->t), pr->test, &tl, &tm);
    kfac_evaluate(kfac_trainer_net(pr->t), pr->sub, &el, &em);
    fprintf(pr->f, "%.4f,%ld,%.3f,%.6f,%.6f,%.6f,%.6f,%.6f\n",
            pr->epoch - 1 + (double)step_in_epoch / pr->steps_per_epoch,
            (pr->epoch - 1) * pr->steps_per_epoch + step_in_epoch, seconds, train_loss, tl, tm, el, em);
    fflush(pr->f);
    pr->eval_epoch += now() - t0;
}

static int probe_progress(void *user, long step, long steps)
{
    probe *pr = user;
    if (step % pr->every == 0 && step < steps)
        probe_row(pr, step, pr->trained + (now() - pr->epoch_start) - pr->eval_epoch, NAN);
    return 0;
}

static int child_train(const config *c, const run *r)
{
    kfac_net_spec spec;
    kfac_train_params p;
    kfac_dataset train = {0}, test = {0};
    if (kfac_netfile_load(r->netfile, &spec, &p) != KFAC_OK || kfac_mnist_load(c->data, "train", &train) != KFAC_OK ||
        kfac_mnist_load(c->data, "t10k", &test) != KFAC_OK) {
        fprintf(stderr, "bench_suite: %s\n", kfac_last_error());
        return 3;
    }
    p.optimizer = r->opt;
    if (r->batch > 0)
        p.batch = r->batch;
    if (r->damping > 0)
        p.kfac.damping = r->damping;
    if (r->inversion >= 0)
        p.kfac.inversion = (kfac_inversion)r->inversion;
    /* K-FAC's statistics take 128 rows of a larger batch (bench_kfac does
     * the same; the paper takes 1/8 of its batches): their cost per
     * epoch stays that of batch 128, and the losses per epoch hold */
    if (r->opt == KFAC_OPT_KFAC && !(spec.loss != KFAC_LOSS_SOFTMAX_XENT) && p.batch > 128)
        p.kfac.stat_fraction = 128.0f / (float)p.batch;
    if (r->lr > 0) { /* the grid's lr, over the net file's sections */
        char own[32];
        snprintf(own, sizeof own, "%s.lr", kfac_optimizer_name(r->opt));
        p.optim.lr = r->lr;
        p.kfac.lr = 0;
        if (r->opt != KFAC_OPT_KFAC)
            kfac_train_params_set(&p, own, "inherit");
    }
    int ae = spec.loss != KFAC_LOSS_SOFTMAX_XENT, cnn = !strcmp(r->problem, "fmnist-cnn");
    p.epochs = ae ? MAX_EPOCHS / 4 - 1 : cnn ? c->cnn_epochs : r->budget > 0 ? r->budget : c->clf_epochs;
    /* the first images only (QUICK); the arrays stay whole for the free */
    int train_n = train.n, test_n = test.n;
    if (cnn && c->cnn_examples > 0 && c->cnn_examples < train.n)
        train.n = c->cnn_examples;
    if (cnn && c->cnn_test_n > 0 && c->cnn_test_n < test.n)
        test.n = c->cnn_test_n;
    kfac_trainer *t;
    if (kfac_trainer_new(&spec, &p, &train, &t) != KFAC_OK) {
        fprintf(stderr, "bench_suite: %s\n", kfac_last_error());
        return 3;
    }
    FILE *f = fopen(r->csv, "w");
    if (!f)
        return 1;
    long steps = (train.n + p.batch - 1) / p.batch;
    fprintf(f, "epoch,iterations,seconds,train_loss,test_loss,test_metric,train_eval_loss,train_eval_metric\n");
    kfac_dataset sub = train;
    sub.n = c->ae_eval_n < train.n ? c->ae_eval_n : train.n;
    int code = 0;
    probe pr = {f, t, &test, &sub, 0, steps / 4 > 0 ? steps / 4 : 1, steps, 0, 0, 0};
    if (ae) { /* the common starting point of every curve */
        pr.epoch = 1;
        probe_row(&pr, 0, 0.0, NAN);
    }
    double eval_total = 0.0; /* evaluation inside epochs, taken out of the seconds */
    for (int e = 1; e <= p.epochs; e++) {
        kfac_epoch_stats s;
        pr.epoch = e;
        pr.eval_epoch = 0.0;
        pr.epoch_start = now();
        kfac_status st = kfac_trainer_epoch(t, ae ? probe_progress : NULL, &pr, &s);
        if (st != KFAC_OK) {
            fprintf(stderr, "bench_suite: %s: %s\n", r->csv, kfac_last_error());
            code = st == KFAC_ERR_NUMERIC ? 4 : 1;
            break;
        }
        eval_total += pr.eval_epoch;
        s.seconds -= eval_total;
        pr.trained = s.seconds;
        if (ae) {
            probe_row(&pr, steps, s.seconds, s.train_loss);
        } else {
            kfac_evaluate(kfac_trainer_net(t), &test, &s.test_loss, &s.test_acc);
            fprintf(f, "%d,%ld,%.3f,%.6f,%.6f,%.6f,nan,nan\n", e, e * steps, s.seconds, s.train_loss, s.test_loss,
                    s.test_acc);
            fflush(f);
            /* the CNN's epochs are costly: past both targets, the table
             * has what it reads */
            if (cnn && s.train_loss <= CNN_TARGET_LOSS && s.test_acc >= CNN_TARGET_ACC)
                break;
        }
        if (ae && s.seconds >= c->ae_seconds)
            break;
    }
    fclose(f);
    kfac_trainer_free(t);
    train.n = train_n;
    test.n = test_n;
    kfac_dataset_free(&train);
    kfac_dataset_free(&test);
    return code;
}

/* Run r in a child; fill its peak memory and failure flag. */
static void run_child(const config *c, run *r)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_train(c, r));
    int status = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
        r->failed = 1;
        return;
    }
    r->peak_mib = ru.ru_maxrss / 1024.0; /* kilobytes on Linux */
    r->failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    /* beside the CSV, for --report-only */
    char meta[600];
    snprintf(meta, sizeof meta, "%s.meta", r->csv);
    FILE *m = fopen(meta, "w");
    if (m) {
        fprintf(m, "peak_mib %.1f\nfailed %d\n", r->peak_mib, r->failed);
        fclose(m);
    }
}

/* Run r, or with --report-only read what an earlier run left. */
static void do_run(const config *c, run *r)
{
    if (!c->report_only && (c->parts & (unsigned)r->part)) {
        run_child(c, r);
        return;
    }
    char meta[600];
    snprintf(meta, sizeof meta, "%s.meta", r->csv);
    FILE *m = fopen(meta, "r");
    if (!m || fscanf(m, "peak_mib %lf failed %d", &r->peak_mib, &r->failed) != 2)
        r->peak_mib = NAN;
    if (m)
        fclose(m);
}

/* Read the run's CSV back. */
static void load_csv(run *r)
{
    FILE *f = fopen(r->csv, "r");
    r->epochs = 0;
    if (!f)
        return;
    char line[512];
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return;
    }
    long it;
    double e;
    while (r->epochs < MAX_EPOCHS && fgets(line, sizeof line, f)) {
        int k = r->epochs;
        /* rows: every epoch (classifier) or quarter epoch (autoencoder);
         * the row at 0 (before training) is for the charts only */
        if (sscanf(line, "%lf,%ld,%lf,%lf,%lf,%lf,%lf,%lf", &e, &it, &r->seconds[k], &r->train_loss[k],
                   &r->test_loss[k], &r->test_metric[k], &r->eval_loss[k], &r->eval_metric[k]) == 8 && it > 0) {
            r->iterations[k] = it;
            r->epoch_of[k] = e;
            r->epochs++;
        }
    }
    fclose(f);
}

/* --------------------------------------------------------------- tables */

/* first epoch (0-based) whose value passes the target, or -1 */
static int first_below(const double *v, int n, double target)
{
    for (int i = 0; i < n; i++)
        if (v[i] <= target)
            return i;
    return -1;
}

static int first_above(const double *v, int n, double target)
{
    for (int i = 0; i < n; i++)
        if (v[i] >= target)
            return i;
    return -1;
}

static double median3(double a, double b, double c)
{
    return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

static const char *opt_label(kfac_optimizer_kind k)
{
    return k == KFAC_OPT_SGD        ? "SGD"
           : k == KFAC_OPT_MOMENTUM ? "SGD-momentum"
           : k == KFAC_OPT_NESTEROV ? "Nesterov"
           : k == KFAC_OPT_ADAM     ? "Adam"
                                    : "K-FAC";
}

/* seconds at which a run reached the training-loss target (NAN if never) */
static double time_to_loss(const run *r, double target)
{
    int i = first_below(r->train_loss, r->epochs, target);
    return i < 0 ? NAN : r->seconds[i];
}

/* The best run of optimizer k among runs[from, to), by the rule every
 * grid here uses: the shortest time to the training-loss target, else
 * (none reached it) the lowest last training loss; -1 if none ran. */
static int best_run(const run *runs, int from, int to, kfac_optimizer_kind k, double target)
{
    int b = -1;
    for (int i = from; i < to; i++) {
        if (runs[i].opt != k || runs[i].epochs == 0)
            continue;
        double ti = time_to_loss(&runs[i], target), tb = b < 0 ? NAN : time_to_loss(&runs[b], target);
        if (b < 0 || (!isnan(ti) && (isnan(tb) || ti < tb)) ||
            (isnan(ti) && isnan(tb) && runs[i].train_loss[runs[i].epochs - 1] < runs[b].train_loss[runs[b].epochs - 1]))
            b = i;
    }
    return b;
}

/* A table row's target cells, "epochs to loss | seconds | epochs to acc |
 * seconds", into cells; returns the epoch (0-based) of the best test
 * accuracy. */
static int target_cells(const run *r, double target_loss, double target_acc, char *cells, size_t cap)
{
    int il = first_below(r->train_loss, r->epochs, target_loss), ia = first_above(r->test_metric, r->epochs, target_acc);
    int ib = 0;
    for (int e = 1; e < r->epochs; e++)
        if (r->test_metric[e] > r->test_metric[ib])
            ib = e;
    char el[32] = "not reached", sl[32] = "", ea[32] = "not reached", sa[32] = "";
    if (il >= 0) {
        snprintf(el, sizeof el, "%.0f", r->epoch_of[il]);
        snprintf(sl, sizeof sl, "%.1f", r->seconds[il]);
    }
    if (ia >= 0) {
        snprintf(ea, sizeof ea, "%.0f", r->epoch_of[ia]);
        snprintf(sa, sizeof sa, "%.1f", r->seconds[ia]);
    }
    snprintf(cells, cap, "%s | %s | %s | %s", el, sl, ea, sa);
    return ib;
}

/* seconds at which a run first reached the test-accuracy target (NAN if never) */
static double time_to_acc(const run *r, double target)
{
    int i = first_above(r->test_metric, r->epochs, target);
    return i < 0 ? NAN : r->seconds[i];
}

/* ---------------------------------------------------------------- plots */

/* One colour per optimizer, the same in every chart. */
static const char *opt_colour(kfac_optimizer_kind k)
{
    return k == KFAC_OPT_SGD        ? "#7f7f7f"
           : k == KFAC_OPT_MOMENTUM ? "#2ca02c"
           : k == KFAC_OPT_NESTEROV ? "#1f77b4"
           : k == KFAC_OPT_ADAM     ? "#ff7f0e"
                                    : "#d62728";
}

/* the inversion modes' charts: one colour per mode */
static const char *mode_colour(int inversion)
{
    static const char *const colours[KFAC_INV_COUNT] = {"#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e"};
    return inversion >= 0 && inversion < KFAC_INV_COUNT ? colours[inversion] : "#000000";
}

/* only_best: draw the bold runs alone (a grid of 27 is unreadable) */
static int write_plot(const config *c, const char *name, const char *title, run *runs, int n, const char *problem,
                      int ycol_seconds, const char *ylabel, int xcol_epochs, const char *xlabel2, const int *best,
                      const char *key, int only_best)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s.gp", c->out, name);
    FILE *g = fopen(path, "w");
    if (!g)
        return -1;
    fprintf(g, "set terminal pngcairo size 1400,560 font 'DejaVu Sans,11'\n"
               "set output '%s/%s.png'\n"
               "set datafile separator ','\nset key %s\nset grid\nset logscale y\n"
               /* log axes labelled at 1, 2, 4, 8 of each decade, not only at decades */
               "set ytics 2\nset format y '%%g'\n"
               "set multiplot layout 1,2 title '%s'\n",
            c->out, name, key, title);
    for (int panel = 0; panel < 2; panel++) {
        fprintf(g, "set xlabel '%s'\nset ylabel '%s'\nplot ", panel ? xlabel2 : "training seconds (evaluation excluded)",
                ylabel);
        int first = 1;
        for (int i = 0; i < n; i++) {
            if (strcmp(runs[i].problem, problem) || runs[i].repeat || runs[i].epochs == 0 || (only_best && !best[i]))
                continue;
            int is_best = best[i];
            char lrs[48];
            if (runs[i].lr > 0)
                snprintf(lrs, sizeof lrs, "lr %g", runs[i].lr);
            else if (runs[i].inversion >= 0) /* the modes' charts: the mode is the title */
                snprintf(lrs, sizeof lrs, "inversion");
            else if (runs[i].damping > 0) /* K-FAC: its grid is over damping */
                snprintf(lrs, sizeof lrs, "damping %g", runs[i].damping);
            else
                snprintf(lrs, sizeof lrs, "defaults");
            if (runs[i].batch > 0)
                snprintf(lrs + strlen(lrs), sizeof lrs - strlen(lrs), ", batch %d", runs[i].batch);
            /* the best learning rate of each optimizer bold, the rest thin;
             * the modes' charts by mode */
            int mode = runs[i].inversion;
            fprintf(g, "%s'%s' using %d:%d every ::1 with linespoints lw %d lc rgb '%s' pt 7 ps %s title '%s %s'",
                    first ? "" : ", ", runs[i].csv, panel ? xcol_epochs : 3, ycol_seconds, is_best ? 3 : 1,
                    mode >= 0 ? mode_colour(mode) : opt_colour(runs[i].opt), is_best ? "0.8" : "0.3",
                    mode >= 0 ? kfac_inversion_name((kfac_inversion)mode) : opt_label(runs[i].opt), lrs);
            first = 0;
        }
        fprintf(g, "\n");
    }
    fprintf(g, "unset multiplot\n");
    fclose(g);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "gnuplot '%s'", path);
    return system(cmd);
}

/* ------------------------------------------------------------- machine */

static void machine(FILE *f)
{
    char cpu[256] = "unknown";
    FILE *ci = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (ci && fgets(line, sizeof line, ci))
        if (!strncmp(line, "model name", 10)) {
            char *v = strchr(line, ':');
            if (v) {
                snprintf(cpu, sizeof cpu, "%s", v + 2);
                cpu[strcspn(cpu, "\n")] = '\0';
            }
            break;
        }
    if (ci)
        fclose(ci);
    const char *core = getenv("OPENBLAS_CORETYPE");
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    fprintf(f, "Machine: %ld cores, %s; OpenBLAS `%s`, `OPENBLAS_CORETYPE=%s`; libkfac %s; %s.\n",
            sysconf(_SC_NPROCESSORS_ONLN), cpu, openblas_get_config(), core ? core : "(unset)", KFAC_VERSION_STRING,
            date);
}

static void include_file(FILE *f, const char *path)
{
    FILE *in = fopen(path, "r");
    if (!in) {
        fprintf(f, "(%s missing)\n", path);
        return;
    }
    fprintf(f, "```\n");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, f);
    fprintf(f, "```\n");
    fclose(in);
}

/* RESULTS.md's section on nets/fmnist-cnn: every run, then each
 * optimizer's best and K-FAC against the best first-order one. */
static void cnn_section(FILE *f, const config *c, const run *runs, int from, int to, const int *best,
                        const int *cnn_best, const char *pre)
{
    fprintf(f, "\n## Convolutional classifier: nets/fmnist-cnn (DeepOBS fmnist_2c2d, 3.27 M parameters), batch 128, "
               "up to %d epoch%s\n\n", c->cnn_epochs, KFAC_S(c->cnn_epochs));
    if (c->cnn_examples > 0)
        fprintf(f, "**Trained on the first %d training images and evaluated on the first %d test images: a smoke test, "
                   "not the benchmark.**\n\n", c->cnn_examples, c->cnn_test_n);
    fprintf(f, "Conv 32 5x5 same + ReLU, max pool 2, conv 64 5x5 same + ReLU, max pool 2, dense 1024 ReLU, dense 10. "
               "Grids at the net file's batch (128): SGD lr %s; SGD-momentum and Nesterov (momentum 0.9) lr %s; Adam "
               "lr %s; K-FAC with the net file's settings (lr 0.03, T_cov 10, T_inv 100, KFC factors for the "
               "convolutions), damping %s. Each optimizer's best point (bold) by the MLP's rule: the shortest time to "
               "the training-loss target, else the lowest last training loss. Targets: training loss (mean over the "
               "epoch) <= %.2f; test accuracy >= %.2f (issue 15). A run stops after the epoch in which it has reached "
               "both.\n\n",
            c->cnn_grid > 1 ? "0.1, 0.03" : "0.1", c->cnn_grid > 1 ? "0.01, 0.03" : "0.01",
            c->cnn_grid > 1 ? "1e-3, 3e-4" : "1e-3", c->cnn_grid > 1 ? "0.03, 0.1" : "0.03", CNN_TARGET_LOSS,
            CNN_TARGET_ACC);
    fprintf(f, "| optimizer | lr | epochs to loss %.2f | seconds | epochs to acc %.2f | seconds | best test acc (epoch) | "
               "last train loss (epoch) | s/epoch | peak MiB |\n|---|---|---|---|---|---|---|---|---|---|\n",
            CNN_TARGET_LOSS, CNN_TARGET_ACC);
    for (int i = from; i < to; i++) {
        const run *r = &runs[i];
        char lr[48];
        if (r->lr > 0)
            snprintf(lr, sizeof lr, "%g", r->lr);
        else
            snprintf(lr, sizeof lr, "0.03 (damping %g)", r->damping);
        if (!r->epochs) {
            fprintf(f, "| %s | %s | failed | | | | | | | |\n", opt_label(r->opt), lr);
            continue;
        }
        char cells[160];
        int ib = target_cells(r, CNN_TARGET_LOSS, CNN_TARGET_ACC, cells, sizeof cells);
        fprintf(f, "| %s%s%s%s | %s | %s | %.4f (%d) | %.4f (%d) | %.2f | %.0f |\n", best[i] ? "**" : "",
                opt_label(r->opt), best[i] ? "**" : "", r->failed ? " (failed)" : "", lr, cells,
                r->test_metric[ib], ib + 1, r->train_loss[r->epochs - 1], r->epochs, r->seconds[r->epochs - 1] / r->epochs,
                r->peak_mib);
    }
    /* the headline: the best first-order point against K-FAC's, on each
     * target (one run each: the CNN's budget has no room for repeats) */
    const char *what[2] = {"training loss", "test accuracy"};
    const double target[2] = {CNN_TARGET_LOSS, CNN_TARGET_ACC};
    int kf = cnn_best[4];
    fprintf(f, "\nOne run each.");
    for (int t = 0; t < 2; t++) {
        int fo = -1;
        double tf = NAN;
        for (int k = 0; k < 4; k++) {
            int b = cnn_best[k];
            double tb = b < 0 ? NAN : t ? time_to_acc(&runs[b], target[t]) : time_to_loss(&runs[b], target[t]);
            if (b >= 0 && !isnan(tb) && (fo < 0 || tb < tf)) {
                fo = b;
                tf = tb;
            }
        }
        double tk = kf < 0 ? NAN : t ? time_to_acc(&runs[kf], target[t]) : time_to_loss(&runs[kf], target[t]);
        fprintf(f, " Time to %s %s %.2f: ", what[t], t ? ">=" : "<=", target[t]);
        if (fo < 0)
            fprintf(f, "no first-order point reached it");
        else
            fprintf(f, "best first-order %s (lr %g) %.1f s", opt_label(runs[fo].opt), runs[fo].lr, tf);
        if (isnan(tk))
            fprintf(f, ", K-FAC did not reach it in %d epoch%s.", c->cnn_epochs, KFAC_S(c->cnn_epochs));
        else if (fo < 0)
            fprintf(f, ", K-FAC (damping %g) %.1f s.", runs[kf].damping, tk);
        else
            fprintf(f, ", K-FAC (damping %g) %.1f s: **K-FAC takes %.2f of the best first-order time**.",
                    runs[kf].damping, tk, tk / tf);
    }
    fprintf(f, "\n\nThe epoch against PyTorch's on the same network (and K-FAC's epoch against SGD's), timed "
               "interleaved in the same session, is `cnn-torch.txt` under Throughput below.\n");
    fprintf(f, "\n![fmnist-cnn](%sfmnist-cnn.png)\n", pre);
}

/* training seconds per iteration over a whole run (NAN if it has none) */
static double per_step(const run *r)
{
    return r->epochs && !r->failed ? r->seconds[r->epochs - 1] / (double)r->iterations[r->epochs - 1] : NAN;
}

/* RESULTS.md's section on K-FAC's inversion modes (issue 17): time to
 * target and cost per step of each, on the classifier (runs[from, mid))
 * and the autoencoder (runs[mid, to)). */
static void modes_section(FILE *f, const config *c, const run *runs, int from, int mid, int to, double target_loss,
                          double target_acc)
{
    /* runs[from] and runs[mid]: the first-order references */
    int batch = runs[from].batch;
    double sgd_step = per_step(&runs[from]);
    fprintf(f, "\n## K-FAC's inversion modes\n\n");
    fprintf(f, "Every `inversion` of docs/algorithm.md §4, run one after another with the same seed: `cholesky` (dense "
               "inverses, factored Tikhonov damping), `eigen` (eigendecompositions, exact Tikhonov damping), `lowrank` "
               "(the default: top eigenpairs by randomized subspace iteration), `ekfac` (eigen's bases, the diagonal "
               "re-estimated from projected per-example gradients) and `tridiag` (the block-tridiagonal inverse). The "
               "cosine of each mode's direction with the exact natural gradient is the README's table (`kfac check`); "
               "this is what each costs and gains in training.\n\n");
    int epochs = runs[from].budget > 0 ? runs[from].budget : c->clf_epochs;
    fprintf(f, "Classifier (nets/fmnist-mlp, %d epoch%s): batch %d, damping %g, the net file's lr 0.03, kl_clip 1e-3, T_cov "
               "10, T_inv 100, statistics on 128 rows of each batch (K-FAC's best point of the grid when this part was "
               "written, fixed so that `--run modes` re-measures it alone). Cost per step: mean training seconds per "
               "iteration over the run, against SGD-momentum's (lr 0.05) at the same batch, run first in this part "
               "(%.1f ms a step).\n\n",
            epochs, KFAC_S(epochs), batch, runs[from + 1].damping > 0 ? runs[from + 1].damping : 0.1,
            1e3 * sgd_step);
    fprintf(f, "| inversion | epochs to loss %.2f | seconds | epochs to acc %.2f | seconds | best test acc (epoch) | final "
               "train loss | ms/step | x SGD-momentum step |\n|---|---|---|---|---|---|---|---|---|\n",
            target_loss, target_acc);
    for (int i = from + 1; i < mid; i++) {
        const run *r = &runs[i];
        const char *name = kfac_inversion_name((kfac_inversion)r->inversion);
        if (!r->epochs) {
            fprintf(f, "| %s | failed | | | | | | | |\n", name);
            continue;
        }
        char cells[160];
        int ib = target_cells(r, target_loss, target_acc, cells, sizeof cells);
        double step = per_step(r);
        fprintf(f, "| %s%s | %s | %.4f (%d) | %.4f | %.1f | %.2f |\n", name, r->failed ? " (failed)" : "", cells,
                r->test_metric[ib], ib + 1, r->train_loss[r->epochs - 1], 1e3 * step, step / sgd_step);
    }
    const run *s = &runs[mid];
    double target = s->epochs ? s->eval_loss[s->epochs - 1] : NAN;
    double nest_step = per_step(s);
    fprintf(f, "\nAutoencoder (nets/mnist-autoencoder, batch 500, %.0f s of training each): the net file's settings "
               "(lr 0.1, momentum 0.9, kl_clip 0.1, damping 0.1). Target: the training cross-entropy at which Nesterov "
               "(lr %g, the best of the autoencoder's grid when this part was written), run first in this part, ends "
               "the same budget (%.2f); cost per "
               "step against its (%.1f ms).\n\n",
            c->ae_seconds, s->lr, target, 1e3 * nest_step);
    fprintf(f, "| inversion | iterations | train cross-entropy | train squared error | test squared error | seconds to "
               "%.2f (iterations) | x Nesterov's time | ms/step | x Nesterov step |\n|---|---|---|---|---|---|---|---|---|\n",
            target);
    for (int i = mid + 1; i < to; i++) {
        const run *r = &runs[i];
        const char *name = kfac_inversion_name((kfac_inversion)r->inversion);
        if (!r->epochs) {
            fprintf(f, "| %s | %s | | | | | | | |\n", name, r->failed ? "diverged" : "failed");
            continue;
        }
        int k = r->epochs - 1, ik = isnan(target) ? -1 : first_below(r->eval_loss, r->epochs, target);
        char reach[64] = "not reached", ratio[32] = "";
        if (ik >= 0) {
            snprintf(reach, sizeof reach, "%.1f (%ld)", r->seconds[ik], r->iterations[ik]);
            snprintf(ratio, sizeof ratio, "%.2f", r->seconds[ik] / s->seconds[s->epochs - 1]);
        }
        double step = per_step(r);
        fprintf(f, "| %s%s | %ld | %.2f | %.2f | %.2f | %s | %s | %.1f | %.2f |\n", name, r->failed ? " (diverged)" : "",
                r->iterations[k], r->eval_loss[k], r->eval_metric[k], r->test_metric[k], reach, ratio, 1e3 * step,
                step / nest_step);
    }
    fprintf(f, "\n![inversion modes, classifier](%smodes-fmnist-mlp.png)\n\n![inversion modes, autoencoder]"
               "(%smodes-autoencoder.png)\n", c->prefix, c->prefix);
}

/* --run's list: "mlp,modes" -> PART_MLP | PART_MODES; 0 on a bad name */
static int parse_parts(const char *list, unsigned *out)
{
    static const char *const names[] = {"mlp", "ae", "cnn", "modes"};
    unsigned parts = 0;
    for (const char *s = list; *s;) {
        size_t len = strcspn(s, ",");
        int k = 0;
        while (k < 4 && !(strlen(names[k]) == len && !strncmp(s, names[k], len)))
            k++;
        if (k == 4)
            return 0;
        parts |= 1u << k;
        s += len + (s[len] == ',');
    }
    *out = parts;
    return parts != 0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    /* the CNN's budget and grid: -1 until given, then the mode's */
    config c = {0, 0, "bench/results", KFAC_DEFAULT_DATA_DIR, NULL, "", 10, 75.0, 10000, -1, -1, 0, 0, 0, PART_ALL};
    const char *includes[8];
    int n_inc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            c.quick = 1;
        else if (!strcmp(argv[i], "--report-only"))
            c.report_only = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            c.out = argv[++i];
        else if (!strcmp(argv[i], "--results") && i + 1 < argc)
            c.results = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc)
            c.data = argv[++i];
        else if (!strcmp(argv[i], "--include") && i + 1 < argc && n_inc < 8)
            includes[n_inc++] = argv[++i];
        else if (!strcmp(argv[i], "--cnn-epochs") && i + 1 < argc && atoi(argv[i + 1]) >= 0 &&
                 atoi(argv[i + 1]) < MAX_EPOCHS)
            c.cnn_epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cnn-grid") && i + 1 < argc && (atoi(argv[i + 1]) == 1 || atoi(argv[i + 1]) == 2))
            c.cnn_grid = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cnn-examples") && i + 1 < argc && atoi(argv[i + 1]) > 0)
            c.cnn_examples = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cnn-only"))
            c.cnn_only = 1;
        else if (!strcmp(argv[i], "--run") && i + 1 < argc && parse_parts(argv[i + 1], &c.parts))
            i++;
        else {
            fprintf(stderr, "usage: bench_suite [--quick] [--report-only] [--out DIR] [--results FILE] [--data DIR] "
                            "[--include FILE]... [--cnn-epochs N] [--cnn-grid 1|2] [--cnn-examples N] [--cnn-only] [--run mlp,ae,cnn,modes]\n");
            return 2;
        }
    }
    if (c.quick) {
        c.clf_epochs = 2;
        c.ae_seconds = 15.0;
        c.ae_eval_n = 5000;
        /* the CNN in seconds: 4 steps of 128 and 1000 test images */
        if (c.cnn_epochs < 0)
            c.cnn_epochs = 1;
        if (c.cnn_grid < 0)
            c.cnn_grid = 1;
        if (!c.cnn_examples)
            c.cnn_examples = 512;
        c.cnn_test_n = 1000;
    }
    if (c.cnn_epochs < 0)
        c.cnn_epochs = 3;
    if (c.cnn_grid < 0)
        c.cnn_grid = 2;
    /* links in FILE point into DIR: bench/RESULTS.md -> results/x.png */
    char defpath[600];
    if (!c.results) {
        snprintf(defpath, sizeof defpath, "%s/RESULTS.md", c.out);
        c.results = defpath;
    } else {
        const char *slash = strrchr(c.results, '/');
        size_t dirlen = slash ? (size_t)(slash - c.results) : 0; /* FILE's folder, no slash */
        if (strlen(c.out) == dirlen && !strncmp(c.out, c.results, dirlen))
            c.prefix[0] = '\0'; /* FILE inside DIR */
        else if (dirlen && !strncmp(c.out, c.results, dirlen) && c.out[dirlen] == '/')
            snprintf(c.prefix, sizeof c.prefix, "%s/", c.out + dirlen + 1);
        else if (!dirlen)
            snprintf(c.prefix, sizeof c.prefix, "%s/", c.out);
        else
            snprintf(c.prefix, sizeof c.prefix, "%s/", c.out); /* unrelated folders: as given */
    }
    if (mkdir(c.out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_suite: cannot create %s: %s\n", c.out, strerror(errno));
        return 1;
    }

    /* the grids: stated here and in RESULTS.md */
    static const float mom_grid[] = {0.01f, 0.05f, 0.1f}, adam_grid[] = {3e-4f, 1e-3f, 3e-3f};
    static const float ae_grid[] = {0.0003f, 0.001f, 0.003f};
    /* the classifier's batch sizes: every first-order learning rate at
     * each; K-FAC picks from the larger two (its step's fixed costs favour
     * larger batches) */
    static const int batch_grid[] = {64, 128, 256, 512};
    /* K-FAC's own grid: damping (its one tuned setting) by batch */
    static const float kfac_damping_grid[] = {0.03f, 0.1f};
    /* The CNN's grids, two points each at the net file's batch (128): an
     * epoch costs 15 MLP epochs. The first point of each is the one
     * --cnn-grid 1 keeps: the usual values for this network (PyTorch's
     * and DeepOBS's), the second the next in the MLP's grids. */
    static const float cnn_sgd_grid[] = {0.1f, 0.03f}, cnn_mom_grid[] = {0.01f, 0.03f},
                       cnn_adam_grid[] = {1e-3f, 3e-4f}, cnn_kfac_damping_grid[] = {0.03f, 0.1f};
    run runs[MAX_RUNS];
    int n = 0;
    memset(runs, 0, sizeof runs);
#define ADD(prob, file, kind, rate, rows)                                                                            \
    do {                                                                                                           \
        if (n == MAX_RUNS) {                                                                                       \
            fprintf(stderr, "bench_suite: more than %d runs: raise MAX_RUNS\n", MAX_RUNS);                       \
            return 1;                                                                                              \
        }                                                                                                          \
        runs[n] = (run){.problem = prob, .netfile = file, .opt = kind, .lr = rate, .batch = rows, .inversion = -1, \
                        .part = !strcmp(prob, "fmnist-mlp") ? PART_MLP : !strcmp(prob, "autoencoder") ? PART_AE : PART_CNN}; \
        n++;                                                                                                       \
    } while (0)
    for (int b = 0; !c.cnn_only && b < 4; b++)
        for (int g = 0; g < 3; g++) {
            if (c.quick && (g != 1 || b != 1))
                continue; /* quick: the middle of each grid */
            ADD("fmnist-mlp", "nets/fmnist-mlp.net", KFAC_OPT_MOMENTUM, mom_grid[g], batch_grid[b]);
            ADD("fmnist-mlp", "nets/fmnist-mlp.net", KFAC_OPT_NESTEROV, mom_grid[g], batch_grid[b]);
            ADD("fmnist-mlp", "nets/fmnist-mlp.net", KFAC_OPT_ADAM, adam_grid[g], batch_grid[b]);
        }
    for (int b = 1; !c.cnn_only && b < 4; b++)
        for (int g = 0; g < 2; g++)
            if (!c.quick || (b == 1 && g == 1)) {
                ADD("fmnist-mlp", "nets/fmnist-mlp.net", KFAC_OPT_KFAC, 0.0f, batch_grid[b]);
                runs[n - 1].damping = c.quick ? 0.0f : kfac_damping_grid[g];
            }
    int n_clf = n;
    for (int g = 0; !c.cnn_only && g < 3; g++) {
        if (c.quick && g != 1)
            continue;
        ADD("autoencoder", "nets/mnist-autoencoder.net", KFAC_OPT_NESTEROV, ae_grid[g], 0);
    }
    if (!c.cnn_only)
        ADD("autoencoder", "nets/mnist-autoencoder.net", KFAC_OPT_KFAC, 0.0f, 0);
    int n_ae = n;
    for (int g = 0; c.cnn_epochs > 0 && g < c.cnn_grid; g++) {
        ADD("fmnist-cnn", "nets/fmnist-cnn.net", KFAC_OPT_SGD, cnn_sgd_grid[g], 0);
        ADD("fmnist-cnn", "nets/fmnist-cnn.net", KFAC_OPT_MOMENTUM, cnn_mom_grid[g], 0);
        ADD("fmnist-cnn", "nets/fmnist-cnn.net", KFAC_OPT_NESTEROV, cnn_mom_grid[g], 0);
        ADD("fmnist-cnn", "nets/fmnist-cnn.net", KFAC_OPT_ADAM, cnn_adam_grid[g], 0);
        ADD("fmnist-cnn", "nets/fmnist-cnn.net", KFAC_OPT_KFAC, 0.0f, 0);
        runs[n - 1].damping = cnn_kfac_damping_grid[g];
    }
    int n_cnn = n;
    /* K-FAC in each inversion mode (issue 17), one after another: the
     * classifier at a point fixed in advance (K-FAC's best of the grid when
     * this part was written: batch 512, damping 0.03), so that --run modes
     * can re-measure it alone; the autoencoder with its net file's
     * settings. Each block starts with its first-order reference, run in
     * the same part so that the costs per step compare on one machine. */
    if (!c.cnn_only) {
        ADD("fmnist-mlp", "nets/fmnist-mlp.net", KFAC_OPT_MOMENTUM, 0.05f, MODES_BATCH);
        runs[n - 1].budget = c.quick ? 1 : 0; /* quick: the weight forms' steps cost seconds */
        runs[n - 1].part = PART_MODES;
        runs[n - 1].tag = "-modes";
    }
    for (int m = 0; !c.cnn_only && m < KFAC_INV_COUNT; m++) {
        ADD("fmnist-mlp", "nets/fmnist-mlp.net", KFAC_OPT_KFAC, 0.0f, MODES_BATCH);
        runs[n - 1].damping = MODES_DAMPING;
        runs[n - 1].budget = c.quick ? 1 : 0;
        runs[n - 1].inversion = m;
        runs[n - 1].part = PART_MODES;
    }
    int n_modes_clf = n;
    if (!c.cnn_only) {
        ADD("autoencoder", "nets/mnist-autoencoder.net", KFAC_OPT_NESTEROV, 0.001f, 0);
        runs[n - 1].part = PART_MODES;
        runs[n - 1].tag = "-modes";
    }
    for (int m = 0; !c.cnn_only && m < KFAC_INV_COUNT; m++) {
        ADD("autoencoder", "nets/mnist-autoencoder.net", KFAC_OPT_KFAC, 0.0f, 0);
        runs[n - 1].inversion = m;
        runs[n - 1].part = PART_MODES;
    }
    int n_first = n;

    for (int i = 0; i < n; i++) {
        char b[64] = "";
        if (runs[i].batch > 0)
            snprintf(b, sizeof b, "-b%d", runs[i].batch);
        if (runs[i].damping > 0)
            snprintf(b + strlen(b), sizeof b - strlen(b), "-d%g", runs[i].damping);
        if (runs[i].inversion >= 0)
            snprintf(b + strlen(b), sizeof b - strlen(b), "-%s", kfac_inversion_name((kfac_inversion)runs[i].inversion));
        if (runs[i].tag)
            snprintf(b + strlen(b), sizeof b - strlen(b), "%s", runs[i].tag);
        snprintf(runs[i].csv, sizeof runs[i].csv, "%s/%s-%s-defaults%s.csv", c.out, runs[i].problem,
                 kfac_optimizer_name(runs[i].opt), b);
        if (runs[i].lr > 0)
            snprintf(runs[i].csv, sizeof runs[i].csv, "%s/%s-%s-lr%g%s.csv", c.out, runs[i].problem,
                     kfac_optimizer_name(runs[i].opt), runs[i].lr, b);
        printf("[%2d/%d] %s, %s, %s\n", i + 1, n, runs[i].problem, opt_label(runs[i].opt), runs[i].csv);
        do_run(&c, &runs[i]);
        load_csv(&runs[i]);
    }

    /* classifier: the best lr of each optimizer by time to training loss
     * 0.25 (else by its last training loss) */
    const double target_loss = 0.25, target_acc = 0.88;
    int best[MAX_RUNS] = {0};
    kfac_optimizer_kind kinds[4] = {KFAC_OPT_MOMENTUM, KFAC_OPT_NESTEROV, KFAC_OPT_ADAM, KFAC_OPT_KFAC};
    int best_of[4] = {-1, -1, -1, -1};
    for (int k = 0; k < 4; k++) {
        best_of[k] = best_run(runs, 0, n_clf, kinds[k], target_loss);
        if (best_of[k] >= 0)
            best[best_of[k]] = 1;
    }
    /* the first-order winner and K-FAC run twice more: medians of 3 */
    int fo = -1;
    for (int k = 0; k < 3; k++) {
        int b = best_of[k];
        if (b >= 0 && (fo < 0 || time_to_loss(&runs[b], target_loss) < time_to_loss(&runs[fo], target_loss) ||
                       isnan(time_to_loss(&runs[fo], target_loss))))
            fo = b;
    }
    int rep_of[2][2] = {{-1, -1}, {-1, -1}}; /* [fo, kfac][repeat] */
    if (!c.quick) {
        int who[2] = {fo, best_of[3]};
        for (int w = 0; w < 2; w++)
            for (int rep = 0; rep < 2 && who[w] >= 0 && n < MAX_RUNS; rep++) {
                runs[n] = runs[who[w]];
                runs[n].repeat = rep + 1;
                snprintf(runs[n].csv, sizeof runs[n].csv, "%.*s-repeat%d.csv",
                         (int)strlen(runs[who[w]].csv) - 4, runs[who[w]].csv, rep + 1);
                printf("[repeat] %s\n", runs[n].csv);
                do_run(&c, &runs[n]);
                load_csv(&runs[n]);
                rep_of[w][rep] = n++;
            }
    }

    /* autoencoder: Nesterov's best end-of-budget error, and when K-FAC
     * first reaches it */
    int ae_best = -1, ae_kfac = -1;
    for (int i = n_clf; i < n_ae; i++) {
        run *r = &runs[i];
        if (r->epochs == 0)
            continue;
        if (r->opt == KFAC_OPT_KFAC)
            ae_kfac = i;
        else if (!r->failed && (ae_best < 0 || r->eval_loss[r->epochs - 1] < runs[ae_best].eval_loss[runs[ae_best].epochs - 1]))
            ae_best = i;
    }
    if (ae_best >= 0)
        best[ae_best] = 1;
    if (ae_kfac >= 0)
        best[ae_kfac] = 1;

    /* the CNN: each optimizer's best point by the same rule, with its own
     * loss target */
    kfac_optimizer_kind cnn_kinds[5] = {KFAC_OPT_SGD, KFAC_OPT_MOMENTUM, KFAC_OPT_NESTEROV, KFAC_OPT_ADAM, KFAC_OPT_KFAC};
    int cnn_best[5];
    for (int k = 0; k < 5; k++) {
        cnn_best[k] = best_run(runs, n_ae, n_cnn, cnn_kinds[k], CNN_TARGET_LOSS);
        if (cnn_best[k] >= 0)
            best[cnn_best[k]] = 1;
    }

    /* plots */
    if (n_cnn > n_ae)
        write_plot(&c, "fmnist-cnn", "nets/fmnist-cnn on Fashion-MNIST: training loss (mean over each epoch)", runs, n_cnn,
                   "fmnist-cnn", 4, "training loss", 1, "epochs", best, "top right", 0);
    if (!c.cnn_only) {
        write_plot(&c, "fmnist-mlp", "nets/fmnist-mlp on Fashion-MNIST: training loss (mean over each epoch)", runs, n_cnn,
                   "fmnist-mlp", 4, "training loss", 1, "epochs", best, "top right", 1);
        char title[256];
        snprintf(title, sizeof title,
                 "nets/mnist-autoencoder on Fashion-MNIST: training error (Bernoulli cross-entropy per image, first %d "
                 "training images)", c.ae_eval_n);
        write_plot(&c, "autoencoder", title, runs, n_cnn, "autoencoder", 7, "training cross-entropy per image", 2, "iterations",
                   best, "top right", 0);
        snprintf(title, sizeof title,
                 "nets/mnist-autoencoder on Fashion-MNIST: training squared reconstruction error per image (first %d "
                 "training images)", c.ae_eval_n);
        write_plot(&c, "autoencoder-squared", title, runs, n_cnn, "autoencoder", 8, "training squared error per image", 2,
                   "iterations", best, "top right", 0);
    }

    if (n_first > n_cnn) {
        int bold[MAX_RUNS]; /* every mode drawn alike */
        for (int i = 0; i < MAX_RUNS; i++)
            bold[i] = 1;
        write_plot(&c, "modes-fmnist-mlp", "nets/fmnist-mlp, K-FAC in each inversion mode: training loss", runs + n_cnn,
                   n_modes_clf - n_cnn, "fmnist-mlp", 4, "training loss", 1, "epochs", bold, "top right", 0);
        write_plot(&c, "modes-autoencoder", "nets/mnist-autoencoder, K-FAC in each inversion mode: training cross-entropy",
                   runs + n_modes_clf, n_first - n_modes_clf, "autoencoder", 7, "training cross-entropy per image", 2,
                   "iterations", bold, "top right", 0);
    }

    /* RESULTS.md */
    const char *path = c.results, *pre = c.prefix;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_suite: cannot write %s\n", path);
        return 1;
    }
    fprintf(f, "# Benchmark results%s\n\nRegenerated by `make bench%s`; do not edit. ", c.quick ? " (QUICK)" : "",
            c.quick ? " QUICK=1" : "");
    machine(f);
    fprintf(f, "\nEvery run: same seed (1), same data order, 2 threads, the same evaluation after each epoch "
               "(excluded from the seconds). Seconds are training time. This VM's speed drifts by about 15%% over "
               "minutes; epochs are exact, seconds are not.\n");

    if (!c.cnn_only) {
        fprintf(f, "\n## Classifier: nets/fmnist-mlp (784-1000-500-100-10), %d epoch%s\n\n", c.clf_epochs,
                KFAC_S(c.clf_epochs));
        fprintf(f, "Grids: SGD-momentum and Nesterov (momentum 0.9) lr %s; Adam lr %s; each at batch %s. K-FAC with the "
                   "net file's settings (lr 0.03, kl_clip 1e-3, T_cov 10, T_inv 100, low-rank inverses), damping %s, at "
                   "batch %s, its statistics on 128 rows of each batch. Targets: training loss (mean over the epoch) <= %.2f; test accuracy >= %.2f.\n\n",
                c.quick ? "0.05" : "0.01, 0.05, 0.1", c.quick ? "1e-3" : "3e-4, 1e-3, 3e-3",
                c.quick ? "128" : "64, 128, 256, 512", c.quick ? "0.1" : "0.03, 0.1", c.quick ? "128" : "128, 256, 512",
                target_loss, target_acc);
        fprintf(f, "| optimizer | lr | batch | epochs to loss %.2f | seconds | epochs to acc %.2f | seconds | best test acc "
                   "(epoch) | final train loss | s/epoch | peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
                target_loss, target_acc);
        for (int i = 0; i < n_clf; i++) {
            run *r = &runs[i];
            if (!r->epochs) {
                fprintf(f, "| %s | %g | %d | failed | | | | | | | |\n", opt_label(r->opt), r->lr, r->batch);
                continue;
            }
            char lr[32], cells[160];
            int ib = target_cells(r, target_loss, target_acc, cells, sizeof cells);
            if (r->lr > 0)
                snprintf(lr, sizeof lr, "%g", r->lr);
            else /* K-FAC: the net file's lr, the grid's damping */
                snprintf(lr, sizeof lr, "0.03 (damping %g)", r->damping > 0 ? r->damping : 0.1);
            fprintf(f, "| %s%s%s | %s | %d | %s | %.4f (%d) | %.4f | %.2f | %.0f |\n", best[i] ? "**" : "",
                    opt_label(r->opt), best[i] ? "**" : "", lr, r->batch, cells, r->test_metric[ib], ib + 1,
                    r->train_loss[r->epochs - 1], r->seconds[r->epochs - 1] / r->epochs, r->peak_mib);
        }
        fprintf(f, "\nBold: the best learning rate and batch of each optimizer (by time to the loss target); the chart "
                   "shows those.\n");
        if (fo >= 0 && best_of[3] >= 0) {
            double tf = time_to_loss(&runs[fo], target_loss), tk = time_to_loss(&runs[best_of[3]], target_loss);
            if (!c.quick && rep_of[0][1] >= 0 && rep_of[1][1] >= 0) {
                tf = median3(tf, time_to_loss(&runs[rep_of[0][0]], target_loss), time_to_loss(&runs[rep_of[0][1]], target_loss));
                tk = median3(tk, time_to_loss(&runs[rep_of[1][0]], target_loss), time_to_loss(&runs[rep_of[1][1]], target_loss));
                fprintf(f, "\nMedians of 3 runs each (the first-order winner and K-FAC):");
            } else {
                fprintf(f, "\nOne run each:");
            }
            if (isnan(tf) || isnan(tk))
                fprintf(f, " time to training loss %.2f: best first-order (%s, lr %g, batch %d) %s, K-FAC %s within %d "
                           "epochs.\n",
                        target_loss, opt_label(runs[fo].opt), runs[fo].lr, runs[fo].batch, isnan(tf) ? "not reached" : "reached",
                        isnan(tk) ? "not reached" : "reached", c.clf_epochs);
            else
                fprintf(f, " time to training loss %.2f: best first-order (%s, lr %g, batch %d) %.1f s, K-FAC (batch %d, "
                           "damping %g) %.1f s: **K-FAC takes %.2f of the best first-order time** (target: at most 0.45; "
                           "stretch 1/3).\n",
                        target_loss, opt_label(runs[fo].opt), runs[fo].lr, runs[fo].batch, tf, runs[best_of[3]].batch,
                        runs[best_of[3]].damping > 0 ? runs[best_of[3]].damping : 0.1, tk, tk / tf);
        }
        fprintf(f, "\n![fmnist-mlp](%sfmnist-mlp.png)\n", pre);

        fprintf(f, "\n## Deep autoencoder: nets/mnist-autoencoder (784-1000-500-250-30, mirrored), batch 500, %.0f s of "
                   "training each\n\n",
                c.ae_seconds);
        fprintf(f, "Martens & Grosse §13 on Fashion-MNIST images. Training error: Bernoulli cross-entropy and squared "
                   "error per image on the first %d training images after each epoch. Nesterov (momentum 0.99) over lr "
                   "%s; K-FAC with the net file's settings (lr 0.1, momentum 0.9, kl_clip 0.1, damping 0.1).\n\n",
                c.ae_eval_n, c.quick ? "0.001" : "0.0003, 0.001, 0.003 (0.01 and 0.03 never left the first plateau in earlier runs)");
        fprintf(f, "| optimizer | lr | epochs | iterations | seconds | train cross-entropy | train squared error | test "
                   "squared error | peak MiB |\n|---|---|---|---|---|---|---|---|---|\n");
        for (int i = n_clf; i < n_ae; i++) {
            run *r = &runs[i];
            if (!r->epochs) {
                fprintf(f, "| %s | %g | %s | | | | | | |\n", opt_label(r->opt), r->lr, r->failed ? "diverged" : "failed");
                continue;
            }
            int k = r->epochs - 1;
            char lr[32];
            snprintf(lr, sizeof lr, r->lr > 0 ? "%g" : "0.1 (net file)", r->lr);
            fprintf(f, "| %s%s%s | %s | %.2f%s | %ld | %.1f | %.2f | %.2f | %.2f | %.0f |\n", best[i] ? "**" : "",
                    opt_label(r->opt), best[i] ? "**" : "", lr, r->epoch_of[k], r->failed ? " (diverged)" : "",
                    r->iterations[k], r->seconds[k], r->eval_loss[k], r->eval_metric[k], r->test_metric[k], r->peak_mib);
        }
        if (ae_best >= 0 && ae_kfac >= 0) {
            run *s = &runs[ae_best], *k = &runs[ae_kfac];
            double target = s->eval_loss[s->epochs - 1];
            int ik = first_below(k->eval_loss, k->epochs, target);
            if (ik >= 0)
                fprintf(f, "\nNesterov (lr %g) ends its %.0f s at cross-entropy %.2f; K-FAC reaches it after %.1f s (%ld "
                           "iterations against %ld; curves evaluated every quarter epoch): **%.2f of SGD's time, %.1fx "
                           "faster in wall-clock, %.1fx fewer iterations** (target: at most 1/4 of the time; "
                           "tensorflow/kfac reports 3.8x and 14.7x for an 8-layer autoencoder).\n",
                        s->lr, s->seconds[s->epochs - 1], target, k->seconds[ik], k->iterations[ik],
                        s->iterations[s->epochs - 1], k->seconds[ik] / s->seconds[s->epochs - 1],
                        s->seconds[s->epochs - 1] / k->seconds[ik],
                        (double)s->iterations[s->epochs - 1] / k->iterations[ik]);
            else
                fprintf(f, "\nNesterov (lr %g) ends at cross-entropy %.2f; K-FAC does not reach it within its budget.\n",
                        s->lr, target);
            /* stricter: the lowest error Nesterov reached anywhere in its
             * budget (it can climb back up on this problem) */
            int lo = 0;
            for (int j = 1; j < s->epochs; j++)
                if (s->eval_loss[j] < s->eval_loss[lo])
                    lo = j;
            int jk = first_below(k->eval_loss, k->epochs, s->eval_loss[lo]);
            if (jk >= 0)
                fprintf(f, "\nStricter: the lowest error Nesterov reached anywhere in its budget is %.2f, at %.1f s; K-FAC "
                           "reaches it after %.1f s (%ld iterations against %ld): **%.2f of SGD's time, %.1fx faster**.\n",
                        s->eval_loss[lo], s->seconds[lo], k->seconds[jk], k->iterations[jk], s->iterations[lo],
                        k->seconds[jk] / s->seconds[lo], s->seconds[lo] / k->seconds[jk]);
        }
        fprintf(f, "\n![autoencoder](%sautoencoder.png)\n\n![autoencoder squared error](%sautoencoder-squared.png)\n", pre,
                pre);
    }

    if (n_cnn > n_ae)
        cnn_section(f, &c, runs, n_ae, n_cnn, best, cnn_best, pre);
    if (n_first > n_cnn)
        modes_section(f, &c, runs, n_cnn, n_modes_clf, n_first, target_loss, target_acc);

    if (n_inc) {
        fprintf(f, "\n## Throughput (same session)\n\n");
        for (int i = 0; i < n_inc; i++) {
            const char *base = strrchr(includes[i], '/');
            fprintf(f, "`%s`:\n\n", base ? base + 1 : includes[i]);
            include_file(f, includes[i]);
            fprintf(f, "\n");
        }
    }
    fprintf(f, "\nPer-run CSVs (epoch, iterations, seconds, train_loss, test_loss, test_metric, train_eval_loss, "
               "train_eval_metric) are in `%s`.\n", *pre ? pre : "./");
    fclose(f);
    printf("wrote %s\n", path);
    return 0;
}
