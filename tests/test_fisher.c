/* test_fisher.c - exact Fisher-vector products (R-op) against the explicit
 * Fisher and against central differences of the KL's gradient; the
 * explicit Fisher's symmetry, semi-definiteness and rank; KL ~ 1/2 d^T F d;
 * the loss table's KL; and that the products leave the net untouched. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fisher.h"
#include "kfac.h"
#include "loss.h"
#include "net.h"
#include "tests.h"

enum { MAX_BATCH = 8, BATCH = 6 };

/* Tiny nets covering every hidden activation and every loss; softmax and
 * sigmoid cross-entropy need a linear output layer, squared error also
 * gets a tanh one. */
typedef struct fisher_case {
    int inputs, n_layers;
    int units[3];
    kfac_activation acts[3];
    kfac_loss loss;
} fisher_case;

static const fisher_case cases[] = {
    {5, 2, {4, 3}, {KFAC_ACT_TANH, KFAC_ACT_LINEAR}, KFAC_LOSS_SOFTMAX_XENT},
    {5, 2, {4, 3}, {KFAC_ACT_SIGMOID, KFAC_ACT_LINEAR}, KFAC_LOSS_SIGMOID_XENT},
    {5, 2, {4, 3}, {KFAC_ACT_RELU, KFAC_ACT_TANH}, KFAC_LOSS_SQUARED},
    {5, 2, {4, 3}, {KFAC_ACT_RELU, KFAC_ACT_LINEAR}, KFAC_LOSS_SOFTMAX_XENT},
    {4, 3, {6, 5, 3}, {KFAC_ACT_TANH, KFAC_ACT_RELU, KFAC_ACT_LINEAR}, KFAC_LOSS_SOFTMAX_XENT},
    {4, 3, {6, 5, 3}, {KFAC_ACT_SIGMOID, KFAC_ACT_TANH, KFAC_ACT_LINEAR}, KFAC_LOSS_SIGMOID_XENT},
    {4, 3, {6, 5, 3}, {KFAC_ACT_RELU, KFAC_ACT_SIGMOID, KFAC_ACT_LINEAR}, KFAC_LOSS_SQUARED},
    {4, 3, {6, 5, 3}, {KFAC_ACT_TANH, KFAC_ACT_SIGMOID, KFAC_ACT_TANH}, KFAC_LOSS_SQUARED},
};
#define N_CASES ((int)(sizeof cases / sizeof *cases))

static void fill_uniform(float *v, size_t n, float lo, float hi, kfac_rng *r)
{
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (float)kfac_rng_uniform(r);
}

/* a random direction of unit length */
static void fill_unit(float *v, size_t n, kfac_rng *r)
{
    double norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        v[i] = (float)kfac_rng_normal(r);
        norm += (double)v[i] * v[i];
    }
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(v[i] / sqrt(norm));
}

static double norm2(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

/* |a - b| / |b| with b in double */
static double rel_err(const float *a, const double *b, size_t n)
{
    double d = 0.0, nb = 0.0;
    for (size_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        nb += b[i] * b[i];
    }
    return sqrt(d / nb);
}

/* The net of case c with Glorot weights and non-zero biases, after a
 * forward pass over BATCH random inputs (x: BATCH x inputs, kept by the
 * caller for later passes). */
static kfac_net *make_case(const fisher_case *c, uint64_t seed, float *x)
{
    kfac_net_spec s;
    kfac_net_spec_init(&s);
    s.inputs = c->inputs;
    s.n_layers = c->n_layers;
    s.loss = c->loss;
    s.init = KFAC_INIT_GLOROT;
    for (int l = 0; l < c->n_layers; l++) {
        s.layers[l].units = c->units[l];
        s.layers[l].activation = c->acts[l];
    }
    kfac_net *net = NULL;
    ck_assert_int_eq(kfac_net_new(&s, MAX_BATCH, &net), KFAC_OK);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    ck_assert_int_eq(kfac_net_init_weights(net, &r), KFAC_OK);
    for (int l = 0; l < c->n_layers; l++) {
        int rows, cols;
        float *w = kfac_net_layer_weights(net, l, &rows, &cols);
        for (int i = 0; i < rows; i++)
            w[(size_t)i * cols + cols - 1] = 0.3f * (float)(kfac_rng_uniform(&r) - 0.5);
    }
    fill_uniform(x, (size_t)BATCH * c->inputs, -1.5f, 1.5f, &r);
    ck_assert_int_eq(kfac_net_forward(net, x, BATCH), KFAC_OK);
    return net;
}

static const char *case_name(const fisher_case *c)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "%d-layer %s/%s, %s", c->n_layers, kfac_activation_name(c->acts[0]),
             kfac_activation_name(c->acts[c->n_layers - 1]), kfac_loss_name(c->loss));
    return buf;
}

