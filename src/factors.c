/* factors.c - K-FAC's Kronecker-factored curvature: running averages of
 * A = E[abar abar^T] and G = E[g g^T] per layer (docs/algorithm.md §3), damped
 * inverses or eigenbases recomputed on demand with layers in parallel
 * (docs/algorithm.md §4), and the preconditioned gradient of one layer (docs/algorithm.md §5). */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckio.h"
#include "common.h"
#include "dist.h"
#include "linalg.h"
#include "factors.h"

/* LOWRANK (docs/algorithm.md §4.4): Ritz pairs computed beyond those kept (the last
 * of a sketch converge slowest), and the eigenvalues that size the sketch:
 * those of at least RANK_TOL times the factor's damping. An eigenvalue l
 * left out gets 1/(mu + gamma) instead of 1/(l + gamma), mu the tail's
 * mean: off by less than RANK_TOL relative to the damping. */
#define OVERSAMPLE 8
#define RANK_TOL 0.3
/* subspace iterations from a random start; from the previous basis, one */
#define COLD_ITERS 3

/* One Kronecker factor (A or G of a layer) and its damped inverse. */
typedef struct factor {
    int n;          /* A: d_in (with the homogeneous 1); G: d_out */
    float *S;       /* n x n running average (abar abar^T or g g^T) */
    float *inv;     /* CHOLESKY, and small factors of LOWRANK: (S + gamma I)^-1
                       (n x n); EIGEN: the eigenbasis Q (n x n); LOWRANK:
                       the top Ritz vectors U, s x n, row i a vector */
    float *e;       /* EIGEN: eigenvalues (n); LOWRANK: 1/(l_i + gamma) - c
                       for the k kept pairs */
    float *stat;    /* one batch's statistics, the upper triangle packed by
                       rows (n (n+1)/2), inside the shared stage */
    int half;       /* only S's upper triangle is current: the statistics
                       update that alone, and the lower one is copied in
                       when S is next read whole (symmetrize) */
    int lowrank;    /* represented by (U, e, c): docs/algorithm.md §4.4 */
    int s, k;       /* LOWRANK: sketch size; pairs kept */
    float c;        /* LOWRANK: 1/(tail mean + gamma), the inverse on the
                       rest of the spectrum */
} factor;

typedef struct layer_factors {
    factor a, g; /* W is g.n x a.n */
    int pos;     /* rows of abar and g per example: a convolution's output
                    pixels (docs/algorithm.md §3.1), 1 for a dense layer */
    /* the fused weight form (both factors low-rank; docs/algorithm.md §8.1):
     * delta = c_G c_A grad + lm rm, with lm = [P' | U_G^T] (g.n x kk) and
     * rm = [U_A ; R'] (kk x a.n), kk = k_A + k_G, prepared by
     * kfac_factors_weight_prepare for the step's kfac_factors_weight_add */
    float *lm, *rm;
    int kk;
    /* EKFAC (docs/algorithm.md §4.6): S_ij, the mean of (Q_G^T g)_i^2
     * (Q_A^T abar)_j^2 over examples in the current eigenbases (g.n x
     * a.n), a running average restarted at each decomposition from
     * EIGEN's e_G e_A^T; its part of the shared stage */
    float *scale, *scale_stat;
    long scale_k; /* rounds folded in since the last decomposition */
    /* TRIDIAG (docs/algorithm.md §4.7), for every layer but the last: the
     * running cross moments with the next layer, xa = E[abar_l
     * abar_{l+1}^T] (a.n x next a.n) and xg = E[g_l g_{l+1}^T] (g.n x next
     * g.n), their parts of the shared stage, and the regressions psi_a =
     * xa (A_{l+1} + gamma I)^-1, psi_g = xg (G_{l+1} + gamma I)^-1 (same
     * shapes). a.inv and g.inv then hold the bases K, a.e and g.e 1 - s. */
    float *xa, *xg, *xa_stat, *xg_stat, *psi_a, *psi_g;
    /* kept from the last batch form (kfac_factors_keep_rows): P = g G^-1
     * (kept_b x g.n) and Q = abar A^-1 (kept_b x a.n), for delta = (1/b)
     * P^T Q added straight into the momentum (docs/algorithm.md §8), and
     * for the quadratic rule the whole Gram abar A^-1 abar^T (kept_b x
     * kept_b), for abar delta^T = (1/b) K P (§5.2) */
    float *keep_p, *keep_q, *keep_k;
    int kept_b;
} layer_factors;

struct kfac_factors {
    kfac_kfac_params p;
    int n_layers, max_rows, max_d;
    int gram_rows;   /* the batch form's largest batch: its B x B Grams
                        are allocated for this many rows */
    layer_factors *L;
    long k;          /* statistics rounds so far */
    float eps;       /* min(1 - 1/k, decay) for the current round */
    int inverted;    /* inverses exist */
    double lambda;   /* damping of the current inverses */
    float *syrk;     /* max_d x max_d: one batch's statistics */
    float *stage;    /* n_stage: every layer's packed sa and sg, one buffer
                        so a process group sums them in one collective */
    size_t n_stage;
    const kfac_dist *dist; /* the process group (NULL or a group of one:
                              alone) */
    float *tmp1, *tmp2; /* max(dout x din): products while applying */
    float *P, *Q;    /* gram_rows x max_d: g G^-1 and abar A^-1 */
    float *scale_stage; /* EKFAC: every layer's scale_stat, one buffer so a
                           group sums them in one collective */
    size_t n_scale_stage;
    long k_decomposed; /* EKFAC: the statistics round of the last
                          decomposition (a new damping alone needs none) */
    float *ek_g, *ek_a, *ek_m; /* EKFAC on convolutions: one example's rows
                                  projected (positions x d) and its
                                  projected gradient (d_out x d_in) */
    float *M1, *M2;  /* a gram_rows x gram_rows Gram per thread, for
                        <delta, grad> */
    float *Ta, *Tas, *Tg, *Tgs; /* max(gram_rows, max_d) x max_s: x U^T of
                            the low-rank inverses, and scaled by e */
    double *tri_D, *tri_W; /* TRIDIAG: max_d x max_d each, the inversion's
                              D and kfac_cross_solve's work */
    float *tri_T;    /* TRIDIAG: max_d x max_d, products while applying */
    int n_ws;        /* one LAPACK workspace per thread */
    kfac_linalg_ws **ws;
};

void kfac_factors_free(kfac_factors *pc)
{
    if (!pc)
        return;
    for (int l = 0; pc->L && l < pc->n_layers; l++) {
        layer_factors *f = &pc->L[l];
        kfac_free_floats(f->a.S), kfac_free_floats(f->g.S);
        kfac_free_floats(f->a.inv), kfac_free_floats(f->g.inv);
        kfac_free_floats(f->a.e), kfac_free_floats(f->g.e);
        kfac_free_floats(f->lm), kfac_free_floats(f->rm), kfac_free_floats(f->scale);
        kfac_free_floats(f->xa), kfac_free_floats(f->xg), kfac_free_floats(f->psi_a), kfac_free_floats(f->psi_g);
        kfac_free_floats(f->keep_p), kfac_free_floats(f->keep_q), kfac_free_floats(f->keep_k);
    }
    free(pc->tri_D), free(pc->tri_W), kfac_free_floats(pc->tri_T);
    kfac_free_floats(pc->scale_stage);
    kfac_free_floats(pc->ek_g), kfac_free_floats(pc->ek_a), kfac_free_floats(pc->ek_m);
    free(pc->L);
    kfac_free_floats(pc->syrk), kfac_free_floats(pc->stage);
    kfac_free_floats(pc->tmp1), kfac_free_floats(pc->tmp2);
    kfac_free_floats(pc->P), kfac_free_floats(pc->Q);
    kfac_free_floats(pc->M1), kfac_free_floats(pc->M2);
    kfac_free_floats(pc->Ta), kfac_free_floats(pc->Tas), kfac_free_floats(pc->Tg), kfac_free_floats(pc->Tgs);
    for (int i = 0; pc->ws && i < pc->n_ws; i++)
        kfac_linalg_ws_free(pc->ws[i]);
    free(pc->ws);
    free(pc);
}

