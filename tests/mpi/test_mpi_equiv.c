/* test_mpi_equiv.c - data-parallel training against one process, run by
 * `make mpi-test` as `mpirun -np 2 test_mpi_equiv NETFILE... DATADIR`.
 *
 * For SGD and K-FAC configurations, on each net file (a dense one and a
 * convolutional one, whose K-FAC factors are KFC's, over each example's
 * positions: docs/algorithm.md §9), N ranks with global batch B (each
 * rank B/N rows) must end with the parameters of one process trained with
 * batch B, same seed, up to float rounding; every rank must hold the same
 * parameters bit for bit; and a failure on one rank (a mismatched trainer,
 * a non-finite loss, a batch too small to split) must come back from
 * every rank instead of hanging. The one-process reference runs inside
 * rank 0 while the others wait.
 *
 * Tolerance: the two runs differ only in float32 summation order (each
 * rank sums its rows, then the ranks' sums are added), about 1e-7
 * relative per reduction, and training carries such differences on. SGD
 * and momentum keep them at that level: TOL_FIRST = 1e-5 (measured 1e-7).
 * K-FAC multiplies them by the damped curvature's condition number, which
 * grows as 1/lambda: measured on tiny.net, exact Tikhonov (eigen) 4.4e-4
 * at lambda = 1e-3 and 3e-5 at 1e-2, factored damping 1e-5 at 1e-3. So
 * K-FAC's tolerance is max(TOL_FIRST, 2e-6 / lambda), 2e-3 at tiny.net's
 * 1e-3. A real mistake (a gradient or a statistic not averaged, a row
 * counted twice, a different sample) moves the weights by about the
 * difference to the unaveraged control printed alongside: one process
 * training on a single rank's B/N rows, which must also be at least 100
 * times further away than the group. */
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"

#define TOL_FIRST 1e-5
#define EPOCHS 2
#define EXAMPLES 5000 /* 5000 = 49 x 101 + 51: every batch splits unevenly */
#define BATCH 101

static int rank, size, failures;
static MPI_Comm world;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL (rank %d) ", rank);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

/* A trained copy of the parameters, alone (comm NULL) or in the group. */
static float *train(const kfac_net_spec *spec, const kfac_train_params *p, const kfac_dataset *d, int group,
                    double *loss, kfac_kfac_stats *ks)
{
    kfac_trainer *t;
    kfac_status st = kfac_trainer_new(spec, p, d, &t);
    if (st == KFAC_OK && group)
        st = kfac_trainer_set_mpi_comm(t, &world);
    kfac_epoch_stats es = {0};
    for (int e = 0; e < EPOCHS && st == KFAC_OK; e++)
        st = kfac_trainer_epoch(t, NULL, NULL, &es);
    if (st != KFAC_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, kfac_last_error());
        MPI_Abort(world, 1); /* the test cannot go on: never hang */
    }
    if (group && kfac_trainer_ranks(t) != size)
        fail("the trainer runs on %d ranks, not %d", kfac_trainer_ranks(t), size);
    *loss = es.train_loss;
    if (ks && kfac_trainer_kfac_stats(t, ks) != KFAC_OK)
        memset(ks, 0, sizeof *ks);
    kfac_net *net = kfac_trainer_net(t);
    size_t n = kfac_net_n_params(net);
    float *theta = malloc(sizeof(float) * n);
    memcpy(theta, kfac_net_params(net), sizeof(float) * n);
    kfac_trainer_free(t);
    return theta;
}

/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / den;
}

typedef struct config {
    const char *name;
    kfac_optimizer_kind opt;
    int cov_every, inv_every;
    float stat_fraction, weight_decay;
    kfac_inversion inversion;
    kfac_step_rule rule;
    int batch;    /* 0: BATCH */
    int examples; /* 0: EXAMPLES */
    int rank_max; /* 0: the default */
    float fvp_fraction; /* 0: the default */
    int pool_avg; /* 1: the network's max poolings made average ones */
    float damping; /* 0: the net file's */
} config;

