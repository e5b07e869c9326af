/* net.c - networks as a sequence of the layer table's rows (layer.h):
 * shapes, creation, forward (recording abar) and the one backward loop
 * (recording per-example g and the mean gradient). docs/algorithm.md §2,
 * §2.1. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
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

const kfac_layer_type *const kfac_layer_types[KFAC_LAYER_COUNT] = {
    [KFAC_LAYER_DENSE] = &kfac_layer_dense,
    [KFAC_LAYER_CONV] = &kfac_layer_conv,
    [KFAC_LAYER_MAXPOOL] = &kfac_layer_maxpool,
    [KFAC_LAYER_AVGPOOL] = &kfac_layer_avgpool,
};

KFAC_NAMED_ENUM(kfac_layer_kind, kfac_layer_kind, kfac_layer_types[k]->name, KFAC_LAYER_COUNT, "layer kind")

/* The input's image shape for a first spatial layer: the spec's, or a
 * square single-channel image. */
static kfac_status input_shape(const kfac_net_spec *spec, int *h, int *w, int *c)
{
    if (spec->input_h || spec->input_w || spec->input_c) {
        if (spec->input_h < 1 || spec->input_w < 1 || spec->input_c < 1 ||
            (long long)spec->input_h * spec->input_w * spec->input_c != spec->inputs)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "input shape %dx%dx%d is not %d inputs", spec->input_h,
                             spec->input_w, spec->input_c, spec->inputs);
        *h = spec->input_h, *w = spec->input_w, *c = spec->input_c;
        return KFAC_OK;
    }
    int side = (int)lround(sqrt((double)spec->inputs));
    if (side * side != spec->inputs)
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "%d inputs are not a square image: give the input's shape (net file: [net] shape = HxWxC)",
                         spec->inputs);
    *h = *w = side, *c = 1;
    return KFAC_OK;
}

/* Every layer's shapes, block sizes and offset in theta from the spec;
 * *bad the layer a failure is about (-1: the net). */
static kfac_status infer_layers(const kfac_net_spec *spec, kfac_layer *layers, size_t *n_params, int *bad)
{
    *bad = -1;
    size_t params = 0;
    int h = 1, w = 1, c = spec->inputs, weighted = 0;
    for (int l = 0; l < spec->n_layers; l++) {
        kfac_layer *ly = &layers[l];
        memset(ly, 0, sizeof *ly);
        ly->spec = spec->layers[l];
        *bad = l;
        if ((unsigned)ly->spec.kind >= KFAC_LAYER_COUNT)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown layer kind %d", (int)ly->spec.kind);
        if ((unsigned)ly->spec.activation >= KFAC_ACT_COUNT)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "unknown activation %d", (int)ly->spec.activation);
        ly->type = kfac_layer_types[ly->spec.kind];
        if (ly->type->spatial_input) {
            if (ly->spec.kernel_h < 1 || ly->spec.kernel_h > 64 || ly->spec.kernel_w < 1 || ly->spec.kernel_w > 64)
                return kfac_fail(KFAC_ERR_INVALID_ARG, "kernel %dx%d outside [1, 64]", ly->spec.kernel_h,
                                 ly->spec.kernel_w);
            if (ly->spec.stride < 0 || ly->spec.stride > 64)
                return kfac_fail(KFAC_ERR_INVALID_ARG, "stride %d outside [1, 64]", ly->spec.stride);
            if (ly->spec.pad != KFAC_PAD_SAME && (ly->spec.pad < 0 || ly->spec.pad > 63))
                return kfac_fail(KFAC_ERR_INVALID_ARG, "pad %d outside [0, 63]", ly->spec.pad);
            kfac_status st;
            if (l == 0 && (st = input_shape(spec, &h, &w, &c)) != KFAC_OK)
                return st;
        }
        ly->in_h = h, ly->in_w = w, ly->in_c = c;
        ly->in_size = h * w * c;
        kfac_status st = ly->type->infer(ly);
        if (st != KFAC_OK)
            return st;
        h = ly->out_h, w = ly->out_w, c = ly->out_c;
        if ((long long)h * w * c > 100000000)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "output of %dx%dx%d floats per example: more than 1e8", h, w, c);
        ly->out_size = h * w * c;
        ly->offset = params;
        ly->n_params = ly->type->has_weights ? (size_t)ly->d_out * (size_t)ly->d_in : 0;
        params += ly->n_params;
        weighted += ly->type->has_weights;
        /* theta, gradient and optimizer state must fit comfortably in memory */
        if (params > (size_t)1 << 30)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "%zu parameters: more than 2^30", params);
    }
    *bad = -1;
    if (!weighted)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "no layer with weights (dense or conv)");
    *n_params = params;
    return KFAC_OK;
}