/* The model's predictive mean for output z: softmax(z), sigmoid(z) or z */
static void predictive_mean(kfac_loss loss, const float *z, float *y, int n, int d)
{
    for (int i = 0; i < n; i++) {
        const float *zr = z + (size_t)i * d;
        float *yr = y + (size_t)i * d;
        if (loss == KFAC_LOSS_SOFTMAX_XENT) {
            double m = zr[0], s = 0.0;
            for (int j = 1; j < d; j++)
                m = fmax(m, zr[j]);
            for (int j = 0; j < d; j++)
                s += exp(zr[j] - m);
            for (int j = 0; j < d; j++)
                yr[j] = (float)(exp(zr[j] - m) / s);
        } else if (loss == KFAC_LOSS_SIGMOID_XENT) {
            for (int j = 0; j < d; j++)
                yr[j] = (float)(1.0 / (1.0 + exp(-(double)zr[j])));
        } else {
            memcpy(yr, zr, sizeof *yr * (size_t)d);
        }
    }
}

/* ---- R-op against the explicit F = (1/B) sum_n J_n^T H_n J_n */
START_TEST(test_fisher_vec_explicit)
{
    const fisher_case *c = &cases[_i];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 100 + _i, x);
    size_t P = kfac_net_n_params(net);
    double *F = malloc(sizeof *F * P * P), *ref = malloc(sizeof *ref * P);
    float *v = malloc(sizeof *v * P), *fv = malloc(sizeof *fv * P), *w = malloc(sizeof *w * P),
          *fw = malloc(sizeof *fw * P), *fsum = malloc(sizeof *fsum * P);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    ck_assert_int_eq(kfac_fisher_explicit(net, F), KFAC_OK);
    kfac_rng r;
    kfac_rng_seed(&r, 7 + _i);
    for (int t = 0; t < 3; t++) {
        fill_uniform(v, P, -1.0f, 1.0f, &r);
        ck_assert_int_eq(kfac_fisher_vec(f, net, v, fv), KFAC_OK);
        for (size_t i = 0; i < P; i++) {
            double acc = 0.0;
            for (size_t j = 0; j < P; j++)
                acc += F[i * P + j] * v[j];
            ref[i] = acc;
        }
        double nref = 0.0;
        for (size_t i = 0; i < P; i++)
            nref += ref[i] * ref[i];
        ck_assert_msg(sqrt(nref) > 1e-3 * norm2(v, P), "%s: |F v| = %g is (nearly) zero",
                      case_name(c), sqrt(nref));
        double err = rel_err(fv, ref, P);
        ck_assert_msg(err < 1e-4, "%s: R-op F v against explicit F v: relative error %g",
                      case_name(c), err);
    }
    /* linear in v: F (v + 2 w) = F v + 2 F w */
    fill_uniform(w, P, -1.0f, 1.0f, &r);
    ck_assert_int_eq(kfac_fisher_vec(f, net, w, fw), KFAC_OK);
    for (size_t i = 0; i < P; i++)
        w[i] = v[i] + 2.0f * w[i];
    ck_assert_int_eq(kfac_fisher_vec(f, net, w, fsum), KFAC_OK);
    for (size_t i = 0; i < P; i++)
        ref[i] = (double)fv[i] + 2.0 * fw[i];
    ck_assert_double_lt(rel_err(fsum, ref, P), 1e-5);

    kfac_fisher_free(f);
    free(F);
    free(ref);
    free(v);
    free(fv);
    free(w);
    free(fw);
    free(fsum);
    kfac_net_free(net);
}
END_TEST

/* grad of the mean KL(p_theta || p_theta') at theta': the usual backward
 * with the model's predictive mean at theta as dense targets (the KL and
 * that cross-entropy differ by a constant) */
static void kl_grad_at(kfac_net *net, const float *theta, const float *v, float e, const float *x,
                       const float *y, float *grad)
{
    size_t P = kfac_net_n_params(net);
    float *th = kfac_net_params(net);
    for (size_t i = 0; i < P; i++)
        th[i] = theta[i] + e * v[i];
    ck_assert_int_eq(kfac_net_forward(net, x, BATCH), KFAC_OK);
    ck_assert_int_eq(kfac_net_backward(net, y, grad), KFAC_OK);
    memcpy(th, theta, sizeof *th * P);
}

