/* test_linalg.c - damped inverses and eigendecompositions of symmetric
 * matrices whose spectrum the test chooses (S = V^T diag(lambda) V with a
 * random orthogonal V), so every tolerance follows from a known condition
 * number; the fallback chain on rank-deficient, zero-row, indefinite and
 * non-finite inputs. All products are recomputed here in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kfac.h"
#include "linalg.h"
#include "tests.h"

static const int sizes[] = {1, 2, 7, 64, 300};
#define N_SIZES ((int)(sizeof sizes / sizeof *sizes))

/* ------------------------------------------------------------ helpers */

/* v (n x n, row-major double): rows orthonormal (modified Gram-Schmidt on
 * normal draws). */
static void random_orthogonal(double *v, int n, kfac_rng *r)
{
    for (int k = 0; k < n; k++) {
        double *row = v + (size_t)k * n;
        double norm;
        do {
            for (int j = 0; j < n; j++)
                row[j] = kfac_rng_normal(r);
            for (int p = 0; p < k; p++) {
                const double *q = v + (size_t)p * n;
                double dot = 0.0;
                for (int j = 0; j < n; j++)
                    dot += q[j] * row[j];
                for (int j = 0; j < n; j++)
                    row[j] -= dot * q[j];
            }
            norm = 0.0;
            for (int j = 0; j < n; j++)
                norm += row[j] * row[j];
            norm = sqrt(norm);
        } while (norm < 1e-3);
        for (int j = 0; j < n; j++)
            row[j] /= norm;
    }
}

/* S (n x n float) = V^T diag(lambda) V for the rows v_k of V; exactly
 * symmetric. */
static void spectral_matrix(float *S, int n, const double *v, const double *lambda)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0.0;
            for (int k = 0; k < n; k++)
                s += lambda[k] * v[(size_t)k * n + i] * v[(size_t)k * n + j];
            S[(size_t)i * n + j] = S[(size_t)j * n + i] = (float)s;
        }
}

/* max_ij |((S + d I) X - I)_ij|, in double. */
static double inverse_residual(const float *S, int n, double d, const float *X)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = d * X[(size_t)i * n + j];
            for (int k = 0; k < n; k++)
                s += (double)S[(size_t)i * n + k] * X[(size_t)k * n + j];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    return worst;
}

static int all_finite(const float *a, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isfinite(a[i]))
            return 0;
    return 1;
}

/* max_ij |a_ij - a_ji| / max |a| */
static double asymmetry(const float *a, int n)
{
    double diff = 0.0, big = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            diff = fmax(diff, fabs((double)a[(size_t)i * n + j] - a[(size_t)j * n + i]));
            big = fmax(big, fabs((double)a[(size_t)i * n + j]));
        }
    return big > 0.0 ? diff / big : 0.0;
}

/* A random SPD matrix with eigenvalues in [lo, hi] (both attained when
 * n > 1), its orthogonal V and the eigenvalues. */
static void random_spd(float *S, double *v, double *lambda, int n, double lo, double hi, kfac_rng *r)
{
    random_orthogonal(v, n, r);
    for (int k = 0; k < n; k++)
        lambda[k] = n == 1 ? lo : lo + (hi - lo) * (k == 0 ? 0.0 : k == 1 ? 1.0 : kfac_rng_uniform(r));
    spectral_matrix(S, n, v, lambda);
}

typedef struct {
    float *S, *out, *out2;
    double *v, *lambda;
    kfac_linalg_ws *ws;
} fixture;

static void fixture_new(fixture *f, int n)
{
    size_t nn = (size_t)n * n;
    f->S = malloc(nn * sizeof *f->S);
    f->out = malloc(nn * sizeof *f->out);
    f->out2 = malloc(nn * sizeof *f->out2);
    f->v = malloc(nn * sizeof *f->v);
    f->lambda = malloc((size_t)n * sizeof *f->lambda);
    ck_assert(f->S && f->out && f->out2 && f->v && f->lambda);
    ck_assert_int_eq(kfac_linalg_ws_new(n, &f->ws), KFAC_OK);
}

