/* factors.c - K-FAC's Kronecker-factored curvature: running averages of
 * A = E[abar abar^T] and G = E[g g^T] per layer (KFAC.md 3), damped
 * inverses or eigenbases recomputed on demand with layers in parallel
 * (KFAC.md 4), and the preconditioned gradient of one layer (KFAC.md 5). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "common.h"
#include "dist.h"
#include "linalg.h"
#include "factors.h"

typedef struct layer_factors {
    int din, dout;  /* W is dout x din; din counts the homogeneous 1 */
    float *A;       /* din x din running average of abar abar^T */
    float *G;       /* dout x dout running average of g g^T */
    float *ainv;    /* din x din: (A + pi sqrt(l) I)^-1, or Q_A (eigen) */
    float *ginv;    /* dout x dout: (G + sqrt(l)/pi I)^-1, or Q_G (eigen) */
    float *ea, *eg; /* eigen: eigenvalues of A (din) and G (dout) */
    float *sa, *sg; /* one batch's statistics, upper triangles packed by
                       rows (din (din+1)/2 and dout (dout+1)/2) inside
                       the shared stage */
} layer_factors;

struct kfac_factors {
    kfac_kfac_params p;
    int n_layers, max_rows, max_d;
    layer_factors *L;
    long k;          /* statistics rounds so far */
    float eps;       /* min(1 - 1/k, decay) for the current round */
    int inverted;    /* inverses exist */
    double lambda;   /* damping of the current inverses */
    float *syrk;     /* max_d x max_d: one batch's statistics */
    float *stage;    /* n_stage: every layer's packed sa and sg, one buffer
                        so a process group sums them in one collective */
    size_t n_stage;
    const kfac_dist *dist; /* NULL: one process */
    float *tmp1, *tmp2; /* max(dout x din): products while applying */
    float *P, *Q;    /* max_rows x max_d: g G^-1 and abar A^-1 */
    float *M1, *M2;  /* max_rows x max_rows: for <delta, grad> */
    int n_ws;        /* one LAPACK workspace per thread */
    kfac_linalg_ws **ws;
};

void kfac_factors_free(kfac_factors *pc)
{
    if (!pc)
        return;
    for (int l = 0; pc->L && l < pc->n_layers; l++) {
        layer_factors *f = &pc->L[l];
        kfac_free_floats(f->A), kfac_free_floats(f->G);
        kfac_free_floats(f->ainv), kfac_free_floats(f->ginv);
        kfac_free_floats(f->ea), kfac_free_floats(f->eg);
    }
    free(pc->L);
    kfac_free_floats(pc->syrk), kfac_free_floats(pc->stage);
    kfac_free_floats(pc->tmp1), kfac_free_floats(pc->tmp2);
    kfac_free_floats(pc->P), kfac_free_floats(pc->Q);
    kfac_free_floats(pc->M1), kfac_free_floats(pc->M2);
    for (int i = 0; pc->ws && i < pc->n_ws; i++)
        kfac_linalg_ws_free(pc->ws[i]);
    free(pc->ws);
    free(pc);
}

