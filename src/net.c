/* net.c - dense networks: creation, forward (recording abar) and backward
 * (recording per-example g and the mean gradient). docs/algorithm.md §2. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "common.h"
#include "loss.h"
#include "net.h"

void kfac_net_spec_init(kfac_net_spec *spec)
{
    if (!spec)
        return;
    memset(spec, 0, sizeof *spec);
    spec->loss = KFAC_LOSS_SOFTMAX_XENT;
    spec->init = KFAC_INIT_GLOROT;
    spec->init_sigma = 0.03f;
    spec->sparse_count = 15;
    spec->input_pool = 1;
    for (int l = 0; l < KFAC_MAX_LAYERS; l++)
        spec->layers[l].activation = KFAC_ACT_RELU;
}

kfac_status kfac_net_spec_validate(const kfac_net_spec *spec)
{
    if (!spec)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "network spec is NULL");
    if (spec->inputs < 1 || spec->inputs > 10000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "inputs %d outside [1, 10000000]", spec->inputs);
    if (spec->n_layers < 1 || spec->n_layers > KFAC_MAX_LAYERS)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%d layers outside [1, %d]", spec->n_layers,
                         KFAC_MAX_LAYERS);
    size_t params = 0;
    int fan_in = spec->inputs;
    for (int l = 0; l < spec->n_layers; l++) {
        const kfac_layer_spec *ls = &spec->layers[l];
        if (ls->units < 1 || ls->units > 1000000)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: units %d outside [1, 1000000]",
                             l + 1, ls->units);
        if ((unsigned)ls->activation >= KFAC_ACT_COUNT)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "layer %d: unknown activation %d", l + 1,
                             (int)ls->activation);
        params += (size_t)ls->units * (size_t)(fan_in + 1);
        fan_in = ls->units;
    }
    /* theta, gradient and optimizer state must fit comfortably in memory */
    if (params > (size_t)1 << 30)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%zu parameters: more than 2^30", params);
    if ((unsigned)spec->loss >= KFAC_LOSS_COUNT)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown loss %d", (int)spec->loss);
    if ((unsigned)spec->init >= KFAC_INIT_COUNT)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown init %d", (int)spec->init);
    if (!(spec->init_sigma > 0.0f && spec->init_sigma <= 100.0f))
        return kfac_fail(KFAC_ERR_INVALID_ARG, "init_sigma %g outside (0, 100]", spec->init_sigma);
    if (spec->sparse_count < 1 || spec->sparse_count > KFAC_SPARSE_COUNT_MAX)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "sparse_count %d outside [1, %d]", spec->sparse_count,
                         KFAC_SPARSE_COUNT_MAX);
    if (spec->input_pool < 1 || spec->input_pool > 64)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "pool %d outside [1, 64]", spec->input_pool);
    kfac_activation last = spec->layers[spec->n_layers - 1].activation;
    if (spec->loss != KFAC_LOSS_SQUARED && last != KFAC_ACT_LINEAR)
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "loss %s applies its own %s: the last layer must be linear, not %s",
                         kfac_loss_name(spec->loss),
                         spec->loss == KFAC_LOSS_SOFTMAX_XENT ? "softmax" : "sigmoid",
                         kfac_activation_name(last));
    return KFAC_OK;
}

void kfac_net_free(kfac_net *net)
{
    if (!net)
        return;
    kfac_free_floats(net->theta);
    for (int l = 0; l < net->n_layers; l++) {
        kfac_free_floats(net->abar[l]);
        kfac_free_floats(net->g[l]);
    }
    kfac_free_floats(net->z);
    free(net);
}

