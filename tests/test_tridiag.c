/* test_tridiag.c - inversion tridiag (docs/algorithm.md §4.7) against an
 * explicit construction in double of the same block-tridiagonal model's
 * inverse, Xi^T Lambda Xi, on a tiny three-layer dense net's rows; that
 * construction checked in turn against the property that defines it (its
 * inverse agrees with the band T on T's blocks); the step engine's
 * direction, the staged statistics of a process group, one layer (where
 * it is CHOLESKY), a zero gradient, and the refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "factors.h"
#include "kfac.h"
#include "tests.h"

enum { NL = 3, B = 40 };
/* d_in[l + 1] = d_out[l] + 1: each layer's input is the last one's output
 * and the homogeneous 1 */
static const int D_IN[NL] = {4, 6, 5}, D_OUT[NL] = {5, 4, 3};

/* The rows a net would record: abar_l (B x d_in, last column 1) by a
 * tanh forward pass, and g_l (B x d_out) by back-propagating random
 * output gradients through the same weights, so adjacent layers'
 * statistics are correlated as in a real net. */
typedef struct rows {
    float abar[NL][B * 6], g[NL][B * 5];
    float grad[NL][5 * 6]; /* a gradient per layer (d_out x d_in) */
} rows;

static void make_rows(rows *x, uint64_t seed)
{
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    float W[NL][5 * 6], s[NL][B * 5];
    for (int l = 0; l < NL; l++)
        test_fill_uniform(W[l], (size_t)D_OUT[l] * D_IN[l], -0.9f, 0.9f, &r);
    for (int n = 0; n < B; n++) {
        for (int j = 0; j < D_IN[0] - 1; j++)
            x->abar[0][n * D_IN[0] + j] = (float)kfac_rng_normal(&r);
        x->abar[0][n * D_IN[0] + D_IN[0] - 1] = 1.0f;
    }
    for (int l = 0; l < NL; l++)
        for (int n = 0; n < B; n++)
            for (int i = 0; i < D_OUT[l]; i++) {
                double acc = 0;
                for (int j = 0; j < D_IN[l]; j++)
                    acc += (double)W[l][i * D_IN[l] + j] * x->abar[l][n * D_IN[l] + j];
                s[l][n * D_OUT[l] + i] = (float)acc;
                if (l + 1 < NL) {
                    x->abar[l + 1][n * D_IN[l + 1] + i] = tanhf((float)acc);
                    x->abar[l + 1][n * D_IN[l + 1] + D_OUT[l]] = 1.0f;
                }
            }
    for (int n = 0; n < B * D_OUT[NL - 1]; n++)
        x->g[NL - 1][n] = (float)kfac_rng_normal(&r);
    for (int l = NL - 2; l >= 0; l--)
        for (int n = 0; n < B; n++)
            for (int i = 0; i < D_OUT[l]; i++) {
                /* g_l = (W_{l+1} without its bias column)^T g_{l+1} .* tanh'(s_l) */
                double acc = 0;
                for (int k = 0; k < D_OUT[l + 1]; k++)
                    acc += (double)W[l + 1][k * D_IN[l + 1] + i] * x->g[l + 1][n * D_OUT[l + 1] + k];
                float t = tanhf(s[l][n * D_OUT[l] + i]);
                x->g[l][n * D_OUT[l] + i] = (float)(acc * (1.0 - (double)t * t));
            }
    for (int l = 0; l < NL; l++)
        test_fill_uniform(x->grad[l], (size_t)D_OUT[l] * D_IN[l], -1.0f, 1.0f, &r);
}

/* M^-1 (n x n, double) by Gauss-Jordan with partial pivoting, independent
 * of LAPACK; M is overwritten */
