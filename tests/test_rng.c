/* test_rng.c - the generator: reproducible from its seed and its copied
 * state, and its uniform, normal and bounded-integer draws have the
 * moments and spread they should (bounds are several standard errors wide,
 * and the seeds are fixed, so the tests are deterministic). */
#include <math.h>
#include <string.h>

#include "kfac.h"
#include "tests.h"

#define DRAWS 100000

START_TEST(test_same_seed_same_sequence)
{
    kfac_rng a, b;
    kfac_rng_seed(&a, 12345);
    kfac_rng_seed(&b, 12345);
    for (int i = 0; i < 1000; i++) {
        uint64_t x = kfac_rng_next(&a), y = kfac_rng_next(&b);
        ck_assert_msg(x == y, "draw %d differs with the same seed", i);
    }
}
END_TEST

START_TEST(test_different_seeds_differ)
{
    /* neighbouring seeds too: splitmix64 must spread them apart */
    const uint64_t seeds[][2] = {{1, 2}, {0, 1}, {12345, 12346}, {7, UINT64_MAX}};
    for (size_t k = 0; k < sizeof seeds / sizeof *seeds; k++) {
        kfac_rng a, b;
        kfac_rng_seed(&a, seeds[k][0]);
        kfac_rng_seed(&b, seeds[k][1]);
        int same = 0;
        for (int i = 0; i < 1000; i++)
            same += kfac_rng_next(&a) == kfac_rng_next(&b);
        ck_assert_msg(same == 0, "seeds %llu and %llu share %d of 1000 draws",
                      (unsigned long long)seeds[k][0], (unsigned long long)seeds[k][1], same);
    }
}
END_TEST

START_TEST(test_state_not_degenerate)
{
    /* xoshiro's all-zero state is a fixed point; seeding must avoid it */
    kfac_rng r;
    kfac_rng_seed(&r, 0);
    ck_assert(r.s[0] | r.s[1] | r.s[2] | r.s[3]);
    uint64_t first = kfac_rng_next(&r);
    int repeats = 0;
    for (int i = 0; i < 1000; i++)
        repeats += kfac_rng_next(&r) == first;
    ck_assert_int_eq(repeats, 0);
}
END_TEST

START_TEST(test_uniform_range_and_moments)
{
    kfac_rng r;
    kfac_rng_seed(&r, 42);
    double sum = 0, sum2 = 0, lo = 1, hi = 0;
    for (int i = 0; i < DRAWS; i++) {
        double u = kfac_rng_uniform(&r);
        ck_assert_msg(u >= 0.0 && u < 1.0, "uniform draw %d = %.17g outside [0, 1)", i, u);
        sum += u;
        sum2 += u * u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    double mean = sum / DRAWS, var = sum2 / DRAWS - mean * mean;
    /* standard error of the mean: sqrt(1/12/1e5) = 9e-4 */
    ck_assert_msg(fabs(mean - 0.5) < 0.005, "uniform mean %g", mean);
    ck_assert_msg(fabs(var - 1.0 / 12.0) < 0.003, "uniform variance %g (1/12 expected)", var);
    /* it reaches both ends of the interval */
    ck_assert_msg(lo < 1e-3 && hi > 1.0 - 1e-3, "uniform draws span only [%g, %g]", lo, hi);
}
END_TEST

START_TEST(test_normal_moments)
{
    kfac_rng r;
    kfac_rng_seed(&r, 7);
    double sum = 0, sum2 = 0, sum4 = 0;
    int within1 = 0;
    for (int i = 0; i < DRAWS; i++) {
        double z = kfac_rng_normal(&r);
        ck_assert_msg(isfinite(z), "normal draw %d is not finite", i);
        sum += z;
        sum2 += z * z;
        sum4 += z * z * z * z;
        within1 += fabs(z) < 1.0;
    }
    double mean = sum / DRAWS, var = sum2 / DRAWS - mean * mean;
    double kurt = sum4 / DRAWS; /* E z^4 = 3 for a normal, 1.8 for a uniform */
    double frac = (double)within1 / DRAWS;
    /* standard errors: mean 3e-3, variance sqrt(2/n) = 4.5e-3 */
    ck_assert_msg(fabs(mean) < 0.02, "normal mean %g", mean);
    ck_assert_msg(fabs(var - 1.0) < 0.03, "normal variance %g", var);
    ck_assert_msg(fabs(kurt - 3.0) < 0.15, "normal fourth moment %g (3 expected)", kurt);
    /* P(|z| < 1) = 0.6827, standard error 1.5e-3 */
    ck_assert_msg(fabs(frac - 0.6827) < 0.01, "P(|z| < 1) = %g", frac);
}
END_TEST

/* chi-square statistic of DRAWS draws of kfac_rng_below(n) over n bins */
static double chi_square_below(uint32_t n, uint64_t seed)
{
    long counts[64] = {0};
    ck_assert(n <= 64);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    for (int i = 0; i < DRAWS; i++) {
        uint32_t k = kfac_rng_below(&r, n);
        ck_assert_msg(k < n, "kfac_rng_below(%u) returned %u", n, k);
        counts[k]++;
    }
    double expect = (double)DRAWS / n, chi2 = 0;
    for (uint32_t k = 0; k < n; k++)
        chi2 += (counts[k] - expect) * (counts[k] - expect) / expect;
    return chi2;
}

START_TEST(test_below_uniform)
{
    /* chi-square with n-1 degrees of freedom has mean n-1 and standard
     * deviation sqrt(2(n-1)); allow the mean plus 6 deviations */
    const uint32_t ns[] = {2, 3, 10, 37, 64};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
        uint32_t n = ns[i];
        double chi2 = chi_square_below(n, 100 + n);
        double bound = (n - 1) + 6.0 * sqrt(2.0 * (n - 1));
        ck_assert_msg(chi2 < bound, "kfac_rng_below(%u): chi-square %g >= %g", n, chi2, bound);
    }
}
END_TEST