kfac_status kfac_factors_new(int n_layers, const int *d_in, const int *d_out, int max_rows,
                             const kfac_kfac_params *p, kfac_factors **out)
{
    kfac_clear_error();
    if (!out || !d_in || !d_out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_new: NULL argument");
    *out = NULL;
    kfac_kfac_params defaults;
    if (!p) {
        kfac_kfac_params_init(&defaults);
        p = &defaults;
    }
    kfac_status st = kfac_kfac_params_validate(p);
    if (st != KFAC_OK)
        return st;
    if (n_layers < 1 || n_layers > KFAC_MAX_LAYERS)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%d layers outside [1, %d]", n_layers, KFAC_MAX_LAYERS);
    if (max_rows < 1 || max_rows > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "max_rows %d outside [1, 1000000]", max_rows);
    int max_d = 1;
    size_t max_w = 1;
    for (int l = 0; l < n_layers; l++) {
        /* a factor is dense d x d: 46341^2 floats would pass 8 GiB */
        if (d_in[l] < 1 || d_out[l] < 1 || d_in[l] > 46340 || d_out[l] > 46340)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: sizes %d x %d outside [1, 46340]", l, d_out[l],
                             d_in[l]);
        max_d = KFAC_MAX(max_d, KFAC_MAX(d_in[l], d_out[l]));
        max_w = KFAC_MAX(max_w, (size_t)d_in[l] * (size_t)d_out[l]);
    }

    kfac_factors *pc = calloc(1, sizeof *pc);
    if (!pc)
        return kfac_fail(KFAC_ERR_NOMEM, "K-FAC: out of memory");
    pc->p = *p;
    pc->n_layers = n_layers;
    pc->max_rows = max_rows;
    pc->max_d = max_d;
    pc->L = calloc((size_t)n_layers, sizeof *pc->L);
    int eigen = p->inversion == KFAC_INV_EIGEN;
    int ok = pc->L != NULL;
    for (int l = 0; ok && l < n_layers; l++) {
        layer_factors *f = &pc->L[l];
        size_t a2 = (size_t)d_in[l] * d_in[l], g2 = (size_t)d_out[l] * d_out[l];
        f->din = d_in[l];
        f->dout = d_out[l];
        ok = (f->A = kfac_alloc_floats(a2)) && (f->G = kfac_alloc_floats(g2)) &&
             (f->ainv = kfac_alloc_floats(a2)) && (f->ginv = kfac_alloc_floats(g2)) &&
             (!eigen || ((f->ea = kfac_alloc_floats((size_t)d_in[l])) &&
                         (f->eg = kfac_alloc_floats((size_t)d_out[l]))));
        if (ok) {
            /* all of it, inverses too: a checkpoint writes them whole */
            memset(f->A, 0, sizeof(float) * a2);
            memset(f->G, 0, sizeof(float) * g2);
            memset(f->ainv, 0, sizeof(float) * a2);
            memset(f->ginv, 0, sizeof(float) * g2);
            if (eigen) {
                memset(f->ea, 0, sizeof(float) * (size_t)d_in[l]);
                memset(f->eg, 0, sizeof(float) * (size_t)d_out[l]);
            }
        }
    }
    for (int l = 0; l < n_layers; l++)
        pc->n_stage += (size_t)d_in[l] * (d_in[l] + 1) / 2 + (size_t)d_out[l] * (d_out[l] + 1) / 2;
    ok = ok && (pc->stage = kfac_alloc_floats(pc->n_stage));
    for (size_t at = 0, l = 0; ok && l < (size_t)n_layers; l++) {
        layer_factors *f = &pc->L[l];
        f->sa = pc->stage + at;
        at += (size_t)f->din * (f->din + 1) / 2;
        f->sg = pc->stage + at;
        at += (size_t)f->dout * (f->dout + 1) / 2;
    }
    size_t rows_d = (size_t)max_rows * (size_t)max_d;
    ok = ok && (pc->syrk = kfac_alloc_floats((size_t)max_d * max_d)) && (pc->tmp1 = kfac_alloc_floats(max_w)) &&
         (pc->tmp2 = kfac_alloc_floats(max_w)) && (pc->P = kfac_alloc_floats(rows_d)) &&
         (pc->Q = kfac_alloc_floats(rows_d)) &&
         (pc->M1 = kfac_alloc_floats((size_t)max_rows * max_rows)) &&
         (pc->M2 = kfac_alloc_floats((size_t)max_rows * max_rows));
    pc->n_ws = omp_get_max_threads();
    ok = ok && (pc->ws = calloc((size_t)pc->n_ws, sizeof *pc->ws));
    for (int i = 0; ok && i < pc->n_ws; i++)
        ok = kfac_linalg_ws_new(max_d, &pc->ws[i]) == KFAC_OK;
    if (!ok) {
        kfac_factors_free(pc);
        return kfac_fail(KFAC_ERR_NOMEM, "K-FAC factors (largest %d x %d): out of memory", max_d, max_d);
    }
    *out = pc;
    return KFAC_OK;
}

void kfac_factors_begin_stats(kfac_factors *pc)
{
    pc->k++;
    /* KFAC.md 3: a plain mean while k is small, then an exponential one */
    float warm = 1.0f - 1.0f / (float)pc->k;
    pc->eps = KFAC_MIN(warm, pc->p.decay);
}

long kfac_factors_stats_rounds(const kfac_factors *pc) { return pc->k; }
int kfac_factors_inverted(const kfac_factors *pc) { return pc->inverted; }

/* First element of row i of an n x n upper triangle packed by rows. */
static size_t packed_row(size_t i, size_t n) { return i * n - i * (i - 1) / 2; }

