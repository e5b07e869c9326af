/* test_dist.c - the pieces of data-parallel training that need no MPI:
 * the balanced assignment of inversions to ranks, sampled targets that do
 * not depend on how a batch is split, batch statistics that add up over
 * the slices of a batch, and the default build refusing a communicator.
 * The collectives themselves: tests/mpi/test_mpi_equiv.c (make mpi-test). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "factors.h"
#include "kfac.h"
#include "loss.h"
#include "tests.h"

/* the largest load of an assignment */
static double makespan(const double *cost, const int *owner, int n, int ranks)
{
    double load[16] = {0}, worst = 0;
    for (int j = 0; j < n; j++)
        load[owner[j]] += cost[j];
    for (int r = 0; r < ranks; r++)
        worst = fmax(worst, load[r]);
    return worst;
}

/* the best makespan, by trying every assignment (n small) */
static double best_makespan(const double *cost, int n, int ranks)
{
    int owner[12] = {0};
    double best = INFINITY;
    for (long code = 0;; code++) {
        long c = code;
        for (int j = 0; j < n; j++, c /= ranks)
            owner[j] = (int)(c % ranks);
        if (c)
            break;
        best = fmin(best, makespan(cost, owner, n, ranks));
    }
    return best;
}

/* LPT is within 4/3 - 1/(3 ranks) of the best (Graham 1969), on random
 * d^3 costs; every job gets a valid owner; and the fmnist-mlp factors
 * (785, 1000; 1001, 500; 501, 100; 101, 10) split over 2 ranks put the
 * two big ones apart. */
START_TEST(test_assignment_balanced)
{
    kfac_rng r;
    kfac_rng_seed(&r, 11);
    for (int trial = 0; trial < 40; trial++) {
        int n = 2 + (int)kfac_rng_below(&r, 7), ranks = 2 + (int)kfac_rng_below(&r, 2);
        double cost[12];
        int owner[12];
        for (int j = 0; j < n; j++) {
            double d = 1 + kfac_rng_below(&r, 1000);
            cost[j] = d * d * d;
        }
        kfac_dist_assign(cost, n, ranks, owner);
        for (int j = 0; j < n; j++)
            ck_assert(owner[j] >= 0 && owner[j] < ranks);
        double got = makespan(cost, owner, n, ranks), best = best_makespan(cost, n, ranks);
        ck_assert_msg(got <= (4.0 / 3.0 - 1.0 / (3.0 * ranks)) * best * (1 + 1e-12),
                      "trial %d: makespan %g, best %g", trial, got, best);
    }
    double d[8] = {785, 1000, 1001, 500, 501, 100, 101, 10}, cost[8];
    int owner[8];
    for (int j = 0; j < 8; j++)
        cost[j] = d[j] * d[j] * d[j];
    kfac_dist_assign(cost, 8, 2, owner);
    ck_assert_int_ne(owner[1], owner[2]);
    /* one rank: everything on rank 0 */
    kfac_dist_assign(cost, 8, 1, owner);
    for (int j = 0; j < 8; j++)
        ck_assert_int_eq(owner[j], 0);
}
END_TEST

/* A batch sampled whole equals its two halves sampled apart with their
 * global row offsets, for every loss; another base draws otherwise. */
START_TEST(test_sampling_partition_independent)
{
    enum { N = 9, D = 5, K = 4 };
    const kfac_loss_type *lt = &kfac_loss_types[_i];
    kfac_rng r;
    kfac_rng_seed(&r, 3);
    float z[N * D], whole[N * D], split[N * D], other[N * D];
    for (int i = 0; i < N * D; i++)
        z[i] = (float)(3.0 * kfac_rng_uniform(&r) - 1.5);
    uint64_t base = kfac_rng_next(&r);
    lt->sample(z, whole, N, D, base, 0);
    lt->sample(z, split, K, D, base, 0);
    lt->sample(z + K * D, split + K * D, N - K, D, base, K);
    ck_assert_msg(memcmp(whole, split, sizeof whole) == 0, "%s: the split batch drew other targets", lt->name);
    /* and the rows are not all alike, nor the same for another base */
    lt->sample(z, other, N, D, base + 1, 0);
    ck_assert_msg(memcmp(whole, other, sizeof whole) != 0, "%s: the base changes nothing", lt->name);
    lt->sample(z, other, N - 1, D, base, 1); /* rows shifted by one */
    ck_assert_msg(memcmp(whole, other, sizeof(float) * (N - 1) * D) != 0, "%s: rows share a stream", lt->name);
}
END_TEST

/* The staged statistics of a batch are the sum of its slices' (each
 * scaled by 1 / the whole batch), as a group's allreduce adds them; a
 * slice of no rows stages zeros; folding gives what accumulate gives. */