static void invert_dense(double *M, int n, double *out)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            out[i * n + j] = i == j;
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(M[r * n + c]) > fabs(M[piv * n + c]))
                piv = r;
        for (int k = 0; k < n; k++) {
            double t = M[c * n + k];
            M[c * n + k] = M[piv * n + k], M[piv * n + k] = t;
            t = out[c * n + k];
            out[c * n + k] = out[piv * n + k], out[piv * n + k] = t;
        }
        double d = M[c * n + c];
        ck_assert(fabs(d) > 0);
        for (int k = 0; k < n; k++)
            M[c * n + k] /= d, out[c * n + k] /= d;
        for (int r = 0; r < n; r++)
            if (r != c) {
                double f = M[r * n + c];
                for (int k = 0; k < n; k++)
                    M[r * n + k] -= f * M[c * n + k], out[r * n + k] -= f * out[c * n + k];
            }
    }
}

/* (1/B) x^T y in double: x is B x p, y is B x q */
static void moment(const float *x, int p, const float *y, int q, double *out)
{
    for (int i = 0; i < p; i++)
        for (int j = 0; j < q; j++) {
            double s = 0;
            for (int n = 0; n < B; n++)
                s += (double)x[n * p + i] * y[n * q + j];
            out[i * q + j] = s / B;
        }
}

/* The explicit model of docs/algorithm.md §4.7 on the whole parameter
 * vector (P = 59, row-major vec per layer, layers in order): the band T,
 * diagonal blocks (G_l + gG I) (x) (A_l + gA I) with the factored
 * Tikhonov split, off-diagonal XG_l (x) XA_l; then Psi, Sigma, Xi and
 * Lambda formed as whole matrices and F_inv = Xi^T Lambda Xi. */
enum { P = 5 * 4 + 4 * 6 + 3 * 5 };
typedef struct model {
    int off[NL + 1];
    double F[P * P];    /* T: the tridiagonal band, zero elsewhere */
    double Finv[P * P]; /* Xi^T Lambda Xi */
} model;

