/* linalg.c - damped inverses and eigendecompositions of the Kronecker
 * factors through LAPACK, with the fallback chain of docs/algorithm.md §4 (double,
 * more damping, clipped eigenvalues) so that no NaN reaches the update. */
#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lapack.h"
#include "linalg.h"

/* Largest factor: syevd's workspace, 1 + 6n + 2n^2, must fit LAPACK's int. */
#define MAX_N 32000

/* A Cholesky inverse is trusted only if cond * eps <= 1e-2, i.e. about two
 * correct digits: beyond that a float factorisation of a nearly singular
 * factor succeeds on rounding noise and returns large, finite garbage. */
#define RCOND_MIN_FLOAT (100.0 * FLT_EPSILON)
#define RCOND_MIN_DOUBLE (100.0 * DBL_EPSILON)

/* Damping raises (x10 each) before the eigenvalue fallback (docs/algorithm.md §4). */
#define DAMPING_RAISES 4

/* Blocks for the triangle copies and transposes (cache-sized tiles). */
#define TILE 64

struct kfac_linalg_ws {
    int max_n;
    float *f;        /* (max_n, max_n) float matrix: factor, then the result */
    double *d;       /* (max_n, max_n) double matrix: factor or eigenvectors */
    double *d2;      /* (max_n, max_n) double product Q diag(1/(e+damping)) Q^T */
    double *w;       /* (max_n) double eigenvalues */
    float *wf;       /* (max_n) float eigenvalues */
    void *work;      /* ssyevd's float work (lwork_s) or dsyevd's double work
                        (lwork_d), never both at once; also ?pocon's 3n */
    int lwork_s, lwork_d;
    int *iwork;      /* (liwork) ?syevd's integer work, ?pocon's n */
    int liwork;
};

/* LAPACK's uplo/jobz arguments: "U" of a column-major matrix is the lower
 * triangle of the same memory read row-major. */
static const char UPLO = 'U', JOBZ = 'V';

/* ------------------------------------------------------------ helpers */

/* a (n x n, row-major): upper triangle <- lower triangle transposed. */
static void mirror_lower(float *a, int n)
{
    for (int rb = 0; rb < n; rb += TILE)
        for (int cb = 0; cb <= rb; cb += TILE) {
            int rend = KFAC_MIN(rb + TILE, n);
            for (int r = rb; r < rend; r++) {
                int cend = KFAC_MIN(cb + TILE, r);
                for (int c = cb; c < cend; c++)
                    a[(size_t)c * n + r] = a[(size_t)r * n + c];
            }
        }
}

/* dst (n x n) <- src^T (n x n), both row-major. */
static void transpose(const float *src, float *dst, int n)
{
    for (int rb = 0; rb < n; rb += TILE)
        for (int cb = 0; cb < n; cb += TILE) {
            int rend = KFAC_MIN(rb + TILE, n), cend = KFAC_MIN(cb + TILE, n);
            for (int r = rb; r < rend; r++)
                for (int c = cb; c < cend; c++)
                    dst[(size_t)c * n + r] = src[(size_t)r * n + c];
        }
}

/* Lower triangle (row-major) of d (n x n) into f as float; 0 if a value
 * does not fit a float. */
static int lower_to_float(const double *d, float *f, int n)
{
    for (int r = 0; r < n; r++)
        for (int c = 0; c <= r; c++) {
            float v = (float)d[(size_t)r * n + c];
            if (!isfinite(v))
                return 0;
            f[(size_t)r * n + c] = v;
        }
    return 1;
}

static int all_finite(const float *a, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isfinite(a[i]))
            return 0;
    return 1;
}

/* kfac_fail for a non-finite S, naming the first bad entry. */
static kfac_status check_input(const char *fn, const float *S, int n)
{
    for (size_t i = 0; i < (size_t)n * n; i++)
        if (!isfinite(S[i]))
            return kfac_fail(KFAC_ERR_NUMERIC, "%s: S has a non-finite entry %g at (%zu, %zu) of %d x %d", fn,
                             (double)S[i], i / (size_t)n, i % (size_t)n, n, n);
    return KFAC_OK;
}