static void fixture_free(fixture *f)
{
    free(f->S);
    free(f->out);
    free(f->out2);
    free(f->v);
    free(f->lambda);
    kfac_linalg_ws_free(f->ws);
}

/* ------------------------------------------------------ damped inverse */

START_TEST(test_inverse_spd)
{
    int n = sizes[_i];
    fixture f;
    fixture_new(&f, 300); /* one workspace for every size */
    kfac_rng r;
    kfac_rng_seed(&r, 100 + (uint64_t)n);
    const double damping = 1e-3;
    random_spd(f.S, f.v, f.lambda, n, 0.05, 5.0, &r);
    int flags = -1;
    double used = -1.0;
    ck_assert_int_eq(kfac_damped_inverse(f.S, n, damping, f.out, f.ws, &flags, &used), KFAC_OK);
    ck_assert_msg(flags == 0, "n = %d: flags %d on a well-conditioned SPD matrix", n, flags);
    ck_assert_msg(used == damping, "n = %d: used damping %g, asked %g", n, used, damping);
    /* float Cholesky: the residual grows like eps * cond (here <= 100);
     * measured 2e-6 at most */
    double cond = (5.0 + damping) / (0.05 + damping);
    double tol = 1e-6 * cond;
    double res = inverse_residual(f.S, n, damping, f.out);
    ck_assert_msg(res <= tol, "n = %d: |(S + dI) X - I| = %g > %g", n, res, tol);
    ck_assert_msg(asymmetry(f.out, n) == 0.0, "n = %d: inverse not symmetric", n);
    /* NULL flags and used_damping are allowed and change nothing */
    ck_assert_int_eq(kfac_damped_inverse(f.S, n, damping, f.out2, f.ws, NULL, NULL), KFAC_OK);
    ck_assert(memcmp(f.out, f.out2, (size_t)n * n * sizeof *f.out) == 0);
    fixture_free(&f);
}
END_TEST

START_TEST(test_inverse_one_by_one)
{
    fixture f;
    fixture_new(&f, 1);
    const float vals[] = {4.0f, 1e-30f, 0.0f};
    const double damps[] = {0.0, 0.0, 0.5};
    const double expect[] = {0.25, 1e30, 2.0};
    for (int k = 0; k < 3; k++) {
        f.S[0] = vals[k];
        int flags = -1;
        double used = -1.0;
        ck_assert_int_eq(kfac_damped_inverse(f.S, 1, damps[k], f.out, f.ws, &flags, &used), KFAC_OK);
        ck_assert_msg(fabs(f.out[0] - expect[k]) <= 1e-6 * expect[k], "1/(%g + %g) = %g, expected %g",
                      (double)vals[k], damps[k], (double)f.out[0], expect[k]);
        ck_assert_int_eq(flags, 0);
    }
    /* S = 0, damping 0: damping raised from the 1e-12 floor */
    f.S[0] = 0.0f;
    int flags = 0;
    double used = 0.0;
    ck_assert_int_eq(kfac_damped_inverse(f.S, 1, 0.0, f.out, f.ws, &flags, &used), KFAC_OK);
    ck_assert_msg(flags & KFAC_FALLBACK_DAMPING, "flags %d", flags);
    ck_assert_msg(used > 0.0 && fabs(f.out[0] * used - 1.0) < 1e-6, "1/0 gave %g with damping %g",
                  (double)f.out[0], used);
    fixture_free(&f);
}
END_TEST

