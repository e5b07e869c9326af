/* bench_kfac.c - the K-FAC epoch of nets/fmnist-mlp next to the SGD epoch
 * in the same run, at each batch size asked for, with K-FAC's breakdown
 * (statistics, inversions, preconditioning, F-vector products) and
 * training losses: low-rank inverses (the default), dense Cholesky
 * inverses, and (at the first batch) the quadratic rule.
 *
 * usage: bench_kfac [NETFILE] [DATA_DIR] [EPOCHS] [BATCHES, default 128,1024] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kfac.h"
#include "plural.h"

enum { MAX_RUNS = 4, MAX_EPOCHS = 16 };

/* the median of v[0..n), v untouched */
static double median(const double *in, int n)
{
    double v[MAX_EPOCHS];
    memcpy(v, in, sizeof(double) * (size_t)n);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

/* Epoch times of several configurations, interleaved epoch by epoch so
 * that the machine's drift (this VM's speed moves by 20% over minutes)
 * falls on all of them alike. */

static int run_interleaved(const kfac_net_spec *s, const kfac_train_params *p, int runs, const kfac_dataset *d,
                           const int *epochs, double times[][MAX_EPOCHS], double losses[][MAX_EPOCHS],
                           kfac_kfac_stats *ks)
{
    kfac_trainer *t[MAX_RUNS] = {0};
    double prev[MAX_RUNS] = {0};
    int st = 0, most = 0;
    for (int r = 0; r < runs && !st; r++) {
        st = kfac_trainer_new(s, &p[r], d, &t[r]) != KFAC_OK;
        most = epochs[r] > most ? epochs[r] : most;
    }
    for (int e = 0; e < most && !st; e++)
        for (int r = 0; r < runs && !st; r++) {
            if (e >= epochs[r])
                continue;
            kfac_epoch_stats es;
            st = kfac_trainer_epoch(t[r], NULL, NULL, &es) != KFAC_OK;
            times[r][e] = es.seconds - prev[r];
            losses[r][e] = es.train_loss;
            prev[r] = es.seconds;
        }
    for (int r = 0; r < runs; r++) {
        if (!st && p[r].optimizer == KFAC_OPT_KFAC)
            kfac_trainer_kfac_stats(t[r], &ks[r]);
        kfac_trainer_free(t[r]);
    }
    return st ? -1 : 0;
}

/* One batch size: SGD, K-FAC with its defaults (low-rank inverses), K-FAC
 * with dense Cholesky inverses (the exact factored damping, for the losses
 * and the old cost) and, if quad, the quadratic rule. */
static int bench_batch(const kfac_net_spec *spec, const kfac_train_params *base, const kfac_dataset *train,
                       int batch, int epochs, int quad)
{
    enum { SGD, LOWRANK, DENSE, QUAD };
    kfac_train_params p[4] = {*base, *base, *base, *base};
    for (int r = 0; r < 4; r++) {
        p[r].batch = batch;
        /* past 128 rows the statistics take 128 of them (at 1024 the
         * paper's 1/8); the losses printed show what that costs */
        p[r].kfac.stat_fraction = batch > 128 ? 128.0f / batch : 1.0f;
    }
    p[SGD].optimizer = KFAC_OPT_SGD;
    p[SGD].optim.lr = 0.05f;
    kfac_train_params_set(&p[SGD], "sgd.lr", "inherit"); /* this lr, not the net file's [sgd] one */
    p[LOWRANK].optimizer = p[DENSE].optimizer = p[QUAD].optimizer = KFAC_OPT_KFAC;
    p[DENSE].kfac.inversion = KFAC_INV_CHOLESKY;
    p[QUAD].kfac.rule = KFAC_RULE_QUADRATIC;
    p[QUAD].kfac.damping = 1.0f;
    int runs = quad ? 4 : 3;
    int ep[4] = {epochs, epochs, epochs, epochs > 1 ? epochs - 1 : 1};
    double times[4][MAX_EPOCHS], losses[4][MAX_EPOCHS];
    kfac_kfac_stats ks[4];
    if (run_interleaved(spec, p, runs, train, ep, times, losses, ks))
        return -1;
    char share[32] = "the whole";
    if (p[LOWRANK].kfac.stat_fraction < 1.0f)
        snprintf(share, sizeof share, "%g of the", (double)p[LOWRANK].kfac.stat_fraction);
    printf("\n## batch %d: median of %d interleaved epoch%s each; K-FAC statistics on %s batch\n", batch, epochs,
           KFAC_S(epochs), share);
    /* "x SGD" is the ratio of the medians; "paired" the median of each
     * round's ratio to the SGD epoch run just before it, which cancels
     * drift slower than a round (this VM's speed can move 30% within a
     * minute) */
    printf("%-36s %9s %7s %7s   %-30s %s\n", "run", "s/epoch", "x SGD", "paired", "(epochs in run order: s each)",
           "training loss per epoch");
    const char *names[4] = {"sgd (lr 0.05)", "kfac, lowrank inverses (default)", "kfac, dense cholesky inverses",
                            "kfac, quadratic rule (F products)"};
    double med[4], paired[4];
    for (int r = 0; r < runs; r++) {
        double ratio[MAX_EPOCHS];
        for (int e = 0; e < ep[r]; e++)
            ratio[e] = times[r][e] / times[SGD][e];
        med[r] = median(times[r], ep[r]);
        paired[r] = median(ratio, ep[r]);
    }
    for (int r = 0; r < runs; r++) {
        char each[128] = "(";
        for (int e = 0; e < ep[r]; e++)
            snprintf(each + strlen(each), sizeof each - strlen(each), "%s%.2f", e ? " " : "", times[r][e]);
        strcat(each, ")");
        printf("%-36s %9.3f %7.2f %7.2f   %-30s", names[r], med[r], med[r] / med[SGD], paired[r], each);
        for (int e = 0; e < ep[r]; e++)
            printf(" %.4f", losses[r][e]);
        printf("\n");
    }
    /* the breakdowns are cumulative over the runs' epochs: per epoch */
    printf("\nper epoch, seconds            statistics  inversions  precondition  F-products  rest (fwd/bwd, data)\n");
    for (int r = 1; r < runs; r++) {
        double e = ep[r], total = 0;
        for (int k = 0; k < ep[r]; k++)
            total += times[r][k];
        const kfac_kfac_stats *k = &ks[r];
        printf("%-28s %10.3f  %10.3f  %12.3f  %10.3f  %10.3f   (%ld inversion%s)\n", names[r], k->seconds_stats / e,
               k->seconds_invert / e, k->seconds_precond / e, k->seconds_fvp / e,
               (total - k->seconds_stats - k->seconds_invert - k->seconds_precond - k->seconds_fvp) / e, k->inversions,
               KFAC_S(k->inversions));
    }
    /* what the cost model chose: ranks of the inverses of A and G, form */
    printf("layers of the lowrank run (rank of A^-1, rank of G^-1, form (MFLOP of the batch/weight forms)):\n ");
    for (int l = 0; l < ks[LOWRANK].n_layers; l++)
        printf(" %d:%d,%d,%s(%.1f/%.1f)", l + 1, ks[LOWRANK].rank_a[l], ks[LOWRANK].rank_g[l],
               ks[LOWRANK].batch_form[l] ? "batch" : "weights", ks[LOWRANK].flops_batch[l] / 1e6,
               ks[LOWRANK].flops_weights[l] / 1e6);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *netfile = argc > 1 ? argv[1] : "nets/fmnist-mlp.net";
    const char *data = argc > 2 ? argv[2] : KFAC_DEFAULT_DATA_DIR;
    int epochs = argc > 3 ? atoi(argv[3]) : 3;
    const char *batches = argc > 4 ? argv[4] : "128,1024";
    if (epochs < 1 || epochs > MAX_EPOCHS)
        epochs = 3;
    kfac_net_spec spec;
    kfac_train_params base;
    kfac_dataset train = {0};
    if (kfac_netfile_load(netfile, &spec, &base) != KFAC_OK || kfac_mnist_load(data, "train", &train) != KFAC_OK) {
        fprintf(stderr, "bench_kfac: %s\n", kfac_last_error());
        return 1;
    }
    kfac_set_threads(0);
    base.kfac.cov_every = 10; /* KFAC-Pytorch's defaults */
    base.kfac.inv_every = 100;
    const char *core = getenv("OPENBLAS_CORETYPE");
    int threads = kfac_get_threads();
    printf("# %s, batches %s, %d thread%s, OPENBLAS_CORETYPE=%s, T_cov 10, T_inv 100\n", netfile, batches, threads,
           KFAC_S(threads), core ? core : "(unset)");
    int first = 1;
    for (const char *b = batches; *b;) {
        int batch = atoi(b);
        if (batch < 1 || bench_batch(&spec, &base, &train, batch, epochs, first)) {
            fprintf(stderr, "bench_kfac: batch '%s': %s\n", b, batch < 1 ? "not a batch size" : kfac_last_error());
            return 1;
        }
        first = 0;
        b += strcspn(b, ",");
        b += *b == ',';
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\npeak resident memory of this process: %.0f MiB\n", ru.ru_maxrss / 1024.0);
    kfac_dataset_free(&train);
    return 0;
}