kfac_status kfac_net_new(const kfac_net_spec *spec, int max_batch, kfac_net **out)
{
    kfac_clear_error();
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_new: out is NULL");
    *out = NULL;
    kfac_status st = kfac_net_spec_validate(spec);
    if (st != KFAC_OK)
        return st;
    if (max_batch < 1 || max_batch > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "max_batch %d outside [1, 1000000]", max_batch);

    kfac_net *net = calloc(1, sizeof *net);
    if (!net)
        return kfac_fail(KFAC_ERR_NOMEM, "network: out of memory");
    net->spec = *spec;
    net->n_layers = spec->n_layers;
    net->max_batch = max_batch;
    net->dims[0] = spec->inputs;
    for (int l = 0; l < net->n_layers; l++) {
        net->dims[l + 1] = spec->layers[l].units;
        net->offset[l + 1] = net->offset[l] + (size_t)net->dims[l + 1] * (size_t)(net->dims[l] + 1);
    }
    net->n_params = net->offset[net->n_layers];

    int ok = (net->theta = kfac_alloc_floats(net->n_params)) != NULL;
    for (int l = 0; ok && l < net->n_layers; l++) {
        size_t in = (size_t)net->dims[l] + 1;
        ok = (net->abar[l] = kfac_alloc_floats((size_t)max_batch * in)) &&
             (net->g[l] = kfac_alloc_floats((size_t)max_batch * (size_t)net->dims[l + 1]));
        if (ok) {
            /* the homogeneous coordinate: set once, never overwritten */
            memset(net->abar[l], 0, sizeof(float) * (size_t)max_batch * in);
            for (int b = 0; b < max_batch; b++)
                net->abar[l][(size_t)b * in + in - 1] = 1.0f;
        }
    }
    ok = ok && (net->z = kfac_alloc_floats((size_t)max_batch * (size_t)net->dims[net->n_layers]));
    if (!ok) {
        size_t n_params = net->n_params;
        kfac_net_free(net);
        return kfac_fail(KFAC_ERR_NOMEM, "network with %zu parameters and batch %d: out of memory",
                         n_params, max_batch);
    }
    memset(net->theta, 0, sizeof(float) * net->n_params);
    *out = net;
    return KFAC_OK;
}

/* Accessors answer NULL (or a bad layer) with NULL or 0. */
const kfac_net_spec *kfac_net_get_spec(const kfac_net *net) { return net ? &net->spec : NULL; }
int kfac_net_max_batch(const kfac_net *net) { return net ? net->max_batch : 0; }
int kfac_net_inputs(const kfac_net *net) { return net ? net->dims[0] : 0; }
int kfac_net_outputs(const kfac_net *net) { return net ? net->dims[net->n_layers] : 0; }
int kfac_net_n_layers(const kfac_net *net) { return net ? net->n_layers : 0; }
size_t kfac_net_n_params(const kfac_net *net) { return net ? net->n_params : 0; }
float *kfac_net_params(kfac_net *net) { return net ? net->theta : NULL; }
int kfac_net_batch(const kfac_net *net) { return net ? net->batch : 0; }
const float *kfac_net_output(const kfac_net *net) { return net ? net->z : NULL; }

size_t kfac_net_layer_offset(const kfac_net *net, int l)
{
    return (net && l >= 0 && l <= net->n_layers) ? net->offset[l] : 0;
}

float *kfac_net_layer_weights(kfac_net *net, int l, int *rows, int *cols)
{
    if (!net || l < 0 || l >= net->n_layers)
        return NULL;
    if (rows)
        *rows = net->dims[l + 1];
    if (cols)
        *cols = net->dims[l] + 1;
    return net->theta + net->offset[l];
}

const float *kfac_net_layer_input(const kfac_net *net, int l)
{
    return (net && l >= 0 && l < net->n_layers) ? net->abar[l] : NULL;
}

const float *kfac_net_layer_pregrad(const kfac_net *net, int l)
{
    return (net && l >= 0 && l < net->n_layers) ? net->g[l] : NULL;
}

