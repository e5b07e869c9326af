/* activation.h - element-wise activations as a const table indexed by
 * kfac_activation. */
#ifndef KFAC_ACTIVATION_H
#define KFAC_ACTIVATION_H

#include "kfac.h"

typedef struct kfac_activation_type {
    const char *name;
    /* a <- phi(a) in place on a rows x cols block with leading dimension ld */
    void (*forward)(float *a, int rows, int cols, int ld);
    /* g <- g * phi'(s), with phi'(s) written in terms of the output a = phi(s)
     * (so s need not be stored); g has leading dimension ldg, a lda */
    void (*backward)(float *g, int ldg, const float *a, int lda, int rows, int cols);
} kfac_activation_type;

extern const kfac_activation_type kfac_activation_types[KFAC_ACT_COUNT];

#endif
