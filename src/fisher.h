/* fisher.h - exact Fisher products for a kfac_net without forming F
 * (docs/algorithm.md §6): for our losses F is the generalized Gauss-Newton matrix
 * (1/B) sum_n J_n^T H_out(z_n) J_n over the batch of the last forward pass.
 * Also the explicit F of a tiny net (docs/algorithm.md §7), for checks. */
#ifndef KFAC_FISHER_H
#define KFAC_FISHER_H

#include "kfac.h"

/* Buffers for the R-op pass, sized for the net's max_batch. */
typedef struct kfac_fisher kfac_fisher;
kfac_status kfac_fisher_new(const kfac_net *net, kfac_fisher **out);
void kfac_fisher_free(kfac_fisher *f);

/* fv = F v over the rows of the net's last forward pass; v and fv are flat
 * parameter vectors (n_params, theta's layout). One forward-mode (R-op)
 * pass, H_out at the output, one backward pass. Reads the recorded abar and
 * output; changes nothing in the net; allocates nothing. */
kfac_status kfac_fisher_vec(kfac_fisher *f, const kfac_net *net, const float *v, float *fv);
/* The same over the first `rows` rows (0 .. the last pass's): F v of that
 * subset, its mean; zeros for no rows. */
kfac_status kfac_fisher_vec_rows(kfac_fisher *f, const kfac_net *net, int rows, const float *v, float *fv);

/* The quadratic forms the quadratic rule needs, by forward mode alone:
 * with u_n = J_n v1 and w_n = J_n v2 at the output, the sums over the
 * first `rows` rows of u^T H u, u^T H w and w^T H w into s[0..2] (v2 NULL:
 * s[1] = s[2] = 0). v1^T F v2 is s[1] / rows. Two R-op passes and the
 * loss's H at the output, no backward pass: half the work of two F v.
 * Changes nothing in the net; allocates nothing. */
kfac_status kfac_fisher_forms(kfac_fisher *f, const kfac_net *net, int rows, const float *v1, const float *v2,
                              double s[3]);
/* The forms in s[0..2] and, with gout (the loss's gradient at the last
 * layer's pre-activation of the same rows, rows x outputs: the backward
 * pass's g of that layer), the slopes: the sums over the rows of
 * gout^T J v1 and gout^T J v2 (the derivative of each example's loss along
 * v1, v2) into s[3], s[4], at the cost of a dot each (without gout, 0).
 * pre1 (NULL, or one pointer per layer of the net, NULL where not given):
 * layer l's product along v1, abar_l v1_l^T (rows x out_size), computed
 * by the caller more cheaply (kfac_precond_direction_rows); a layer kind
 * without rop_input ignores it. */
kfac_status kfac_fisher_model(kfac_fisher *f, const kfac_net *net, int rows, const float *gout, const float *v1,
                              const float *const *pre1, const float *v2, double s[5]);

/* The explicit F (n_params x n_params doubles, row-major) over the rows of
 * the last forward pass, from per-example Jacobians J_n got by
 * back-propagating each output unit separately. O(B d_L P^2): tiny nets
 * only. May overwrite the net's recorded g. */
kfac_status kfac_fisher_explicit(kfac_net *net, double *F);

#endif
