/* layer.h - the layer table: one row per kind of layer (dense, conv,
 * max and average pooling), like optim.c's optimizer table. A row knows
 * its kind's shapes, forward pass, backward pass and R-op pass; net.c
 * runs the rows in order and applies the activations, and K-FAC sees
 * only what every row with weights records (docs/algorithm.md §2, §2.1):
 *
 *   abar: batch x positions rows of d_in (the homogeneous 1 last), and
 *   g:    batch x positions rows of d_out, dl_n/ds per example,
 *
 * with s = abar W^T row by row (W: d_out x d_in). A dense layer has one
 * position per example, a convolution one per output pixel. Adding a
 * kind is a file with its row and a line in kfac_layer_types (net.c). */
#ifndef KFAC_LAYER_H
#define KFAC_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "conv.h"
#include "kfac.h"

typedef struct kfac_layer kfac_layer;

typedef struct kfac_layer_type {
    const char *name;  /* the kind's name, kfac_layer_kind_name's */
    int has_weights;   /* a K-FAC block of d_out x d_in weights */
    int spatial_input; /* reads its input as an image */
    int drops_inputs;  /* with keep_abar 0 the forward pass keeps no abar
                          and backward rebuilds it: only backward can then
                          form the weight gradient */
    /* From the spec and the input shape: the output shape, the block's
     * sizes and positions, the geometry. INVALID_ARG naming the problem
     * (the caller adds the layer's number). */
    kfac_status (*infer)(kfac_layer *ly);
    /* y (batch rows of out_size, example stride ldy) <- the layer applied
     * to its input x, before the activation; records abar. */
    void (*forward)(kfac_layer *ly, const float *w, int batch, float *y, size_t ldy);
    /* From g (batch rows of out_size: dl/ds): grad <- scale * dl/dW
     * summed over the rows (grad NULL: not wanted), and dx (batch rows of
     * in_size, example stride lddx) <- dl/dx (NULL: not wanted). */
    void (*backward)(kfac_layer *ly, const float *w, const float *g, int batch, float *grad, float scale, float *dx,
                     size_t lddx, float *scratch);
    /* Forward mode along v (this layer's part of the direction; NULL
     * without weights): ry (batch x out_size) <- R(s) from R(x) (rx:
     * batch x in_size, NULL for the network's input, whose R is 0). */
    void (*rop)(kfac_layer *ly, const float *w, const float *v, const float *rx, int batch, float *ry,
                float *scratch);
    /* ry += the part of R(s) that comes from R(x) alone (rx non-NULL), for
     * a caller that has the part along v already: the quadratic rule's
     * batch form (docs/algorithm.md §5.2). NULL: the kind does not offer it. */
    void (*rop_input)(kfac_layer *ly, const float *w, const float *rx, int batch, float *ry);
    /* Floats of scratch that backward and rop need for batches of up to
     * max_batch rows. */
    size_t (*scratch)(const kfac_layer *ly, int max_batch);
} kfac_layer_type;

struct kfac_layer {
    const kfac_layer_type *type;
    kfac_layer_spec spec;
    int in_h, in_w, in_c;       /* the input's shape (dense: 1 x 1 x features) */
    int out_h, out_w, out_c;
    int in_size, out_size;      /* floats per example */
    int d_in, d_out, positions; /* the K-FAC block; d_out = 0 without weights */
    size_t offset, n_params;    /* W in theta */
    float *x;                   /* input: example b at x + b ldx */
    size_t ldx;
    float *abar;                /* batch x positions rows of d_in, last column 1
                                   (dense: x itself, ldx = d_in) */
    float *g;                   /* batch x out_size: dl_n/ds */
    int keep_abar;              /* conv: the forward pass leaves every row of
                                   abar (K-FAC reads them); 0: it leaves them
                                   unspecified and backward rebuilds its own */
    int32_t *argmax;            /* max pooling: batch x out_size */
    kfac_conv_geom conv;        /* conv */
    kfac_pool_geom pool;        /* pooling */
};

extern const kfac_layer_type kfac_layer_dense, kfac_layer_conv, kfac_layer_maxpool, kfac_layer_avgpool;
/* indexed by kfac_layer_kind */
extern const kfac_layer_type *const kfac_layer_types[KFAC_LAYER_COUNT];

#endif