/* ---- F v = d/de grad KL(p_theta || p_{theta + e v}) at e = 0 (F is the
 * KL's Hessian), by central differences */
START_TEST(test_fisher_vec_finite_diff)
{
    const fisher_case *c = &cases[_i];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 200 + _i, x);
    size_t P = kfac_net_n_params(net);
    int dL = kfac_net_outputs(net);
    float *theta = malloc(sizeof *theta * P), *v = malloc(sizeof *v * P),
          *fv = malloc(sizeof *fv * P), *gp = malloc(sizeof *gp * P), *gm = malloc(sizeof *gm * P),
          y[BATCH * 3];
    double *fd = malloc(sizeof *fd * P);
    memcpy(theta, kfac_net_params(net), sizeof *theta * P);
    predictive_mean(c->loss, kfac_net_output(net), y, BATCH, dL);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    kfac_rng r;
    kfac_rng_seed(&r, 17 + _i);
    for (int t = 0; t < 3; t++) {
        fill_unit(v, P, &r);
        ck_assert_int_eq(kfac_net_forward(net, x, BATCH), KFAC_OK);
        ck_assert_int_eq(kfac_fisher_vec(f, net, v, fv), KFAC_OK);
        const float e = 1e-3f;
        kl_grad_at(net, theta, v, e, x, y, gp);
        kl_grad_at(net, theta, v, -e, x, y, gm);
        for (size_t i = 0; i < P; i++)
            fd[i] = ((double)gp[i] - gm[i]) / (2.0 * e);
        double nfd = 0.0;
        for (size_t i = 0; i < P; i++)
            nfd += fd[i] * fd[i];
        ck_assert_msg(sqrt(nfd) > 1e-3, "%s: finite-difference F v is (nearly) zero: %g",
                      case_name(c), sqrt(nfd));
        double err = rel_err(fv, fd, P);
        ck_assert_msg(err < 1e-2, "%s: F v against central differences: relative error %g",
                      case_name(c), err);
    }
    kfac_fisher_free(f);
    free(theta);
    free(v);
    free(fv);
    free(gp);
    free(gm);
    free(fd);
    kfac_net_free(net);
}
END_TEST

/* Eigenvalues of the symmetric n x n matrix A (destroyed) by cyclic Jacobi
 * rotations. */
static void jacobi_eigenvalues(double *A, int n, double *eig)
{
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0, all = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                all += A[i * n + j] * A[i * n + j];
                if (i != j)
                    off += A[i * n + j] * A[i * n + j];
            }
        if (off <= 1e-26 * all)
            break;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = A[p * n + q];
                if (apq == 0.0)
                    continue;
                double theta = (A[q * n + q] - A[p * n + p]) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double cs = 1.0 / sqrt(t * t + 1.0), sn = t * cs;
                for (int k = 0; k < n; k++) { /* columns p, q */
                    double akp = A[k * n + p], akq = A[k * n + q];
                    A[k * n + p] = cs * akp - sn * akq;
                    A[k * n + q] = sn * akp + cs * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q */
                    double apk = A[p * n + k], aqk = A[q * n + k];
                    A[p * n + k] = cs * apk - sn * aqk;
                    A[q * n + k] = sn * apk + cs * aqk;
                }
            }
    }
    for (int i = 0; i < n; i++)
        eig[i] = A[i * n + i];
}

/* ---- the explicit F is symmetric, PSD, and of rank at most B times the
 * rank of H_out (d_L, or d_L - 1 for the softmax, whose H kills 1) */