static void build_model(const rows *x, double lambda, model *m)
{
    static double A[NL][36], G[NL][25], XA[NL][36], XG[NL][25];
    m->off[0] = 0;
    for (int l = 0; l < NL; l++)
        m->off[l + 1] = m->off[l] + D_OUT[l] * D_IN[l];
    ck_assert_int_eq(m->off[NL], P);
    memset(m->F, 0, sizeof m->F);
    for (int l = 0; l < NL; l++) {
        int n = D_IN[l], k = D_OUT[l];
        moment(x->abar[l], n, x->abar[l], n, A[l]);
        moment(x->g[l], k, x->g[l], k, G[l]);
        double ta = 0, tg = 0;
        for (int i = 0; i < n; i++)
            ta += A[l][i * n + i];
        for (int i = 0; i < k; i++)
            tg += G[l][i * k + i];
        double pi = sqrt((ta / n) / (tg / k)), ga = pi * sqrt(lambda), gg = sqrt(lambda) / pi;
        for (int i = 0; i < n; i++)
            A[l][i * n + i] += ga;
        for (int i = 0; i < k; i++)
            G[l][i * k + i] += gg;
        if (l + 1 < NL) {
            moment(x->abar[l], n, x->abar[l + 1], D_IN[l + 1], XA[l]);
            moment(x->g[l], k, x->g[l + 1], D_OUT[l + 1], XG[l]);
        }
    }
    /* blocks: row (i, j) of layer l is off[l] + i d_in[l] + j */
    for (int l = 0; l < NL; l++) {
        int n = D_IN[l], k = D_OUT[l];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < n; j++)
                for (int i2 = 0; i2 < k; i2++)
                    for (int j2 = 0; j2 < n; j2++)
                        m->F[(size_t)(m->off[l] + i * n + j) * P + m->off[l] + i2 * n + j2] =
                            G[l][i * k + i2] * A[l][j * n + j2];
        if (l + 1 == NL)
            continue;
        int n2 = D_IN[l + 1], k2 = D_OUT[l + 1];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < n; j++)
                for (int i2 = 0; i2 < k2; i2++)
                    for (int j2 = 0; j2 < n2; j2++) {
                        double v = XG[l][i * k2 + i2] * XA[l][j * n2 + j2];
                        int r = m->off[l] + i * n + j, c = m->off[l + 1] + i2 * n2 + j2;
                        m->F[(size_t)r * P + c] = m->F[(size_t)c * P + r] = v;
                    }
    }
    /* Psi_l = F_{l,l+1} F_{l+1,l+1}^-1; Sigma_l = F_ll - Psi_l F_{l+1,l};
     * Sigma_last = F_last,last; Xi = I - Psi on the block superdiagonal;
     * Lambda = blockdiag(Sigma^-1) */
    static double Xi[P * P], Lam[P * P], T[P * P], blk[P * P], binv[P * P], psi[P * P];
    memset(Xi, 0, sizeof Xi), memset(Lam, 0, sizeof Lam);
    for (int i = 0; i < P; i++)
        Xi[i * P + i] = 1;
    for (int l = 0; l < NL; l++) {
        int o = m->off[l], p = m->off[l + 1] - o;
        for (int i = 0; i < p; i++) /* Sigma starts as F_ll */
            for (int j = 0; j < p; j++)
                T[i * p + j] = m->F[(size_t)(o + i) * P + o + j];
        if (l + 1 < NL) {
            int o2 = m->off[l + 1], p2 = m->off[l + 2] - o2;
            for (int i = 0; i < p2; i++)
                for (int j = 0; j < p2; j++)
                    blk[i * p2 + j] = m->F[(size_t)(o2 + i) * P + o2 + j];
            invert_dense(blk, p2, binv);
            for (int i = 0; i < p; i++)
                for (int j = 0; j < p2; j++) {
                    double s = 0;
                    for (int q = 0; q < p2; q++)
                        s += m->F[(size_t)(o + i) * P + o2 + q] * binv[q * p2 + j];
                    psi[i * p2 + j] = s;
                    Xi[(size_t)(o + i) * P + o2 + j] = -s;
                }
            for (int i = 0; i < p; i++)
                for (int j = 0; j < p; j++) {
                    double s = 0;
                    for (int q = 0; q < p2; q++)
                        s += psi[i * p2 + q] * m->F[(size_t)(o2 + q) * P + o + j];
                    T[i * p + j] -= s;
                }
        }
        invert_dense(T, p, binv);
        for (int i = 0; i < p; i++)
            for (int j = 0; j < p; j++)
                Lam[(size_t)(o + i) * P + o + j] = binv[i * p + j];
    }
    /* Finv = Xi^T (Lam Xi) */
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) {
            double s = 0;
            for (int q = 0; q < P; q++)
                s += Lam[(size_t)i * P + q] * Xi[(size_t)q * P + j];
            T[i * P + j] = s;
        }
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) {
            double s = 0;
            for (int q = 0; q < P; q++)
                s += Xi[(size_t)q * P + i] * T[q * P + j];
            m->Finv[(size_t)i * P + j] = s;
        }
}

static double norm(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i] * v[i];
    return sqrt(s);
}

/* |delta - Finv grad| / |Finv grad| over the whole vector */
static double rel_err_vs_model(const model *m, const rows *x, float *const *delta)
{
    double v[P], want[P], got[P], diff[P];
    for (int l = 0; l < NL; l++)
        for (int i = 0; i < m->off[l + 1] - m->off[l]; i++)
            v[m->off[l] + i] = x->grad[l][i], got[m->off[l] + i] = delta[l][i];
    ck_assert(norm(v, P) > 1.0); /* not a trivially zero gradient */
    for (int i = 0; i < P; i++) {
        double s = 0;
        for (int j = 0; j < P; j++)
            s += m->Finv[(size_t)i * P + j] * v[j];
        want[i] = s;
        diff[i] = got[i] - s;
    }
    ck_assert(norm(want, P) > 0);
    return norm(diff, P) / norm(want, P);
}