static void equivalence(const kfac_net_spec *spec_in, const kfac_train_params *base, const kfac_dataset *all,
                        const config *c)
{
    kfac_net_spec avg = *spec_in;
    for (int l = 0; l < avg.n_layers; l++)
        if (c->pool_avg && avg.layers[l].kind == KFAC_LAYER_MAXPOOL)
            avg.layers[l].kind = KFAC_LAYER_AVGPOOL;
    const kfac_net_spec *spec = &avg;
    kfac_dataset view = *all, *d = &view;
    view.n = c->examples ? c->examples : EXAMPLES;
    kfac_train_params p = *base;
    p.optimizer = c->opt;
    p.batch = c->batch ? c->batch : BATCH;
    p.epochs = EPOCHS;
    p.optim.weight_decay = c->weight_decay;
    p.kfac.cov_every = c->cov_every;
    p.kfac.inv_every = c->inv_every;
    p.kfac.stat_fraction = c->stat_fraction;
    p.kfac.inversion = c->inversion;
    p.kfac.rule = c->rule;
    if (c->rank_max)
        p.kfac.rank_max = c->rank_max;
    if (c->fvp_fraction > 0)
        p.kfac.fvp_fraction = c->fvp_fraction;
    if (c->rule == KFAC_RULE_QUADRATIC)
        p.kfac.damping = 1.0f;
    if (c->damping > 0)
        p.kfac.damping = c->damping;
    int kf = c->opt == KFAC_OPT_KFAC;
    double tol = kf ? fmax(TOL_FIRST, 2e-6 / p.kfac.damping) : TOL_FIRST;
    size_t n = 0;
    float *ref = NULL, *ctrl = NULL, *init = NULL;
    double ref_loss = 0, ctrl_loss, loss;
    if (rank == 0) {
        kfac_trainer *t;
        if (kfac_trainer_new(spec, &p, d, &t) == KFAC_OK) {
            n = kfac_net_n_params(kfac_trainer_net(t));
            init = malloc(sizeof(float) * n);
            memcpy(init, kfac_net_params(kfac_trainer_net(t)), sizeof(float) * n);
            kfac_trainer_free(t);
        }
        ref = train(spec, &p, d, 0, &ref_loss, NULL);
        kfac_train_params q = p;
        q.batch = p.batch / size; /* one rank's rows, not averaged */
        ctrl = train(spec, &q, d, 0, &ctrl_loss, NULL);
    }
    MPI_Barrier(world);
    double t0 = MPI_Wtime();
    kfac_kfac_stats ks;
    float *theta = train(spec, &p, d, 1, &loss, kf ? &ks : NULL);
    double seconds = MPI_Wtime() - t0;

    /* the replicas: rank 0's parameters on every rank, compared bit for bit */
    unsigned long long np = n;
    MPI_Bcast(&np, 1, MPI_UNSIGNED_LONG_LONG, 0, world);
    n = (size_t)np;
    float *root = malloc(sizeof(float) * n);
    memcpy(root, theta, sizeof(float) * n);
    MPI_Bcast(root, (int)n, MPI_FLOAT, 0, world);
    int differ = memcmp(root, theta, sizeof(float) * n) != 0, any = differ;
    MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, world);
    if (differ)
        fail("%s: this rank's parameters differ from rank 0's", c->name);
    if (rank == 0) {
        double err = rel_diff(theta, ref, n), ctrl_err = rel_diff(ctrl, ref, n), moved = rel_diff(ref, init, n);
        printf("%-31s %d ranks vs 1: max|dtheta|/max|theta| %.2e (tol %.0e); unaveraged control %.2e; "
               "weights moved %.2e; train loss %.6f vs %.6f; replicas %s; %.2f s\n",
               c->name, size, err, tol, ctrl_err, moved, loss, ref_loss, any ? "DIFFER" : "identical", seconds);
        if (kf)
            printf("%-31s %ld statistics rounds, %ld inversions on the group\n", "", ks.stats_rounds, ks.inversions);
        if (!(err <= tol))
            fail("%s: error %g above the tolerance", c->name, err);
        if (!(err * 100 <= ctrl_err))
            fail("%s: error %g not 100x below the unaveraged control", c->name, err);
        if (!(moved > 100 * tol))
            fail("%s: the weights hardly moved (%g): nothing was tested", c->name, moved);
        if (!(fabs(loss - ref_loss) <= 1e-3 * ref_loss))
            fail("%s: the group's training loss differs from one process's by %g", c->name, loss - ref_loss);
        if (kf && (ks.stats_rounds < 2 || ks.inversions < 2))
            fail("%s: too few statistics rounds (%ld) or inversions (%ld)", c->name, ks.stats_rounds, ks.inversions);
    }
    free(theta), free(root), free(ref), free(ctrl), free(init);
}