kfac_status kfac_factors_new(int n_layers, const int *d_in, const int *d_out, const int *positions, int max_rows,
                             const kfac_kfac_params *p, const kfac_dist *group, kfac_factors **out)
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
    /* p was validated at the public entry (kfac_precond_new, kfac_check) */
    if (n_layers < 1 || n_layers > KFAC_MAX_LAYERS)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%d layers outside [1, %d]", n_layers, KFAC_MAX_LAYERS);
    if (max_rows < 1 || max_rows > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "max_rows %d outside [1, 1000000]", max_rows);
    int max_d = 1;
    size_t max_w = 1;
    int max_pos = 1;
    for (int l = 0; l < n_layers; l++) {
        /* a factor is dense d x d: 46341^2 floats would pass 8 GiB */
        if (d_in[l] < 1 || d_out[l] < 1 || d_in[l] > 46340 || d_out[l] > 46340)
            return kfac_fail(d_in[l] < 1 || d_out[l] < 1 ? KFAC_ERR_INVALID_ARG : KFAC_ERR_SHAPE,
                             "layer %d has %d x %d weights: K-FAC's factors hold 1 to 46340 rows", l + 1, d_out[l],
                             d_in[l]);
        int pos = positions ? positions[l] : 1;
        if (pos < 1 || (long long)pos * max_rows > INT_MAX)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: %d positions per example outside [1, %d]", l + 1, pos,
                             INT_MAX / max_rows);
        max_pos = KFAC_MAX(max_pos, pos);
        if (pos > 1 && p->inversion == KFAC_INV_TRIDIAG)
            return kfac_fail(KFAC_ERR_INVALID_ARG,
                             "inversion tridiag: for dense layers only (layer %d has %d positions per example); "
                             "use eigen, cholesky or lowrank",
                             l + 1, pos);
        max_d = KFAC_MAX(max_d, KFAC_MAX(d_in[l], d_out[l]));
        max_w = KFAC_MAX(max_w, (size_t)d_in[l] * (size_t)d_out[l]);
    }

    kfac_factors *pc = calloc(1, sizeof *pc);
    if (!pc)
        return kfac_fail(KFAC_ERR_NOMEM, "K-FAC: out of memory");
    pc->p = *p;
    pc->dist = group;
    pc->n_layers = n_layers;
    pc->max_rows = max_rows;
    pc->max_d = max_d;
    /* The batch form only for batches up to 4096 rows: past that its
     * Grams, B^2 (d_in + d_out), outgrow the weight form's gradient,
     * 2 B d_in d_out, unless a layer is wider than about 2 B, and they would
     * take 64 MiB a thread; its P, Q and Grams are sized for that */
    pc->gram_rows = KFAC_MIN(max_rows, 4096);
    pc->L = calloc((size_t)n_layers, sizeof *pc->L);
    int tri = p->inversion == KFAC_INV_TRIDIAG;
    int eigen = p->inversion == KFAC_INV_EIGEN || p->inversion == KFAC_INV_EKFAC || tri, ok = pc->L != NULL, max_s = 1;
    for (int l = 0; ok && l < n_layers; l++) {
        layer_factors *f = &pc->L[l];
        f->pos = positions ? positions[l] : 1;
        factor *side[2] = {&f->a, &f->g};
        for (int i = 0; i < 2 && ok; i++) {
            factor *x = side[i];
            x->n = i == 0 ? d_in[l] : d_out[l];
            size_t n2 = (size_t)x->n * x->n;
            /* a factor too small for a sketch of rank_max + OVERSAMPLE
             * (at most n/2) stays dense: cheaper and exact there */
            x->lowrank = p->inversion == KFAC_INV_LOWRANK && x->n >= 2 * (p->rank_max + OVERSAMPLE);
            if (x->lowrank) {
                x->s = KFAC_MIN(p->rank_max, 16) + OVERSAMPLE; /* until the spectrum is known */
                max_s = KFAC_MAX(max_s, p->rank_max + OVERSAMPLE);
            }
            ok = (x->S = kfac_alloc_floats(n2)) && (x->inv = kfac_alloc_floats(n2)) &&
                 (!(eigen || x->lowrank) || (x->e = kfac_alloc_floats((size_t)x->n)));
            if (ok) {
                /* all of it, inverses too: a checkpoint writes them whole */
                memset(x->S, 0, sizeof(float) * n2);
                memset(x->inv, 0, sizeof(float) * n2);
                if (x->e)
                    memset(x->e, 0, sizeof(float) * (size_t)x->n);
            }
        }
        /* the fused weight form's factors, at most 2 (rank_max + OVERSAMPLE) wide */
        size_t kmax = 2 * (size_t)(p->rank_max + OVERSAMPLE);
        if (ok && f->a.lowrank && f->g.lowrank)
            ok = (f->lm = kfac_alloc_floats((size_t)f->g.n * kmax)) && (f->rm = kfac_alloc_floats(kmax * f->a.n));
    }
    if (ok && p->inversion == KFAC_INV_EKFAC) {
        for (int l = 0; l < n_layers; l++)
            pc->n_scale_stage += (size_t)d_in[l] * d_out[l];
        ok = (pc->scale_stage = kfac_alloc_floats(pc->n_scale_stage)) != NULL;
        for (size_t at = 0, l = 0; ok && l < (size_t)n_layers; l++) {
            layer_factors *f = &pc->L[l];
            size_t mn = (size_t)d_in[l] * d_out[l];
            ok = (f->scale = kfac_alloc_floats(mn)) != NULL;
            if (ok) /* whole, for checkpoints */
                memset(f->scale, 0, sizeof(float) * mn);
            f->scale_stat = pc->scale_stage + at;
            at += mn;
        }
    }
    for (int l = 0; ok && tri && l + 1 < n_layers; l++) {
        layer_factors *f = &pc->L[l];
        size_t na = (size_t)d_in[l] * d_in[l + 1], ng = (size_t)d_out[l] * d_out[l + 1];
        ok = (f->xa = kfac_alloc_floats(na)) && (f->psi_a = kfac_alloc_floats(na)) &&
             (f->xg = kfac_alloc_floats(ng)) && (f->psi_g = kfac_alloc_floats(ng));
        if (ok) { /* whole, for checkpoints */
            memset(f->xa, 0, sizeof(float) * na), memset(f->psi_a, 0, sizeof(float) * na);
            memset(f->xg, 0, sizeof(float) * ng), memset(f->psi_g, 0, sizeof(float) * ng);
        }
    }
    for (int l = 0; l < n_layers; l++) {
        pc->n_stage += (size_t)d_in[l] * (d_in[l] + 1) / 2 + (size_t)d_out[l] * (d_out[l] + 1) / 2;
        if (tri && l + 1 < n_layers) /* the cross moments join the same sum */
            pc->n_stage += (size_t)d_in[l] * d_in[l + 1] + (size_t)d_out[l] * d_out[l + 1];
    }
    ok = ok && (pc->stage = kfac_alloc_floats(pc->n_stage));
    for (size_t at = 0, l = 0; ok && l < (size_t)n_layers; l++) {
        layer_factors *f = &pc->L[l];
        f->a.stat = pc->stage + at;
        at += (size_t)f->a.n * (f->a.n + 1) / 2;
        f->g.stat = pc->stage + at;
        at += (size_t)f->g.n * (f->g.n + 1) / 2;
        if (f->xa) {
            f->xa_stat = pc->stage + at;
            at += (size_t)d_in[l] * d_in[l + 1];
            f->xg_stat = pc->stage + at;
            at += (size_t)d_out[l] * d_out[l + 1];
        }
    }
    if (ok)
        memset(pc->stage, 0, sizeof(float) * pc->n_stage);
    size_t dd = (size_t)max_d * max_d;
    ok = ok && (!tri || ((pc->tri_D = malloc(sizeof(double) * dd)) && (pc->tri_W = malloc(sizeof(double) * dd)) &&
                         (pc->tri_T = kfac_alloc_floats(dd))));
    size_t rows_d = (size_t)pc->gram_rows * (size_t)max_d;
    ok = ok && (pc->syrk = kfac_alloc_floats((size_t)max_d * max_d)) && (pc->tmp1 = kfac_alloc_floats(max_w)) &&
         (pc->tmp2 = kfac_alloc_floats(max_w)) && (pc->P = kfac_alloc_floats(rows_d)) &&
         (pc->Q = kfac_alloc_floats(rows_d)) &&
         (pc->M1 = kfac_alloc_floats((size_t)omp_get_max_threads() * pc->gram_rows * pc->gram_rows)) &&
         (pc->M2 = kfac_alloc_floats((size_t)omp_get_max_threads() * pc->gram_rows * pc->gram_rows));
    size_t t_rows = (size_t)KFAC_MAX(pc->gram_rows, max_d) * (size_t)max_s;
    ok = ok && (pc->Ta = kfac_alloc_floats(t_rows)) && (pc->Tas = kfac_alloc_floats(t_rows)) &&
         (pc->Tg = kfac_alloc_floats(t_rows)) && (pc->Tgs = kfac_alloc_floats(t_rows));
    /* EKFAC on a convolution: one example's projected rows and its
     * projected gradient (§3.1, §4.6) */
    if (ok && p->inversion == KFAC_INV_EKFAC && max_pos > 1)
        ok = (pc->ek_g = kfac_alloc_floats((size_t)max_pos * max_d)) &&
             (pc->ek_a = kfac_alloc_floats((size_t)max_pos * max_d)) && (pc->ek_m = kfac_alloc_floats(max_w));
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
    /* docs/algorithm.md §3: a plain mean while k is small, then an exponential one */
    float warm = 1.0f - 1.0f / (float)pc->k;
    pc->eps = KFAC_MIN(warm, pc->p.decay);
}