/* X <- eps X + (1 - eps) S, S an upper triangle packed by rows; X is kept
 * full for LAPACK: its upper triangle is averaged row by row (contiguous in
 * S and X), then mirrored into the lower one in tiles. */
static void fold_average(float *X, const float *S, int n, float eps)
{
    enum { T = 32 };
    float keep = eps, take = 1.0f - eps;
    int big = (long)n * n > 65536;
#pragma omp parallel for schedule(dynamic, 16) if (big)
    for (int i = 0; i < n; i++) {
        const float *s = S + packed_row((size_t)i, (size_t)n) - i;
        float *x = X + (size_t)i * n;
        for (int j = i; j < n; j++)
            x[j] = keep * x[j] + take * s[j];
    }
#pragma omp parallel for schedule(dynamic, 1) if (big)
    for (int ib = 0; ib < n; ib += T)
        for (int jb = 0; jb <= ib; jb += T)
            for (int i = ib; i < KFAC_MIN(ib + T, n); i++)
                for (int j = jb; j < KFAC_MIN(jb + T, i); j++)
                    X[(size_t)i * n + j] = X[(size_t)j * n + i];
}

/* dst <- scale x^T x, upper triangle packed by rows (zero for no rows):
 * x is rows x n with leading dimension ld */
static void packed_gram(kfac_factors *pc, const float *x, int ld, int n, int rows, float scale, float *dst)
{
    size_t np = (size_t)n * (n + 1) / 2;
    if (rows < 1) {
        memset(dst, 0, sizeof(float) * np);
        return;
    }
    /* S (n x n, upper) <- scale x^T x */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, rows, scale, x, ld, 0.0f, pc->syrk, n);
    for (int i = 0; i < n; i++)
        memcpy(dst + packed_row((size_t)i, (size_t)n), pc->syrk + (size_t)i * n + i, sizeof(float) * (size_t)(n - i));
}

void kfac_factors_batch_stats(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int rows,
                              float scale)
{
    layer_factors *f = &pc->L[l];
    packed_gram(pc, abar, lda, f->din, rows, scale, f->sa);
    packed_gram(pc, g, f->dout, f->dout, rows, scale, f->sg);
}

float *kfac_factors_stage(kfac_factors *pc, size_t *n)
{
    *n = pc->n_stage;
    return pc->stage;
}

void kfac_factors_fold(kfac_factors *pc, int l)
{
    layer_factors *f = &pc->L[l];
    fold_average(f->A, f->sa, f->din, pc->eps);
    fold_average(f->G, f->sg, f->dout, pc->eps);
}

kfac_status kfac_factors_accumulate(kfac_factors *pc, int l, const float *abar, int lda, const float *g,
                                    int rows)
{
    if (!pc || !abar || !g || l < 0 || l >= pc->n_layers)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_accumulate: bad argument");
    if (pc->k < 1)
        return kfac_fail(KFAC_ERR_STATE, "kfac_factors_accumulate before kfac_factors_begin_stats");
    if (rows < 1 || rows > pc->max_rows)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%d rows outside [1, %d]", rows, pc->max_rows);
    if (lda < pc->L[l].din)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "leading dimension %d < %d", lda, pc->L[l].din);
    kfac_factors_batch_stats(pc, l, abar, lda, g, rows, 1.0f / rows);
    kfac_factors_fold(pc, l);
    return KFAC_OK;
}

void kfac_factors_set_dist(kfac_factors *pc, const kfac_dist *dist) { pc->dist = dist; }

static double trace(const float *X, int n)
{
    double t = 0.0;
    for (int i = 0; i < n; i++)
        t += X[(size_t)i * n + i];
    return t;
}

/* One factor to invert: layer, which side, size. */
typedef struct invert_job {
    int layer, is_g, n;
    double damping;
} invert_job;

static int by_size_desc(const void *a, const void *b)
{
    return ((const invert_job *)b)->n - ((const invert_job *)a)->n;
}

/* After each rank inverted the factors it owns: every rank learns every
 * factor's status and fallback report (so all fail, or go on, together),
 * then the owners broadcast the inverses or eigenbases. */