/* ------------------------------------------------------------ workspace */

kfac_status kfac_linalg_ws_new(int max_n, kfac_linalg_ws **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_linalg_ws_new: out is NULL");
    *out = NULL;
    if (max_n < 1 || max_n > MAX_N)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_linalg_ws_new: max_n %d outside 1..%d", max_n, MAX_N);
    kfac_linalg_ws *ws = calloc(1, sizeof *ws);
    if (!ws)
        return kfac_fail(KFAC_ERR_NOMEM, "kfac_linalg_ws_new: workspace struct");
    kfac_status st = KFAC_OK;
    size_t nn = (size_t)max_n * max_n;
    ws->max_n = max_n;
    ws->f = kfac_alloc_floats(nn);
    ws->d = malloc(nn * sizeof *ws->d);
    ws->d2 = malloc(nn * sizeof *ws->d2);
    ws->w = malloc((size_t)max_n * sizeof *ws->w);
    ws->wf = kfac_alloc_floats((size_t)max_n);
    if (!ws->f || !ws->d || !ws->d2 || !ws->w || !ws->wf) {
        st = kfac_fail(KFAC_ERR_NOMEM, "kfac_linalg_ws_new: %d x %d matrices", max_n, max_n);
        goto fail;
    }

    /* Optimal syevd sizes for max_n, asked once (lwork = liwork = -1); the
     * documented minimum (1 + 6n + 2n^2, 3 + 5n) guards against a float
     * query rounded down, and covers every smaller n. */
    int query = -1, info_s = 0, info_d = 0, iq_s = 0, iq_d = 0;
    float wq_s = 0.0f;
    double wq_d = 0.0;
    ssyevd_(&JOBZ, &UPLO, &max_n, ws->f, &max_n, ws->wf, &wq_s, &query, &iq_s, &query, &info_s, 1, 1);
    dsyevd_(&JOBZ, &UPLO, &max_n, ws->d, &max_n, ws->w, &wq_d, &query, &iq_d, &query, &info_d, 1, 1);
    if (info_s != 0 || info_d != 0) {
        st = kfac_fail(KFAC_ERR_NUMERIC, "kfac_linalg_ws_new: syevd workspace query failed (info %d, %d)",
                       info_s, info_d);
        goto fail;
    }
    int64_t n64 = max_n, min_lwork = max_n > 1 ? 1 + 6 * n64 + 2 * n64 * n64 : 1;
    int64_t lw_s = KFAC_MAX((int64_t)ceil(wq_s), min_lwork), lw_d = KFAC_MAX((int64_t)ceil(wq_d), min_lwork);
    /* ?pocon: 3n reals, n ints */
    lw_s = KFAC_MAX(lw_s, 3 * n64);
    lw_d = KFAC_MAX(lw_d, 3 * n64);
    int64_t liw = KFAC_MAX(KFAC_MAX((int64_t)iq_s, (int64_t)iq_d), KFAC_MAX(3 + 5 * n64, n64));
    if (lw_s > INT_MAX || lw_d > INT_MAX || liw > INT_MAX) {
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_linalg_ws_new: max_n %d too large for LAPACK", max_n);
        goto fail;
    }
    ws->lwork_s = (int)lw_s;
    ws->lwork_d = (int)lw_d;
    ws->liwork = (int)liw;
    ws->work = malloc((size_t)KFAC_MAX(lw_s * (int64_t)sizeof(float), lw_d * (int64_t)sizeof(double)));
    ws->iwork = malloc((size_t)liw * sizeof *ws->iwork);
    if (!ws->work || !ws->iwork) {
        st = kfac_fail(KFAC_ERR_NOMEM, "kfac_linalg_ws_new: eigensolver workspace for n = %d", max_n);
        goto fail;
    }
    *out = ws;
    return KFAC_OK;
fail:
    kfac_linalg_ws_free(ws);
    return st;
}