kfac_status kfac_net_forward_in_place(kfac_net *net, int batch)
{
    if (!net)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_forward: NULL argument");
    if (batch < 1 || batch > net->max_batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d outside [1, %d]", batch, net->max_batch);
    net->batch = batch;
    for (int l = 0; l < net->n_layers; l++) {
        int in = net->dims[l] + 1, d = net->dims[l + 1];
        int last = l == net->n_layers - 1;
        /* the next layer's abar takes the output in place: its ones column
         * lies outside the d columns sgemm writes */
        float *s = last ? net->z : net->abar[l + 1];
        int lds = last ? d : d + 1;
        /* S (batch x d) <- abar_l (batch x in) * W_l^T (in x d) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, d, in, 1.0f, net->abar[l], in,
                    net->theta + net->offset[l], in, 0.0f, s, lds);
        kfac_activation_types[net->spec.layers[l].activation].forward(s, batch, d, lds);
    }
    return KFAC_OK;
}

kfac_status kfac_net_forward(kfac_net *net, const float *x, int batch)
{
    if (!net || !x)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_forward: NULL argument");
    if (batch < 1 || batch > net->max_batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d outside [1, %d]", batch, net->max_batch);
    int d0 = net->dims[0];
    float *a0 = net->abar[0];
#pragma omp parallel for schedule(static) if ((long)batch * d0 > KFAC_PAR_COPY)
    for (int b = 0; b < batch; b++)
        memcpy(a0 + (size_t)b * (d0 + 1), x + (size_t)b * d0, sizeof(float) * (size_t)d0);
    return kfac_net_forward_in_place(net, batch);
}

kfac_status kfac_net_loss(const kfac_net *net, const float *y, double *loss, double *metric)
{
    if (!net || !y)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_loss: NULL argument");
    if (net->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "kfac_net_loss before any forward pass");
    const kfac_loss_type *lt = &kfac_loss_types[net->spec.loss];
    int n = net->batch, d = net->dims[net->n_layers];
    if (loss)
        *loss = lt->value(net->z, y, n, d) / n;
    if (metric)
        *metric = lt->metric(net->z, y, n, d) / n;
    return KFAC_OK;
}

kfac_status kfac_net_predict(kfac_net *net, const float *x, int batch, float *out)
{
    if (!out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_predict: out is NULL");
    kfac_status st = kfac_net_forward(net, x, batch); /* checks the rest */
    if (st == KFAC_OK)
        kfac_loss_types[net->spec.loss].mean(net->z, out, batch, net->dims[net->n_layers]);
    return st;
}

kfac_status kfac_net_backward_into(kfac_net *net, const float *y, int rows, float *const *g_out)
{
    if (!net || !y || !g_out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_backward_into: NULL argument");
    if (rows < 1 || rows > net->batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_backward_into: %d rows of a pass over %d", rows,
                         net->batch);
    /* the same pass as kfac_net_backward, on the caller's buffers for the
     * duration: pointers swapped, nothing copied */
    float *own[KFAC_MAX_LAYERS];
    int batch = net->batch;
    for (int l = 0; l < net->n_layers; l++) {
        own[l] = net->g[l];
        net->g[l] = g_out[l];
    }
    net->batch = rows;
    kfac_status st = kfac_net_backward(net, y, NULL);
    net->batch = batch;
    for (int l = 0; l < net->n_layers; l++)
        net->g[l] = own[l];
    return st;
}

kfac_status kfac_net_backward(kfac_net *net, const float *y, float *grad)
{
    if (!net || !y)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_backward: NULL argument");
    if (net->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "kfac_net_backward before any forward pass");
    int batch = net->batch, L = net->n_layers;
    int dL = net->dims[L];

    /* g_L = phi'(s_L) * dl_n/dz, per example */
    kfac_loss_types[net->spec.loss].grad(net->z, y, net->g[L - 1], batch, dL);
    kfac_activation_types[net->spec.layers[L - 1].activation].backward(net->g[L - 1], dL, net->z,
                                                                         dL, batch, dL);
    for (int l = L - 1; l >= 0; l--) {
        int in = net->dims[l] + 1, d = net->dims[l + 1];
        const float *w = net->theta + net->offset[l];
        if (grad) {
            /* dW_l (d x in) <- (1/B) g_l^T (d x batch) * abar_l (batch x in):
             * the one place the batch mean is taken (docs/algorithm.md §2) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, in, batch, 1.0f / batch,
                        net->g[l], d, net->abar[l], in, 0.0f, grad + net->offset[l], in);
        }
        if (l > 0) {
            /* g_{l-1} (batch x d_l) <- g_l (batch x d) * W_l[:, :d_l] (d x d_l);
             * lda = in skips the bias column */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in - 1, d, 1.0f,
                        net->g[l], d, w, in, 0.0f, net->g[l - 1], in - 1);
            kfac_activation_types[net->spec.layers[l - 1].activation].backward(
                net->g[l - 1], in - 1, net->abar[l], in, batch, in - 1);
        }
    }
    return KFAC_OK;
}