static kfac_status share_inverses(kfac_factors *pc, const invert_job *jobs, int n_jobs, const int *owner,
                                  kfac_status *status, int *flags, double *used)
{
    /* non-owners hold zeros, so a sum is the owner's value */
    double rep[3 * 2 * KFAC_MAX_LAYERS];
    for (int j = 0; j < n_jobs; j++) {
        rep[3 * j] = (double)status[j];
        rep[3 * j + 1] = (double)flags[j];
        rep[3 * j + 2] = used[j];
    }
    kfac_status st = kfac_dist_sum_doubles(pc->dist, rep, (size_t)3 * n_jobs);
    if (st != KFAC_OK)
        return st;
    int failed = 0;
    for (int j = 0; j < n_jobs; j++) {
        status[j] = (kfac_status)(int)rep[3 * j];
        flags[j] = (int)rep[3 * j + 1];
        used[j] = rep[3 * j + 2];
        failed |= status[j] != KFAC_OK;
    }
    if (failed) /* the caller reports it; nothing worth sending */
        return KFAC_OK;
    int eigen = pc->p.inversion == KFAC_INV_EIGEN;
    for (int j = 0; j < n_jobs && st == KFAC_OK; j++) {
        layer_factors *f = &pc->L[jobs[j].layer];
        size_t n = (size_t)jobs[j].n;
        st = kfac_dist_bcast(pc->dist, jobs[j].is_g ? f->ginv : f->ainv, sizeof(float) * n * n, owner[j]);
        if (st == KFAC_OK && eigen)
            st = kfac_dist_bcast(pc->dist, jobs[j].is_g ? f->eg : f->ea, sizeof(float) * n, owner[j]);
    }
    return st;
}