/* A failure that starts on one rank must come back from every rank. */
static void expect_all(const char *what, kfac_status got, kfac_status want)
{
    int bad = got != want, any = bad;
    MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, world);
    if (bad)
        fail("%s: status '%s', not '%s'", what, kfac_strerror(got), kfac_strerror(want));
    if (rank == 0 && !any)
        printf("%-31s every rank returned '%s'\n", what, kfac_strerror(want));
}

static void failures_agree(const kfac_net_spec *spec, const kfac_train_params *base, const kfac_dataset *d)
{
    kfac_train_params p = *base;
    p.batch = BATCH;
    p.optimizer = KFAC_OPT_KFAC;
    kfac_trainer *t;

    /* rank 1 with another seed: its weights and data order differ */
    kfac_train_params q = p;
    q.seed += rank == 1;
    if (kfac_trainer_new(spec, &q, d, &t) != KFAC_OK)
        MPI_Abort(world, 1);
    expect_all("mismatched trainers", kfac_trainer_set_mpi_comm(t, &world), KFAC_ERR_INVALID_ARG);
    kfac_trainer_free(t);

    /* a batch with fewer rows than ranks */
    q = p;
    q.batch = size - 1;
    if (kfac_trainer_new(spec, &q, d, &t) != KFAC_OK)
        MPI_Abort(world, 1);
    expect_all("batch smaller than the group", kfac_trainer_set_mpi_comm(t, &world), KFAC_ERR_INVALID_ARG);
    kfac_trainer_free(t);

    /* the last rank's copy of the data is not finite: its loss alone is */
    kfac_dataset bad = *d;
    size_t nx = (size_t)d->n * d->features;
    bad.x = malloc(sizeof(float) * nx);
    memcpy(bad.x, d->x, sizeof(float) * nx);
    if (rank == size - 1)
        for (size_t i = 0; i < nx; i++)
            bad.x[i] = INFINITY;
    kfac_status st;
    if (kfac_trainer_new(spec, &p, &bad, &t) != KFAC_OK || kfac_trainer_set_mpi_comm(t, &world) != KFAC_OK)
        MPI_Abort(world, 1);
    st = kfac_trainer_epoch(t, NULL, NULL, NULL);
    expect_all("non-finite loss on one rank", st, KFAC_ERR_NUMERIC);
    kfac_trainer_free(t);
    free(bad.x);
}

/* rank 0's progress callback stops the epoch after step 3: every rank
 * stops there (at step 4's agreement), leaves the epoch unfinished at the
 * same position, and finishes it in the next call. */
static int stop_on_rank0(void *user, long step, long steps)
{
    (void)user, (void)steps;
    return rank == 0 && step == 3;
}

