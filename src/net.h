/* net.h - the network's private layout, shared by net.c, init.c, the
 * trainer and (later) K-FAC. */
#ifndef KFAC_NET_H
#define KFAC_NET_H

#include "kfac.h"

/* sparse_count's largest value, for kfac_net_spec_validate and the net
 * file's key alike */
#define KFAC_SPARSE_COUNT_MAX 100000

struct kfac_net {
    kfac_net_spec spec;
    int n_layers;                        /* L */
    int dims[KFAC_MAX_LAYERS + 1];       /* d_0 = inputs, d_{l+1} = layer l's units */
    size_t offset[KFAC_MAX_LAYERS + 1];  /* layer l's W in theta; offset[L] = n_params */
    size_t n_params;
    int max_batch;
    int batch;                           /* rows of the last forward pass */
    float *theta;                        /* n_params: W_0, W_1, ... each d_{l+1} x (d_l + 1) */
    float *abar[KFAC_MAX_LAYERS];        /* layer l's input: max_batch x (d_l + 1), last column 1 */
    float *g[KFAC_MAX_LAYERS];           /* layer l's dl_n/ds: max_batch x d_{l+1} */
    float *z;                            /* output: max_batch x d_L */
};

/* Forward from rows already written into abar[0] (batch x (d_0 + 1)): the
 * trainer gathers its minibatch there directly, saving a copy per step. */
kfac_status kfac_net_forward_in_place(kfac_net *net, int batch);

/* Back-propagation of y's loss (rows x outputs) through the first `rows`
 * rows of the last forward pass into g_out[l] (rows x d_{l+1} each), not
 * into the network's g, which keep what they held; no weight gradient.
 * K-FAC's pass for targets sampled from the model (docs/algorithm.md §3). */
kfac_status kfac_net_backward_into(kfac_net *net, const float *y, int rows, float *const *g_out);

#endif