/* A zero row and column, as a pixel that is 0 in every image gives A. */
START_TEST(test_inverse_zero_row)
{
    const int n = 20, z = 3;
    const double damps[] = {1e-12, 0.0};
    fixture f;
    fixture_new(&f, n);
    kfac_rng r;
    kfac_rng_seed(&r, 7 + (uint64_t)_i);
    random_spd(f.S, f.v, f.lambda, n, 0.1, 3.0, &r);
    for (int j = 0; j < n; j++)
        f.S[(size_t)z * n + j] = f.S[(size_t)j * n + z] = 0.0f;
    int flags = 0;
    double used = -1.0;
    ck_assert_int_eq(kfac_damped_inverse(f.S, n, damps[_i], f.out, f.ws, &flags, &used), KFAC_OK);
    ck_assert(all_finite(f.out, (size_t)n * n));
    ck_assert_msg(flags & KFAC_FALLBACK_DOUBLE, "damping %g: flags %d, a singular-in-float factor went through",
                  damps[_i], flags);
    if (damps[_i] == 0.0)
        ck_assert_msg(flags & KFAC_FALLBACK_DAMPING, "damping 0 on a singular matrix: flags %d", flags);
    ck_assert_msg(used >= damps[_i] && used > 0.0 && used < 1e-3, "used damping %g", used);
    /* block diagonal: (S + uI)^-1 is 1/u on the zero row and the inverse of
     * the well-conditioned rest elsewhere, so the residual stays small */
    ck_assert_msg(fabs(f.out[(size_t)z * n + z] * used - 1.0) < 1e-5, "out[z][z] = %g, 1/u = %g",
                  (double)f.out[(size_t)z * n + z], 1.0 / used);
    double res = inverse_residual(f.S, n, used, f.out);
    ck_assert_msg(res < 1e-4, "damping %g (used %g): residual %g", damps[_i], used, res);
    fixture_free(&f);
}
END_TEST

/* S = X^T X with X (k x n), k < n, small integers: S is exactly PSD of rank
 * k, even in float. */
START_TEST(test_inverse_rank_deficient_exact)
{
    const int n = 40, k = 6;
    const double damps[] = {1e-12, 0.0};
    fixture f;
    fixture_new(&f, n);
    kfac_rng r;
    kfac_rng_seed(&r, 11);
    double x[6][40], zv[40];
    for (int i = 0; i < k; i++)
        for (int j = 0; j < n; j++)
            x[i][j] = (double)kfac_rng_below(&r, 5) - 2.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++)
                s += x[p][i] * x[p][j];
            f.S[(size_t)i * n + j] = (float)s;
        }
    /* zv: a null vector of S (normal draw minus its projection on the rows
     * of X, orthonormalised in place) */
    for (int i = 0; i < k; i++) {
        for (int p = 0; p < i; p++) {
            double dot = 0.0;
            for (int j = 0; j < n; j++)
                dot += x[p][j] * x[i][j];
            for (int j = 0; j < n; j++)
                x[i][j] -= dot * x[p][j];
        }
        double nrm = 0.0;
        for (int j = 0; j < n; j++)
            nrm += x[i][j] * x[i][j];
        for (int j = 0; j < n; j++)
            x[i][j] /= sqrt(nrm);
    }
    for (int j = 0; j < n; j++)
        zv[j] = kfac_rng_normal(&r);
    for (int p = 0; p < k; p++) {
        double dot = 0.0;
        for (int j = 0; j < n; j++)
            dot += x[p][j] * zv[j];
        for (int j = 0; j < n; j++)
            zv[j] -= dot * x[p][j];
    }
    double znorm = 0.0;
    for (int j = 0; j < n; j++)
        znorm += zv[j] * zv[j];
    znorm = sqrt(znorm);
    ck_assert(znorm > 0.1);

    for (int t = 0; t < 2; t++) {
        int flags = 0;
        double used = -1.0;
        ck_assert_int_eq(kfac_damped_inverse(f.S, n, damps[t], f.out, f.ws, &flags, &used), KFAC_OK);
        ck_assert(all_finite(f.out, (size_t)n * n));
        ck_assert_msg(flags != 0, "damping %g on a rank-%d %d x %d matrix: no fallback", damps[t], k, n, n);
        ck_assert_msg(used >= damps[t] && used > 0.0, "used damping %g", used);
        ck_assert_msg(asymmetry(f.out, n) < 1e-6, "not symmetric");
        for (int i = 0; i < n; i++)
            ck_assert_msg(f.out[(size_t)i * n + i] > 0.0f, "diagonal %d = %g", i, (double)f.out[(size_t)i * n + i]);
        /* S z = 0, so (S + uI)^-1 z = z / u exactly */
        double err = 0.0;
        for (int i = 0; i < n; i++) {
            double s = 0.0;
            for (int j = 0; j < n; j++)
                s += (double)f.out[(size_t)i * n + j] * zv[j];
            err += (used * s - zv[i]) * (used * s - zv[i]);
        }
        err = sqrt(err) / znorm;
        ck_assert_msg(err < 1e-4, "damping %g (used %g): |u X z - z| / |z| = %g", damps[t], used, err);
    }
    fixture_free(&f);
}
END_TEST