long kfac_factors_stats_rounds(const kfac_factors *pc) { return pc->k; }
int kfac_factors_inverted(const kfac_factors *pc) { return pc->inverted; }

/* First element of row i of an n x n upper triangle packed by rows. */
static size_t packed_row(size_t i, size_t n) { return i * n - i * (i - 1) / 2; }

/* X's upper triangle <- eps X + (1 - eps) S, S an upper triangle packed
 * by rows, row by row (contiguous in S and X). */
static void fold_average(float *X, const float *S, int n, float eps)
{
    float keep = eps, take = 1.0f - eps;
    int big = (long)n * n > KFAC_PAR_COPY;
#pragma omp parallel for schedule(dynamic, 16) if (big)
    for (int i = 0; i < n; i++) {
        const float *s = S + packed_row((size_t)i, (size_t)n) - i;
        float *x = X + (size_t)i * n;
        for (int j = i; j < n; j++)
            x[j] = keep * x[j] + take * s[j];
    }
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
    /* A the mean over examples and positions, G the sum over positions of
     * the mean over examples (KFC; docs/algorithm.md §3.1) */
    packed_gram(pc, abar, lda, f->a.n, rows * f->pos, scale / f->pos, f->a.stat);
    packed_gram(pc, g, f->g.n, f->g.n, rows * f->pos, scale, f->g.stat);
}

float *kfac_factors_stage(kfac_factors *pc, size_t *n)
{
    *n = pc->n_stage;
    return pc->stage;
}

void kfac_factors_fold(kfac_factors *pc, int l)
{
    layer_factors *f = &pc->L[l];
    fold_average(f->a.S, f->a.stat, f->a.n, pc->eps);
    fold_average(f->g.S, f->g.stat, f->g.n, pc->eps);
    f->a.half = f->g.half = 1;
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
    if (lda < pc->L[l].a.n)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "leading dimension %d < %d", lda, pc->L[l].a.n);
    kfac_factors_batch_stats(pc, l, abar, lda, g, rows, 1.0f / rows);
    kfac_factors_fold(pc, l);
    return KFAC_OK;
}

/* X (n x n): lower triangle <- upper, in tiles */
static void mirror_upper(float *X, int n)
{
    enum { T = 32 };
    for (int ib = 0; ib < n; ib += T)
        for (int jb = 0; jb <= ib; jb += T)
            for (int i = ib; i < KFAC_MIN(ib + T, n); i++)
                for (int j = jb; j < KFAC_MIN(jb + T, i); j++)
                    X[(size_t)i * n + j] = X[(size_t)j * n + i];
}

/* S whole again for LAPACK, the sketches' sgemm and checkpoints: copying
 * the lower triangle at each statistics round cost about as much as a
 * fifth of the round, and S is read whole only every T_inv steps. */
static void symmetrize(factor *x)
{
    if (x->half)
        mirror_upper(x->S, x->n);
    x->half = 0;
}

static int by_n_desc(const void *a, const void *b)
{
    return (*(const factor *const *)b)->n - (*(const factor *const *)a)->n;
}

void kfac_factors_accumulate_all(kfac_factors *pc, const float *const *abar, const int *lda, const float *const *g,
                                 int rows, float scale)
{
    /* syrk at these shapes runs no faster on two threads than on one, so
     * the threads take whole factors, biggest first */
    factor *job[2 * KFAC_MAX_LAYERS];
    const float *src[2 * KFAC_MAX_LAYERS];
    int ld[2 * KFAC_MAX_LAYERS], n_jobs = 2 * pc->n_layers, pos[2 * KFAC_MAX_LAYERS];
    float per[2 * KFAC_MAX_LAYERS]; /* the scale per row: A's divided by the positions (KFC) */
    for (int l = 0; l < pc->n_layers; l++) {
        job[2 * l] = &pc->L[l].a;
        job[2 * l + 1] = &pc->L[l].g;
    }
    qsort(job, (size_t)n_jobs, sizeof *job, by_n_desc);
    for (int j = 0; j < n_jobs; j++)
        for (int l = 0; l < pc->n_layers; l++) {
            if (job[j] == &pc->L[l].a)
                src[j] = abar[l], ld[j] = lda[l], pos[j] = pc->L[l].pos, per[j] = scale / pc->L[l].pos;
            else if (job[j] == &pc->L[l].g)
                src[j] = g[l], ld[j] = pc->L[l].g.n, pos[j] = pc->L[l].pos, per[j] = scale;
        }
    /* S <- eps S + (1 - eps) scale x^T x on the upper triangle, mirrored */
    const float keep = pc->eps;
#pragma omp parallel for schedule(dynamic, 1) num_threads(pc->n_ws)
    for (int j = 0; j < n_jobs; j++) {
        factor *x = job[j];
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, x->n, rows * pos[j], (1.0f - pc->eps) * per[j], src[j],
                    ld[j], keep, x->S, x->n);
        x->half = 1;
    }
    /* TRIDIAG's cross moments (docs/algorithm.md §4.7), from the same rows
     * and with the same epsilon, so that each pair's joint second moment
     * stays positive semi-definite */
    for (int l = 0; l + 1 < pc->n_layers && pc->L[l].xa; l++) {
        layer_factors *f = &pc->L[l], *h = &pc->L[l + 1];
        /* xa (a.n x h a.n) <- eps xa + (1 - eps) scale abar_l^T abar_{l+1} */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f->a.n, h->a.n, rows, (1.0f - keep) * scale, abar[l],
                    lda[l], abar[l + 1], lda[l + 1], keep, f->xa, h->a.n);
        /* xg (g.n x h g.n) <- eps xg + (1 - eps) scale g_l^T g_{l+1} */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f->g.n, h->g.n, rows, (1.0f - keep) * scale, g[l],
                    f->g.n, g[l + 1], h->g.n, keep, f->xg, h->g.n);
    }
}

void kfac_factors_cross_stats(kfac_factors *pc, const float *const *abar, const int *lda, const float *const *g,
                              int rows, float scale)
{
    for (int l = 0; l + 1 < pc->n_layers && pc->L[l].xa; l++) {
        layer_factors *f = &pc->L[l], *h = &pc->L[l + 1];
        size_t na = (size_t)f->a.n * h->a.n, ng = (size_t)f->g.n * h->g.n;
        if (rows < 1) {
            memset(f->xa_stat, 0, sizeof(float) * na);
            memset(f->xg_stat, 0, sizeof(float) * ng);
            continue;
        }
        /* xa_stat <- scale abar_l^T abar_{l+1}; xg_stat <- scale g_l^T g_{l+1} */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f->a.n, h->a.n, rows, scale, abar[l], lda[l],
                    abar[l + 1], lda[l + 1], 0.0f, f->xa_stat, h->a.n);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f->g.n, h->g.n, rows, scale, g[l], f->g.n, g[l + 1],
                    h->g.n, 0.0f, f->xg_stat, h->g.n);
    }
}

void kfac_factors_fold_cross(kfac_factors *pc)
{
    float keep = pc->eps, take = 1.0f - pc->eps;
    for (int l = 0; l + 1 < pc->n_layers && pc->L[l].xa; l++) {
        layer_factors *f = &pc->L[l], *h = &pc->L[l + 1];
        size_t na = (size_t)f->a.n * h->a.n, ng = (size_t)f->g.n * h->g.n;
        for (size_t i = 0; i < na; i++)
            f->xa[i] = keep * f->xa[i] + take * f->xa_stat[i];
        for (size_t i = 0; i < ng; i++)
            f->xg[i] = keep * f->xg[i] + take * f->xg_stat[i];
    }
}

static double trace(const float *X, int n)
{
    double t = 0.0;
    for (int i = 0; i < n; i++)
        t += X[(size_t)i * n + i];
    return t;
}

/* LOWRANK (docs/algorithm.md §4.4): x's top eigenpairs by subspace iteration, warm
 * started from the previous basis, and the inverse on the rest: keep the
 * sketch's trusted pairs (all but its last OVERSAMPLE), c = 1 / (mu +
 * gamma) with mu the mean of the other eigenvalues (from the trace), and
 * e_i = 1/(l_i + gamma) - c, so (S + gamma I)^-1 ~ c I + U^T diag(e) U.
 * Which pairs are kept does not hinge on a threshold (a rounding
 * difference would then change the inverse by a whole pair): the
 * threshold sizes the next sketch instead, to 1.5 times the pairs with
 * l_i >= RANK_TOL gamma (at least 8, at most rank_max) plus OVERSAMPLE,
 * its new rows random. A pair below the threshold changes the inverse by
 * less than RANK_TOL / gamma, so keeping a few is cheap insurance. */