static kfac_factors *tridiag_factors(const rows *x, double lambda)
{
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.inversion = KFAC_INV_TRIDIAG;
    kfac_factors *pc;
    ck_assert_int_eq(kfac_factors_new(NL, D_IN, D_OUT, NULL, B, &kp, NULL, &pc), KFAC_OK);
    const float *ab[NL], *gs[NL];
    for (int l = 0; l < NL; l++)
        ab[l] = x->abar[l], gs[l] = x->g[l];
    kfac_factors_begin_stats(pc); /* the first round: epsilon 0, the batch's moments */
    kfac_factors_accumulate_all(pc, ab, D_IN, gs, B, 1.0f / B);
    ck_assert_msg(kfac_factors_invert(pc, lambda, NULL) == KFAC_OK, "%s", kfac_last_error());
    return pc;
}

/* The explicit construction is the model the paper defines: its
 * covariance, the inverse of Xi^T Lambda Xi, agrees with T on the band
 * (diagonal and first off-diagonal blocks), and is not T itself (its
 * (1, 3) block is not zero): F_inv is not the inverse of the band. */
START_TEST(test_explicit_model_matches_band)
{
    static rows x;
    static model m;
    static double M[P * P], Minv[P * P];
    make_rows(&x, 11);
    build_model(&x, 1e-2, &m);
    memcpy(M, m.Finv, sizeof M);
    invert_dense(M, P, Minv);
    double band = 0, err = 0, outside = 0;
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) {
            int li = 0, lj = 0;
            while (i >= m.off[li + 1])
                li++;
            while (j >= m.off[lj + 1])
                lj++;
            double f = m.F[(size_t)i * P + j], g = Minv[(size_t)i * P + j];
            if (abs(li - lj) <= 1)
                band = fmax(band, fabs(f)), err = fmax(err, fabs(f - g));
            else
                outside = fmax(outside, fabs(g));
        }
    ck_assert_msg(err <= 1e-9 * band, "F_inv^-1 against T on the band: %g of %g", err, band);
    ck_assert_msg(outside > 1e-6 * band, "F_inv^-1 outside the band is %g: the model degenerated", outside);
}
END_TEST

/* The library's direction against Xi^T Lambda Xi grad, from tiny to large
 * damping (loop index: lambda = 1e-4, 1e-2, 1, 100) */
START_TEST(test_direction_matches_explicit)
{
    static const double lambdas[] = {1e-4, 1e-2, 1.0, 100.0};
    double lambda = lambdas[_i];
    static rows x;
    static model m;
    make_rows(&x, 7 + (uint64_t)_i);
    build_model(&x, lambda, &m);
    kfac_factors *pc = tridiag_factors(&x, lambda);
    static float delta[NL][30];
    const float *g[NL];
    float *d[NL];
    for (int l = 0; l < NL; l++)
        g[l] = x.grad[l], d[l] = delta[l];
    ck_assert_msg(kfac_factors_apply_all(pc, g, d) == KFAC_OK, "%s", kfac_last_error());
    double e = rel_err_vs_model(&m, &x, d);
    ck_assert_msg(e < 2e-4, "lambda %g: relative error %g against the explicit model", lambda, e);
    /* and not the block-diagonal direction: the coupling matters here */
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.inversion = KFAC_INV_CHOLESKY;
    kfac_factors *bd;
    ck_assert_int_eq(kfac_factors_new(NL, D_IN, D_OUT, NULL, B, &kp, NULL, &bd), KFAC_OK);
    const float *ab[NL], *gs[NL];
    for (int l = 0; l < NL; l++)
        ab[l] = x.abar[l], gs[l] = x.g[l];
    kfac_factors_begin_stats(bd);
    kfac_factors_accumulate_all(bd, ab, D_IN, gs, B, 1.0f / B);
    ck_assert_int_eq(kfac_factors_invert(bd, lambda, NULL), KFAC_OK);
    static float dbd[NL][30];
    for (int l = 0; l < NL; l++)
        ck_assert_int_eq(kfac_factors_apply(bd, l, x.grad[l], dbd[l]), KFAC_OK);
    float *pbd[NL] = {dbd[0], dbd[1], dbd[2]};
    if (lambda <= 1.0) /* at large damping both tend to the scaled gradient */
        ck_assert_msg(rel_err_vs_model(&m, &x, pbd) > 10 * e, "lambda %g: block-diagonal as close (%g) as tridiag (%g)",
                      lambda, rel_err_vs_model(&m, &x, pbd), e);
    kfac_factors_free(bd);
    kfac_factors_free(pc);
}
END_TEST