START_TEST(test_explicit_symmetric_psd)
{
    const fisher_case *c = &cases[_i];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 300 + _i, x);
    int P = (int)kfac_net_n_params(net), dL = kfac_net_outputs(net);
    double *F = malloc(sizeof *F * (size_t)P * P), *A = malloc(sizeof *A * (size_t)P * P),
           *eig = malloc(sizeof *eig * (size_t)P);
    ck_assert_int_eq(kfac_fisher_explicit(net, F), KFAC_OK);
    double fbig = 0.0, asym = 0.0, trace = 0.0;
    for (int i = 0; i < P; i++) {
        trace += F[(size_t)i * P + i];
        for (int j = 0; j < P; j++) {
            fbig = fmax(fbig, fabs(F[(size_t)i * P + j]));
            asym = fmax(asym, fabs(F[(size_t)i * P + j] - F[(size_t)j * P + i]));
        }
    }
    ck_assert_msg(fbig > 1e-3, "%s: F is (nearly) zero", case_name(c));
    ck_assert_msg(asym <= 1e-12 * fbig, "%s: F asymmetric by %g (max %g)", case_name(c), asym,
                  fbig);

    /* v^T F v >= 0 for random v */
    kfac_rng r;
    kfac_rng_seed(&r, 31 + _i);
    for (int t = 0; t < 50; t++) {
        double vfv = 0.0, vv = 0.0, v[128];
        ck_assert_int_le(P, 128);
        for (int i = 0; i < P; i++) {
            v[i] = kfac_rng_normal(&r);
            vv += v[i] * v[i];
        }
        for (int i = 0; i < P; i++)
            for (int j = 0; j < P; j++)
                vfv += v[i] * F[(size_t)i * P + j] * v[j];
        ck_assert_msg(vfv >= -1e-12 * fbig * vv, "%s: v^T F v = %g < 0", case_name(c), vfv);
    }

    memcpy(A, F, sizeof *A * (size_t)P * P);
    jacobi_eigenvalues(A, P, eig);
    double emin = eig[0], emax = eig[0], esum = 0.0;
    for (int i = 0; i < P; i++) {
        emin = fmin(emin, eig[i]);
        emax = fmax(emax, eig[i]);
        esum += eig[i];
    }
    ck_assert_double_eq_tol(esum, trace, 1e-9 * fabs(trace)); /* the solver itself */
    ck_assert_msg(emax > 0.0 && emin >= -1e-6 * emax, "%s: eigenvalues in [%g, %g]", case_name(c),
                  emin, emax);
    int rank = 0, h_rank = c->loss == KFAC_LOSS_SOFTMAX_XENT ? dL - 1 : dL;
    for (int i = 0; i < P; i++)
        rank += eig[i] > 1e-6 * emax;
    ck_assert_msg(rank <= BATCH * h_rank && rank >= h_rank,
                  "%s: rank %d of F, expected in [%d, %d]", case_name(c), rank, h_rank,
                  BATCH * h_rank);
    free(F);
    free(A);
    free(eig);
    kfac_net_free(net);
}
END_TEST

/* mean KL(p_theta || p_{theta + s u}) and 1/2 d^T F d with d the step
 * actually taken in float; returns |KL / quad - 1| */
static double kl_quadratic_error(kfac_net *net, kfac_fisher *f, const float *x, const float *u,
                                 double s)
{
    size_t P = kfac_net_n_params(net);
    int dL = kfac_net_outputs(net);
    kfac_loss loss = kfac_net_get_spec(net)->loss;
    float *theta = kfac_net_params(net), *keep = malloc(sizeof *keep * P),
          *d = malloc(sizeof *d * P), *fd = malloc(sizeof *fd * P), zp[BATCH * 3];
    memcpy(keep, theta, sizeof *keep * P);
    ck_assert_int_eq(kfac_net_forward(net, x, BATCH), KFAC_OK);
    memcpy(zp, kfac_net_output(net), sizeof(float) * BATCH * dL);
    for (size_t i = 0; i < P; i++) {
        theta[i] = (float)(keep[i] + s * u[i]);
        d[i] = theta[i] - keep[i]; /* exact: the two floats are close */
    }
    ck_assert_int_eq(kfac_net_forward(net, x, BATCH), KFAC_OK);
    double kl = kfac_loss_types[loss].kl(zp, kfac_net_output(net), BATCH, dL) / BATCH;
    memcpy(theta, keep, sizeof *keep * P);
    ck_assert_int_eq(kfac_net_forward(net, x, BATCH), KFAC_OK);
    ck_assert_int_eq(kfac_fisher_vec(f, net, d, fd), KFAC_OK);
    double quad = 0.0;
    for (size_t i = 0; i < P; i++)
        quad += 0.5 * (double)d[i] * fd[i];
    ck_assert_msg(quad > 1e-9 * s * s, "1/2 d^T F d = %g is (nearly) zero", quad);
    free(keep);
    free(d);
    free(fd);
    return fabs(kl / quad - 1.0);
}