kfac_status kfac_net_spec_check(const kfac_net_spec *spec, int *bad_layer)
{
    int bad = -1;
    kfac_status st = KFAC_OK;
    if (!spec)
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "network spec is NULL");
    else if (spec->inputs < 1 || spec->inputs > 10000000)
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "inputs %d outside [1, 10000000]", spec->inputs);
    else if (spec->n_layers < 1 || spec->n_layers > KFAC_MAX_LAYERS)
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "%d layers outside [1, %d]", spec->n_layers, KFAC_MAX_LAYERS);
    else if ((unsigned)spec->loss >= KFAC_LOSS_COUNT)
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "unknown loss %d", (int)spec->loss);
    else if ((unsigned)spec->init >= KFAC_INIT_COUNT)
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "unknown init %d", (int)spec->init);
    else if (!(spec->init_sigma > 0.0f && spec->init_sigma <= 100.0f))
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "init_sigma %g outside (0, 100]", spec->init_sigma);
    else if (spec->sparse_count < 1 || spec->sparse_count > KFAC_SPARSE_COUNT_MAX)
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "sparse_count %d outside [1, %d]", spec->sparse_count,
                       KFAC_SPARSE_COUNT_MAX);
    else if (spec->input_pool < 1 || spec->input_pool > 64)
        st = kfac_fail(KFAC_ERR_INVALID_ARG, "pool %d outside [1, 64]", spec->input_pool);
    if (st == KFAC_OK) {
        kfac_layer layers[KFAC_MAX_LAYERS];
        size_t params = 0;
        st = infer_layers(spec, layers, &params, &bad);
        if (st != KFAC_OK && bad >= 0) {
            char detail[400];
            snprintf(detail, sizeof detail, "%s", kfac_last_error());
            st = kfac_fail(st, "layer %d (%s): %s", bad + 1, kfac_layer_kind_name(spec->layers[bad].kind) ?
                           kfac_layer_kind_name(spec->layers[bad].kind) : "?", detail);
        }
    }
    if (st == KFAC_OK) {
        kfac_activation last = spec->layers[spec->n_layers - 1].activation;
        if (spec->loss != KFAC_LOSS_SQUARED && last != KFAC_ACT_LINEAR) {
            bad = spec->n_layers - 1;
            st = kfac_fail(KFAC_ERR_INVALID_ARG, "loss %s applies its own %s: the last layer must be linear, not %s",
                           kfac_loss_name(spec->loss), spec->loss == KFAC_LOSS_SOFTMAX_XENT ? "softmax" : "sigmoid",
                           kfac_activation_name(last));
        }
    }
    if (bad_layer)
        *bad_layer = st == KFAC_OK ? -1 : bad;
    return st;
}

kfac_status kfac_net_spec_validate(const kfac_net_spec *spec) { return kfac_net_spec_check(spec, NULL); }

int kfac_net_spec_outputs(const kfac_net_spec *spec)
{
    kfac_layer layers[KFAC_MAX_LAYERS];
    size_t params;
    int bad;
    if (!spec || spec->n_layers < 1 || spec->n_layers > KFAC_MAX_LAYERS || spec->inputs < 1 ||
        infer_layers(spec, layers, &params, &bad) != KFAC_OK)
        return 0;
    return layers[spec->n_layers - 1].out_size;
}

