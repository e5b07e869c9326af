/* factors.h - K-FAC's Kronecker factors: one Kronecker-factored Fisher block
 * per layer with weights (dense or convolution), A = E[abar abar^T] and
 * G = E[g g^T] (docs/algorithm.md §3, §3.1), their running averages, damped inverses (§4) and the preconditioned
 * update (§5). In LOWRANK mode a large factor's damped inverse is its top
 * eigenpairs plus one constant for the rest (§4.4). It sees only per-layer
 * matrices (abar, g, gradients), not a kfac_net, so it serves any network
 * that can record them. The step engine (precond.c, the public
 * kfac_precond) and kfac check build on it.
 *
 * Layout: layer l has W_l of d_out x d_in (d_in counts the homogeneous
 * coordinate), row-major. With row-major vec, the block is
 * F_l ~ G_l (x) A_l, and (G (x) A)^-1 vec(V) = vec(G^-1 V A^-1): the
 * Kronecker product is never formed. */
#ifndef KFAC_FACTORS_H
#define KFAC_FACTORS_H

#include "kfac.h"

typedef struct kfac_factors kfac_factors;

/* What the last inversion needed, for the status line and tests. */
typedef struct kfac_invert_report {
    int fallbacks;        /* OR of KFAC_FALLBACK_* over all factors */
    int factors_fallen;   /* factors that needed any fallback */
    double max_damping_raise; /* largest used/requested damping ratio (>= 1) */
} kfac_invert_report;

/* group: the process group inversions are shared over (dist.h; NULL or
 * a group of one: alone), given once. positions[l] (NULL: 1 each): the
 * rows of layer l's abar and g per example, a convolution's output
 * pixels (docs/algorithm.md §3.1). Every `rows` and `batch` below counts
 * examples: layer l's matrices hold rows x positions[l] rows, A is their
 * mean and G their sum over positions of the mean over examples. The
 * batch form (apply_batch, batch_part, rows_dot) is for layers of one
 * position, the only ones kfac_factors_batch_pays picks it for. */
struct kfac_dist;
kfac_status kfac_factors_new(int n_layers, const int *d_in, const int *d_out, const int *positions, int max_rows,
                             const kfac_kfac_params *p, const struct kfac_dist *group, kfac_factors **out);
void kfac_factors_free(kfac_factors *pc);

/* Start a statistics round: k += 1, epsilon = min(1 - 1/k, decay). */
void kfac_factors_begin_stats(kfac_factors *pc);
/* Fold layer l's batch statistics into the running averages:
 * A <- eps A + (1 - eps) abar^T abar / (rows P), G <- eps G + (1 - eps)
 * g^T g / rows (per-example gradients, not divided by the batch), with P
 * the layer's positions. abar: rows P x d_in (ld lda), g: rows P x d_out. */
kfac_status kfac_factors_accumulate(kfac_factors *pc, int l, const float *abar, int lda, const float *g,
                                    int rows);
long kfac_factors_stats_rounds(const kfac_factors *pc);

/* Every layer's kfac_factors_accumulate at once, for one process: the
 * factors in parallel, each a single-threaded syrk straight into its
 * running average (scale = 1 / rows; arguments unchecked). */
void kfac_factors_accumulate_all(kfac_factors *pc, const float *const *abar, const int *lda, const float *const *g,
                                 int rows, float scale);

/* kfac_factors_accumulate in two halves, for a process group to sum the
 * batch statistics in between (scale = 1 / rows of the whole group):
 * batch_stats stages scale abar^T abar and scale g^T g for layer l (zeros
 * for rows = 0; arguments unchecked), stage gives every layer's staged
 * statistics as one buffer of *n floats, fold takes layer l's into the
 * running averages. */
void kfac_factors_batch_stats(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int rows,
                              float scale);
float *kfac_factors_stage(kfac_factors *pc, size_t *n);
void kfac_factors_fold(kfac_factors *pc, int l);
/* TRIDIAG (docs/algorithm.md §4.7): the cross moments of adjacent
 * layers, staged like batch_stats (scale abar_l^T abar_{l+1} and scale
 * g_l^T g_{l+1}, every pair, from the rows the factors use; zeros for
 * rows = 0) and folded like fold; no-ops in other modes.
 * kfac_factors_accumulate_all does both itself. */
void kfac_factors_cross_stats(kfac_factors *pc, const float *const *abar, const int *lda, const float *const *g,
                              int rows, float scale);
void kfac_factors_fold_cross(kfac_factors *pc);


/* Recompute every layer's damped inverses (or eigenbases) with damping
 * lambda, layers in parallel. */
kfac_status kfac_factors_invert(kfac_factors *pc, double lambda, kfac_invert_report *report);
int kfac_factors_inverted(const kfac_factors *pc);

/* EKFAC (docs/algorithm.md §4.6): fold one statistics round of rows
 * (abar_l rows x d_in with ld lda[l], g_l rows x d_out; scale 1/rows, or
 * 1/(the group's rows) in a process group, which sums the parts) into
 * every layer's diagonal in the current eigenbases. After the first
 * decomposition; each new decomposition restarts it from EIGEN's. */