/* ---- KL(p_theta || p_{theta + d}) ~ 1/2 d^T F d, better as d shrinks */
START_TEST(test_kl_quadratic)
{
    const fisher_case *c = &cases[_i];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 400 + _i, x);
    size_t P = kfac_net_n_params(net);
    float *u = malloc(sizeof *u * P);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    kfac_rng r;
    kfac_rng_seed(&r, 41 + _i);
    fill_unit(u, P, &r);
    double big = kl_quadratic_error(net, f, x, u, 1e-1);
    double mid = kl_quadratic_error(net, f, x, u, 1e-2);
    double small = kl_quadratic_error(net, f, x, u, 1e-3);
    ck_assert_msg(mid < 0.05, "%s: |d| = 1e-2: KL / (1/2 d^T F d) off by %g", case_name(c), mid);
    ck_assert_msg(small < mid && mid < big,
                  "%s: KL / (1/2 d^T F d) - 1 does not shrink with d: "
                  "%g, %g, %g at |d| = 1e-1, 1e-2, 1e-3",
                  case_name(c), big, mid, small);
    kfac_fisher_free(f);
    free(u);
    kfac_net_free(net);
}
END_TEST

/* ---- kfac_fisher_vec reads the net and changes nothing in it */
START_TEST(test_fisher_vec_leaves_net)
{
    const fisher_case *c = &cases[4];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 500, x);
    size_t P = kfac_net_n_params(net);
    int L = kfac_net_n_layers(net), dL = kfac_net_outputs(net);
    /* a backward first, so there are recorded g to disturb too */
    float y[BATCH * 3];
    predictive_mean(c->loss, kfac_net_output(net), y, BATCH, dL);
    y[0] = 1.0f - y[0];
    ck_assert_int_eq(kfac_net_backward(net, y, NULL), KFAC_OK);

    size_t total = P + (size_t)BATCH * dL;
    for (int l = 0; l < L; l++)
        total += (size_t)BATCH * net->layers[l].d_in + (size_t)BATCH * net->layers[l].d_out;
    float *before = malloc(sizeof *before * total), *after = malloc(sizeof *after * total);
    float *v = malloc(sizeof *v * P), *fv = malloc(sizeof *fv * P);
    for (int pass = 0; pass < 2; pass++) {
        float *s = pass ? after : before;
        memcpy(s, net->theta, sizeof *s * P);
        s += P;
        memcpy(s, net->z, sizeof *s * BATCH * dL);
        s += BATCH * dL;
        for (int l = 0; l < L; l++) {
            size_t na = (size_t)BATCH * net->layers[l].d_in, ng = (size_t)BATCH * net->layers[l].d_out;
            memcpy(s, net->layers[l].abar, sizeof *s * na);
            memcpy(s + na, net->layers[l].g, sizeof *s * ng);
            s += na + ng;
        }
        if (pass == 0) {
            kfac_fisher *f = NULL;
            kfac_rng r;
            kfac_rng_seed(&r, 3);
            fill_uniform(v, P, -1.0f, 1.0f, &r);
            ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
            ck_assert_int_eq(kfac_fisher_vec(f, net, v, fv), KFAC_OK);
            ck_assert(norm2(fv, P) > 1e-4);
            kfac_fisher_free(f);
        }
    }
    ck_assert_int_eq(kfac_net_batch(net), BATCH);
    ck_assert_int_eq(memcmp(before, after, sizeof *before * total), 0);
    free(before);
    free(after);
    free(v);
    free(fv);
    kfac_net_free(net);
}
END_TEST

/* F v over the first m rows (the quadratic rule's subset) is F v of a
 * forward pass over those m rows alone; 0 rows give zeros. */
START_TEST(test_fisher_vec_rows)
{
    const fisher_case *c = &cases[_i];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 900 + _i, x);
    size_t P = kfac_net_n_params(net);
    float *v = malloc(sizeof *v * P), *sub = malloc(sizeof *sub * P), *alone = malloc(sizeof *alone * P);
    kfac_rng r;
    kfac_rng_seed(&r, 4);
    fill_uniform(v, P, -1.0f, 1.0f, &r);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    int m = BATCH / 3;
    ck_assert_int_eq(kfac_fisher_vec_rows(f, net, m, v, sub), KFAC_OK);
    ck_assert_int_eq(kfac_net_forward(net, x, m), KFAC_OK);
    ck_assert_int_eq(kfac_fisher_vec(f, net, v, alone), KFAC_OK);
    double diff = 0.0, norm = norm2(alone, P);
    ck_assert(norm > 1e-4);
    for (size_t i = 0; i < P; i++)
        diff += ((double)sub[i] - alone[i]) * ((double)sub[i] - alone[i]);
    ck_assert_msg(sqrt(diff) <= 1e-5 * norm, "case %d: rows %d: |diff| %g, |F v| %g", _i, m, sqrt(diff), norm);
    ck_assert_int_eq(kfac_fisher_vec_rows(f, net, 0, v, sub), KFAC_OK);
    ck_assert(norm2(sub, P) == 0.0);
    ck_assert_int_eq(kfac_fisher_vec_rows(f, net, m + 1, v, sub), KFAC_ERR_INVALID_ARG);
    kfac_fisher_free(f);
    free(v);
    free(sub);
    free(alone);
    kfac_net_free(net);
}
END_TEST

