/* test_optim.c - the first-order optimizers against an independent double
 * precision reference of each update rule, every optimizer on the same
 * ill-conditioned quadratic, and parameter validation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"
#include "optim.h"
#include "tests.h"

/* ------------------------------------------------------------ helpers */

static void fill_normal(float *x, size_t n, kfac_rng *r, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * kfac_rng_normal(r));
}

/* Parameters away from the defaults, so that each one matters: beta2 far
 * from 1 makes Adam's bias correction visible over a few steps, eps large
 * enough to change the result. */
static kfac_optim_params test_params(double wd)
{
    kfac_optim_params p;
    kfac_optim_params_init(&p);
    p.lr = 0.05f;
    p.momentum = 0.8f;
    p.beta1 = 0.85f;
    p.beta2 = 0.95f;
    p.eps = 1e-3f;
    p.weight_decay = (float)wd;
    return p;
}

/* The textbook formulas, written out again in double (PyTorch's
 * conventions; weight decay coupled into the gradient). m and v start at
 * zero; t is 1-based. */
static void reference_step(kfac_optimizer_kind kind, const kfac_optim_params *p, long t,
                           double *theta, const float *grad, double *m, double *v, size_t n)
{
    const double lr = p->lr, mu = p->momentum, b1 = p->beta1, b2 = p->beta2, eps = p->eps;
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i] + (double)p->weight_decay * theta[i];
        switch (kind) {
        case KFAC_OPT_SGD:
            theta[i] -= lr * g;
            break;
        case KFAC_OPT_MOMENTUM:
            v[i] = mu * v[i] + g;
            theta[i] -= lr * v[i];
            break;
        case KFAC_OPT_NESTEROV:
            v[i] = mu * v[i] + g;
            theta[i] -= lr * (g + mu * v[i]);
            break;
        case KFAC_OPT_ADAM: {
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            double mhat = m[i] / (1 - pow(b1, (double)t));
            double vhat = v[i] / (1 - pow(b2, (double)t));
            theta[i] -= lr * mhat / (sqrt(vhat) + eps);
            break;
        }
        default:
            ck_abort_msg("no reference update for optimizer %d", (int)kind);
        }
    }
}

/* Run `steps` steps of `kind` on n random parameters with random gradients
 * and compare with the reference after every step. Returns the largest
 * change any parameter saw, so callers can check the comparison was not
 * vacuous. */
static double compare_with_reference(kfac_optimizer_kind kind, double wd, size_t n, int steps)
{
    /* Relative to the parameters' scale (they start ~N(0, 1)): a value that
     * passes near zero keeps the absolute float rounding of its neighbours
     * (measured ~2e-7 of the scale after 12 steps), while any wrong term
     * costs at least ~1e-5. */
    const double tol = 1e-6;
    kfac_optim_params p = test_params(wd);
    kfac_optimizer *opt = NULL;
    ck_assert_int_eq(kfac_optimizer_new(kind, &p, n, &opt), KFAC_OK);
    ck_assert_ptr_nonnull(opt);
    ck_assert_int_eq(kfac_optimizer_get_kind(opt), kind);

    float *theta = malloc(n * sizeof *theta), *start = malloc(n * sizeof *start);
    float *before = malloc(n * sizeof *before);
    float *grad = malloc(n * sizeof *grad), *grad0 = malloc(n * sizeof *grad0);
    double *ref = malloc(n * sizeof *ref), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    ck_assert(theta && start && before && grad && grad0 && ref && m && v);

    kfac_rng r;
    kfac_rng_seed(&r, 1000 + (uint64_t)kind);
    fill_normal(theta, n, &r, 1.0);
    memcpy(start, theta, n * sizeof *theta);
    for (size_t i = 0; i < n; i++)
        ref[i] = theta[i];

    for (int s = 1; s <= steps; s++) {
        /* gradients of varying scale, so Adam's normalisation is exercised */
        fill_normal(grad0, n, &r, s % 2 ? 1.0 : 0.1);
        memcpy(grad, grad0, n * sizeof *grad);
        memcpy(before, theta, n * sizeof *theta); /* for the decay check */
        ck_assert_int_eq(kfac_optimizer_step(opt, theta, grad), KFAC_OK);
        ck_assert_int_eq(kfac_optimizer_steps(opt), s);
        reference_step(kind, &p, s, ref, grad0, m, v, n);
        for (size_t i = 0; i < n; i++) {
            double err = fabs((double)theta[i] - ref[i]);
            ck_assert_msg(err <= tol * (fabs(ref[i]) + 1.0),
                          "%s wd=%g step %d theta[%zu] = %.9g, reference %.9g",
                          kfac_optimizer_name(kind), wd, s, i, theta[i], ref[i]);
            /* the documented side effect: grad now holds g + wd theta */
            float decayed = grad0[i] + p.weight_decay * before[i];
            ck_assert_msg(fabsf(grad[i] - decayed) <= 1e-6f * (1.0f + fabsf(decayed)),
                          "%s wd=%g: grad[%zu] = %g after the step, expected %g",
                          kfac_optimizer_name(kind), wd, i, grad[i], decayed);
        }
    }

    double moved = 0;
    for (size_t i = 0; i < n; i++)
        moved = fmax(moved, fabs((double)theta[i] - start[i]));

    kfac_optimizer_free(opt);
    free(theta), free(start), free(before), free(grad), free(grad0), free(ref), free(m), free(v);
    return moved;
}