/* The step engine: statistics, inversion and the direction of one
 * kfac_precond_step equal the explicit model's */
START_TEST(test_precond_direction)
{
    static rows x;
    static model m;
    const double lambda = 1e-3;
    make_rows(&x, 5);
    build_model(&x, lambda, &m);
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.inversion = KFAC_INV_TRIDIAG;
    kp.damping = (float)lambda;
    kp.lr = 0.01f;
    kfac_precond *pc;
    ck_assert_int_eq(kfac_precond_new(NL, D_IN, D_OUT, B, NULL, &kp, &pc), KFAC_OK);
    static float w[NL][30];
    float *wl[NL];
    const float *grads[NL], *ab[NL], *gs[NL];
    for (int l = 0; l < NL; l++)
        wl[l] = w[l], grads[l] = x.grad[l], ab[l] = x.abar[l], gs[l] = x.g[l];
    kfac_precond_batch b = {B, wl, grads, ab, gs, 0.0, NULL};
    ck_assert_msg(kfac_precond_step(pc, &b) == KFAC_OK, "%s", kfac_last_error());
    float *d[NL];
    for (int l = 0; l < NL; l++) {
        d[l] = (float *)kfac_precond_direction(pc, l);
        ck_assert_ptr_nonnull(d[l]);
    }
    double e = rel_err_vs_model(&m, &x, d);
    ck_assert_msg(e < 2e-4, "kfac_precond_step's direction: relative error %g", e);
    kfac_kfac_stats st;
    ck_assert_int_eq(kfac_precond_get_stats(pc, &st), KFAC_OK);
    for (int l = 0; l < NL; l++)
        ck_assert_int_eq(st.batch_form[l], 0);
    kfac_precond_free(pc);
}
END_TEST

/* A process group's path: each half of the rows staged (the cross
 * moments in the same buffer as the factors), the stages summed, then
 * folded, gives the direction of all rows at once. Summing a stage
 * without the cross moments in it would leave them at one half's. */
START_TEST(test_staged_statistics)
{
    static rows x;
    make_rows(&x, 3);
    const double lambda = 1e-2;
    kfac_factors *whole = tridiag_factors(&x, lambda);
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.inversion = KFAC_INV_TRIDIAG;
    kfac_factors *pc;
    ck_assert_int_eq(kfac_factors_new(NL, D_IN, D_OUT, NULL, B, &kp, NULL, &pc), KFAC_OK);
    kfac_factors_begin_stats(pc);
    size_t n;
    float *stage = kfac_factors_stage(pc, &n);
    float *first = malloc(sizeof(float) * n);
    ck_assert_ptr_nonnull(first);
    for (int half = 0; half < 2; half++) {
        const float *ab[NL], *gs[NL];
        int r0 = half * (B / 2);
        for (int l = 0; l < NL; l++) {
            ab[l] = x.abar[l] + (size_t)r0 * D_IN[l], gs[l] = x.g[l] + (size_t)r0 * D_OUT[l];
            kfac_factors_batch_stats(pc, l, ab[l], D_IN[l], gs[l], B / 2, 1.0f / B);
        }
        kfac_factors_cross_stats(pc, ab, D_IN, gs, B / 2, 1.0f / B);
        if (half == 0)
            memcpy(first, stage, sizeof(float) * n);
    }
    for (size_t i = 0; i < n; i++) /* the group's sum */
        stage[i] += first[i];
    free(first);
    for (int l = 0; l < NL; l++)
        kfac_factors_fold(pc, l);
    kfac_factors_fold_cross(pc);
    ck_assert_int_eq(kfac_factors_invert(pc, lambda, NULL), KFAC_OK);
    static float d1[NL][30], d2[NL][30];
    const float *g[NL];
    float *p1[NL], *p2[NL];
    for (int l = 0; l < NL; l++)
        g[l] = x.grad[l], p1[l] = d1[l], p2[l] = d2[l];
    ck_assert_int_eq(kfac_factors_apply_all(whole, g, p1), KFAC_OK);
    ck_assert_int_eq(kfac_factors_apply_all(pc, g, p2), KFAC_OK);
    double err = 0, nrm = 0;
    for (int l = 0; l < NL; l++)
        for (int i = 0; i < D_IN[l] * D_OUT[l]; i++)
            err += (d1[l][i] - d2[l][i]) * (d1[l][i] - d2[l][i]), nrm += d1[l][i] * d1[l][i];
    ck_assert(nrm > 0);
    ck_assert_msg(sqrt(err / nrm) < 1e-4, "staged halves against the whole batch: %g", sqrt(err / nrm));
    kfac_factors_free(whole);
    kfac_factors_free(pc);
}
END_TEST