static kfac_status lowrank_inverse(const kfac_factors *pc, factor *x, int layer, int is_g, double gamma,
                                   kfac_linalg_ws *ws, int *flags)
{
    int n = x->n, s = x->s, warm = pc->inverted;
    kfac_rng rng;
    kfac_rng_seed(&rng, 0x6b666163ULL ^ ((uint64_t)layer << 33) ^ ((uint64_t)is_g << 32) ^ (uint64_t)pc->k);
    if (!warm)
        for (size_t i = 0; i < (size_t)s * n; i++)
            x->inv[i] = (float)kfac_rng_normal(&rng);
    kfac_status st = kfac_sym_topk(x->S, n, s, warm ? 1 : COLD_ITERS, x->inv, x->e, ws, flags);
    if (st != KFAC_OK)
        return st;
    int k = KFAC_MIN(s - OVERSAMPLE, pc->p.rank_max), above = 0;
    double kept = 0.0;
    for (int i = 0; i < k; i++) {
        kept += x->e[i];
        above += x->e[i] >= RANK_TOL * gamma;
    }
    double tail = fmax(0.0, trace(x->S, n) - kept) / (n - k), c = 1.0 / (tail + gamma);
    for (int i = 0; i < k; i++)
        x->e[i] = (float)(1.0 / (x->e[i] + gamma) - c);
    x->k = k;
    x->c = (float)c;
    int next = KFAC_MIN(n / 2, KFAC_MIN(pc->p.rank_max, KFAC_MAX(8, above + above / 2)) + OVERSAMPLE);
    for (size_t i = (size_t)s * n; i < (size_t)next * n; i++)
        x->inv[i] = (float)kfac_rng_normal(&rng);
    x->s = next;
    return KFAC_OK;
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
    for (int j = 0; j < n_jobs && st == KFAC_OK; j++) {
        factor *x = jobs[j].is_g ? &pc->L[jobs[j].layer].g : &pc->L[jobs[j].layer].a;
        size_t n = (size_t)x->n;
        st = kfac_dist_bcast(pc->dist, x->inv, sizeof(float) * n * n, owner[j]);
        if (st == KFAC_OK && x->e)
            st = kfac_dist_bcast(pc->dist, x->e, sizeof(float) * n, owner[j]);
        if (st == KFAC_OK && x->lowrank) { /* the owner's rank and sketch */
            double meta[3] = {x->s, x->k, x->c};
            if ((st = kfac_dist_bcast(pc->dist, meta, sizeof meta, owner[j])) == KFAC_OK)
                x->s = (int)meta[0], x->k = (int)meta[1], x->c = (float)meta[2];
        }
    }
    return st;
}

/* TRIDIAG (docs/algorithm.md §4.7), one pass with the dampings ga, gg:
 * every layer's regressions psi on the next layer and the bases K, 1 - s
 * of the conditional covariances Sigma_{l|l+1} = (G_l + gg I) (x) (A_l +
 * ga I) - D_G (x) D_A, D = psi X^T; the last layer's Sigma is its damped
 * diagonal block (D = 0). */
static kfac_status tridiag_pass(kfac_factors *pc, const double *ga, const double *gg)
{
    kfac_linalg_ws *ws = pc->ws[0];
    kfac_status st = KFAC_OK;
    for (int l = 0; l < pc->n_layers && st == KFAC_OK; l++) {
        layer_factors *f = &pc->L[l], *h = l + 1 < pc->n_layers ? &pc->L[l + 1] : NULL;
        const double *D = h ? pc->tri_D : NULL;
        if (h)
            st = kfac_cross_solve(h->a.S, h->a.n, ga[l + 1], f->xa, f->a.n, f->psi_a, pc->tri_D, pc->tri_W, ws);
        if (st == KFAC_OK)
            st = kfac_gen_eigen(f->a.S, f->a.n, ga[l], D, f->a.inv, f->a.e, ws);
        if (st == KFAC_OK && h)
            st = kfac_cross_solve(h->g.S, h->g.n, gg[l + 1], f->xg, f->g.n, f->psi_g, pc->tri_D, pc->tri_W, ws);
        if (st == KFAC_OK)
            st = kfac_gen_eigen(f->g.S, f->g.n, gg[l], D, f->g.inv, f->g.e, ws);
    }
    return st;
}

