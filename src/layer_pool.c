/* layer_pool.c - max and average pooling's rows of the layer table:
 * windows of kernel_h x kernel_w (square) per channel, no weights, no
 * padding, PyTorch's floor rule for the size. Max pooling records where
 * each maximum came from, which its backward and R-op passes reuse. */
#include <string.h>

#include "common.h"
#include "layer.h"

static kfac_status pool_infer(kfac_layer *ly)
{
    const kfac_layer_spec *s = &ly->spec;
    if (s->kernel_h != s->kernel_w)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "pooling windows are square, not %dx%d", s->kernel_h, s->kernel_w);
    if (s->activation != KFAC_ACT_LINEAR)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "pooling takes no activation (%s): put it on the layer before",
                         kfac_activation_name(s->activation));
    kfac_status st = kfac_pool_geom_init(&ly->pool, ly->in_h, ly->in_w, ly->in_c, s->kernel_h,
                                         s->stride ? s->stride : s->kernel_h);
    if (st != KFAC_OK)
        return st;
    ly->out_h = ly->pool.oh;
    ly->out_w = ly->pool.ow;
    ly->out_c = ly->in_c;
    ly->d_in = ly->d_out = 0;
    ly->positions = 0;
    return KFAC_OK;
}

static size_t pool_scratch(const kfac_layer *ly, int max_batch)
{
    (void)ly, (void)max_batch;
    return 0;
}

static void max_forward(kfac_layer *ly, const float *w, int batch, float *y, size_t ldy)
{
    (void)w;
    kfac_maxpool_forward(&ly->pool, ly->x, ly->ldx, batch, y, ldy, ly->argmax);
}

static void max_backward(kfac_layer *ly, const float *w, const float *g, int batch, float *grad, float scale,
                         float *dx, size_t lddx, float *scratch)
{
    (void)w, (void)grad, (void)scale, (void)scratch;
    if (dx)
        kfac_maxpool_backward(&ly->pool, g, (size_t)ly->out_size, ly->argmax, batch, dx, lddx);
}

/* the maximum's position does not move along v: R(y) picks R(x) there */
static void max_rop(kfac_layer *ly, const float *w, const float *v, const float *rx, int batch, float *ry,
                    float *scratch)
{
    (void)w, (void)v, (void)scratch;
    if (rx)
        kfac_maxpool_gather(&ly->pool, rx, (size_t)ly->in_size, ly->argmax, batch, ry, (size_t)ly->out_size);
    else
        memset(ry, 0, sizeof(float) * (size_t)batch * (size_t)ly->out_size);
}

static void avg_forward(kfac_layer *ly, const float *w, int batch, float *y, size_t ldy)
{
    (void)w;
    kfac_avgpool_forward(&ly->pool, ly->x, ly->ldx, batch, y, ldy);
}

static void avg_backward(kfac_layer *ly, const float *w, const float *g, int batch, float *grad, float scale,
                         float *dx, size_t lddx, float *scratch)
{
    (void)w, (void)grad, (void)scale, (void)scratch;
    if (dx)
        kfac_avgpool_backward(&ly->pool, g, (size_t)ly->out_size, batch, dx, lddx);
}

/* linear: the R-op is the layer itself */
static void avg_rop(kfac_layer *ly, const float *w, const float *v, const float *rx, int batch, float *ry,
                    float *scratch)
{
    (void)w, (void)v, (void)scratch;
    if (rx)
        kfac_avgpool_forward(&ly->pool, rx, (size_t)ly->in_size, batch, ry, (size_t)ly->out_size);
    else
        memset(ry, 0, sizeof(float) * (size_t)batch * (size_t)ly->out_size);
}

const kfac_layer_type kfac_layer_maxpool = {
    .name = "maxpool",
    .has_weights = 0,
    .spatial_input = 1,
    .infer = pool_infer,
    .forward = max_forward,
    .backward = max_backward,
    .rop = max_rop,
    .scratch = pool_scratch,
};

const kfac_layer_type kfac_layer_avgpool = {
    .name = "avgpool",
    .has_weights = 0,
    .spatial_input = 1,
    .infer = pool_infer,
    .forward = avg_forward,
    .backward = avg_backward,
    .rop = avg_rop,
    .scratch = pool_scratch,
};