static void stop_agrees(const kfac_net_spec *spec, const kfac_train_params *base, const kfac_dataset *d)
{
    kfac_train_params p = *base;
    p.batch = BATCH;
    p.optimizer = KFAC_OPT_KFAC;
    kfac_trainer *t;
    if (kfac_trainer_new(spec, &p, d, &t) != KFAC_OK || kfac_trainer_set_mpi_comm(t, &world) != KFAC_OK)
        MPI_Abort(world, 1);
    kfac_epoch_position pos;
    kfac_status st = kfac_trainer_epoch(t, stop_on_rank0, NULL, NULL);
    kfac_trainer_position(t, &pos);
    int bad = st != KFAC_OK || kfac_trainer_epochs_done(t) != 0 || pos.examples != 3L * BATCH;
    st = kfac_trainer_epoch(t, NULL, NULL, NULL);
    kfac_trainer_position(t, &pos);
    bad |= st != KFAC_OK || kfac_trainer_epochs_done(t) != 1 || pos.examples != 0;
    int any = bad;
    MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, world);
    if (bad)
        fail("a stop on rank 0: this rank did not stop after step 3 and finish the epoch next");
    if (rank == 0 && !any)
        printf("%-31s every rank stopped after step 3 and finished the epoch next\n", "a stop on rank 0");
    kfac_trainer_free(t);
}

/* The set-ups for a network of dense layers only. */
static const config dense_configs[] = {
    {"sgd", KFAC_OPT_SGD, 1, 1, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 0, 0, 0, 0.0f, 0, 0.0f},
    {"momentum, weight decay 1e-3", KFAC_OPT_MOMENTUM, 1, 1, 1.0f, 1e-3f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 0,
     0, 0, 0.0f, 0, 0.0f},
    {"kfac cholesky T_cov 2 T_inv 10", KFAC_OPT_KFAC, 2, 10, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 0, 0,
     0, 0.0f, 0, 0.0f},
    {"kfac eigen, stats on 1/2, decay", KFAC_OPT_KFAC, 3, 20, 0.5f, 1e-3f, KFAC_INV_EIGEN, KFAC_RULE_KL_CLIP, 0, 0,
     0, 0.0f, 0, 0.0f},
    /* EKFAC: each rank's part of the diagonal (here 50 rows and 1 of
     * the 51) summed over the group; 16 steps, 8 rounds, 6
     * decompositions, the average restarted after each. Only 16: the
     * diagonal takes a quarter or more of each round's rows, so one
     * sampled class that rounding flips (the two runs' outputs differ
     * by about 1e-6) moves it by percents, and at step 17 of this
     * data one does (its g differs while the weights still agree to
     * 3e-5); A and G, averaged at 0.05 a round, barely notice */
    {"kfac ekfac, stats on 1/2", KFAC_OPT_KFAC, 2, 10, 0.5f, 0.0f, KFAC_INV_EKFAC, KFAC_RULE_KL_CLIP, 0, 808, 0,
     0.0f, 0, 0.0f},
    /* tridiag (docs/algorithm.md §4.7): the cross moments of adjacent
     * layers in the same staged sum as the factors; every rank then
     * inverts the same statistics itself */
    {"kfac tridiag, stats on 1/2", KFAC_OPT_KFAC, 2, 10, 0.5f, 0.0f, KFAC_INV_TRIDIAG, KFAC_RULE_KL_CLIP, 0, 0, 0,
     0.0f, 0, 0.0f},
    {"kfac quadratic rule", KFAC_OPT_KFAC, 1, 5, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_QUADRATIC, 0, 0, 0, 0.0f,
     0, 0.0f},
    /* F products on the first 51 of 101 rows: all of rank 0's 50, one
     * of rank 1's */
    {"kfac quadratic, F on half the batch", KFAC_OPT_KFAC, 1, 5, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_QUADRATIC, 0,
     0, 0, 0.5f, 0, 0.0f},
    /* lowrank inverses (2 (16 + 8) <= 50: the first A), each on its
     * owner rank, basis, rank and constant broadcast. Damping 1e-2, not
     * the net file's 1e-3: at 1e-3 fifteen of A's eigenvalues pass 0.3
     * gamma, rank_max 16 binds, and the cut falls inside the spectrum
     * where the kept subspace is ill-determined (docs/algorithm.md
     * §4.4): rounding alone then moved the two runs 1.7e-2 apart with
     * OpenBLAS's Haswell kernels (1.7e-4 with its SkylakeX ones, the same
     * machine). At 1e-2 the sketch sizes itself (10-12 pairs kept, the
     * cut in the tail): 4e-6 and 8e-6 with the two kernels. */
    {"kfac lowrank inverses", KFAC_OPT_KFAC, 2, 10, 1.0f, 0.0f, KFAC_INV_LOWRANK, KFAC_RULE_KL_CLIP, 0, 0, 16, 0.0f,
     0, 0.01f},
    /* 5 or 6 rows a rank: the batch form, its slices' deltas summed.
     * K-FAC on batches of 11 is chaotic: rounding differences grow
     * from 7e-7 after 10 steps to 5e-5 after 200 and 3e-2 after 400,
     * so 200 steps (1100 examples, 2 epochs; 3.9e-4 here) */
    {"kfac batch form, batch 11", KFAC_OPT_KFAC, 2, 10, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 11, 1100,
     0, 0.0f, 0, 0.0f},
    /* lowrank inverses in the batch form, slices' parts summed. Only 4
     * steps: batch-11 K-FAC is chaotic, and the low-rank apply
     * (c x + (x U^T) e U, cancelling along U) starts from about 5e-6
     * instead of 1e-7, so after 40 steps the two runs are 9e-3 apart.
     * rank_max 16, not 4: a truncation inside the spectrum's large
     * part leaves the kept subspace ill-determined (l_k ~ l_k+1), and
     * rounding then moves the inverse by 1e-3 in a step. */
    {"kfac lowrank, batch form, batch 11", KFAC_OPT_KFAC, 2, 10, 1.0f, 0.0f, KFAC_INV_LOWRANK, KFAC_RULE_KL_CLIP,
     11, 22, 16, 0.0f, 0, 0.0f},
};