/* The quadratic rule's forms by forward mode alone equal the products
 * through F v: sums over the first m rows of (J v1)^T H (J v2) are m times
 * v1^T (F v2) of those rows, for every case (loss and activation); v2
 * NULL gives the first alone; 0 rows give zeros. */
START_TEST(test_fisher_forms)
{
    const fisher_case *c = &cases[_i];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 950 + _i, x);
    size_t P = kfac_net_n_params(net);
    float *v1 = malloc(sizeof *v1 * P), *v2 = malloc(sizeof *v2 * P), *fv = malloc(sizeof *fv * P);
    kfac_rng r;
    kfac_rng_seed(&r, 5);
    fill_uniform(v1, P, -1.0f, 1.0f, &r);
    fill_uniform(v2, P, -1.0f, 1.0f, &r);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    int m = BATCH - 3;
    double s[3], want[3];
    ck_assert_int_eq(kfac_fisher_forms(f, net, m, v1, v2, s), KFAC_OK);
    const float *pairs[3][2] = {{v1, v1}, {v1, v2}, {v2, v2}};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(kfac_fisher_vec_rows(f, net, m, pairs[k][1], fv), KFAC_OK);
        double acc = 0.0;
        for (size_t i = 0; i < P; i++)
            acc += (double)pairs[k][0][i] * fv[i];
        want[k] = acc * m;
    }
    ck_assert(fabs(want[0]) > 1e-3 && fabs(want[2]) > 1e-3);
    for (int k = 0; k < 3; k++)
        ck_assert_msg(fabs(s[k] - want[k]) <= 1e-4 * (fabs(want[0]) + fabs(want[2])),
                      "case %d: form %d %g, through F v %g", _i, k, s[k], want[k]);
    double one[3];
    ck_assert_int_eq(kfac_fisher_forms(f, net, m, v1, NULL, one), KFAC_OK);
    ck_assert(one[0] == s[0] && one[1] == 0.0 && one[2] == 0.0);
    ck_assert_int_eq(kfac_fisher_forms(f, net, 0, v1, v2, one), KFAC_OK);
    ck_assert(one[0] == 0.0 && one[1] == 0.0 && one[2] == 0.0);
    ck_assert_int_eq(kfac_fisher_forms(f, net, BATCH + 1, v1, v2, one), KFAC_ERR_INVALID_ARG);
    kfac_fisher_free(f);
    free(v1), free(v2), free(fv);
    kfac_net_free(net);
}
END_TEST

/* The slopes (kfac_fisher_model): with the backward pass's g at the last
 * pre-activation, the sums over the rows of g^T J v are B times the mean
 * loss's gradient dotted with v, for every case (a non-linear last
 * activation included); the forms beside them are kfac_fisher_forms' to
 * the bit; without g the slopes are 0. */