void kfac_linalg_ws_free(kfac_linalg_ws *ws)
{
    if (!ws)
        return;
    kfac_free_floats(ws->f);
    free(ws->d);
    free(ws->d2);
    free(ws->w);
    kfac_free_floats(ws->wf);
    free(ws->work);
    free(ws->iwork);
    free(ws);
}

/* ---------------------------------------------------- damped inverse */

/* Step 1 (docs/algorithm.md §4, Cholesky is cheapest): ws->f <- (S + damping I)^-1 in
 * float. 1 on success, 0 if the factorisation fails, is too ill-conditioned
 * to trust, or gives a non-finite value. */
static int inverse_float(const float *S, int n, double damping, kfac_linalg_ws *ws)
{
    float *a = ws->f; /* (n, n) */
    if (!isfinite((float)damping))
        return 0;
    /* a <- S + damping I; anorm <- ||a||_1 (row sums: a is symmetric) */
    double anorm = 0.0;
    for (int r = 0; r < n; r++) {
        double rs = 0.0;
        for (int c = 0; c < n; c++) {
            size_t i = (size_t)r * n + c;
            a[i] = r == c ? (float)((double)S[i] + damping) : S[i];
            rs += fabs((double)a[i]);
        }
        anorm = fmax(anorm, rs);
    }
    float anorm_f = (float)anorm, rcond = 0.0f;
    int info = 0;
    /* a <- U with a = U^T U */
    spotrf_(&UPLO, &n, a, &n, &info, 1);
    if (info != 0)
        return 0;
    /* rcond ~ 1 / (||a||_1 ||a^-1||_1) */
    spocon_(&UPLO, &n, a, &n, &anorm_f, &rcond, (float *)ws->work, ws->iwork, &info, 1);
    if (info != 0 || !(rcond >= RCOND_MIN_FLOAT))
        return 0;
    /* a <- (U^T U)^-1, one triangle */
    spotri_(&UPLO, &n, a, &n, &info, 1);
    if (info != 0)
        return 0;
    mirror_lower(a, n);
    return all_finite(a, (size_t)n * n);
}

/* Steps 2 and 3: the same in double; the result lands in ws->f as float. */
static int inverse_double(const float *S, int n, double damping, kfac_linalg_ws *ws)
{
    double *a = ws->d; /* (n, n) */
    double anorm = 0.0, rcond = 0.0;
    for (int r = 0; r < n; r++) {
        double rs = 0.0;
        for (int c = 0; c < n; c++) {
            size_t i = (size_t)r * n + c;
            a[i] = r == c ? (double)S[i] + damping : (double)S[i];
            rs += fabs(a[i]);
        }
        anorm = fmax(anorm, rs);
    }
    if (!isfinite(anorm))
        return 0;
    int info = 0;
    /* a <- U with a = U^T U */
    dpotrf_(&UPLO, &n, a, &n, &info, 1);
    if (info != 0)
        return 0;
    /* rcond ~ 1 / (||a||_1 ||a^-1||_1) */
    dpocon_(&UPLO, &n, a, &n, &anorm, &rcond, (double *)ws->work, ws->iwork, &info, 1);
    if (info != 0 || !(rcond >= RCOND_MIN_DOUBLE))
        return 0;
    /* a <- (U^T U)^-1, one triangle */
    dpotri_(&UPLO, &n, a, &n, &info, 1);
    if (info != 0 || !lower_to_float(a, ws->f, n))
        return 0;
    mirror_lower(ws->f, n);
    return 1;
}

/* Step 4 (exact damping in the eigenbasis, docs/algorithm.md §4): S = Q diag(e) Q^T
 * in double, ws->f <- Q diag(1 / (max(e, 0) + damping)) Q^T, damping > 0. */
