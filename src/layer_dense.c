/* layer_dense.c - the dense layer's row of the layer table: s = abar W^T
 * with abar the input and a homogeneous 1 (docs/algorithm.md §2). Its
 * input buffer is its abar, so the layer before writes straight into it
 * and nothing is copied. */
#include <cblas.h>

#include "common.h"
#include "layer.h"

static kfac_status dense_infer(kfac_layer *ly)
{
    if (ly->spec.units < 1 || ly->spec.units > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "units %d outside [1, 1000000]", ly->spec.units);
    ly->out_h = ly->out_w = 1;
    ly->out_c = ly->spec.units;
    ly->d_in = ly->in_size + 1;
    ly->d_out = ly->spec.units;
    ly->positions = 1;
    return KFAC_OK;
}

static void dense_forward(kfac_layer *ly, const float *w, int batch, float *y, size_t ldy)
{
    /* y (batch x d_out) <- abar (batch x d_in) W^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, ly->d_out, ly->d_in, 1.0f, ly->abar, ly->d_in, w,
                ly->d_in, 0.0f, y, (int)ldy);
}

static void dense_backward(kfac_layer *ly, const float *w, const float *g, int batch, float *grad, float scale,
                           float *dx, size_t lddx, float *scratch)
{
    (void)scratch;
    int in = ly->d_in, d = ly->d_out;
    if (grad) /* dW (d x in) <- scale g^T (d x batch) abar (batch x in) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, in, batch, scale, g, d, ly->abar, in, 0.0f, grad, in);
    if (dx) /* dx (batch x in-1) <- g W[:, :in-1]; lda = in skips the bias column */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in - 1, d, 1.0f, g, d, w, in, 0.0f, dx,
                    (int)lddx);
}

/* R(s) = abar V^T + R(x) W[:, :in-1]^T: R(abar)'s ones column is 0 */
/* ry += R(x) W^T, the bias column left out (its input is the constant 1) */
static void dense_rop_input(kfac_layer *ly, const float *w, const float *rx, int batch, float *ry)
{
    int in = ly->d_in, d = ly->d_out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, d, in - 1, 1.0f, rx, in - 1, w, in, 1.0f, ry, d);
}

static void dense_rop(kfac_layer *ly, const float *w, const float *v, const float *rx, int batch, float *ry,
                      float *scratch)
{
    (void)scratch;
    int in = ly->d_in, d = ly->d_out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, d, in, 1.0f, ly->abar, in, v, in, 0.0f, ry, d);
    if (rx)
        dense_rop_input(ly, w, rx, batch, ry);
}

static size_t dense_scratch(const kfac_layer *ly, int max_batch)
{
    (void)ly, (void)max_batch;
    return 0;
}

const kfac_layer_type kfac_layer_dense = {
    .name = "dense",
    .has_weights = 1,
    .spatial_input = 0,
    .infer = dense_infer,
    .forward = dense_forward,
    .backward = dense_backward,
    .rop = dense_rop,
    .rop_input = dense_rop_input,
    .scratch = dense_scratch,
};