/* ------------------------------------------------ against the formula */

/* _i = 2 * kind + (weight decay on) */
START_TEST(test_matches_reference)
{
    kfac_optimizer_kind kind = (kfac_optimizer_kind)(_i / 2);
    double wd = _i % 2 ? 0.1 : 0.0;
    double moved = compare_with_reference(kind, wd, 257, 12);
    /* lr 0.05 over 12 steps moves something by far more than the tolerance */
    ck_assert_msg(moved > 0.05, "%s: parameters moved only %g", kfac_optimizer_name(kind), moved);
}
END_TEST

/* Large enough to take the OpenMP path of every loop. */
START_TEST(test_matches_reference_parallel)
{
    kfac_optimizer_kind kind = (kfac_optimizer_kind)_i;
    double moved = compare_with_reference(kind, 0.01, 100003, 3);
    ck_assert_msg(moved > 0.01, "%s: parameters moved only %g", kfac_optimizer_name(kind), moved);
}
END_TEST

/* The algorithms really differ: a run of each on the same data ends at
 * distinct points (a row of the table pointing at another row's step
 * would pass a loose test otherwise). */
START_TEST(test_algorithms_differ)
{
    enum { N = 64, STEPS = 5 };
    float out[KFAC_OPT_ADAM + 1][N];
    kfac_optim_params p = test_params(0.0);
    for (int k = 0; k <= KFAC_OPT_ADAM; k++) {
        kfac_optimizer *opt = NULL;
        ck_assert_int_eq(kfac_optimizer_new((kfac_optimizer_kind)k, &p, N, &opt), KFAC_OK);
        kfac_rng r;
        kfac_rng_seed(&r, 5);
        fill_normal(out[k], N, &r, 1.0);
        for (int s = 0; s < STEPS; s++) {
            float g[N];
            fill_normal(g, N, &r, 1.0);
            ck_assert_int_eq(kfac_optimizer_step(opt, out[k], g), KFAC_OK);
        }
        kfac_optimizer_free(opt);
    }
    for (int a = 0; a <= KFAC_OPT_ADAM; a++)
        for (int b = a + 1; b <= KFAC_OPT_ADAM; b++) {
            double d = 0;
            for (int i = 0; i < N; i++)
                d = fmax(d, fabs(out[a][i] - out[b][i]));
            ck_assert_msg(d > 1e-3, "%s and %s end %g apart", kfac_optimizer_name(a),
                          kfac_optimizer_name(b), d);
        }
}
END_TEST

