/* loss.h - output losses as a const table indexed by kfac_loss. Every
 * function works on n rows of width d: z the network output, y dense
 * targets, both row-major n x d. */
#ifndef KFAC_LOSS_H
#define KFAC_LOSS_H

#include "kfac.h"

typedef struct kfac_loss_type {
    const char *name;
    /* sum over rows of l(z_n, y_n), accumulated in double */
    double (*value)(const float *z, const float *y, int n, int d);
    /* dz_n = dl(z_n, y_n)/dz_n per row (not divided by n) */
    void (*grad)(const float *z, const float *y, float *dz, int n, int d);
    /* sum over rows of the metric: 1 per row whose argmax(z) = argmax(y)
     * for classification; else |prediction - y|^2, the prediction being
     * the model's mean (softmax / sigmoid of z, or z itself) */
    double (*metric)(const float *z, const float *y, int n, int d);
    /* y ~ p(y | z): targets sampled from the model's predictive
     * distribution (docs/algorithm.md §3): categorical one-hot, per-unit Bernoulli,
     * or z + N(0, I). Row i draws from its own generator, seeded from
     * (base, row0 + i) alone: a batch split over processes, each passing
     * its rows' global index row0, draws exactly what one process drawing
     * the whole batch would, whatever the threads. */
    void (*sample)(const float *z, float *y, int n, int d, uint64_t base, long row0);
    /* hv_n = H_out(z_n) v_n, H_out the Hessian of l in z (docs/algorithm.md §1):
     * diag(p) - p p^T, diag(p (1-p)), or I */
    void (*hess_vec)(const float *z, const float *v, float *hv, int n, int d);
    /* sum over rows of KL(p(y|zp_n) || p(y|zq_n)), in double */
    double (*kl)(const float *zp, const float *zq, int n, int d);
    /* p_n = the model's mean prediction: softmax(z_n), sigmoid(z_n) or z_n */
    void (*mean)(const float *z, float *p, int n, int d);
} kfac_loss_type;

extern const kfac_loss_type kfac_loss_types[KFAC_LOSS_COUNT];

#endif