static int inverse_eigen(const float *S, int n, double damping, kfac_linalg_ws *ws)
{
    double *q = ws->d; /* (n, n): S, then row k = eigenvector k (LAPACK's column k) */
    double *inv = ws->d2; /* (n, n) */
    for (size_t i = 0; i < (size_t)n * n; i++)
        q[i] = S[i];
    int info = 0;
    /* q <- eigenvectors, w <- eigenvalues ascending */
    dsyevd_(&JOBZ, &UPLO, &n, q, &n, ws->w, (double *)ws->work, &ws->lwork_d, ws->iwork, &ws->liwork, &info, 1, 1);
    if (info != 0)
        return 0;
    /* row k of q <- q_k^T sqrt(1 / (max(e_k, 0) + damping)) */
    for (int k = 0; k < n; k++) {
        double s = sqrt(1.0 / (fmax(ws->w[k], 0.0) + damping));
        if (!isfinite(s))
            return 0;
        cblas_dscal(n, s, q + (size_t)k * n, 1);
    }
    /* inv (lower) <- q^T q = sum_k q_k q_k^T / (max(e_k, 0) + damping) */
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, n, n, 1.0, q, n, 0.0, inv, n);
    if (!lower_to_float(inv, ws->f, n))
        return 0;
    mirror_lower(ws->f, n);
    return 1;
}

kfac_status kfac_damped_inverse(const float *S, int n, double damping, float *out, kfac_linalg_ws *ws,
                                int *flags, double *used_damping)
{
    kfac_clear_error();
    if (!S || !out || !ws)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_damped_inverse: NULL argument");
    if (n < 1 || n > ws->max_n)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_damped_inverse: n = %d outside 1..%d (the workspace size)",
                         n, ws->max_n);
    if (!(damping >= 0.0) || !isfinite(damping))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_damped_inverse: damping %g must be finite and >= 0", damping);
    kfac_status st = check_input("kfac_damped_inverse", S, n);
    if (st != KFAC_OK)
        return st;

    int used = 0;
    double d = damping;
    int ok = inverse_float(S, n, d, ws);
    if (!ok) {
        /* docs/algorithm.md §4: NaN or failure with small damping -> retry in double */
        used |= KFAC_FALLBACK_DOUBLE;
        ok = inverse_double(S, n, d, ws);
    }
    if (!ok) {
        /* then more damping. Never below 1e-6 of the mean eigenvalue: a
         * float S is only known to ~1e-7 of its scale, so less damping
         * than that cannot make it definite. */
        double scale = 0.0, rowmax = 0.0;
        for (int r = 0; r < n; r++) {
            double rs = 0.0;
            for (int c = 0; c < n; c++)
                rs += fabs((double)S[(size_t)r * n + c]);
            rowmax = fmax(rowmax, rs);
            scale += fabs((double)S[(size_t)r * n + r]);
        }
        scale = scale > 0.0 ? scale / n : rowmax / n; /* mean |diagonal|: trace / n for a PSD S */
        double base = 1e-6 * scale;
        if (!(base >= 1e-30))
            base = 1e-12;
        used |= KFAC_FALLBACK_DAMPING;
        for (int t = 0; t < DAMPING_RAISES && !ok; t++) {
            double next = fmax(10.0 * d, base);
            if (isfinite(next))
                d = next;
            ok = inverse_double(S, n, d, ws);
        }
    }
    if (!ok) {
        /* last resort: S not PSD beyond rounding, or syevd's accuracy
         * needed; d > 0 here */
        used |= KFAC_FALLBACK_EIGEN_CLIP;
        ok = inverse_eigen(S, n, d, ws);
    }
    if (flags)
        *flags = used;
    if (used_damping)
        *used_damping = d;
    if (!ok)
        return kfac_fail(KFAC_ERR_NUMERIC,
                         "kfac_damped_inverse: %d x %d factor not invertible in float, double, with damping up to "
                         "%g or by eigenvalues",
                         n, n, d);
    memcpy(out, ws->f, (size_t)n * n * sizeof *out);
    return KFAC_OK;
}

/* -------------------------------------------------- eigendecomposition */