static int floats_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* TRIDIAG's inversion: factored Tikhonov damping on the diagonal blocks
 * (as CHOLESKY's), then tridiag_pass in double, one layer after the other
 * (each LAPACK call threaded by OpenBLAS): the mode is for small dense
 * nets. If a damped factor is not positive definite in double (rounding
 * in a singular float S beyond a tiny damping), every damping is raised
 * x10, at least to 1e-6 of its factor's mean diagonal, up to 4 times, as
 * in the fallback chain (docs/algorithm.md §4.3). Every rank computes the
 * same from the same statistics, so a process group exchanges nothing. */
static kfac_status tridiag_invert(kfac_factors *pc, double lambda, kfac_invert_report *report)
{
    int n = pc->n_layers;
    double ga[KFAC_MAX_LAYERS], gg[KFAC_MAX_LAYERS], ga0[KFAC_MAX_LAYERS], gg0[KFAC_MAX_LAYERS];
    double fa[KFAC_MAX_LAYERS], fg[KFAC_MAX_LAYERS]; /* the raises' floors */
    for (int l = 0; l < n; l++) {
        layer_factors *f = &pc->L[l];
        symmetrize(&f->a), symmetrize(&f->g);
        int ok = floats_finite(f->a.S, (size_t)f->a.n * f->a.n) && floats_finite(f->g.S, (size_t)f->g.n * f->g.n);
        if (ok && l + 1 < n)
            ok = floats_finite(f->xa, (size_t)f->a.n * pc->L[l + 1].a.n) &&
                 floats_finite(f->xg, (size_t)f->g.n * pc->L[l + 1].g.n);
        if (!ok)
            return kfac_fail(KFAC_ERR_NUMERIC, "K-FAC tridiag: layer %d's statistics are not finite", l + 1);
        double ta = trace(f->a.S, f->a.n) / f->a.n, tg = trace(f->g.S, f->g.n) / f->g.n;
        double pi = ta > 0.0 && tg > 0.0 && isfinite(ta) && isfinite(tg) ? sqrt(ta / tg) : 1.0;
        ga[l] = ga0[l] = pi * sqrt(lambda);
        gg[l] = gg0[l] = sqrt(lambda) / pi;
        fa[l] = ta > 0.0 ? 1e-6 * ta : 1e-12;
        fg[l] = tg > 0.0 ? 1e-6 * tg : 1e-12;
    }
    kfac_status st = tridiag_pass(pc, ga, gg);
    int raises = 0;
    for (; st != KFAC_OK && raises < 4; raises++) {
        for (int l = 0; l < n; l++) {
            ga[l] = fmax(10.0 * ga[l], fa[l]);
            gg[l] = fmax(10.0 * gg[l], fg[l]);
        }
        st = tridiag_pass(pc, ga, gg);
    }
    if (st != KFAC_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", kfac_last_error());
        return kfac_fail(st, "K-FAC tridiag: the blocks cannot be inverted even with 4 damping raises: %s", why);
    }
    kfac_invert_report rep = {0, 0, 1.0};
    if (raises > 0) {
        rep.fallbacks = KFAC_FALLBACK_DAMPING;
        rep.factors_fallen = 2 * n;
        for (int l = 0; l < n; l++)
            rep.max_damping_raise = fmax(rep.max_damping_raise, fmax(ga[l] / ga0[l], gg[l] / gg0[l]));
    }
    if (report)
        *report = rep;
    pc->lambda = lambda;
    pc->inverted = 1;
    return KFAC_OK;
}

kfac_status kfac_factors_invert(kfac_factors *pc, double lambda, kfac_invert_report *report)
{
    if (!pc || !(lambda > 0.0) || !isfinite(lambda))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_invert: damping %g must be positive", lambda);
    if (pc->k < 1)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC inversion before any statistics");
    if (pc->p.inversion == KFAC_INV_TRIDIAG)
        return tridiag_invert(pc, lambda, report);
    int ekfac = pc->p.inversion == KFAC_INV_EKFAC, eigen = pc->p.inversion == KFAC_INV_EIGEN || ekfac;
    if (ekfac && pc->inverted && pc->k == pc->k_decomposed) {
        /* the same statistics: the damping enters only when applied, and
         * the re-estimated diagonal stays */
        if (report)
            *report = (kfac_invert_report){0, 0, 1.0};
        pc->lambda = lambda;
        return KFAC_OK;
    }
    invert_job jobs[2 * KFAC_MAX_LAYERS];
    int n_jobs = 0;
    for (int l = 0; l < pc->n_layers; l++) {
        layer_factors *f = &pc->L[l];
        /* factored Tikhonov (docs/algorithm.md §4): pi balances the two factors by
         * their mean eigenvalues; a dead factor (zero trace) gets pi = 1 */
        double ta = trace(f->a.S, f->a.n) / f->a.n, tg = trace(f->g.S, f->g.n) / f->g.n;
        double pi = ta > 0.0 && tg > 0.0 && isfinite(ta) && isfinite(tg) ? sqrt(ta / tg) : 1.0;
        double s = sqrt(lambda);
        jobs[n_jobs++] = (invert_job){l, 0, f->a.n, pi * s};
        jobs[n_jobs++] = (invert_job){l, 1, f->g.n, s / pi};
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
    /* Layers are independent (docs/algorithm.md §4): one factor per thread. Inside a
     * parallel region the OpenMP build of OpenBLAS runs each LAPACK call
     * single-threaded, so the pool is not oversubscribed. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(pc->n_ws)
    for (int j = 0; j < n_jobs; j++) {
        flags[j] = 0;
        used[j] = 0.0;
        status[j] = KFAC_OK;
        layer_factors *f = &pc->L[jobs[j].layer];
        factor *x = jobs[j].is_g ? &f->g : &f->a;
        symmetrize(x); /* on every rank: each checkpoints S */
        if (owner[j] != rank)
            continue;
        kfac_linalg_ws *ws = pc->ws[omp_get_thread_num()];
        used[j] = jobs[j].damping;
        if (eigen)
            status[j] = kfac_sym_eigen(x->S, x->n, x->inv, x->e, ws, &flags[j]);
        else if (x->lowrank)
            status[j] = lowrank_inverse(pc, x, jobs[j].layer, jobs[j].is_g, jobs[j].damping, ws, &flags[j]);
        else
            status[j] = kfac_damped_inverse(x->S, x->n, jobs[j].damping, x->inv, ws, &flags[j], &used[j]);
    }
    if (kfac_dist_grouped(pc->dist)) {
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
    if (ekfac) { /* new bases: the diagonal restarts from EIGEN's */
        pc->k_decomposed = pc->k;
        for (int l = 0; l < pc->n_layers; l++) {
            layer_factors *f = &pc->L[l];
            int m = f->g.n, n = f->a.n;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                    f->scale[(size_t)i * n + j] = f->g.e[i] * f->a.e[j];
            f->scale_k = 0;
        }
    }
    return KFAC_OK;
}

/* EKFAC (docs/algorithm.md §4.6): this process's part of layer l's new
 * diagonal, scale sum_n (Q_G^T g_n)^2 (Q_A^T abar_n)^2^T, into its stage,
 * from the rows projected into the current eigenbases in chunks of
 * gram_rows (zero for no rows). */
static void scale_stats(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int rows, float scale)
{
    layer_factors *f = &pc->L[l];
    int m = f->g.n, n = f->a.n;
    float beta = 0.0f;
    if (rows < 1 || f->pos > 1)
        memset(f->scale_stat, 0, sizeof(float) * (size_t)m * n);
    if (f->pos > 1) {
        /* a convolution's example gradient sums its positions' outer
         * products: Q_G^T DW_n Q_A = (g_n Q_G)^T (abar_n Q_A) (P rows each),
         * formed per example and squared into the statistics (§3.1) */
        int P = f->pos;
        for (int e = 0; e < rows; e++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, m, m, 1.0f, g + (size_t)e * P * m, m,
                        f->g.inv, m, 0.0f, pc->ek_g, m);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, n, n, 1.0f, abar + (size_t)e * P * lda, lda,
                        f->a.inv, n, 0.0f, pc->ek_a, n);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, P, 1.0f, pc->ek_g, m, pc->ek_a, n, 0.0f,
                        pc->ek_m, n);
            float *st = f->scale_stat;
            const float *M = pc->ek_m;
            size_t mn = (size_t)m * n;
#pragma omp parallel for simd schedule(static) if (mn > KFAC_PAR_STREAM)
            for (size_t i = 0; i < mn; i++)
                st[i] += scale * M[i] * M[i];
        }
        return;
    }
    for (int r0 = 0; r0 < rows; r0 += pc->gram_rows) {
        int r = KFAC_MIN(pc->gram_rows, rows - r0);
        /* P (r x m) <- g Q_G, Q (r x n) <- abar Q_A, squared */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, m, m, 1.0f, g + (size_t)r0 * m, m, f->g.inv, m,
                    0.0f, pc->P, m);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, n, n, 1.0f, abar + (size_t)r0 * lda, lda, f->a.inv,
                    n, 0.0f, pc->Q, n);
        for (size_t i = 0; i < (size_t)r * m; i++)
            pc->P[i] *= pc->P[i];
        for (size_t i = 0; i < (size_t)r * n; i++)
            pc->Q[i] *= pc->Q[i];
        /* stat (m x n) += scale P^T Q */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, r, scale, pc->P, m, pc->Q, n, beta, f->scale_stat,
                    n);
        beta = 1.0f;
    }
}

kfac_status kfac_factors_ekfac_stats(kfac_factors *pc, const float *const *abar, const int *lda, const float *const *g,
                                     int rows, float scale)
{
    if (!pc || pc->p.inversion != KFAC_INV_EKFAC || !pc->inverted)
        return kfac_fail(KFAC_ERR_STATE, "kfac_factors_ekfac_stats: EKFAC after the first decomposition only");
    for (int l = 0; l < pc->n_layers; l++)
        scale_stats(pc, l, rows > 0 ? abar[l] : NULL, rows > 0 ? lda[l] : 0, rows > 0 ? g[l] : NULL, rows, scale);
    kfac_status st = kfac_dist_sum_floats(pc->dist, pc->scale_stage, pc->n_scale_stage);
    if (st != KFAC_OK)
        return st;
    for (int l = 0; l < pc->n_layers; l++) {
        layer_factors *f = &pc->L[l];
        f->scale_k++;
        float keep = KFAC_MIN(1.0f - 1.0f / (float)f->scale_k, pc->p.decay), take = 1.0f - keep;
        size_t mn = (size_t)f->g.n * f->a.n;
        float *S = f->scale;
        const float *B = f->scale_stat;
#pragma omp parallel for simd schedule(static) if (mn > KFAC_PAR_STREAM)
        for (size_t i = 0; i < mn; i++)
            S[i] = keep * S[i] + take * B[i];
    }
    return KFAC_OK;
}

/* out (r x n) <- x (r x n, ld ldx) F^-1. Low-rank: c x + (x U^T) diag(e) U,
 * with T <- x U^T and Ts <- T diag(e) (r x k; Ts may be T). */
static void apply_rows(const factor *F, const float *x, int ldx, int r, float *out, float *T, float *Ts)
{
    int n = F->n, k = F->k;
    if (!F->lowrank) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, n, n, 1.0f, x, ldx, F->inv, n, 0.0f, out, n);
        return;
    }
    const float c = F->c;
#pragma omp parallel for schedule(static) if ((long)r * n > KFAC_PAR_COPY && !omp_in_parallel())
    for (int i = 0; i < r; i++)
        for (int j = 0; j < n; j++)
            out[(size_t)i * n + j] = c * x[(size_t)i * ldx + j];
    if (k == 0)
        return;
    /* T (r x k) <- x U^T; Ts <- T diag(e); out += Ts U */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, k, n, 1.0f, x, ldx, F->inv, n, 0.0f, T, k);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < k; j++)
            Ts[(size_t)i * k + j] = T[(size_t)i * k + j] * F->e[j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, n, k, 1.0f, Ts, k, F->inv, n, 1.0f, out, n);
}

/* out (n x cols) <- F^-1 y (n x cols). Low-rank: c y + U^T diag(e) (U y),
 * T (k x cols) scratch. */
static void apply_left(const factor *F, const float *y, int cols, float *out, float *T)
{
    int n = F->n, k = F->k;
    if (!F->lowrank) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, cols, n, 1.0f, F->inv, n, y, cols, 0.0f, out,
                    cols);
        return;
    }
    size_t len = (size_t)n * cols;
    const float c = F->c;
