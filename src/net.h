/* net.h - the network's private layout: the layers of the layer table
 * (layer.h) in order, and one flat parameter vector. Shared by net.c,
 * fisher.c, init.c, the trainer and K-FAC. */
#ifndef KFAC_NET_H
#define KFAC_NET_H

#include "kfac.h"
#include "layer.h"

/* sparse_count's largest value, for kfac_net_spec_validate and the net
 * file's key alike */
#define KFAC_SPARSE_COUNT_MAX 100000

struct kfac_net {
    kfac_net_spec spec;
    int n_layers;                       /* L */
    kfac_layer layers[KFAC_MAX_LAYERS];
    int n_blocks;                       /* the layers with weights: K-FAC's blocks */
    int block_layer[KFAC_MAX_LAYERS];   /* block k is layer block_layer[k] */
    int inputs, outputs;                /* floats per example in and out */
    size_t n_params;
    int max_batch;
    int batch;                          /* rows of the last forward pass */
    float *theta;                       /* n_params: each weighted layer's W, d_out x d_in, in order */
    float *z;                           /* output: max_batch x outputs */
    float *scratch;                     /* the rows' backward and R-op passes */
};

/* kfac_net_spec_validate, telling which layer (0-based) a failure is
 * about, or -1 for the whole net: the net file names its line. */
kfac_status kfac_net_spec_check(const kfac_net_spec *spec, int *bad_layer);

/* The network's input buffer, where a caller writes example b's
 * features at *ld floats from example b-1's: kfac_net_forward_in_place
 * then reads it (the trainer gathers its minibatch there directly). */
float *kfac_net_input_rows(kfac_net *net, size_t *ld);

/* Forward from rows already written into the input buffer. */
kfac_status kfac_net_forward_in_place(kfac_net *net, int batch);

/* Back-propagation of y's loss (rows x outputs) through the first `rows`
 * rows of the last forward pass into g_out[l] (rows x layer l's out_size,
 * one per layer), not into the network's g, which keep what they held;
 * no weight gradient. K-FAC's pass for targets sampled from the model
 * (docs/algorithm.md §3). */
kfac_status kfac_net_backward_into(kfac_net *net, const float *y, int rows, float *const *g_out);

/* The one backward loop: with g[L-1] holding dl/ds of the last layer for
 * `rows` rows, fill every g[l] (rows x layer l's out_size) and, if grad
 * is not NULL, grad <- scale * sum over the rows of dl/dtheta. */
void kfac_net_backprop(kfac_net *net, int rows, float *const *g, float *grad, float scale);

/* Whether forward passes leave abar whole for every layer (1, what
 * kfac_net_new sets), or may leave a convolution's unspecified (0) and
 * rebuild its patches in the backward pass, for a step that reads nothing
 * of it but the gradient: a first-order trainer's, and K-FAC's between
 * statistics rounds (layer_conv.c says what it saves). */
void kfac_net_keep_inputs(kfac_net *net, int keep);

/* Whether the last forward pass left layer ly's abar whole. */
static inline int kfac_layer_kept(const kfac_layer *ly) { return ly->keep_abar || !ly->type->drops_inputs; }

/* kfac_net_backward with the weight gradient (scale times the sum over
 * the rows) only for the layers whose abar the forward pass did not keep,
 * at their offsets in grad: what K-FAC cannot form from abar and g.
 * *any <- whether there was such a layer. */
kfac_status kfac_net_backward_dropped(kfac_net *net, const float *y, float *grad, float scale, int *any);

/* K-FAC's view of block k (a weighted layer): W's d_out x d_in and the
 * positions (rows per example) of its abar and g. */
void kfac_net_blocks(const kfac_net *net, int *d_in, int *d_out, int *positions);

#endif