/* S = X^T X with X (10 x 64) normal, rounded to float: PSD only up to
 * rounding, maybe slightly indefinite. */
START_TEST(test_inverse_rank_deficient_float)
{
    const int n = 64, k = 10;
    const double damps[] = {1e-12, 0.0};
    fixture f;
    fixture_new(&f, n);
    kfac_rng r;
    kfac_rng_seed(&r, 12);
    double *x = malloc((size_t)k * n * sizeof *x);
    ck_assert(x != NULL);
    for (int i = 0; i < k * n; i++)
        x[i] = kfac_rng_normal(&r);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++)
                s += x[p * n + i] * x[p * n + j];
            f.S[(size_t)i * n + j] = (float)s;
        }
    free(x);
    for (int t = 0; t < 2; t++) {
        int flags = 0;
        double used = -1.0;
        ck_assert_int_eq(kfac_damped_inverse(f.S, n, damps[t], f.out, f.ws, &flags, &used), KFAC_OK);
        ck_assert(all_finite(f.out, (size_t)n * n));
        ck_assert_msg(flags != 0, "damping %g on a rank-%d matrix: no fallback", damps[t], k);
        ck_assert_msg(used >= damps[t] && used > 0.0, "used damping %g", used);
        ck_assert_msg(asymmetry(f.out, n) < 1e-6, "not symmetric");
        for (int i = 0; i < n; i++)
            ck_assert(f.out[(size_t)i * n + i] > 0.0f);
    }
    fixture_free(&f);
}
END_TEST

/* One eigenvalue -2: no damping the chain tries makes S definite, so it
 * ends with clipped eigenvalues: out = V^T diag(1/(max(lambda,0)+u)) V. */
START_TEST(test_inverse_indefinite)
{
    const int n = 16;
    const double damps[] = {1e-4, 0.0};
    fixture f;
    fixture_new(&f, n);
    kfac_rng r;
    kfac_rng_seed(&r, 13);
    random_spd(f.S, f.v, f.lambda, n, 0.5, 5.0, &r);
    f.lambda[3] = -2.0;
    spectral_matrix(f.S, n, f.v, f.lambda);
    float *clipped = malloc((size_t)n * n * sizeof *clipped);
    ck_assert(clipped != NULL);
    for (int k = 0; k < n; k++)
        f.lambda[k] = fmax(f.lambda[k], 0.0);
    spectral_matrix(clipped, n, f.v, f.lambda);
    int flags = 0;
    double used = -1.0;
    ck_assert_int_eq(kfac_damped_inverse(f.S, n, damps[_i], f.out, f.ws, &flags, &used), KFAC_OK);
    ck_assert(all_finite(f.out, (size_t)n * n));
    ck_assert_msg(flags & KFAC_FALLBACK_EIGEN_CLIP, "flags %d on an indefinite matrix", flags);
    ck_assert_msg(used >= damps[_i] && used > 0.0, "used damping %g", used);
    /* computed in double, rounded to float: residual ~ eps_float * cond */
    double cond = (5.0 + used) / used, tol = 1e-7 * cond;
    ck_assert(tol < 0.01);
    double res = inverse_residual(clipped, n, used, f.out);
    ck_assert_msg(res < tol, "damping %g (used %g): |(S_clip + uI) X - I| = %g > %g", damps[_i], used, res, tol);
    free(clipped);
    fixture_free(&f);
}
END_TEST