#pragma omp parallel for simd schedule(static) if (len > KFAC_PAR_COPY)
    for (size_t i = 0; i < len; i++)
        out[i] = c * y[i];
    if (k == 0)
        return;
    /* T (k x cols) <- U y, rows scaled by e; out += U^T T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, cols, n, 1.0f, F->inv, n, y, cols, 0.0f, T, cols);
    for (int i = 0; i < k; i++)
        cblas_sscal(cols, F->e[i], T + (size_t)i * cols, 1);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, cols, k, 1.0f, F->inv, n, T, cols, 1.0f, out, cols);
}

kfac_status kfac_factors_apply(kfac_factors *pc, int l, const float *grad, float *delta)
{
    if (!pc || !grad || !delta || l < 0 || l >= pc->n_layers)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_apply: bad argument");
    if (!pc->inverted)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC: apply before the first inversion");
    if (pc->p.inversion == KFAC_INV_TRIDIAG)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC tridiag couples the layers: kfac_factors_apply_all, not one layer");
    layer_factors *f = &pc->L[l];
    int m = f->g.n, n = f->a.n;
    if (pc->p.inversion == KFAC_INV_EIGEN || pc->p.inversion == KFAC_INV_EKFAC) {
        /* exact Tikhonov in the eigenbasis (docs/algorithm.md §4):
         * delta = Q_G [ (Q_G^T grad Q_A) / (eg ea^T + lambda) ] Q_A^T;
         * EKFAC (§4.6) divides by its re-estimated S + lambda instead */
        /* tmp1 (m x n) <- Q_G^T (m x m) grad (m x n) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, m, 1.0f, f->g.inv, m, grad, n, 0.0f, pc->tmp1, n);
        /* tmp2 (m x n) <- tmp1 Q_A (n x n) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1.0f, pc->tmp1, n, f->a.inv, n, 0.0f,
                    pc->tmp2, n);
        float lam = (float)pc->lambda;
        const float *S = f->scale;
        if (S)
#pragma omp parallel for simd schedule(static) if ((long)m * n > KFAC_PAR_COPY)
            for (size_t i = 0; i < (size_t)m * n; i++)
                pc->tmp2[i] /= S[i] + lam;
        else
#pragma omp parallel for schedule(static) if ((long)m * n > KFAC_PAR_COPY)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                    pc->tmp2[(size_t)i * n + j] /= f->g.e[i] * f->a.e[j] + lam;
        /* tmp1 <- Q_G tmp2 */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, m, 1.0f, f->g.inv, m, pc->tmp2, n, 0.0f,
                    pc->tmp1, n);
        /* delta <- tmp1 Q_A^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, n, 1.0f, pc->tmp1, n, f->a.inv, n, 0.0f, delta,
                    n);
        return KFAC_OK;
    }
    /* tmp1 (m x n) <- grad (m x n) A^-1; delta <- G^-1 tmp1 */
    apply_rows(&f->a, grad, n, m, pc->tmp1, pc->Ta, pc->Ta);
    apply_left(&f->g, pc->tmp1, n, delta, pc->Tg);
    return KFAC_OK;
}

/* docs/algorithm.md §4.7: delta = Xi^T Lambda Xi grad, block by block.
 * Xi: Z_l = V_l - psi_G,l V_{l+1} psi_A,l^T (the last layer: Z = V).
 * Lambda: Y_l = Sigma_{l|l+1}^-1 Z_l = K_G [(K_G^T Z_l K_A) / den] K_A^T,
 * den_ij = 1 - s_Gi s_Aj = c_Gi + c_Aj - c_Gi c_Aj with c = 1 - s.
 * Xi^T: delta_l = Y_l - psi_G,l-1^T Y_{l-1} psi_A,l-1 (the first: Y).
 * Z and Y live in delta; the last pass runs from the top layer down so
 * that Y_{l-1} is still there when delta_l needs it. */
kfac_status kfac_factors_apply_all(kfac_factors *pc, const float *const *grad, float *const *delta)
{
    if (!pc || !grad || !delta)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_apply_all: NULL argument");
    if (pc->p.inversion != KFAC_INV_TRIDIAG)
        return kfac_fail(KFAC_ERR_STATE, "kfac_factors_apply_all: for inversion tridiag only");
    if (!pc->inverted)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC: apply before the first inversion");
    int L = pc->n_layers;
    float *T = pc->tri_T;
    for (int l = 0; l < L; l++) {
        const layer_factors *f = &pc->L[l];
        int m = f->g.n, n = f->a.n;
        if (!grad[l] || !delta[l])
            return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_apply_all: layer %d's arrays are NULL", l + 1);
        memcpy(delta[l], grad[l], sizeof(float) * (size_t)m * n);
        if (l + 1 < L) {
            int m2 = pc->L[l + 1].g.n, n2 = pc->L[l + 1].a.n;
            /* T (m x n2) <- psi_G (m x m2) V_{l+1} (m2 x n2) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n2, m2, 1.0f, f->psi_g, m2, grad[l + 1], n2,
                        0.0f, T, n2);
            /* Z (m x n) -= T (m x n2) psi_A^T (n2 x n) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, n2, -1.0f, T, n2, f->psi_a, n2, 1.0f,
                        delta[l], n);
        }
    }
    for (int l = 0; l < L; l++) {
        const layer_factors *f = &pc->L[l];
        int m = f->g.n, n = f->a.n;
        /* tmp1 (m x n) <- K_G^T Z; tmp2 <- tmp1 K_A, divided by den */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, m, 1.0f, f->g.inv, m, delta[l], n, 0.0f, pc->tmp1,
                    n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1.0f, pc->tmp1, n, f->a.inv, n, 0.0f,
                    pc->tmp2, n);
        for (int i = 0; i < m; i++) {
            float cg = f->g.e[i];
            for (int j = 0; j < n; j++) {
                float den = cg + f->a.e[j] * (1.0f - cg);
                pc->tmp2[(size_t)i * n + j] /= den;
            }
        }
        /* tmp1 <- K_G tmp2; Y <- tmp1 K_A^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, m, 1.0f, f->g.inv, m, pc->tmp2, n, 0.0f,
                    pc->tmp1, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, n, 1.0f, pc->tmp1, n, f->a.inv, n, 0.0f, delta[l],
                    n);
    }
    for (int l = L - 1; l >= 1; l--) {
        const layer_factors *p = &pc->L[l - 1];
        int m = pc->L[l].g.n, n = pc->L[l].a.n, m1 = p->g.n, n1 = p->a.n;
        /* T (m x n1) <- psi_G,l-1^T (m x m1) Y_{l-1} (m1 x n1) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n1, m1, 1.0f, p->psi_g, m, delta[l - 1], n1, 0.0f, T,
                    n1);
        /* delta_l (m x n) -= T (m x n1) psi_A,l-1 (n1 x n) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n1, -1.0f, T, n1, p->psi_a, n, 1.0f, delta[l],
                    n);
    }
    return KFAC_OK;
}

int kfac_factors_weight_fusable(const kfac_factors *pc, int l)
{
    return pc && l >= 0 && l < pc->n_layers && pc->p.inversion == KFAC_INV_LOWRANK && pc->L[l].lm && pc->inverted;
}

/* docs/algorithm.md §8.1. With A^-1 = c_A I + U_A^T E_A U_A and G^-1 = c_G I +
 * U_G^T E_G U_G (U rows orthonormal, E diagonal):
 *   X = grad U_A^T (m x k_A), Y = U_G grad (k_G x n), Z = U_G X (k_G x k_A),
 *   delta = c_G c_A grad + P' U_A + U_G^T R',
 *   P' = c_G X E_A + U_G^T (E_G Z E_A),  R' = c_A E_G Y,
 *   <delta, grad> = c_G c_A |grad|^2 + c_G sum_j e_Aj |X_j|^2
 *                   + c_A sum_i e_Gi |Y_i|^2 + sum_ij e_Gi e_Aj Z_ij^2,
 * the last three from the k-wide products alone, so the step size is
 * known before any d_out x d_in array is written. Two products read grad,
 * one writes delta (or adds it to the momentum): 4 m n (k_A + k_G) flops,
 * the same as applying the inverses one side at a time, in two fewer
 * passes over m x n and one product instead of two for the assembly. */
kfac_status kfac_factors_weight_prepare(kfac_factors *pc, int l, const float *grad, double *dot)
{
    if (!kfac_factors_weight_fusable(pc, l) || !grad || !dot)
        return kfac_fail(KFAC_ERR_STATE, "kfac_factors_weight_prepare: layer %d has no fused form", l + 1);
    layer_factors *f = &pc->L[l];
    const factor *A = &f->a, *G = &f->g;
    int m = G->n, n = A->n, ka = A->k, kg = G->k, kk = ka + kg;
    float *lm = f->lm, *rm = f->rm, *Z = pc->Ta; /* Z: kg x ka <= max_s^2 */
    f->kk = kk;
    double norm2 = kfac_dot_floats(grad, grad, (size_t)m * n), sx = 0.0, sy = 0.0, sz = 0.0;
    /* X (m x ka) <- grad U_A^T, into lm's first ka columns */
    if (ka > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, ka, n, 1.0f, grad, n, A->inv, n, 0.0f, lm, kk);
    /* Y (kg x n) <- U_G grad, into rm's last kg rows */
    if (kg > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kg, n, m, 1.0f, G->inv, m, grad, n, 0.0f,
                    rm + (size_t)ka * n, n);
    /* Z (kg x ka) <- U_G X */
    if (ka > 0 && kg > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kg, ka, m, 1.0f, G->inv, m, lm, kk, 0.0f, Z, ka);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ka; j++) {
            double x = lm[(size_t)i * kk + j];
            sx += A->e[j] * x * x;
        }
    for (int i = 0; i < kg; i++) {
        double y = cblas_dsdot(n, rm + (size_t)(ka + i) * n, 1, rm + (size_t)(ka + i) * n, 1);
        sy += G->e[i] * y;
        for (int j = 0; j < ka; j++) {
            double z = Z[(size_t)i * ka + j];
            sz += (double)G->e[i] * A->e[j] * z * z;
        }
    }
    *dot = (double)G->c * A->c * norm2 + G->c * sx + A->c * sy + sz;
    /* lm <- [c_G X E_A + U_G^T (E_G Z E_A) | U_G^T]; rm <- [U_A ; c_A E_G Y] */
    for (int i = 0; i < m; i++) {
        float *row = lm + (size_t)i * kk;
        for (int j = 0; j < ka; j++)
            row[j] *= G->c * A->e[j];
        for (int j = 0; j < kg; j++)
            row[ka + j] = G->inv[(size_t)j * m + i];
    }
    if (ka > 0 && kg > 0) {
        for (int i = 0; i < kg; i++)
            for (int j = 0; j < ka; j++)
                Z[(size_t)i * ka + j] *= G->e[i] * A->e[j];
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, ka, kg, 1.0f, G->inv, m, Z, ka, 1.0f, lm, kk);
    }
    if (ka > 0)
        memcpy(rm, A->inv, sizeof(float) * (size_t)ka * n);
    for (int i = 0; i < kg; i++)
        cblas_sscal(n, A->c * G->e[i], rm + (size_t)(ka + i) * n, 1);
    return KFAC_OK;
}