void kfac_net_spec_describe(const kfac_net_spec *s, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return;
    buf[0] = '\0';
    if (!s)
        return;
    size_t n = (size_t)snprintf(buf, cap, "%d", s->inputs);
    if (n < cap && (s->input_h || s->input_w || s->input_c))
        n += (size_t)snprintf(buf + n, cap - n, "(%dx%dx%d)", s->input_h, s->input_w, s->input_c);
    for (int l = 0; l < s->n_layers && l < KFAC_MAX_LAYERS && n < cap; l++) {
        const kfac_layer_spec *ls = &s->layers[l];
        const char *act = kfac_activation_name(ls->activation), *kind = kfac_layer_kind_name(ls->kind);
        char pad[16];
        snprintf(pad, sizeof pad, ls->pad == KFAC_PAD_SAME ? "same" : "%d", ls->pad);
        if (ls->kind == KFAC_LAYER_DENSE)
            n += (size_t)snprintf(buf + n, cap - n, "-%d:%s", ls->units, act ? act : "?");
        else if (ls->kind == KFAC_LAYER_CONV)
            n += (size_t)snprintf(buf + n, cap - n, "-conv%d(%dx%d/%d,%s):%s", ls->units, ls->kernel_h,
                                  ls->kernel_w, ls->stride ? ls->stride : 1, pad, act ? act : "?");
        else
            n += (size_t)snprintf(buf + n, cap - n, "-%s%dx%d/%d", kind ? kind : "?", ls->kernel_h, ls->kernel_w,
                                  ls->stride ? ls->stride : ls->kernel_h);
    }
    if (n < cap) {
        const char *loss = kfac_loss_name(s->loss);
        n += (size_t)snprintf(buf + n, cap - n, " %s loss", loss ? loss : "?");
    }
    if (n < cap && s->input_pool > 1)
        snprintf(buf + n, cap - n, " pool %d", s->input_pool);
}

void kfac_net_free(kfac_net *net)
{
    if (!net)
        return;
    kfac_free_floats(net->theta);
    for (int l = 0; l < net->n_layers; l++) {
        kfac_layer *ly = &net->layers[l];
        if (ly->abar != ly->x)
            kfac_free_floats(ly->abar);
        kfac_free_floats(ly->x);
        kfac_free_floats(ly->g);
        free(ly->argmax);
    }
    kfac_free_floats(net->z);
    kfac_free_floats(net->scratch);
    free(net);
}

/* rows x n floats with a homogeneous 1 in the last column, set once and
 * never overwritten (the layer before writes the other columns) */
static float *alloc_abar(size_t rows, int n)
{
    float *a = kfac_alloc_floats(rows * (size_t)n);
    if (a) {
        memset(a, 0, sizeof(float) * rows * (size_t)n);
        for (size_t r = 0; r < rows; r++)
            a[r * (size_t)n + (size_t)n - 1] = 1.0f;
    }
    return a;
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
    int bad;
    infer_layers(spec, net->layers, &net->n_params, &bad); /* validated above */
    for (int l = 0; l < net->n_layers; l++) /* BLAS counts rows in an int */
        if ((long long)max_batch * net->layers[l].positions > INT_MAX) {
            int pos = net->layers[l].positions;
            free(net); /* nothing allocated in it yet */
            return kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d: layer %d's %d positions make 2^31 rows or more",
                             max_batch, l + 1, pos);
        }
    net->inputs = spec->inputs;
    net->outputs = net->layers[net->n_layers - 1].out_size;

    size_t mb = (size_t)max_batch, scratch = 0;
    int ok = (net->theta = kfac_alloc_floats(net->n_params)) != NULL;
    for (int l = 0; ok && l < net->n_layers; l++) {
        kfac_layer *ly = &net->layers[l];
        if (ly->type->has_weights)
            net->block_layer[net->n_blocks++] = l;
        if (ly->type == &kfac_layer_dense) {
            ok = (ly->x = ly->abar = alloc_abar(mb, ly->d_in)) != NULL;
            ly->ldx = (size_t)ly->d_in;
        } else {
            ok = (ly->x = kfac_alloc_floats(mb * (size_t)ly->in_size)) != NULL;
            ly->ldx = (size_t)ly->in_size;
            if (ok && ly->type->has_weights)
                ok = (ly->abar = alloc_abar(mb * (size_t)ly->positions, ly->d_in)) != NULL;
        }
        ok = ok && (ly->g = kfac_alloc_floats(mb * (size_t)ly->out_size)) != NULL;
        if (ok && ly->type == &kfac_layer_maxpool)
            ok = (ly->argmax = malloc(sizeof(int32_t) * mb * (size_t)ly->out_size)) != NULL;
        scratch = KFAC_MAX(scratch, ly->type->scratch(ly, max_batch));
        ly->keep_abar = 1;
    }
    ok = ok && (net->z = kfac_alloc_floats(mb * (size_t)net->outputs)) != NULL;
    ok = ok && (scratch == 0 || (net->scratch = kfac_alloc_floats(scratch)) != NULL);
    if (!ok) {
        size_t n_params = net->n_params;
        kfac_net_free(net);
        return kfac_fail(KFAC_ERR_NOMEM, "network with %zu parameters and batch %d: out of memory", n_params,
                         max_batch);
    }
    memset(net->theta, 0, sizeof(float) * net->n_params);
    *out = net;
    return KFAC_OK;
}

