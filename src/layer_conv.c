/* layer_conv.c - the convolution's row of the layer table
 * (docs/algorithm.md §2.1). im2col writes each output pixel's input window
 * as one row of abar, so the convolution is the dense layer's product on
 * batch x positions rows, s = abar W^T, and K-FAC's A statistics (Grosse
 * & Martens 2016, KFC; §3.1) come from the same rows. Images are NHWC, so a
 * window's rows are contiguous runs and the output rows (position-major,
 * channel last) are already the next layer's NHWC input: no transposes.
 * im2col + sgemm rather than a direct or Winograd convolution: the
 * patches are needed anyway for A, and sgemm runs near peak. */
#include <cblas.h>

#include "common.h"
#include "layer.h"

static kfac_status conv_infer(kfac_layer *ly)
{
    const kfac_layer_spec *s = &ly->spec;
    if (s->units < 1 || s->units > 1000000)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "units %d outside [1, 1000000]", s->units);
    int stride = s->stride ? s->stride : 1;
    int pad = s->pad;
    if (pad == KFAC_PAD_SAME) {
        if (s->kernel_h % 2 == 0 || s->kernel_w % 2 == 0)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "pad = same needs an odd kernel, not %dx%d", s->kernel_h,
                             s->kernel_w);
        if (s->kernel_h != s->kernel_w)
            return kfac_fail(KFAC_ERR_INVALID_ARG, "pad = same needs a square kernel, not %dx%d", s->kernel_h,
                             s->kernel_w);
        pad = (s->kernel_h - 1) / 2;
    }
    kfac_status st = kfac_conv_geom_init(&ly->conv, ly->in_h, ly->in_w, ly->in_c, s->kernel_h, s->kernel_w, stride,
                                         pad);
    if (st != KFAC_OK)
        return st;
    ly->out_h = ly->conv.oh;
    ly->out_w = ly->conv.ow;
    ly->out_c = s->units;
    ly->d_in = s->kernel_h * s->kernel_w * ly->in_c + 1;
    ly->d_out = s->units;
    ly->positions = ly->out_h * ly->out_w;
    return KFAC_OK;
}

static void conv_forward(kfac_layer *ly, const float *w, int batch, float *y, size_t ldy)
{
    int in = ly->d_in, d = ly->d_out, P = ly->positions, threads = KFAC_MIN(omp_get_max_threads(), batch);
    /* an example at a time on a thread of its own: its patches are
     * written to abar (K-FAC and the weight gradient read them later) and
     * multiplied while still in the cache; its output rows land at its
     * place in y, whatever y's stride (a dense layer next has its ones
     * column between examples) */
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int b = 0; b < batch; b++) {
        float *ab = ly->abar + (size_t)b * P * in;
        kfac_im2col(&ly->conv, ly->x + (size_t)b * ly->ldx, ly->ldx, 1, ab, in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, d, in, 1.0f, ab, in, w, in, 0.0f,
                    y + (size_t)b * ldy, d);
    }
}

static void conv_backward(kfac_layer *ly, const float *w, const float *g, int batch, float *grad, float scale,
                          float *dx, size_t lddx, float *scratch)
{
    int in = ly->d_in, d = ly->d_out, rows = batch * ly->positions;
    if (grad) /* dW (d x in) <- scale g^T abar over every example's positions */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, in, rows, scale, g, d, ly->abar, in, 0.0f, grad, in);
    if (dx) {
        /* the patches' gradient g W[:, :in-1], then each window's share
         * added back to the pixels it came from: an example at a time, on
         * a thread of its own, so its patches' gradient (P x in floats)
         * is added back from the cache instead of the whole batch's
         * written to memory and read again (a single-threaded sgemm each:
         * OpenBLAS runs serially inside a parallel region) */
        int P = ly->positions, threads = KFAC_MIN(omp_get_max_threads(), batch);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int b = 0; b < batch; b++) {
            float *sp = scratch + (size_t)omp_get_thread_num() * P * in;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, in - 1, d, 1.0f, g + (size_t)b * P * d, d, w,
                        in, 0.0f, sp, in);
            kfac_col2im(&ly->conv, sp, in, 1, dx + (size_t)b * lddx, lddx);
        }
    }
}

/* R(s) = abar V^T + im2col(R(x)) W[:, :in-1]^T */
static void conv_rop(kfac_layer *ly, const float *w, const float *v, const float *rx, int batch, float *ry,
                     float *scratch)
{
    int in = ly->d_in, d = ly->d_out, rows = batch * ly->positions;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, d, in, 1.0f, ly->abar, in, v, in, 0.0f, ry, d);
    if (rx) {
        kfac_im2col(&ly->conv, rx, (size_t)ly->in_size, batch, scratch, in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, d, in - 1, 1.0f, scratch, in, w, in, 1.0f, ry, d);
    }
}

static size_t conv_scratch(const kfac_layer *ly) { return (size_t)ly->positions * (size_t)ly->d_in; }

const kfac_layer_type kfac_layer_conv = {
    .name = "conv",
    .has_weights = 1,
    .spatial_input = 1,
    .infer = conv_infer,
    .forward = conv_forward,
    .backward = conv_backward,
    .rop = conv_rop,
    .scratch = conv_scratch,
};