kfac_status kfac_sym_eigen(const float *S, int n, float *Q, float *e, kfac_linalg_ws *ws, int *flags)
{
    kfac_clear_error();
    if (!S || !Q || !e || !ws)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_sym_eigen: NULL argument");
    if (n < 1 || n > ws->max_n)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_sym_eigen: n = %d outside 1..%d (the workspace size)", n,
                         ws->max_n);
    kfac_status st = check_input("kfac_sym_eigen", S, n);
    if (st != KFAC_OK)
        return st;

    int used = 0;
    float *v = ws->f; /* (n, n): S, then row k = eigenvector k (LAPACK's column k) */
    memcpy(v, S, (size_t)n * n * sizeof *v);
    int info = 0;
    /* v <- eigenvectors, wf <- eigenvalues ascending */
    ssyevd_(&JOBZ, &UPLO, &n, v, &n, ws->wf, (float *)ws->work, &ws->lwork_s, ws->iwork, &ws->liwork, &info, 1,
            1);
    if (info != 0 || !all_finite(ws->wf, (size_t)n) || !all_finite(v, (size_t)n * n)) {
        used |= KFAC_FALLBACK_DOUBLE;
        double *vd = ws->d; /* (n, n) as v */
        for (size_t i = 0; i < (size_t)n * n; i++)
            vd[i] = S[i];
        dsyevd_(&JOBZ, &UPLO, &n, vd, &n, ws->w, (double *)ws->work, &ws->lwork_d, ws->iwork, &ws->liwork, &info,
                1, 1);
        if (flags)
            *flags = used;
        if (info != 0)
            return kfac_fail(KFAC_ERR_NUMERIC, "kfac_sym_eigen: %d x %d eigensolver failed in float and double "
                             "(dsyevd info %d)", n, n, info);
        for (size_t i = 0; i < (size_t)n * n; i++)
            v[i] = (float)vd[i];
        for (int k = 0; k < n; k++)
            ws->wf[k] = (float)ws->w[k];
        if (!all_finite(ws->wf, (size_t)n) || !all_finite(v, (size_t)n * n))
            return kfac_fail(KFAC_ERR_NUMERIC, "kfac_sym_eigen: %d x %d eigendecomposition not finite", n, n);
    }
    /* the factors are PSD: a negative eigenvalue is rounding (docs/algorithm.md §4) */
    for (int k = 0; k < n; k++)
        e[k] = fmaxf(ws->wf[k], 0.0f);
    /* Q (row-major, eigenvector k in column k) <- v^T */
    transpose(v, Q, n);
    if (flags)
        *flags = used;
    return KFAC_OK;
}

/* ------------------------------------------- block-tridiagonal pieces */

/* ws->d (n x n, double) <- S + damping I, then its Cholesky factor: in
 * row-major terms a lower triangle L with S + damping I = L L^T (LAPACK's
 * column-major "U"). 0 if S has a non-finite entry or is not positive
 * definite after damping. */
static int damped_cholesky_double(const float *S, int n, double damping, kfac_linalg_ws *ws)
{
    double *a = ws->d;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        if (!isfinite(S[i]))
            return 0;
        a[i] = S[i];
    }
    for (int i = 0; i < n; i++)
        a[(size_t)i * n + i] += damping;
    int info = 0;
    dpotrf_(&UPLO, &n, a, &n, &info, 1);
    return info == 0;
}