/* The set-ups for a network with convolutions and pooling: each rank's
 * rows carry all of their examples' positions, so a slice of the batch is
 * a slice of the rows of abar and g (B/N examples x positions). No EKFAC:
 * it refuses convolutional layers.
 *
 * Only 20 steps (1010 examples) with max pooling: its backward pass
 * routes each window's gradient to the largest input, so once rounding
 * reorders a near tie a weight takes another path. On tiny-cnn.net K-FAC
 * (Cholesky, every row in the statistics) agrees to 5e-6 after 4, 20 and
 * 40 steps and then jumps: 2.6e-4 after 60, 4.4e-2 after 100. One process
 * started from weights moved by 1 ulp does the same (4.5e-6 after 40
 * steps, after 100 the same 4.39e-2 from the reference): the network's
 * sensitivity, not the group's. With average pooling, which has no such
 * switch, the group stays within 1.5e-5 for all 100 steps: the last
 * set-up (pool_avg) runs the same network so. */
static const config cnn_configs[] = {
    {"cnn sgd", KFAC_OPT_SGD, 1, 1, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 0, 1010, 0, 0.0f, 0, 0.0f},
    /* statistics on 51 rows: rank 0's 50, one of rank 1's */
    {"cnn kfac cholesky, stats on 1/2", KFAC_OPT_KFAC, 2, 10, 0.5f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 0, 1010,
     0, 0.0f, 0, 0.0f},
    /* statistics on 34 rows, all rank 0's: rank 1 adds nothing. Exact
     * Tikhonov damping is this network's most sensitive set-up: after 20
     * steps (T_cov 2, T_inv 5) the group is 1.1e-2 from one process, and
     * one process from weights moved by 1 ulp 2.7e-2; after 10 steps
     * (T_cov = T_inv = 1) 6.7e-5 and 1.1e-4. So 10 steps. */
    {"cnn kfac eigen, stats on 1/3, decay", KFAC_OPT_KFAC, 1, 1, 0.33f, 1e-3f, KFAC_INV_EIGEN, KFAC_RULE_KL_CLIP, 0,
     505, 0, 0.0f, 0, 0.0f},
    /* the R-op through the convolution and the max pooling, F on 51 rows */
    {"cnn kfac quadratic, F on half", KFAC_OPT_KFAC, 1, 5, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_QUADRATIC, 0,
     1010, 0,
     0.5f, 0, 0.0f},
    /* the dense layer's A (197 x 197) low-rank, on its owner rank */
    {"cnn kfac lowrank inverses", KFAC_OPT_KFAC, 2, 10, 1.0f, 0.0f, KFAC_INV_LOWRANK, KFAC_RULE_KL_CLIP, 0, 1010, 16,
     0.0f, 0, 0.0f},
    /* 5 or 6 examples a rank: the convolution in the weight form (its
     * rows are examples x positions), the dense layer in the batch form;
     * 200 steps */
    {"cnn kfac batch 11", KFAC_OPT_KFAC, 2, 10, 1.0f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 11, 1100, 0, 0.0f,
     0, 0.0f},
    {"cnn avg pooling, kfac, stats 1/2", KFAC_OPT_KFAC, 2, 10, 0.5f, 0.0f, KFAC_INV_CHOLESKY, KFAC_RULE_KL_CLIP, 0,
     0, 0,
     0.0f, 1, 0.0f},
    /* EKFAC on the convolution: each rank's examples' projected
     * gradients (positions summed per example) in the group's sum; the
     * dense set-up's 8 steps, average pooling */
    {"cnn kfac ekfac, stats on 1/2", KFAC_OPT_KFAC, 2, 10, 0.5f, 0.0f, KFAC_INV_EKFAC, KFAC_RULE_KL_CLIP, 0, 808, 0,
     0.0f, 1, 0.0f},
};