kfac_status kfac_factors_ekfac_stats(kfac_factors *pc, const float *const *abar, const int *lda, const float *const *g,
                                     int rows, float scale);

/* delta_l = precondition(grad_l): (G + g_G I)^-1 grad (A + g_A I)^-1, or the
 * eigenbasis form. grad and delta: d_out x d_in. */
kfac_status kfac_factors_apply(kfac_factors *pc, int l, const float *grad, float *delta);

/* TRIDIAG (docs/algorithm.md §4.7): delta = F_tri^-1 grad for the whole
 * network at once (the layers are coupled), grad[l] and delta[l] d_out x
 * d_in of layer l, never aliased. kfac_factors_apply refuses this mode. */
kfac_status kfac_factors_apply_all(kfac_factors *pc, const float *const *grad, float *const *delta);

/* The same from the batch factors of the gradient grad = (1/B) g^T abar,
 * without forming it (the batch form; docs/algorithm.md §8): delta = (1/B) (g G^-1)^T
 * (abar A^-1), with each inverse applied to the B rows (dense, or low-rank
 * in factored form). Also returns <delta, grad>_F in *dot (for the KL
 * clip) from two B x B Grams. Not in EIGEN mode. */
kfac_status kfac_factors_apply_batch(kfac_factors *pc, int l, const float *abar, int lda, const float *g,
                                     int batch, float *delta, double *dot);
/* keep_rows makes every later apply_batch of a layer with one position
 * keep P = g G^-1 and Q = abar A^-1 (and, with_gram, the Gram abar A^-1
 * abar^T), with memory for batches up to KFAC_KEEP_ROWS_MAX (past that
 * nothing is kept; keeps says whether layer l keeps). apply_batch may then
 * leave delta unwritten (NULL), and batch_add sets v <- mu v + nu delta
 * from P and Q (mu 0: v unread), until the layer's next apply_batch
 * (docs/algorithm.md §8). For the quadratic rule's forward-mode products
 * (§5.2), rows_product writes out (rows x d_out) <- abar[:rows] delta^T =
 * (1/B) K[:rows] P, for the rows of that batch, in 2 rows B d_out flops
 * instead of 2 rows d_in d_out: 1 if written, 0 if the Gram is not kept
 * for layer l (forget_rows: a layer whose delta came another way since),
 * -1 for bad arguments. */
#define KFAC_KEEP_ROWS_MAX 1024
kfac_status kfac_factors_keep_rows(kfac_factors *pc, int with_gram);
int kfac_factors_keeps(const kfac_factors *pc, int l);
void kfac_factors_batch_add(kfac_factors *pc, int l, float nu, float mu, float *v);
int kfac_factors_rows_product(const kfac_factors *pc, int l, int rows, float *out);
void kfac_factors_forget_rows(kfac_factors *pc, int l);
/* The batch form in a process group, whose ranks hold slices of the
 * batch: this slice's part delta = scale (g G^-1)^T (abar A^-1), summed
 * over the group by the caller (scale = 1 / rows of the whole batch); and
 * <delta, g^T abar> of a slice, for <delta, grad> (arguments unchecked). */
void kfac_factors_batch_part(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int batch,
                             float scale, float *delta);
double kfac_factors_rows_dot(kfac_factors *pc, int l, const float *abar, int lda, const float *g, int batch,
                             const float *delta);
/* The fused weight form (docs/algorithm.md §8.1), for a layer whose two
 * factors are low-rank (kfac_factors_weight_fusable): prepare reads the
 * gradient grad (d_out x d_in) and returns <delta, grad> in *dot without
 * writing delta; add then sets v <- mu v + nu delta (mu 0: v <- nu
 * delta, v unread) from the same grad, any number of times until the
 * layer is prepared again. */
int kfac_factors_weight_fusable(const kfac_factors *pc, int l);
kfac_status kfac_factors_weight_prepare(kfac_factors *pc, int l, const float *grad, double *dot);
void kfac_factors_weight_add(kfac_factors *pc, int l, const float *grad, float nu, float mu, float *v);
/* The cost model (docs/algorithm.md §8): whether the batch form takes fewer flops
 * than the weight form for layer l at this batch, given each factor's
 * inverse (dense, or low-rank of its current rank). */
int kfac_factors_batch_pays(const kfac_factors *pc, int l, int batch);
/* The counts behind it: the batch form's and the weight form's flops. */
void kfac_factors_form_flops(const kfac_factors *pc, int l, int batch, double *by_rows, double *by_weights);
/* The rank of layer l's inverse of A (is_g 0) or G (1): the pairs kept
 * by a low-rank factor, the size of a dense one. */
int kfac_factors_rank(const kfac_factors *pc, int l, int is_g);

/* Read-only views for tests: running factors (NULL for a bad layer). */
const float *kfac_factors_factor_a(const kfac_factors *pc, int l);
const float *kfac_factors_factor_g(const kfac_factors *pc, int l);

/* Visit the whole state (k, epsilon, damping, factors, inverses or
 * eigenbases) for a checkpoint: see checkpoint.h. */
struct kfac_ckio;
void kfac_factors_io(kfac_factors *fc, struct kfac_ckio *io);

#endif