START_TEST(test_null_params_are_defaults)
{
    enum { N = 10 };
    kfac_optimizer *opt = NULL;
    ck_assert_int_eq(kfac_optimizer_new(KFAC_OPT_SGD, NULL, N, &opt), KFAC_OK);
    kfac_optim_params d;
    kfac_optim_params_init(&d);
    float theta[N], grad[N], expect[N];
    for (int i = 0; i < N; i++) {
        theta[i] = (float)i - 3.0f;
        grad[i] = 0.5f * (float)(i * i) - 7.0f;
        expect[i] = theta[i] - d.lr * grad[i];
    }
    ck_assert_int_eq(kfac_optimizer_step(opt, theta, grad), KFAC_OK);
    for (int i = 0; i < N; i++)
        ck_assert_float_eq_tol(theta[i], expect[i], 1e-6f);
    kfac_optimizer_free(opt);
}
END_TEST

/* ------------------------------------------- the same problem for all */

/* f = 1/2 sum_i c_i x_i^2, c_i from 1 to 100 (condition number 100) */
enum { QN = 50, QSTEPS = 300 };

static double quad_c(int i) { return 1.0 + 99.0 * i / (QN - 1); }

static double quad_f(const float *x)
{
    double f = 0;
    for (int i = 0; i < QN; i++)
        f += 0.5 * quad_c(i) * (double)x[i] * x[i];
    return f;
}

/* Learning rates that suit each method on this problem (SGD needs
 * lr < 2 / c_max; Adam's steps are about lr in size whatever the scale),
 * and the fraction of f0 each must get below. The targets sit a few orders
 * of magnitude above what a correct rule reaches and below what a crippled
 * one does (momentum without its velocity is SGD at lr 0.01, which stalls
 * on the small-c coordinates). A kind added to the table without an entry
 * here fails below, by name. */
static const struct {
    float lr;
    double target;
} quad_setup[KFAC_OPT_COUNT] = {
    [KFAC_OPT_SGD] = {0.015f, 1e-6},
    [KFAC_OPT_MOMENTUM] = {0.01f, 1e-10},
    [KFAC_OPT_NESTEROV] = {0.01f, 1e-10},
    [KFAC_OPT_ADAM] = {0.05f, 1e-10},
};

START_TEST(test_quadratic)
{
    kfac_optimizer_kind kind = (kfac_optimizer_kind)_i;
    const char *name = kfac_optimizer_name(kind);
    ck_assert_msg(name != NULL, "optimizer %d has no name", _i);
    if (kfac_optimizer_types[kind]->alloc) {
        /* curvature methods need a network: they meet the same problems as
         * the others in test_train.c and test_kfac.c; on a bare vector they
         * must refuse, not crash */
        kfac_optimizer *opt = NULL;
        ck_assert_int_eq(kfac_optimizer_new(kind, NULL, QN, &opt), KFAC_ERR_INVALID_ARG);
        ck_assert_ptr_null(opt);
        ck_assert_ptr_nonnull(strstr(kfac_last_error(), "network"));
        return;
    }
    ck_assert_msg(quad_setup[kind].lr > 0, "no quadratic set-up for '%s' in the test", name);
    kfac_optim_params p;
    kfac_optim_params_init(&p);
    p.lr = quad_setup[kind].lr;
    kfac_optimizer *opt = NULL;
    ck_assert_int_eq(kfac_optimizer_new(kind, &p, QN, &opt), KFAC_OK);

    float x[QN], g[QN];
    for (int i = 0; i < QN; i++)
        x[i] = (i % 2 ? -1.0f : 1.0f) * (1.0f + 0.01f * i);
    const double f0 = quad_f(x);
    for (int s = 0; s < QSTEPS; s++) {
        for (int i = 0; i < QN; i++)
            g[i] = (float)(quad_c(i) * x[i]);
        ck_assert_int_eq(kfac_optimizer_step(opt, x, g), KFAC_OK);
    }
    const double f = quad_f(x);
    ck_assert_msg(isfinite(f) && f < quad_setup[kind].target * f0,
                  "%s: f went from %g to %g in %d steps (target %g of f0)", name, f0, f, QSTEPS,
                  quad_setup[kind].target);
    ck_assert_int_eq(kfac_optimizer_steps(opt), QSTEPS);
    kfac_optimizer_free(opt);
}
END_TEST

/* ---------------------------------------------------------- validation */