START_TEST(test_inverse_nonfinite)
{
    const int n = 5;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    fixture f;
    fixture_new(&f, n);
    kfac_rng r;
    kfac_rng_seed(&r, 14);
    for (int b = 0; b < 3; b++) {
        random_spd(f.S, f.v, f.lambda, n, 1.0, 2.0, &r);
        f.S[1 * n + 2] = bad[b];
        for (int i = 0; i < n * n; i++)
            f.out[i] = 7.0f;
        float q[25], e[5];
        for (int i = 0; i < 25; i++)
            q[i] = 7.0f;
        for (int i = 0; i < 5; i++)
            e[i] = 7.0f;
        ck_assert_int_eq(kfac_damped_inverse(f.S, n, 1e-3, f.out, f.ws, NULL, NULL), KFAC_ERR_NUMERIC);
        ck_assert_msg(strstr(kfac_last_error(), "non-finite") != NULL, "detail: %s", kfac_last_error());
        ck_assert_int_eq(kfac_sym_eigen(f.S, n, q, e, f.ws, NULL), KFAC_ERR_NUMERIC);
        ck_assert_msg(strstr(kfac_last_error(), "non-finite") != NULL, "detail: %s", kfac_last_error());
        for (int i = 0; i < n * n; i++) {
            ck_assert_msg(f.out[i] == 7.0f, "out[%d] written", i);
            ck_assert_msg(q[i] == 7.0f, "Q[%d] written", i);
        }
        for (int i = 0; i < n; i++)
            ck_assert_msg(e[i] == 7.0f, "e[%d] written", i);
    }
    fixture_free(&f);
}
END_TEST