START_TEST(test_stats_add_over_slices)
{
    enum { B = 7, DIN = 4, DOUT = 3, K = 3 };
    int din = DIN, dout = DOUT;
    kfac_factors *a, *b;
    ck_assert_int_eq(kfac_factors_new(1, &din, &dout, NULL, B, NULL, NULL, &a), KFAC_OK);
    ck_assert_int_eq(kfac_factors_new(1, &din, &dout, NULL, B, NULL, NULL, &b), KFAC_OK);
    kfac_rng r;
    kfac_rng_seed(&r, 5);
    float abar[B * DIN], g[B * DOUT];
    for (int i = 0; i < B * DIN; i++)
        abar[i] = (float)kfac_rng_normal(&r);
    for (int i = 0; i < B * DOUT; i++)
        g[i] = (float)kfac_rng_normal(&r);
    size_t n;
    kfac_factors_begin_stats(a);
    float *stage = kfac_factors_stage(a, &n);
    ck_assert_uint_eq(n, DIN * (DIN + 1) / 2 + DOUT * (DOUT + 1) / 2);
    float whole[64], sum[64];
    kfac_factors_batch_stats(a, 0, abar, DIN, g, B, 1.0f / B);
    memcpy(whole, stage, sizeof(float) * n);
    kfac_factors_batch_stats(a, 0, abar, DIN, g, K, 1.0f / B);
    memcpy(sum, stage, sizeof(float) * n);
    kfac_factors_batch_stats(a, 0, abar + K * DIN, DIN, g + K * DOUT, B - K, 1.0f / B);
    double scale = 0;
    for (size_t i = 0; i < n; i++) {
        sum[i] += stage[i];
        scale = fmax(scale, fabs(whole[i]));
    }
    ck_assert(scale > 0.1);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(sum[i] - whole[i]) <= 1e-6 * scale, "entry %zu: %g vs %g", i, sum[i], whole[i]);
    kfac_factors_batch_stats(a, 0, abar, DIN, g, 0, 1.0f / B);
    for (size_t i = 0; i < n; i++)
        ck_assert(stage[i] == 0.0f);
    /* stage the whole batch again and fold: accumulate's result */
    kfac_factors_batch_stats(a, 0, abar, DIN, g, B, 1.0f / B);
    kfac_factors_fold(a, 0);
    kfac_factors_begin_stats(b);
    ck_assert_int_eq(kfac_factors_accumulate(b, 0, abar, DIN, g, B), KFAC_OK);
    ck_assert(memcmp(kfac_factors_factor_a(a, 0), kfac_factors_factor_a(b, 0), sizeof(float) * DIN * DIN) == 0);
    ck_assert(memcmp(kfac_factors_factor_g(a, 0), kfac_factors_factor_g(b, 0), sizeof(float) * DOUT * DOUT) == 0);
    /* and A is the full symmetric matrix (abar^T abar)/B */
    const float *A = kfac_factors_factor_a(a, 0);
    for (int i = 0; i < DIN; i++)
        for (int j = 0; j < DIN; j++) {
            double s = 0;
            for (int k = 0; k < B; k++)
                s += (double)abar[k * DIN + i] * abar[k * DIN + j];
            ck_assert_msg(fabs(A[i * DIN + j] - s / B) <= 1e-5 * (1 + fabs(s / B)), "A[%d][%d]", i, j);
        }
    kfac_factors_free(a);
    kfac_factors_free(b);
}
END_TEST

/* Without MPI (this build, unless make MPI=1) a communicator is refused
 * with a reason, and the trainer is left alone. */
START_TEST(test_no_mpi_refused)
{
    if (kfac_mpi_available())
        return; /* an MPI build: tests/mpi covers it */
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = 3;
    s.n_layers = 1;
    s.layers[0] = (kfac_layer_spec){.units = 2, .activation = KFAC_ACT_LINEAR};
    float x[8 * 3] = {0};
    uint8_t labels[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    kfac_dataset d = {8, 3, 1, 3, 2, x, labels};
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.batch = 4;
    kfac_trainer *t;
    ck_assert_int_eq(kfac_trainer_new(&s, &p, &d, &t), KFAC_OK);
    int comm = 0;
    ck_assert_int_eq(kfac_trainer_set_mpi_comm(t, &comm), KFAC_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "MPI=1"));
    ck_assert_int_eq(kfac_trainer_set_mpi_comm(t, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_trainer_rank(t), 0);
    ck_assert_int_eq(kfac_trainer_ranks(t), 1);
    ck_assert_int_eq(kfac_trainer_epoch(t, NULL, NULL, NULL), KFAC_OK);
    kfac_trainer_free(t);
}
END_TEST

Suite *dist_suite(void)
{
    Suite *s = suite_create("dist");
    TCase *tc = tcase_create("dist");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_assignment_balanced);
    tcase_add_loop_test(tc, test_sampling_partition_independent, 0, KFAC_LOSS_COUNT);
    tcase_add_test(tc, test_stats_add_over_slices);
    tcase_add_test(tc, test_no_mpi_refused);
    suite_add_tcase(s, tc);
    return s;
}