static void expect_bad_params(const kfac_optim_params *p, const char *what)
{
    for (int k = 0; k < KFAC_OPT_COUNT; k++) {
        kfac_optimizer *opt = (kfac_optimizer *)&opt; /* must not be touched */
        kfac_status s = kfac_optimizer_new((kfac_optimizer_kind)k, p, 10, &opt);
        ck_assert_msg(s == KFAC_ERR_INVALID_ARG, "%s accepted by %s (status %d)", what,
                      kfac_optimizer_name((kfac_optimizer_kind)k), (int)s);
        ck_assert_msg(kfac_last_error()[0] != '\0', "%s: no error detail", what);
        ck_assert_ptr_eq(opt, (kfac_optimizer *)&opt);
    }
}

START_TEST(test_bad_params)
{
    kfac_optim_params p;
#define BAD(field, value)                                                                          \
    do {                                                                                           \
        kfac_optim_params_init(&p);                                                                \
        p.field = (value);                                                                         \
        expect_bad_params(&p, #field " = " #value);                                                \
    } while (0)
    BAD(lr, 0.0f);
    BAD(lr, -0.1f);
    BAD(lr, NAN);
    BAD(lr, INFINITY);
    BAD(momentum, 1.0f);
    BAD(momentum, -0.1f);
    BAD(momentum, NAN);
    BAD(beta1, 1.0f);
    BAD(beta2, 1.0f);
    BAD(beta2, -0.5f);
    BAD(eps, 0.0f);
    BAD(eps, -1e-8f);
    BAD(weight_decay, -1e-4f);
    BAD(weight_decay, NAN);
#undef BAD
    /* and the defaults themselves are fine for every first-order kind */
    kfac_optim_params_init(&p);
    for (int k = 0; k < KFAC_OPT_COUNT; k++) {
        if (kfac_optimizer_types[k]->alloc)
            continue;
        kfac_optimizer *opt = NULL;
        ck_assert_int_eq(kfac_optimizer_new((kfac_optimizer_kind)k, &p, 10, &opt), KFAC_OK);
        kfac_optimizer_free(opt);
    }
}
END_TEST

START_TEST(test_bad_arguments)
{
    kfac_optimizer *opt = NULL;
    ck_assert_int_eq(kfac_optimizer_new(KFAC_OPT_COUNT, NULL, 10, &opt), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_new((kfac_optimizer_kind)-1, NULL, 10, &opt),
                     KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_new(KFAC_OPT_SGD, NULL, 0, &opt), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_new(KFAC_OPT_SGD, NULL, SIZE_MAX, &opt),
                     KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_new(KFAC_OPT_SGD, NULL, 10, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(opt);

    ck_assert_int_eq(kfac_optimizer_new(KFAC_OPT_ADAM, NULL, 4, &opt), KFAC_OK);
    float theta[4] = {1, 2, 3, 4}, grad[4] = {1, 1, 1, 1};
    ck_assert_int_eq(kfac_optimizer_step(NULL, theta, grad), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_step(opt, NULL, grad), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_step(opt, theta, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_step_ctx(opt, theta, NULL, NULL), KFAC_ERR_INVALID_ARG);
    /* a refused step changes nothing */
    ck_assert_int_eq(kfac_optimizer_steps(opt), 0);
    ck_assert(theta[0] == 1 && theta[3] == 4);
    ck_assert_int_eq(kfac_optimizer_step(opt, theta, grad), KFAC_OK);
    ck_assert_int_eq(kfac_optimizer_steps(opt), 1);
    kfac_optimizer_free(opt);
    kfac_optimizer_free(NULL);
}
END_TEST

START_TEST(test_names)
{
    for (int k = 0; k < KFAC_OPT_COUNT; k++) {
        const char *name = kfac_optimizer_name((kfac_optimizer_kind)k);
        ck_assert_msg(name && *name, "optimizer %d has no name", k);
        kfac_optimizer_kind back = KFAC_OPT_COUNT;
        ck_assert_int_eq(kfac_optimizer_from_name(name, &back), KFAC_OK);
        ck_assert_int_eq(back, k);
        for (int j = 0; j < k; j++)
            ck_assert_str_ne(name, kfac_optimizer_name((kfac_optimizer_kind)j));
    }
    ck_assert_str_eq(kfac_optimizer_name(KFAC_OPT_SGD), "sgd");
    ck_assert_str_eq(kfac_optimizer_name(KFAC_OPT_MOMENTUM), "momentum");
    ck_assert_str_eq(kfac_optimizer_name(KFAC_OPT_NESTEROV), "nesterov");
    ck_assert_str_eq(kfac_optimizer_name(KFAC_OPT_ADAM), "adam");
    ck_assert_ptr_null(kfac_optimizer_name(KFAC_OPT_COUNT));
    ck_assert_ptr_null(kfac_optimizer_name((kfac_optimizer_kind)-1));
}
END_TEST

START_TEST(test_unknown_name)
{
    kfac_optimizer_kind k = KFAC_OPT_NESTEROV;
    const char *bad[] = {"adamw", "", "SGD", "sgd ", "momentu"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(kfac_optimizer_from_name(bad[i], &k), KFAC_ERR_INVALID_ARG);
        ck_assert_int_eq(k, KFAC_OPT_NESTEROV); /* untouched */
    }
    /* the detail names the culprit and lists every valid name */
    ck_assert_int_eq(kfac_optimizer_from_name("adamw", &k), KFAC_ERR_INVALID_ARG);
    const char *msg = kfac_last_error();
    ck_assert_msg(strstr(msg, "adamw") != NULL, "detail '%s' lacks the name", msg);
    for (int j = 0; j < KFAC_OPT_COUNT; j++)
        ck_assert_msg(strstr(msg, kfac_optimizer_name((kfac_optimizer_kind)j)) != NULL,
                      "detail '%s' does not list '%s'", msg,
                      kfac_optimizer_name((kfac_optimizer_kind)j));
    ck_assert_int_eq(kfac_optimizer_from_name(NULL, &k), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_optimizer_from_name("sgd", NULL), KFAC_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_table)
{
    /* the state the table declares is what the rules need */
    ck_assert_int_eq(kfac_optimizer_types[KFAC_OPT_SGD]->state_vectors, 0);
    ck_assert_int_eq(kfac_optimizer_types[KFAC_OPT_MOMENTUM]->state_vectors, 1);
    ck_assert_int_eq(kfac_optimizer_types[KFAC_OPT_NESTEROV]->state_vectors, 1);
    ck_assert_int_eq(kfac_optimizer_types[KFAC_OPT_ADAM]->state_vectors, 2);
    for (int k = 0; k < KFAC_OPT_COUNT; k++) {
        if (kfac_optimizer_types[k]->alloc)
            continue; /* state sized for a network: test_kfac.c */
        kfac_optimizer *opt = NULL;
        ck_assert_int_eq(kfac_optimizer_new((kfac_optimizer_kind)k, NULL, 1000, &opt), KFAC_OK);
        int nv = kfac_optimizer_types[k]->state_vectors;
        for (int j = 0; j < nv && j < 2; j++) {
            const float *v = kfac_optimizer_state_vector(opt, j);
            ck_assert_ptr_nonnull(v);
            ck_assert_uint_eq((uintptr_t)v % 64, 0);
            for (int i = 0; i < 1000; i++)
                ck_assert_msg(v[i] == 0.0f, "%s state %d not zeroed",
                              kfac_optimizer_name((kfac_optimizer_kind)k), j);
        }
        ck_assert_ptr_null(kfac_optimizer_state_vector(opt, nv));
        kfac_optimizer_free(opt);
    }
}
END_TEST

Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optim");
    tcase_set_timeout(tc, 120); /* generous for valgrind */
    tcase_add_loop_test(tc, test_matches_reference, 0, 2 * (KFAC_OPT_ADAM + 1));
    tcase_add_loop_test(tc, test_matches_reference_parallel, 0, KFAC_OPT_ADAM + 1);
    tcase_add_test(tc, test_algorithms_differ);
    tcase_add_test(tc, test_null_params_are_defaults);
    tcase_add_loop_test(tc, test_quadratic, 0, KFAC_OPT_COUNT);
    tcase_add_test(tc, test_bad_params);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_unknown_name);
    tcase_add_test(tc, test_table);
    suite_add_tcase(s, tc);
    return s;
}