void kfac_factors_weight_add(kfac_factors *pc, int l, const float *grad, float nu, float mu, float *v)
{
    layer_factors *f = &pc->L[l];
    int m = f->g.n, n = f->a.n, kk = f->kk;
    size_t len = (size_t)m * n;
    const float s = nu * f->g.c * f->a.c;
    if (mu == 0.0f) /* v's old values unread: it may be uninitialised */
#pragma omp parallel for simd schedule(static) if (len > KFAC_PAR_STREAM)
        for (size_t i = 0; i < len; i++)
            v[i] = s * grad[i];
    else
#pragma omp parallel for simd schedule(static) if (len > KFAC_PAR_STREAM)
        for (size_t i = 0; i < len; i++)
            v[i] = mu * v[i] + s * grad[i];
    if (kk > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, kk, nu, f->lm, kk, f->rm, n, 1.0f, v, n);
}

/* Flops of x's inverse applied to r vectors: dense n^2 each; low-rank
 * (x U^T, scaled, times U, plus c x) 4 n k + n. Before the first
 * inversion k is the sketch's. */
static double apply_cost(const factor *x, double r)
{
    double n = x->n, k = x->k > 0 ? x->k : x->s;
    return x->lowrank ? r * (4.0 * n * k + n) : 2.0 * r * n * n;
}

/* Flops of x^T diag(...) x over r rows for <delta, grad> in the batch
 * form: a Gram (syrk) plus the rank-k part, or P g^T. */
static double gram_cost(const factor *x, double r)
{
    double n = x->n, k = x->k > 0 ? x->k : x->s;
    return x->lowrank ? r * r * (n + 2.0 * k) : 2.0 * r * r * n;
}

void kfac_factors_form_flops(const kfac_factors *pc, int l, int batch, double *by_rows, double *by_weights)
{
    const layer_factors *f = &pc->L[l];
    double m = f->g.n, n = f->a.n, b = (double)batch * f->pos;
    /* Both forms make one m x n x b product: the gradient, or delta =
     * P^T Q. The batch form applies the inverses to b rows of g and abar
     * and needs two b x b Grams for <delta, grad>; the weight form applies
     * them to the m rows and n columns of the gradient. */
    *by_rows = apply_cost(&f->g, b) + apply_cost(&f->a, b) + gram_cost(&f->g, b) + gram_cost(&f->a, b);
    *by_weights = apply_cost(&f->a, m) + apply_cost(&f->g, n) + 2.0 * m * n;
}

int kfac_factors_batch_pays(const kfac_factors *pc, int l, int batch)
{
    if (pc->p.inversion == KFAC_INV_EIGEN || pc->p.inversion == KFAC_INV_EKFAC ||
        pc->p.inversion == KFAC_INV_TRIDIAG || l < 0 || l >= pc->n_layers ||
        (long long)batch * pc->L[l].pos > pc->gram_rows)
        return 0;
    if (pc->L[l].pos > 1) /* a convolution's B x positions rows: the weight form (§3.1) */
        return 0;
    double by_rows, by_weights;
    kfac_factors_form_flops(pc, l, batch, &by_rows, &by_weights);
    return by_rows < by_weights;
}

/* P (b x m) <- g G^-1 and Q (b x n) <- abar A^-1 (kept in pc->P, pc->Q,
 * with g U_G^T and abar U_A^T of low-rank factors in pc->Tg and pc->Ta,
 * and scaled by e in pc->Tgs and pc->Tas), then delta (m x n) <- scale P^T Q = G^-1
 * [scale g^T abar] A^-1. */
/* where the batch form's P and Q go: the layer's own, if it keeps them */
static float *rows_p(kfac_factors *pc, const layer_factors *f) { return f->keep_p ? f->keep_p : pc->P; }
static float *rows_q(kfac_factors *pc, const layer_factors *f) { return f->keep_q ? f->keep_q : pc->Q; }

static void batch_delta(kfac_factors *pc, layer_factors *f, const float *abar, int lda, const float *g, int b,
                        float scale, float *delta)
{
    int m = f->g.n, n = f->a.n, kg = f->g.k, ka = f->a.k;
    float *P = rows_p(pc, f), *Q = rows_q(pc, f);
    /* Each thread applies both inverses to its own block of rows with
     * single-threaded BLAS: the products are too skinny (b x n x k) for
     * threaded BLAS to pay for its hand-offs, and one team does both. */
#pragma omp parallel num_threads(pc->n_ws)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t i0 = (size_t)b * t / T, i1 = (size_t)b * (t + 1) / T;
        if (i1 > i0) {
            apply_rows(&f->g, g + i0 * m, m, (int)(i1 - i0), P + i0 * m, pc->Tg + i0 * kg, pc->Tgs + i0 * kg);
            apply_rows(&f->a, abar + i0 * lda, lda, (int)(i1 - i0), Q + i0 * n, pc->Ta + i0 * ka,
                       pc->Tas + i0 * ka);
        }
    }
    f->kept_b = f->keep_p ? b : 0;
    /* delta (m x n) <- scale P^T (m x b) Q (b x n) */
    if (delta)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, b, scale, P, m, Q, n, 0.0f, delta, n);
}

void kfac_factors_batch_part(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int batch,
                             float scale, float *delta)
{
    batch_delta(pc, &pc->L[l], abar, lda, g, batch, scale, delta);
}

double kfac_factors_rows_dot(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int batch,
                             const float *delta)
{
    const layer_factors *f = &pc->L[l];
    int m = f->g.n, n = f->a.n;
    /* Q (b x n) <- g (b x m) delta (m x n); <delta, g^T abar> = sum Q .* abar */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, n, m, 1.0f, g, m, delta, n, 0.0f, pc->Q, n);
    double acc = 0.0;
    for (int i = 0; i < batch; i++)
        acc += cblas_dsdot(n, pc->Q + (size_t)i * n, 1, abar + (size_t)i * lda, 1);
    return acc;
}

/* M (b x b) <- the part of x F^-1 x^T (rows x, ld ldx; xf = x F^-1, ld n)
 * from columns [j0, j1): c x x^T there for a low-rank F (upper triangle,
 * its rank-k part is added once by the caller), else xf x^T. */
static void partial_gram(const factor *F, const float *x, int ldx, const float *xf, int b, int j0, int j1, float *M)
{
    int w = j1 - j0;
    if (w < 1)
        memset(M, 0, sizeof(float) * (size_t)b * b);
    else if (F->lowrank)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, b, w, F->c, x + j0, ldx, 0.0f, M, b);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, b, w, 1.0f, xf + j0, F->n, x + j0, ldx, 0.0f, M, b);
}