void kfac_net_keep_inputs(kfac_net *net, int keep)
{
    for (int l = 0; l < net->n_layers; l++)
        net->layers[l].keep_abar = keep != 0;
}

float *kfac_net_input_rows(kfac_net *net, size_t *ld)
{
    *ld = net->layers[0].ldx;
    return net->layers[0].x;
}

void kfac_net_blocks(const kfac_net *net, int *d_in, int *d_out, int *positions)
{
    for (int k = 0; k < net->n_blocks; k++) {
        const kfac_layer *ly = &net->layers[net->block_layer[k]];
        if (d_in)
            d_in[k] = ly->d_in;
        if (d_out)
            d_out[k] = ly->d_out;
        if (positions)
            positions[k] = ly->positions;
    }
}

/* Accessors answer NULL (or a bad layer) with NULL or 0. */
const kfac_net_spec *kfac_net_get_spec(const kfac_net *net) { return net ? &net->spec : NULL; }
int kfac_net_max_batch(const kfac_net *net) { return net ? net->max_batch : 0; }
int kfac_net_inputs(const kfac_net *net) { return net ? net->inputs : 0; }
int kfac_net_outputs(const kfac_net *net) { return net ? net->outputs : 0; }
int kfac_net_n_layers(const kfac_net *net) { return net ? net->n_layers : 0; }
size_t kfac_net_n_params(const kfac_net *net) { return net ? net->n_params : 0; }
float *kfac_net_params(kfac_net *net) { return net ? net->theta : NULL; }
int kfac_net_batch(const kfac_net *net) { return net ? net->batch : 0; }
const float *kfac_net_output(const kfac_net *net) { return net ? net->z : NULL; }

size_t kfac_net_layer_offset(const kfac_net *net, int l)
{
    if (!net || l < 0 || l > net->n_layers)
        return 0;
    return l == net->n_layers ? net->n_params : net->layers[l].offset;
}

float *kfac_net_layer_weights(kfac_net *net, int l, int *rows, int *cols)
{
    if (!net || l < 0 || l >= net->n_layers || !net->layers[l].type->has_weights)
        return NULL;
    if (rows)
        *rows = net->layers[l].d_out;
    if (cols)
        *cols = net->layers[l].d_in;
    return net->theta + net->layers[l].offset;
}

int kfac_net_layer_positions(const kfac_net *net, int l)
{
    return (net && l >= 0 && l < net->n_layers) ? net->layers[l].positions : 0;
}

const float *kfac_net_layer_input(const kfac_net *net, int l)
{
    return (net && l >= 0 && l < net->n_layers) ? net->layers[l].abar : NULL;
}

const float *kfac_net_layer_pregrad(const kfac_net *net, int l)
{
    return (net && l >= 0 && l < net->n_layers && net->layers[l].type->has_weights) ? net->layers[l].g : NULL;
}