START_TEST(test_below_edges)
{
    kfac_rng r;
    kfac_rng_seed(&r, 3);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(kfac_rng_below(&r, 1), 0);
    /* a bound near 2^32, where the rejection threshold matters: values stay
     * in range and land in both halves */
    const uint32_t big = 3000000000u;
    int upper = 0;
    for (int i = 0; i < 10000; i++) {
        uint32_t k = kfac_rng_below(&r, big);
        ck_assert_msg(k < big, "kfac_rng_below(%u) returned %u", big, k);
        upper += k >= big / 2;
    }
    ck_assert_msg(upper > 4500 && upper < 5500, "%d of 10000 in the upper half", upper);
    ck_assert_uint_eq(kfac_rng_below(&r, UINT32_MAX) < UINT32_MAX, 1);
}
END_TEST

START_TEST(test_copy_continues_identically)
{
    kfac_rng a;
    kfac_rng_seed(&a, 99);
    for (int i = 0; i < 37; i++)
        (void)kfac_rng_next(&a);
    kfac_rng b = a; /* plain data: a struct copy is a checkpoint */
    kfac_rng c;
    memcpy(&c, &a, sizeof c);
    for (int i = 0; i < 1000; i++) {
        uint64_t x = kfac_rng_next(&a);
        ck_assert_msg(x == kfac_rng_next(&b), "copy diverged at draw %d", i);
        ck_assert_msg(x == kfac_rng_next(&c), "memcpy'd copy diverged at draw %d", i);
    }
    /* the derived draws follow the state too */
    for (int i = 0; i < 100; i++) {
        ck_assert(kfac_rng_normal(&a) == kfac_rng_normal(&b));
        ck_assert(kfac_rng_uniform(&a) == kfac_rng_uniform(&b));
        ck_assert(kfac_rng_below(&a, 1000) == kfac_rng_below(&b, 1000));
    }
}
END_TEST

Suite *rng_suite(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("rng");
    tcase_set_timeout(tc, 60); /* generous for valgrind */
    tcase_add_test(tc, test_same_seed_same_sequence);
    tcase_add_test(tc, test_different_seeds_differ);
    tcase_add_test(tc, test_state_not_degenerate);
    tcase_add_test(tc, test_uniform_range_and_moments);
    tcase_add_test(tc, test_normal_moments);
    tcase_add_test(tc, test_below_uniform);
    tcase_add_test(tc, test_below_edges);
    tcase_add_test(tc, test_copy_continues_identically);
    suite_add_tcase(s, tc);
    return s;
}