kfac_status kfac_factors_invert(kfac_factors *pc, double lambda, kfac_invert_report *report)
{
    if (!pc || !(lambda > 0.0) || !isfinite(lambda))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_invert: damping %g must be positive", lambda);
    if (pc->k < 1)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC inversion before any statistics");
    int eigen = pc->p.inversion == KFAC_INV_EIGEN;
    invert_job jobs[2 * KFAC_MAX_LAYERS];
    int n_jobs = 0;
    for (int l = 0; l < pc->n_layers; l++) {
        layer_factors *f = &pc->L[l];
        /* factored Tikhonov (KFAC.md 4): pi balances the two factors by
         * their mean eigenvalues; a dead factor (zero trace) gets pi = 1 */
        double ta = trace(f->A, f->din) / f->din, tg = trace(f->G, f->dout) / f->dout;
        double pi = ta > 0.0 && tg > 0.0 && isfinite(ta) && isfinite(tg) ? sqrt(ta / tg) : 1.0;
        double s = sqrt(lambda);
        jobs[n_jobs++] = (invert_job){l, 0, f->din, pi * s};
        jobs[n_jobs++] = (invert_job){l, 1, f->dout, s / pi};
    }
    /* biggest first, so two threads finish together */
    qsort(jobs, (size_t)n_jobs, sizeof *jobs, by_size_desc);
    /* In a process group each factor has one owner, balanced by the d^3
     * cost of its inversion (Osawa et al. 2019, KAISA); every rank makes
     * the same assignment from the same sizes. */
    int rank = kfac_dist_rank(pc->dist), owner[2 * KFAC_MAX_LAYERS];
    double cost[2 * KFAC_MAX_LAYERS];
    for (int j = 0; j < n_jobs; j++)
        cost[j] = (double)jobs[j].n * jobs[j].n * jobs[j].n;
    kfac_dist_assign(cost, n_jobs, kfac_dist_size(pc->dist), owner);
    kfac_status status[2 * KFAC_MAX_LAYERS];
    int flags[2 * KFAC_MAX_LAYERS];
    double used[2 * KFAC_MAX_LAYERS];
    /* Layers are independent (KFAC.md 4): one factor per thread. Inside a
     * parallel region the OpenMP build of OpenBLAS runs each LAPACK call
     * single-threaded, so the pool is not oversubscribed. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(pc->n_ws)
    for (int j = 0; j < n_jobs; j++) {
        flags[j] = 0;
        used[j] = 0.0;
        status[j] = KFAC_OK;
        if (owner[j] != rank)
            continue;
        kfac_linalg_ws *ws = pc->ws[omp_get_thread_num()];
        layer_factors *f = &pc->L[jobs[j].layer];
        const float *S = jobs[j].is_g ? f->G : f->A;
        float *dst = jobs[j].is_g ? f->ginv : f->ainv;
        used[j] = jobs[j].damping;
        if (eigen)
            status[j] = kfac_sym_eigen(S, jobs[j].n, dst, jobs[j].is_g ? f->eg : f->ea, ws, &flags[j]);
        else
            status[j] = kfac_damped_inverse(S, jobs[j].n, jobs[j].damping, dst, ws, &flags[j], &used[j]);
    }
    if (pc->dist) {
        kfac_status st = share_inverses(pc, jobs, n_jobs, owner, status, flags, used);
        if (st != KFAC_OK)
            return st;
    }
    kfac_invert_report rep = {0, 0, 1.0};
    for (int j = 0; j < n_jobs; j++) {
        if (status[j] != KFAC_OK)
            return kfac_fail(status[j], "K-FAC: layer %d factor %s (%d x %d) cannot be inverted: %s",
                             jobs[j].layer + 1, jobs[j].is_g ? "G" : "A", jobs[j].n, jobs[j].n,
                             status[j] == KFAC_ERR_NUMERIC ? "non-finite statistics" : kfac_strerror(status[j]));
        rep.fallbacks |= flags[j];
        rep.factors_fallen += flags[j] != 0;
        if (!eigen && jobs[j].damping > 0.0)
            rep.max_damping_raise = fmax(rep.max_damping_raise, used[j] / jobs[j].damping);
    }
    if (report)
        *report = rep;
    pc->lambda = lambda;
    pc->inverted = 1;
    return KFAC_OK;
}

kfac_status kfac_factors_apply(kfac_factors *pc, int l, const float *grad, float *delta)
{
    if (!pc || !grad || !delta || l < 0 || l >= pc->n_layers)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_apply: bad argument");
    if (!pc->inverted)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC: apply before the first inversion");
    layer_factors *f = &pc->L[l];
    int m = f->dout, n = f->din;
    if (pc->p.inversion == KFAC_INV_EIGEN) {
        /* exact Tikhonov in the eigenbasis (KFAC.md 4):
         * delta = Q_G [ (Q_G^T grad Q_A) / (eg ea^T + lambda) ] Q_A^T */
        /* tmp1 (m x n) <- Q_G^T (m x m) grad (m x n) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, m, 1.0f, f->ginv, m, grad, n, 0.0f, pc->tmp1, n);
        /* tmp2 (m x n) <- tmp1 Q_A (n x n) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1.0f, pc->tmp1, n, f->ainv, n, 0.0f,
                    pc->tmp2, n);
        float lam = (float)pc->lambda;
#pragma omp parallel for schedule(static) if ((long)m * n > 65536)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                pc->tmp2[(size_t)i * n + j] /= f->eg[i] * f->ea[j] + lam;
        /* tmp1 <- Q_G tmp2 */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, m, 1.0f, f->ginv, m, pc->tmp2, n, 0.0f,
                    pc->tmp1, n);
        /* delta <- tmp1 Q_A^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, n, 1.0f, pc->tmp1, n, f->ainv, n, 0.0f, delta,
                    n);
        return KFAC_OK;
    }
    /* tmp1 (m x n) <- G^-1 (m x m) grad (m x n) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, m, 1.0f, f->ginv, m, grad, n, 0.0f, pc->tmp1, n);
    /* delta (m x n) <- tmp1 A^-1 (n x n) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1.0f, pc->tmp1, n, f->ainv, n, 0.0f, delta, n);
    return KFAC_OK;
}

int kfac_factors_lowrank_pays(const kfac_factors *pc, int l, int batch)
{
    if (pc->p.inversion != KFAC_INV_CHOLESKY || l < 0 || l >= pc->n_layers || batch > pc->max_rows)
        return 0;
    double m = pc->L[l].dout, n = pc->L[l].din, b = batch;
    /* flops: P, Q, delta and the B x B dot products, against forming the
     * gradient and multiplying it by both inverses */
    double lowrank = 2 * b * (m * m + n * n + m * n) + 2 * b * b * (m + n);
    double full = 2 * b * m * n + 2 * m * m * n + 2 * m * n * n + 2 * m * n;
    return lowrank < full;
}

/* delta (m x n) <- scale P^T Q with P = g G^-1 and Q = abar A^-1, which
 * stay in pc->P and pc->Q */
static void lowrank_delta(kfac_factors *pc, const layer_factors *f, const float *abar, int lda, const float *g,
                          int b, float scale, float *delta)
{
    int m = f->dout, n = f->din;
    /* P (b x m) <- g (b x m) G^-1 (m x m) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, m, m, 1.0f, g, m, f->ginv, m, 0.0f, pc->P, m);
    /* Q (b x n) <- abar (b x n) A^-1 (n x n) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, n, n, 1.0f, abar, lda, f->ainv, n, 0.0f, pc->Q, n);
    /* delta (m x n) <- scale P^T (m x b) Q (b x n) = G^-1 [scale g^T abar] A^-1 */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, b, scale, pc->P, m, pc->Q, n, 0.0f, delta, n);
}