/* With one layer there is nothing to couple: the model is the damped
 * block-diagonal one, CHOLESKY's direction; and a zero gradient gives a
 * zero direction (docs/algorithm.md §4.7) */
START_TEST(test_one_layer_and_zero_gradient)
{
    static rows x;
    make_rows(&x, 9);
    int din = D_IN[0], dout = D_OUT[0];
    float dt[30], dc[30];
    kfac_factors *f[2];
    for (int k = 0; k < 2; k++) {
        kfac_kfac_params kp;
        kfac_kfac_params_init(&kp);
        kp.inversion = k ? KFAC_INV_CHOLESKY : KFAC_INV_TRIDIAG;
        ck_assert_int_eq(kfac_factors_new(1, &din, &dout, NULL, B, &kp, NULL, &f[k]), KFAC_OK);
        const float *ab[1] = {x.abar[0]}, *gs[1] = {x.g[0]};
        kfac_factors_begin_stats(f[k]);
        kfac_factors_accumulate_all(f[k], ab, &din, gs, B, 1.0f / B);
        ck_assert_int_eq(kfac_factors_invert(f[k], 1e-2, NULL), KFAC_OK);
    }
    const float *g[1] = {x.grad[0]};
    float *d[1] = {dt};
    ck_assert_int_eq(kfac_factors_apply_all(f[0], g, d), KFAC_OK);
    ck_assert_int_eq(kfac_factors_apply(f[1], 0, x.grad[0], dc), KFAC_OK);
    double err = 0, nrm = 0;
    for (int i = 0; i < din * dout; i++)
        err += (dt[i] - dc[i]) * (dt[i] - dc[i]), nrm += dc[i] * dc[i];
    ck_assert(nrm > 0);
    ck_assert_msg(sqrt(err / nrm) < 1e-4, "one layer: tridiag against cholesky %g", sqrt(err / nrm));
    float zero[30] = {0};
    g[0] = zero;
    ck_assert_int_eq(kfac_factors_apply_all(f[0], g, d), KFAC_OK);
    for (int i = 0; i < din * dout; i++)
        ck_assert(dt[i] == 0.0f);
    kfac_factors_free(f[0]);
    kfac_factors_free(f[1]);
}
END_TEST

/* A singular factor with a damping too small to make it invertible in
 * practice (an input that is always 0, lambda 1e-300: the basis would
 * hold 1/sqrt(gamma) ~ 1e75, past float) falls back to more damping
 * (docs/algorithm.md §4.3, §4.7), reports it, and gives a finite
 * direction; with lambda 1e-2 the same rows need no fallback. */