kfac_status kfac_net_forward_in_place(kfac_net *net, int batch)
{
    if (!net)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_forward: NULL argument");
    if (batch < 1 || batch > net->max_batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d outside [1, %d]", batch, net->max_batch);
    net->batch = batch;
    for (int l = 0; l < net->n_layers; l++) {
        kfac_layer *ly = &net->layers[l];
        int last = l == net->n_layers - 1;
        /* the output goes straight into the next layer's input (a dense
         * layer's ones column lies outside what is written) */
        float *y = last ? net->z : net->layers[l + 1].x;
        size_t ldy = last ? (size_t)net->outputs : net->layers[l + 1].ldx;
        ly->type->forward(ly, net->theta + ly->offset, batch, y, ldy);
        kfac_activation_types[ly->spec.activation].forward(y, batch, ly->out_size, (int)ldy);
    }
    return KFAC_OK;
}

kfac_status kfac_net_forward(kfac_net *net, const float *x, int batch)
{
    if (!net || !x)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_forward: NULL argument");
    if (batch < 1 || batch > net->max_batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "batch %d outside [1, %d]", batch, net->max_batch);
    int d0 = net->inputs;
    size_t ld;
    float *a0 = kfac_net_input_rows(net, &ld);
#pragma omp parallel for schedule(static) if ((long)batch * d0 > KFAC_PAR_COPY)
    for (int b = 0; b < batch; b++)
        memcpy(a0 + (size_t)b * ld, x + (size_t)b * d0, sizeof(float) * (size_t)d0);
    return kfac_net_forward_in_place(net, batch);
}

kfac_status kfac_net_loss(const kfac_net *net, const float *y, double *loss, double *metric)
{
    if (!net || !y)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_loss: NULL argument");
    if (net->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "kfac_net_loss before any forward pass");
    const kfac_loss_type *lt = &kfac_loss_types[net->spec.loss];
    int n = net->batch, d = net->outputs;
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
        kfac_loss_types[net->spec.loss].mean(net->z, out, batch, net->outputs);
    return st;
}

/* kfac_net_backprop, the weight gradient of every layer or (dropped_only)
 * of the layers that kept no abar */
static void backprop(kfac_net *net, int rows, float *const *g, float *grad, float scale, int dropped_only)
{
    for (int l = net->n_layers - 1; l >= 0; l--) {
        kfac_layer *ly = &net->layers[l];
        kfac_layer *prev = l > 0 ? &net->layers[l - 1] : NULL;
        float *dx = prev ? g[l - 1] : NULL;
        float *gw = grad && (!dropped_only || !kfac_layer_kept(ly)) ? grad + ly->offset : NULL;
        ly->type->backward(ly, net->theta + ly->offset, g[l], rows, gw, scale, dx, prev ? (size_t)prev->out_size : 0,
                           net->scratch);
        /* g_{l-1} = dl/dx_l * phi'(s_{l-1}), phi' from the recorded output x_l */
        if (prev)
            kfac_activation_types[prev->spec.activation].backward(dx, prev->out_size, ly->x, (int)ly->ldx, rows,
                                                                  prev->out_size);
    }
}

void kfac_net_backprop(kfac_net *net, int rows, float *const *g, float *grad, float scale)
{
    backprop(net, rows, g, grad, scale, 0);
}

/* g[L-1] <- dl_n/ds of the last layer for y's rows */
static void output_grad(kfac_net *net, const float *y, int rows, float *gl)
{
    int dL = net->outputs;
    kfac_loss_types[net->spec.loss].grad(net->z, y, gl, rows, dL);
    kfac_activation_types[net->layers[net->n_layers - 1].spec.activation].backward(gl, dL, net->z, dL, rows, dL);
}

kfac_status kfac_net_backward_into(kfac_net *net, const float *y, int rows, float *const *g_out)
{
    if (!net || !y || !g_out)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_backward_into: NULL argument");
    if (rows < 1 || rows > net->batch)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_backward_into: %d rows of a pass over %d", rows,
                         net->batch);
    output_grad(net, y, rows, g_out[net->n_layers - 1]);
    kfac_net_backprop(net, rows, g_out, NULL, 0.0f);
    return KFAC_OK;
}

/* The training pass's backward into the network's g, with the weight
 * gradient as backprop's; `who` names the caller in errors. */
static kfac_status backward(kfac_net *net, const float *y, float *grad, float scale, int dropped_only,
                            const char *who)
{
    if (!net || !y)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "%s: NULL argument", who);
    if (net->batch < 1)
        return kfac_fail(KFAC_ERR_STATE, "%s before any forward pass", who);
    float *g[KFAC_MAX_LAYERS];
    for (int l = 0; l < net->n_layers; l++)
        g[l] = net->layers[l].g;
    output_grad(net, y, net->batch, g[net->n_layers - 1]);
    backprop(net, net->batch, g, grad, scale, dropped_only);
    return KFAC_OK;
}

kfac_status kfac_net_backward(kfac_net *net, const float *y, float *grad)
{
    /* dW = (1/B) g^T abar: the one place the batch mean is taken
     * (docs/algorithm.md §2) */
    return backward(net, y, grad, net ? 1.0f / KFAC_MAX(1, net->batch) : 0.0f, 0, "kfac_net_backward");
}

kfac_status kfac_net_backward_dropped(kfac_net *net, const float *y, float *grad, float scale, int *any)
{
    if (!grad || !any)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_backward_dropped: NULL argument");
    *any = 0;
    for (int l = 0; net && l < net->n_layers; l++)
        *any |= net->layers[l].type->has_weights && !kfac_layer_kept(&net->layers[l]);
    return backward(net, y, grad, scale, 1, "kfac_net_backward_dropped");
}