void kfac_factors_lowrank_part(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int batch,
                               float scale, float *delta)
{
    lowrank_delta(pc, &pc->L[l], abar, lda, g, batch, scale, delta);
}

double kfac_factors_rows_dot(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int batch,
                             const float *delta)
{
    const layer_factors *f = &pc->L[l];
    int m = f->dout, n = f->din;
    /* Q (b x n) <- g (b x m) delta (m x n); <delta, g^T abar> = sum Q .* abar */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, n, m, 1.0f, g, m, delta, n, 0.0f, pc->Q, n);
    double acc = 0.0;
    for (int i = 0; i < batch; i++)
        acc += cblas_dsdot(n, pc->Q + (size_t)i * n, 1, abar + (size_t)i * lda, 1);
    return acc;
}

kfac_status kfac_factors_apply_lowrank(kfac_factors *pc, int l, const float *abar, int lda, const float *g,
                                       int batch, float *delta, double *dot)
{
    if (!pc || !abar || !g || !delta || l < 0 || l >= pc->n_layers)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_apply_lowrank: bad argument");
    if (!pc->inverted)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC: apply before the first inversion");
    if (pc->p.inversion != KFAC_INV_CHOLESKY)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC: the low-rank form needs Cholesky inverses");
    if (batch < 1 || batch > pc->max_rows)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d outside [1, %d]", batch, pc->max_rows);
    layer_factors *f = &pc->L[l];
    int m = f->dout, n = f->din, b = batch;
    lowrank_delta(pc, f, abar, lda, g, b, 1.0f / b, delta);
    if (dot) {
        /* <delta, grad> = (1/b^2) sum_{r,s} (P g^T)_{rs} (Q abar^T)_{rs} */
        /* M1 (b x b) <- P (b x m) g^T (m x b) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, b, m, 1.0f, pc->P, m, g, m, 0.0f, pc->M1, b);
        /* M2 (b x b) <- Q (b x n) abar^T (n x b) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, b, n, 1.0f, pc->Q, n, abar, lda, 0.0f, pc->M2, b);
        double acc = 0.0;
        for (long i = 0; i < (long)b * b; i++)
            acc += (double)pc->M1[i] * pc->M2[i];
        *dot = acc / ((double)b * b);
    }
    return KFAC_OK;
}

const float *kfac_factors_factor_a(const kfac_factors *pc, int l)
{
    return pc && l >= 0 && l < pc->n_layers ? pc->L[l].A : NULL;
}

const float *kfac_factors_factor_g(const kfac_factors *pc, int l)
{
    return pc && l >= 0 && l < pc->n_layers ? pc->L[l].G : NULL;
}

void kfac_factors_io(kfac_factors *pc, kfac_ckio *io)
{
    /* the inversion kind decides which buffers hold what */
    kfac_ckio_expect(io, (uint64_t)pc->p.inversion, "K-FAC inversion kind");
    kfac_ckio_expect(io, (uint64_t)pc->n_layers, "K-FAC layers");
    kfac_ckio_long(io, &pc->k);
    kfac_ckio_f32(io, &pc->eps);
    kfac_ckio_int(io, &pc->inverted);
    kfac_ckio_f64(io, &pc->lambda);
    int eigen = pc->p.inversion == KFAC_INV_EIGEN;
    for (int l = 0; l < pc->n_layers; l++) {
        layer_factors *f = &pc->L[l];
        size_t a2 = (size_t)f->din * f->din, g2 = (size_t)f->dout * f->dout;
        kfac_ckio_floats(io, f->A, a2, "K-FAC factor A");
        kfac_ckio_floats(io, f->G, g2, "K-FAC factor G");
        kfac_ckio_floats(io, f->ainv, a2, "K-FAC inverse of A");
        kfac_ckio_floats(io, f->ginv, g2, "K-FAC inverse of G");
        if (eigen) {
            kfac_ckio_floats(io, f->ea, (size_t)f->din, "K-FAC eigenvalues of A");
            kfac_ckio_floats(io, f->eg, (size_t)f->dout, "K-FAC eigenvalues of G");
        }
    }
}