START_TEST(test_fisher_slopes)
{
    const fisher_case *c = &cases[_i];
    float x[BATCH * 5];
    kfac_net *net = make_case(c, 970 + _i, x);
    size_t P = kfac_net_n_params(net);
    const int L = c->n_layers, dL = c->units[L - 1];
    float *v1 = malloc(sizeof *v1 * P), *v2 = malloc(sizeof *v2 * P), *grad = malloc(sizeof *grad * P);
    float y[BATCH * 3];
    kfac_rng r;
    kfac_rng_seed(&r, 6);
    fill_uniform(v1, P, -1.0f, 1.0f, &r);
    fill_uniform(v2, P, -1.0f, 1.0f, &r);
    fill_uniform(y, (size_t)BATCH * dL, 0.0f, 1.0f, &r);
    if (c->loss == KFAC_LOSS_SOFTMAX_XENT) /* one-hot labels */
        for (int i = 0; i < BATCH; i++)
            for (int j = 0; j < dL; j++)
                y[i * dL + j] = j == i % dL ? 1.0f : 0.0f;
    ck_assert_int_eq(kfac_net_backward(net, y, grad), KFAC_OK);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    double s[5], forms[3], none[5];
    ck_assert_int_eq(kfac_fisher_model(f, net, BATCH, kfac_net_layer_pregrad(net, L - 1), v1, NULL, v2, s), KFAC_OK);
    const float *dirs[2] = {v1, v2};
    for (int k = 0; k < 2; k++) {
        double want = 0.0, scale = 0.0;
        for (size_t i = 0; i < P; i++) {
            want += (double)grad[i] * dirs[k][i];
            scale += fabs((double)grad[i] * dirs[k][i]);
        }
        ck_assert_msg(fabs(want) > 1e-3, "case %d: the gradient is orthogonal to v%d", _i, k + 1);
        ck_assert_msg(fabs(s[3 + k] / BATCH - want) <= 1e-5 * scale, "case %s: slope %d %.9g, grad^T v %.9g",
                      case_name(c), k + 1, s[3 + k] / BATCH, want);
    }
    ck_assert_int_eq(kfac_fisher_forms(f, net, BATCH, v1, v2, forms), KFAC_OK);
    ck_assert(memcmp(forms, s, sizeof forms) == 0);
    ck_assert_int_eq(kfac_fisher_model(f, net, BATCH, NULL, v1, NULL, v2, none), KFAC_OK);
    ck_assert(none[3] == 0.0 && none[4] == 0.0 && memcmp(none, s, sizeof forms) == 0);
    /* every layer's part along v1 given as abar_l v^T: with v = v1 the same
     * forms; with v = v2 the first form is then v2's (the parts are used) */
    float *pre_buf = malloc(sizeof(float) * BATCH * (size_t)(c->units[0] + c->units[1] + c->units[2]));
    for (int which = 0; which < 2; which++) {
        const float *pre[3] = {NULL, NULL, NULL};
        float *at = pre_buf;
        for (int l = 0; l < L; l++) {
            int dout, din;
            const float *w = kfac_net_layer_weights(net, l, &dout, &din);
            const float *v = (which ? v2 : v1) + (w - kfac_net_params(net));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BATCH, dout, din, 1.0f,
                        kfac_net_layer_input(net, l), din, v, din, 0.0f, at, dout);
            pre[l] = at;
            at += (size_t)BATCH * dout;
        }
        double sp[5];
        ck_assert_int_eq(kfac_fisher_model(f, net, BATCH, NULL, v1, pre, v2, sp), KFAC_OK);
        double want0 = which ? s[2] : s[0];
        ck_assert_msg(fabs(sp[0] - want0) <= 1e-5 * fabs(want0), "case %s: given parts (v%d): %.9g against %.9g",
                      case_name(c), which + 1, sp[0], want0);
        ck_assert(sp[2] == s[2]); /* v2's pass takes no parts */
    }
    free(pre_buf);
    kfac_fisher_free(f);
    free(v1), free(v2), free(grad);
    kfac_net_free(net);
}
END_TEST

/* ---- the loss table's KL: the defining formula where it is safe, and
 * finite, non-negative and zero at zp = zq where it is not */
START_TEST(test_loss_kl)
{
    enum { N = 4, D = 5 };
    kfac_rng r;
    kfac_rng_seed(&r, 61);
    float zp[N * D], zq[N * D];
    fill_uniform(zp, N * D, -3.0f, 3.0f, &r);
    fill_uniform(zq, N * D, -3.0f, 3.0f, &r);
    for (int k = 0; k < KFAC_LOSS_COUNT; k++) {
        const kfac_loss_type *lt = &kfac_loss_types[k];
        double ref = 0.0;
        for (int i = 0; i < N; i++) {
            const float *a = zp + i * D, *b = zq + i * D;
            double sa = 0.0, sb = 0.0;
            for (int j = 0; j < D; j++) {
                sa += exp(a[j]);
                sb += exp(b[j]);
            }
            for (int j = 0; j < D; j++) {
                if (k == KFAC_LOSS_SOFTMAX_XENT) {
                    double p = exp(a[j]) / sa, q = exp(b[j]) / sb;
                    ref += p * log(p / q);
                } else if (k == KFAC_LOSS_SIGMOID_XENT) {
                    double p = 1.0 / (1.0 + exp(-a[j])), q = 1.0 / (1.0 + exp(-b[j]));
                    ref += p * log(p / q) + (1.0 - p) * log((1.0 - p) / (1.0 - q));
                } else {
                    ref += 0.5 * ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
                }
            }
        }
        double kl = lt->kl(zp, zq, N, D);
        ck_assert_msg(ref > 0.1, "%s: reference KL %g", lt->name, ref);
        ck_assert_msg(fabs(kl - ref) < 1e-9 * ref, "%s: KL %.12g, reference %.12g", lt->name, kl,
                      ref);
        ck_assert_double_eq(lt->kl(zp, zp, N, D), 0.0);
    }
    /* saturated outputs: a sigmoid at +-80 against one at -+80 differs by
     * about 80 nats per unit, not inf or NaN */
    float big[2] = {80.0f, -80.0f}, flip[2] = {-80.0f, 80.0f};
    double kl_sig = kfac_loss_types[KFAC_LOSS_SIGMOID_XENT].kl(big, flip, 1, 2);
    ck_assert_msg(fabs(kl_sig - 160.0) < 1e-6, "sigmoid KL at saturation %g", kl_sig);
    double kl_soft = kfac_loss_types[KFAC_LOSS_SOFTMAX_XENT].kl(big, flip, 1, 2);
    ck_assert_msg(fabs(kl_soft - 160.0) < 1e-6, "softmax KL at saturation %g", kl_soft);
    float huge[3] = {1000.0f, -1000.0f, 0.0f};
    ck_assert_double_eq(kfac_loss_types[KFAC_LOSS_SOFTMAX_XENT].kl(huge, huge, 1, 3), 0.0);
    ck_assert_double_eq(kfac_loss_types[KFAC_LOSS_SIGMOID_XENT].kl(huge, huge, 1, 3), 0.0);
}
END_TEST