kfac_status kfac_cross_solve(const float *S, int n, double damping, const float *X, int m, float *psi, double *D,
                             double *work, kfac_linalg_ws *ws)
{
    if (!S || !X || !psi || !D || !work || !ws || n < 1 || m < 1 || n > ws->max_n || m > ws->max_n)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_cross_solve: bad argument");
    if (!damped_cholesky_double(S, n, damping, ws))
        return kfac_fail(KFAC_ERR_NUMERIC, "kfac_cross_solve: the %d x %d factor with damping %g is not finite "
                         "or not positive definite", n, n, damping);
    double *x = ws->d2; /* (m, n): X in double */
    for (size_t i = 0; i < (size_t)m * n; i++) {
        if (!isfinite(X[i]))
            return kfac_fail(KFAC_ERR_NUMERIC, "kfac_cross_solve: the cross moment has a non-finite entry");
        x[i] = work[i] = X[i];
    }
    /* work, column-major n x m = X^T, <- (S + damping I)^-1 X^T: read
     * row-major it is X (S + damping I)^-1 = psi (m x n) */
    int info = 0;
    dpotrs_(&UPLO, &n, &m, ws->d, &n, work, &n, &info, 1);
    if (info != 0)
        return kfac_fail(KFAC_ERR_NUMERIC, "kfac_cross_solve: dpotrs info %d", info);
    for (size_t i = 0; i < (size_t)m * n; i++)
        psi[i] = (float)work[i];
    /* D (m x m) <- psi (m x n) X^T (n x m), then symmetric exactly */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, n, 1.0, work, n, x, n, 0.0, D, m);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < i; j++) {
            double v = 0.5 * (D[(size_t)i * m + j] + D[(size_t)j * m + i]);
            D[(size_t)i * m + j] = D[(size_t)j * m + i] = v;
        }
    return KFAC_OK;
}

kfac_status kfac_gen_eigen(const float *S, int n, double damping, const double *D, float *K, float *c,
                           kfac_linalg_ws *ws)
{
    if (!S || !K || !c || !ws || n < 1 || n > ws->max_n)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_gen_eigen: bad argument");
    if (!damped_cholesky_double(S, n, damping, ws))
        return kfac_fail(KFAC_ERR_NUMERIC, "kfac_gen_eigen: the %d x %d factor with damping %g is not finite "
                         "or not positive definite", n, n, damping);
    const double *L = ws->d; /* lower triangle, row-major */
    double *m = ws->d2;      /* (n, n) */
    if (D)
        memcpy(m, D, sizeof *m * (size_t)n * n);
    else
        memset(m, 0, sizeof *m * (size_t)n * n);
    /* m <- L^-1 D L^-T */
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, n, n, 1.0, L, n, m, n);
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, n, n, 1.0, L, n, m, n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) {
            double v = 0.5 * (m[(size_t)i * n + j] + m[(size_t)j * n + i]);
            m[(size_t)i * n + j] = m[(size_t)j * n + i] = v;
        }
    /* m = U diag(s) U^T; read row-major, m's row k is then eigenvector k */
    int info = 0;
    dsyevd_(&JOBZ, &UPLO, &n, m, &n, ws->w, (double *)ws->work, &ws->lwork_d, ws->iwork, &ws->liwork, &info, 1, 1);
    if (info != 0)
        return kfac_fail(KFAC_ERR_NUMERIC, "kfac_gen_eigen: %d x %d eigensolver failed (dsyevd info %d)", n, n,
                         info);
    /* m <- U^T L^-1 = K^T, so K = L^-T U */
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, n, n, 1.0, L, n, m, n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            float v = (float)m[(size_t)j * n + i];
            if (!isfinite(v))
                return kfac_fail(KFAC_ERR_NUMERIC, "kfac_gen_eigen: %d x %d basis not finite", n, n);
            K[(size_t)i * n + j] = v;
        }
    /* s lies in [0, 1) in exact arithmetic (a Schur complement of a
     * damped second moment: docs/algorithm.md §4.7); 1 - s kept directly,
     * which stays accurate as s nears 1 */
    for (int k = 0; k < n; k++)
        c[k] = (float)(1.0 - fmin(fmax(ws->w[k], 0.0), 1.0));
    return KFAC_OK;
}