kfac_status kfac_factors_apply_batch(kfac_factors *pc, int l, const float *abar, int lda, const float *g,
                                     int batch, float *delta, double *dot)
{
    if (!pc || !abar || !g || l < 0 || l >= pc->n_layers || (!delta && !pc->L[l].keep_p))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_factors_apply_batch: bad argument");
    if (!pc->inverted)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC: apply before the first inversion");
    if (pc->p.inversion == KFAC_INV_EIGEN || pc->p.inversion == KFAC_INV_EKFAC || pc->p.inversion == KFAC_INV_TRIDIAG)
        return kfac_fail(KFAC_ERR_STATE, "K-FAC: the batch form needs one layer's Kronecker-factored inverses");
    if (batch < 1 || batch > pc->gram_rows)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d outside [1, %d] (the batch form's largest)", batch,
                         pc->gram_rows);
    layer_factors *f = &pc->L[l];
    int m = f->g.n, b = batch;
    batch_delta(pc, f, abar, lda, g, b, 1.0f / b, delta);
    const float *P = rows_p(pc, f), *Q = rows_q(pc, f);
    if (dot) {
        /* <delta, grad> = (1/b^2) sum_{r,s} (g G^-1 g^T)_{rs} (abar A^-1 abar^T)_{rs}.
         * The Grams' inner dimensions are split over the threads, one
         * single-threaded BLAS call each (syrk does not scale with threads
         * at b x b outputs), then summed. */
        size_t bb = (size_t)b * b;
        int used = 1;
#pragma omp parallel num_threads(pc->n_ws)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            if (t == 0)
                used = T;
            partial_gram(&f->g, g, m, P, b, m * t / T, m * (t + 1) / T, pc->M1 + t * bb);
            partial_gram(&f->a, abar, lda, Q, b, f->a.n * t / T, f->a.n * (t + 1) / T, pc->M2 + t * bb);
        }
        for (int t = 1; t < used; t++)
            for (size_t i = 0; i < bb; i++) {
                pc->M1[i] += pc->M1[t * bb + i];
                pc->M2[i] += pc->M2[t * bb + i];
            }
        /* the rank-k parts: (x U^T) diag(e) (x U^T)^T */
        if (f->g.lowrank && f->g.k > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, b, f->g.k, 1.0f, pc->Tgs, f->g.k, pc->Tg, f->g.k,
                        1.0f, pc->M1, b);
        if (f->a.lowrank && f->a.k > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, b, f->a.k, 1.0f, pc->Tas, f->a.k, pc->Ta, f->a.k,
                        1.0f, pc->M2, b);
        if (f->keep_k) { /* for kfac_factors_rows_product */
            memcpy(f->keep_k, pc->M2, sizeof(float) * bb);
            mirror_upper(f->keep_k, b);
        }
        /* both symmetric: the upper triangles, off-diagonal terms twice */
        double acc = 0.0;
        for (int i = 0; i < b; i++) {
            const float *r1 = pc->M1 + (size_t)i * b, *r2 = pc->M2 + (size_t)i * b;
            acc += (double)r1[i] * r2[i];
            double off = 0.0;
            for (int j = i + 1; j < b; j++)
                off += (double)r1[j] * r2[j];
            acc += 2.0 * off;
        }
        *dot = acc / ((double)b * b);
    }
    return KFAC_OK;
}

kfac_status kfac_factors_keep_rows(kfac_factors *pc, int with_gram)
{
    if (pc->gram_rows > KFAC_KEEP_ROWS_MAX)
        return KFAC_OK; /* the batch form is not taken at such batches */
    size_t bb = (size_t)pc->gram_rows * pc->gram_rows;
    for (int l = 0; l < pc->n_layers; l++) {
        layer_factors *f = &pc->L[l];
        if (f->pos != 1 || f->keep_p)
            continue;
        if (!(f->keep_p = kfac_alloc_floats((size_t)pc->gram_rows * f->g.n)) ||
            !(f->keep_q = kfac_alloc_floats((size_t)pc->gram_rows * f->a.n)) ||
            (with_gram && !(f->keep_k = kfac_alloc_floats(bb))))
            return kfac_fail(KFAC_ERR_NOMEM, "K-FAC: out of memory");
    }
    return KFAC_OK;
}

int kfac_factors_keeps(const kfac_factors *pc, int l) { return pc->L[l].keep_p != NULL; }

void kfac_factors_batch_add(kfac_factors *pc, int l, float nu, float mu, float *v)
{
    const layer_factors *f = &pc->L[l];
    int m = f->g.n, n = f->a.n, b = f->kept_b;
    /* v (m x n) <- mu v + (nu / b) P^T Q: the step's delta never written */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, b, nu / b, f->keep_p, m, f->keep_q, n, mu, v, n);
}

int kfac_factors_rows_product(const kfac_factors *pc, int l, int rows, float *out)
{
    if (!pc || !out || l < 0 || l >= pc->n_layers)
        return -1;
    const layer_factors *f = &pc->L[l];
    int b = f->kept_b;
    if (!f->keep_k || b < 1 || rows < 0 || rows > b)
        return 0;
    if (rows > 0) /* out (rows x m) <- (1/b) K[:rows] (rows x b) P (b x m) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, f->g.n, b, 1.0f / b, f->keep_k, b, f->keep_p,
                    f->g.n, 0.0f, out, f->g.n);
    return 1;
}

void kfac_factors_forget_rows(kfac_factors *pc, int l)
{
    if (pc && l >= 0 && l < pc->n_layers)
        pc->L[l].kept_b = 0;
}

int kfac_factors_rank(const kfac_factors *pc, int l, int is_g)
{
    if (!pc || l < 0 || l >= pc->n_layers)
        return -1;
    const factor *x = is_g ? &pc->L[l].g : &pc->L[l].a;
    return x->lowrank ? x->k : x->n;
}

/* (the copy into the lower triangle leaves the factor's value unchanged,
 * so these views may make it through a const pointer) */
const float *kfac_factors_factor_a(const kfac_factors *pc, int l)
{
    if (!pc || l < 0 || l >= pc->n_layers)
        return NULL;
    mirror_upper(pc->L[l].a.S, pc->L[l].a.n);
    return pc->L[l].a.S;
}

const float *kfac_factors_factor_g(const kfac_factors *pc, int l)
{
    if (!pc || l < 0 || l >= pc->n_layers)
        return NULL;
    mirror_upper(pc->L[l].g.S, pc->L[l].g.n);
    return pc->L[l].g.S;
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
    for (int l = 0; l < pc->n_layers; l++) {
        factor *side[2] = {&pc->L[l].a, &pc->L[l].g};
        symmetrize(side[0]), symmetrize(side[1]); /* written whole; read whole */
        for (int i = 0; i < 2; i++)
            kfac_ckio_floats(io, side[i]->S, (size_t)side[i]->n * side[i]->n, i ? "K-FAC factor G" : "K-FAC factor A");
        for (int i = 0; i < 2; i++)
            kfac_ckio_floats(io, side[i]->inv, (size_t)side[i]->n * side[i]->n,
                             i ? "K-FAC inverse of G" : "K-FAC inverse of A");
        for (int i = 0; i < 2; i++)
            if (side[i]->e)
                kfac_ckio_floats(io, side[i]->e, (size_t)side[i]->n,
                                 i ? "K-FAC eigenvalues of G" : "K-FAC eigenvalues of A");
        for (int i = 0; i < 2; i++)
            if (side[i]->lowrank) { /* sizes bounded so that U fits inv */
                factor *x = side[i];
                kfac_ckio_int_range(io, &x->s, 1, x->n / 2, "a K-FAC sketch size");
                kfac_ckio_int_range(io, &x->k, 0, x->n / 2, "a K-FAC rank");
                kfac_ckio_f32(io, &x->c);
            }
        layer_factors *f = &pc->L[l];
        if (f->xa) { /* TRIDIAG's cross moments and regressions */
            size_t na = (size_t)f->a.n * pc->L[l + 1].a.n, ng = (size_t)f->g.n * pc->L[l + 1].g.n;
            kfac_ckio_floats(io, f->xa, na, "K-FAC cross moment of A");
            kfac_ckio_floats(io, f->xg, ng, "K-FAC cross moment of G");
            kfac_ckio_floats(io, f->psi_a, na, "K-FAC regression of A");
            kfac_ckio_floats(io, f->psi_g, ng, "K-FAC regression of G");
        }
        if (pc->L[l].scale) { /* EKFAC's diagonal and its rounds */
            kfac_ckio_floats(io, pc->L[l].scale, (size_t)pc->L[l].a.n * pc->L[l].g.n, "EKFAC scaling");
            kfac_ckio_long(io, &pc->L[l].scale_k);
        }
    }
    if (pc->p.inversion == KFAC_INV_EKFAC)
        kfac_ckio_long(io, &pc->k_decomposed);
}