static int spatial(const kfac_net_spec *spec)
{
    for (int l = 0; l < spec->n_layers; l++)
        if (spec->layers[l].kind != KFAC_LAYER_DENSE)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    world = MPI_COMM_WORLD;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    if (argc < 3 || size < 2) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np N test_mpi_equiv NETFILE... DATADIR (N >= 2)\n");
        MPI_Finalize();
        return 2;
    }
    if (!kfac_mpi_available()) {
        fprintf(stderr, "libkfac was built without MPI\n");
        MPI_Abort(world, 2);
    }
    const char *data = argv[argc - 1];
    kfac_dataset full;
    if (kfac_mnist_load(data, "train", &full) != KFAC_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, kfac_last_error());
        MPI_Abort(world, 2);
    }
    for (int a = 1; a < argc - 1; a++) {
        kfac_net_spec spec;
        kfac_train_params base;
        kfac_dataset all = full, d;
        if (kfac_netfile_load(argv[a], &spec, &base) != KFAC_OK) {
            fprintf(stderr, "rank %d: %s\n", rank, kfac_last_error());
            MPI_Abort(world, 2);
        }
        if (spec.input_pool > 1 && kfac_dataset_pool(&full, spec.input_pool, &all) != KFAC_OK)
            MPI_Abort(world, 2);
        d = all;
        d.n = EXAMPLES; /* a view of the first rows */
        int cnn = spatial(&spec);
        if (rank == 0)
            printf("%s# %s on the first %d images of %s: %d epochs of batch %d (%d to %d rows per rank), "
                   "seed %llu, %d threads per rank\n",
                   a > 1 ? "\n" : "", argv[a], EXAMPLES, data, EPOCHS, BATCH, BATCH / size,
                   (BATCH + size - 1) / size, (unsigned long long)base.seed, kfac_get_threads());
        const config *configs = cnn ? cnn_configs : dense_configs;
        size_t n_configs = cnn ? sizeof cnn_configs / sizeof *cnn_configs : sizeof dense_configs / sizeof *dense_configs;
        for (size_t i = 0; i < n_configs; i++)
            equivalence(&spec, &base, &d, &configs[i]);
        if (a == 1) { /* the group's agreements: one network is enough */
            failures_agree(&spec, &base, &d);
            stop_agrees(&spec, &base, &d);
        }
        if (all.x != full.x)
            kfac_dataset_free(&all);
    }

    int total = failures;
    MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT, MPI_SUM, world);
    if (rank == 0)
        printf("%s: %d failure%s\n", total ? "FAILED" : "passed", total, total == 1 ? "" : "s");
    kfac_dataset_free(&full);
    MPI_Finalize();
    return total ? 1 : 0;
}