START_TEST(test_bad_arguments)
{
    kfac_linalg_ws *ws = (kfac_linalg_ws *)&ws; /* must be reset to NULL */
    ck_assert_int_eq(kfac_linalg_ws_new(0, &ws), KFAC_ERR_INVALID_ARG);
    ck_assert(ws == NULL);
    ck_assert_int_eq(kfac_linalg_ws_new(-3, &ws), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_linalg_ws_new(4, NULL), KFAC_ERR_INVALID_ARG);
    kfac_linalg_ws_free(NULL);
    ck_assert_int_eq(kfac_linalg_ws_new(4, &ws), KFAC_OK);
    float S[25] = {0}, out[25], q[25], e[5];
    for (int i = 0; i < 5; i++)
        S[i * 5 + i] = 1.0f;
    ck_assert_int_eq(kfac_damped_inverse(S, 5, 0.1, out, ws, NULL, NULL), KFAC_ERR_INVALID_ARG); /* n > max_n */
    ck_assert_int_eq(kfac_damped_inverse(S, 0, 0.1, out, ws, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_damped_inverse(S, 4, -0.1, out, ws, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_damped_inverse(S, 4, NAN, out, ws, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_damped_inverse(S, 4, INFINITY, out, ws, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_damped_inverse(NULL, 4, 0.1, out, ws, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_damped_inverse(S, 4, 0.1, NULL, ws, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_damped_inverse(S, 4, 0.1, out, NULL, NULL, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert(kfac_last_error()[0] != '\0');
    ck_assert_int_eq(kfac_sym_eigen(S, 5, q, e, ws, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sym_eigen(S, 0, q, e, ws, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sym_eigen(S, 4, NULL, e, ws, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sym_eigen(S, 4, q, NULL, ws, NULL), KFAC_ERR_INVALID_ARG);
    ck_assert_int_eq(kfac_sym_eigen(S, 4, q, e, NULL, NULL), KFAC_ERR_INVALID_ARG);
    /* the workspace is still usable after the refusals: I^-1 = I */
    float I4[16] = {0};
    for (int i = 0; i < 4; i++)
        I4[i * 4 + i] = 1.0f;
    ck_assert_int_eq(kfac_damped_inverse(I4, 4, 0.0, out, ws, NULL, NULL), KFAC_OK);
    for (int i = 0; i < 16; i++)
        ck_assert(out[i] == I4[i]);
    kfac_linalg_ws_free(ws);
}
END_TEST

/* ---------------------------------------------------- eigendecomposition */

START_TEST(test_eigen_psd)
{
    int n = sizes[_i];
    fixture f;
    fixture_new(&f, 300);
    kfac_rng r;
    kfac_rng_seed(&r, 200 + (uint64_t)n);
    /* PSD with a zero eigenvalue (n > 1): rounding may push it below 0 */
    random_spd(f.S, f.v, f.lambda, n, 0.0, 4.0, &r);
    if (n == 1) {
        f.lambda[0] = 2.5;
        f.S[0] = 2.5f;
    }
    float *Q = f.out, *e = malloc((size_t)n * sizeof *e);
    ck_assert(e != NULL);
    int flags = -1;
    ck_assert_int_eq(kfac_sym_eigen(f.S, n, Q, e, f.ws, &flags), KFAC_OK);
    ck_assert_msg(flags == 0, "n = %d: flags %d", n, flags);
    /* the spectrum we built, sorted */
    double *ls = f.lambda;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ls[j - 1] > ls[j]; j--) {
            double t = ls[j];
            ls[j] = ls[j - 1];
            ls[j - 1] = t;
        }
    const double tol = 1e-5 * 4.0; /* 1e-5 of |S| = 4 in float; measured 1.5e-6 at n = 300 */
    for (int k = 0; k < n; k++) {
        ck_assert_msg(e[k] >= 0.0f, "n = %d: e[%d] = %g < 0", n, k, (double)e[k]);
        if (k > 0)
            ck_assert_msg(e[k] >= e[k - 1], "n = %d: e not ascending at %d", n, k);
        ck_assert_msg(fabs(e[k] - ls[k]) < tol, "n = %d: e[%d] = %g, built %g", n, k, (double)e[k], ls[k]);
    }
    double orth = 0.0, recon = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double qtq = 0.0, qeq = 0.0;
            for (int k = 0; k < n; k++) {
                /* (Q^T Q)_ij = sum_k Q_ki Q_kj; (Q diag(e) Q^T)_ij = sum_k Q_ik e_k Q_jk */
                qtq += (double)Q[(size_t)k * n + i] * Q[(size_t)k * n + j];
                qeq += (double)Q[(size_t)i * n + k] * e[k] * Q[(size_t)j * n + k];
            }
            orth = fmax(orth, fabs(qtq - (i == j)));
            recon = fmax(recon, fabs(qeq - f.S[(size_t)i * n + j]));
        }
    ck_assert_msg(orth < tol, "n = %d: |Q^T Q - I| = %g", n, orth);
    ck_assert_msg(recon < tol, "n = %d: |Q diag(e) Q^T - S| = %g", n, recon);
    /* eigenvector k is column k: S q_k = e_k q_k for the largest */
    int k = n - 1;
    double av = 0.0;
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int j = 0; j < n; j++)
            s += (double)f.S[(size_t)i * n + j] * Q[(size_t)j * n + k];
        av = fmax(av, fabs(s - e[k] * Q[(size_t)i * n + k]));
    }
    ck_assert_msg(av < tol, "n = %d: |S q - e q| = %g for column %d", n, av, k);
    free(e);
    fixture_free(&f);
}
END_TEST

/* The same call twice, and after a different size, gives the same bits:
 * the workspace carries nothing over. */
/* Randomized top-k (docs/algorithm.md §4.4) on matrices of known spectrum: fast decay,
 * rank-deficient (5 non-zero eigenvalues) and ill-conditioned (1e4 down to
 * 1e-8). The Ritz values match the top eigenvalues and each Ritz vector
 * is an eigenvector (residual ||S u - l u|| small against the largest);
 * warm-started from the first basis, one iteration keeps that accuracy. */
START_TEST(test_topk_known_spectrum)
{
    enum { N = 120, S_ = 24, K = 8 };
    fixture f;
    fixture_new(&f, N);
    kfac_rng r;
    kfac_rng_seed(&r, 77);
    float *U = malloc(sizeof(float) * N * S_), e[S_];
    ck_assert_ptr_nonnull(U);
    for (int kind = 0; kind < 3; kind++) {
        random_orthogonal(f.v, N, &r);
        for (int k = 0; k < N; k++)
            f.lambda[k] = kind == 0 ? 100.0 * pow(0.6, k) : kind == 1 ? (k < 5 ? 10.0 - k : 0.0)
                                                                        : 1e4 * pow(10.0, -12.0 * k / (N - 1));
        spectral_matrix(f.S, N, f.v, f.lambda);
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0)
                for (int i = 0; i < N * S_; i++)
                    U[i] = (float)kfac_rng_normal(&r);
            int flags = 0;
            /* cold: 3 iterations from random; warm: 1 from the last basis */
            ck_assert_int_eq(kfac_sym_topk(f.S, N, S_, pass ? 1 : 3, U, e, f.ws, &flags), KFAC_OK);
            for (int k = 0; k < K; k++) {
                double want = f.lambda[k], tol = 2e-3 * f.lambda[0];
                ck_assert_msg(fabs(e[k] - want) <= tol, "kind %d pass %d: Ritz value %d is %g, eigenvalue %g", kind,
                              pass, k, e[k], want);
                double res = 0.0, unorm = 0.0;
                for (int i = 0; i < N; i++) {
                    double su = 0.0;
                    for (int j = 0; j < N; j++)
                        su += (double)f.S[i * N + j] * U[k * N + j];
                    res += (su - e[k] * U[k * N + i]) * (su - e[k] * U[k * N + i]);
                    unorm += (double)U[k * N + i] * U[k * N + i];
                }
                ck_assert_double_eq_tol(unorm, 1.0, 1e-4);
                ck_assert_msg(sqrt(res) <= 1e-2 * f.lambda[0], "kind %d pass %d: vector %d residual %g", kind, pass,
                              k, sqrt(res));
            }
            for (int k = 1; k < S_; k++) /* descending, non-negative */
                ck_assert(e[k] <= e[k - 1] && e[k] >= 0.0f);
        }
    }
    /* a sketch wider than n/2, or an Inf, is refused */
    ck_assert_int_eq(kfac_sym_topk(f.S, N, N / 2 + 1, 1, U, e, f.ws, NULL), KFAC_ERR_INVALID_ARG);
    f.S[5] = INFINITY;
    ck_assert_int_eq(kfac_sym_topk(f.S, N, S_, 1, U, e, f.ws, NULL), KFAC_ERR_NUMERIC);
    free(U);
    fixture_free(&f);
}
END_TEST

START_TEST(test_workspace_reuse)
{
    const int n = 64;
    fixture f;
    fixture_new(&f, n);
    kfac_rng r;
    kfac_rng_seed(&r, 15);
    random_spd(f.S, f.v, f.lambda, n, 0.1, 1.0, &r);
    ck_assert_int_eq(kfac_damped_inverse(f.S, n, 0.01, f.out, f.ws, NULL, NULL), KFAC_OK);
    ck_assert_int_eq(kfac_damped_inverse(f.S, 7, 0.01, f.out2, f.ws, NULL, NULL), KFAC_OK);
    float e[64];
    ck_assert_int_eq(kfac_sym_eigen(f.S, 7, f.out2, e, f.ws, NULL), KFAC_OK);
    ck_assert_int_eq(kfac_damped_inverse(f.S, n, 0.01, f.out2, f.ws, NULL, NULL), KFAC_OK);
    ck_assert(memcmp(f.out, f.out2, (size_t)n * n * sizeof *f.out) == 0);
    fixture_free(&f);
}
END_TEST

Suite *linalg_suite(void)
{
    Suite *s = suite_create("linalg");
    TCase *tc = tcase_create("linalg");
    tcase_set_timeout(tc, 120); /* generous for valgrind */
    tcase_add_loop_test(tc, test_inverse_spd, 0, N_SIZES);
    tcase_add_test(tc, test_inverse_one_by_one);
    tcase_add_loop_test(tc, test_inverse_zero_row, 0, 2);
    tcase_add_test(tc, test_inverse_rank_deficient_exact);
    tcase_add_test(tc, test_inverse_rank_deficient_float);
    tcase_add_loop_test(tc, test_inverse_indefinite, 0, 2);
    tcase_add_test(tc, test_inverse_nonfinite);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_loop_test(tc, test_eigen_psd, 0, N_SIZES);
    tcase_add_test(tc, test_workspace_reuse);
    tcase_add_test(tc, test_topk_known_spectrum);
    suite_add_tcase(s, tc);
    return s;
}