kfac_status kfac_spd_solve_double(double *a, int n, double *b, const char *what)
{
    if (!a || !b || !what || n < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_spd_solve_double: bad argument");
    int one = 1, info = 0;
    dpotrf_(&UPLO, &n, a, &n, &info, 1);
    if (info == 0)
        dpotrs_(&UPLO, &n, &one, a, &n, b, &n, &info, 1);
    return info == 0 ? KFAC_OK
                     : kfac_fail(KFAC_ERR_NUMERIC, "%s is not positive definite (info %d)", what, info);
}

kfac_status kfac_sym_topk(const float *S, int n, int s, int iters, float *U, float *e, kfac_linalg_ws *ws,
                          int *flags)
{
    kfac_clear_error();
    if (!S || !U || !e || !ws)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_sym_topk: NULL argument");
    if (n < 2 || n > ws->max_n || s < 1 || s > n / 2 || iters < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_sym_topk: n = %d, s = %d, %d iteration%s (need 1 <= s <= n/2 "
                         "<= %d / 2)", n, s, iters, KFAC_S(iters), ws->max_n);
    kfac_status st = check_input("kfac_sym_topk", S, n);
    if (st != KFAC_OK)
        return st;
    /* Scratch in d2 (2 n^2 floats): Y and Z (n x s each), T and V (s x s),
     * tau (s), then QR's work. Column-major n x s is the same memory as
     * our row-major s x n, so U is LAPACK's n x s block as it stands. */
    float *Y = (float *)ws->d2, *Z = Y + (size_t)n * s, *T = Z + (size_t)n * s, *V = T + (size_t)s * s;
    float *tau = V + (size_t)s * s, *work = tau + s;
    int lwork = (int)((size_t)2 * n * n - (size_t)(work - Y)), info = 0, query = -1;
    float opt;
    sgeqrf_(&n, &s, Y, &n, tau, &opt, &query, &info);
    int need = (int)opt;
    sorgqr_(&n, &s, &s, Y, &n, tau, &opt, &query, &info);
    need = KFAC_MAX(need, (int)opt);
    if (need > lwork)
        lwork = KFAC_MAX(s, lwork); /* still valid: LAPACK's minimum is s */
    else
        lwork = need;
    const float *Q = U;
    for (int it = 0; it < iters; it++) {
        /* Y (n x s) <- S Q; Y <- orth(Y) */
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, s, n, 1.0f, S, n, Q, n, 0.0f, Y, n);
        sgeqrf_(&n, &s, Y, &n, tau, work, &lwork, &info);
        if (info == 0)
            sorgqr_(&n, &s, &s, Y, &n, tau, work, &lwork, &info);
        if (info != 0)
            return kfac_fail(KFAC_ERR_NUMERIC, "kfac_sym_topk: QR of the %d x %d block failed (info %d)", n, s, info);
        Q = Y;
        if (it + 1 < iters)
            memcpy(U, Y, sizeof(float) * (size_t)n * s), Q = U;
    }
    /* Rayleigh-Ritz: T (s x s) = Q^T S Q, eigenpairs (T, V) ascending */
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, s, n, 1.0f, S, n, Q, n, 0.0f, Z, n);
    cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, s, s, n, 1.0f, Q, n, Z, n, 0.0f, T, s);
    for (int i = 0; i < s; i++) /* symmetric up to rounding: make it exact */
        for (int j = 0; j < i; j++)
            T[(size_t)i * s + j] = T[(size_t)j * s + i] = 0.5f * (T[(size_t)i * s + j] + T[(size_t)j * s + i]);
    if ((st = kfac_sym_eigen(T, s, V, e, ws, flags)) != KFAC_OK)
        return st;
    /* U (n x s, column j = Ritz vector of the j-th largest) <- Q V, with
     * V's columns (row-major eigenvector k in column k) reversed */
    for (int j = 0; j < s; j++)
        for (int i = 0; i < s; i++)
            T[(size_t)j * s + i] = V[(size_t)i * s + (s - 1 - j)];
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, s, s, 1.0f, Q, n, T, s, 0.0f, Z, n);
    memcpy(U, Z, sizeof(float) * (size_t)n * s);
    for (int i = 0; i < s / 2; i++) {
        float t = e[i];
        e[i] = e[s - 1 - i];
        e[s - 1 - i] = t;
    }
    return all_finite(U, (size_t)n * s) && all_finite(e, (size_t)s)
               ? KFAC_OK
               : kfac_fail(KFAC_ERR_NUMERIC, "kfac_sym_topk: %d x %d Ritz vectors not finite", n, s);
}