START_TEST(test_fisher_errors)
{
    const fisher_case *c = &cases[0];
    float x[BATCH * 5], v[64] = {0}, fv[64];
    kfac_net *net = make_case(c, 600, x);
    kfac_fisher *f = NULL;
    ck_assert_int_eq(kfac_fisher_new(NULL, &f), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(kfac_fisher_new(net, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_fisher_new(net, &f), KFAC_OK);
    ck_assert_int_eq(kfac_fisher_vec(f, net, NULL, fv), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_fisher_explicit(net, NULL), KFAC_ERR_INVALID_ARG);

    /* a net of another shape is refused */
    kfac_net *other = make_case(&cases[4], 601, x);
    ck_assert_int_eq(kfac_fisher_vec(f, other, v, fv), KFAC_ERR_SHAPE);
    kfac_net_free(other);

    /* before any forward pass */
    kfac_net *fresh = NULL;
    ck_assert_int_eq(kfac_net_new(kfac_net_get_spec(net), MAX_BATCH, &fresh), KFAC_OK);
    ck_assert_int_eq(kfac_fisher_vec(f, fresh, v, fv), KFAC_ERR_STATE);
    double F[1];
    ck_assert_int_eq(kfac_fisher_explicit(fresh, F), KFAC_ERR_STATE);
    kfac_net_free(fresh);

    /* a batch beyond the buffers' */
    kfac_net *wide = NULL;
    ck_assert_int_eq(kfac_net_new(kfac_net_get_spec(net), MAX_BATCH + 2, &wide), KFAC_OK);
    float xw[(MAX_BATCH + 2) * 5] = {0};
    ck_assert_int_eq(kfac_net_forward(wide, xw, MAX_BATCH + 2), KFAC_OK);
    ck_assert_int_eq(kfac_fisher_vec(f, wide, v, fv), KFAC_ERR_SHAPE);
    kfac_net_free(wide);

    kfac_fisher_free(f);
    kfac_fisher_free(NULL);
    kfac_net_free(net);
}
END_TEST

Suite *fisher_suite(void)
{
    Suite *s = suite_create("fisher");
    TCase *tc = tcase_create("fisher");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_fisher_vec_explicit, 0, N_CASES);
    tcase_add_loop_test(tc, test_fisher_vec_finite_diff, 0, N_CASES);
    tcase_add_loop_test(tc, test_explicit_symmetric_psd, 0, N_CASES);
    tcase_add_loop_test(tc, test_kl_quadratic, 0, N_CASES);
    tcase_add_test(tc, test_fisher_vec_leaves_net);
    tcase_add_loop_test(tc, test_fisher_vec_rows, 0, N_CASES);
    tcase_add_loop_test(tc, test_fisher_forms, 0, N_CASES);
    tcase_add_loop_test(tc, test_fisher_slopes, 0, N_CASES);
    tcase_add_test(tc, test_loss_kl);
    tcase_add_test(tc, test_fisher_errors);
    suite_add_tcase(s, tc);
    return s;
}