START_TEST(test_damping_fallback)
{
    static rows x;
    make_rows(&x, 4);
    for (int n = 0; n < B; n++)
        x.abar[0][n * D_IN[0]] = 0.0f;
    for (int k = 0; k < 2; k++) {
        kfac_kfac_params kp;
        kfac_kfac_params_init(&kp);
        kp.inversion = KFAC_INV_TRIDIAG;
        kfac_factors *pc;
        ck_assert_int_eq(kfac_factors_new(NL, D_IN, D_OUT, NULL, B, &kp, NULL, &pc), KFAC_OK);
        const float *ab[NL], *gs[NL], *g[NL];
        static float dd[NL][30];
        float *d[NL];
        for (int l = 0; l < NL; l++)
            ab[l] = x.abar[l], gs[l] = x.g[l], g[l] = x.grad[l], d[l] = dd[l];
        kfac_factors_begin_stats(pc);
        kfac_factors_accumulate_all(pc, ab, D_IN, gs, B, 1.0f / B);
        kfac_invert_report rep;
        ck_assert_msg(kfac_factors_invert(pc, k ? 1e-2 : 1e-300, &rep) == KFAC_OK, "%s", kfac_last_error());
        if (k == 0)
            ck_assert_msg((rep.fallbacks & KFAC_FALLBACK_DAMPING) && rep.max_damping_raise > 1e100,
                          "fallbacks %d, raise %g", rep.fallbacks, rep.max_damping_raise);
        else
            ck_assert_msg(rep.fallbacks == 0 && rep.max_damping_raise == 1.0, "fallbacks %d", rep.fallbacks);
        ck_assert_int_eq(kfac_factors_apply_all(pc, g, d), KFAC_OK);
        double nrm = 0;
        for (int l = 0; l < NL; l++)
            for (int i = 0; i < D_IN[l] * D_OUT[l]; i++) {
                ck_assert(isfinite(dd[l][i]));
                nrm += (double)dd[l][i] * dd[l][i];
            }
        ck_assert(nrm > 0);
        kfac_factors_free(pc);
    }
}
END_TEST

/* What the mode refuses: layers of several positions (convolutions), one
 * layer at a time, the batch form, and apply_all in another mode */
START_TEST(test_refusals)
{
    kfac_kfac_params kp;
    kfac_kfac_params_init(&kp);
    kp.inversion = KFAC_INV_TRIDIAG;
    int pos[NL] = {1, 4, 1};
    kfac_factors *pc = NULL;
    ck_assert_int_eq(kfac_factors_new(NL, D_IN, D_OUT, pos, B, &kp, NULL, &pc), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(pc);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "tridiag"));
    kfac_precond *pr = NULL;
    ck_assert_int_eq(kfac_precond_new_positions(NL, D_IN, D_OUT, pos, B, NULL, &kp, &pr), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_null(pr);
    kfac_inversion k;
    ck_assert_int_eq(kfac_inversion_from_name("tridiag", &k), KFAC_OK);
    ck_assert_int_eq(k, KFAC_INV_TRIDIAG);

    static rows x;
    make_rows(&x, 2);
    pc = tridiag_factors(&x, 1e-2);
    float d[30];
    ck_assert_int_eq(kfac_factors_apply(pc, 0, x.grad[0], d), KFAC_ERR_STATE);
    for (int l = 0; l < NL; l++)
        ck_assert_int_eq(kfac_factors_batch_pays(pc, l, 1), 0);
    double dot;
    ck_assert_int_eq(kfac_factors_apply_batch(pc, 0, x.abar[0], D_IN[0], x.g[0], B, d, &dot), KFAC_ERR_STATE);
    kfac_factors_free(pc);

    kp.inversion = KFAC_INV_CHOLESKY;
    ck_assert_int_eq(kfac_factors_new(NL, D_IN, D_OUT, NULL, B, &kp, NULL, &pc), KFAC_OK);
    const float *g[NL] = {x.grad[0], x.grad[1], x.grad[2]};
    float dd[NL][30], *pd[NL] = {dd[0], dd[1], dd[2]};
    ck_assert_int_eq(kfac_factors_apply_all(pc, g, pd), KFAC_ERR_STATE);
    kfac_factors_free(pc);
}
END_TEST

Suite *tridiag_suite(void)
{
    Suite *s = suite_create("tridiag");
    TCase *tc = tcase_create("tridiag");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_explicit_model_matches_band);
    tcase_add_loop_test(tc, test_direction_matches_explicit, 0, 4);
    tcase_add_test(tc, test_precond_direction);
    tcase_add_test(tc, test_staged_statistics);
    tcase_add_test(tc, test_one_layer_and_zero_gradient);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_damping_fallback);
    suite_add_tcase(s, tc);
    return s;
}
