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

/* backward_rebuilt's chunks of examples: enough to keep 16 threads busy,
 * few enough that their dW add up to little */
#define KFAC_CONV_CHUNKS 16

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
     * written to abar (K-FAC and the weight gradient read them later;
     * without keep_abar, to the thread's own slot there, as backward
     * rebuilds them) and multiplied while still in the cache; its output
     * rows land at its place in y, whatever y's stride (a dense layer next
     * has its ones column between examples) */
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int b = 0; b < batch; b++) {
        float *ab = ly->abar + (size_t)(ly->keep_abar ? b : omp_get_thread_num()) * P * in;
        kfac_im2col(&ly->conv, ly->x + (size_t)b * ly->ldx, ly->ldx, 1, ab, in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, d, in, 1.0f, ab, in, w, in, 0.0f,
                    y + (size_t)b * ldy, d);
    }
}

/* The backward pass without kept patches (first-order training): each
 * example's patches are rebuilt from its input, a slot of abar's, and used
 * for its share of dW and dx while still in the cache. The batch's patches
 * are the layer's largest stream (fmnist-cnn's second convolution: 80 MB a
 * step at batch 128, written by the forward pass and read here), and they
 * never reach memory. dW is summed over a fixed number of chunks of
 * examples, each on one thread, and then the chunks in order, so the sum
 * does not depend on the thread count. */
static void backward_rebuilt(kfac_layer *ly, const float *w, const float *g, int batch, float *grad, float scale,
                             float *dx, size_t lddx, float *scratch)
{
    int in = ly->d_in, d = ly->d_out, P = ly->positions, chunks = KFAC_MIN(batch, KFAC_CONV_CHUNKS);
    int threads = KFAC_MIN(omp_get_max_threads(), chunks);
    size_t wsize = (size_t)d * in;
    float *partial = scratch + (size_t)chunks * P * in; /* chunk c's dW at c wsize */
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int c = 0; c < chunks; c++) {
        int b0 = (int)((long)batch * c / chunks), b1 = (int)((long)batch * (c + 1) / chunks);
        float *patches = ly->abar + (size_t)c * P * in, *dpatches = scratch + (size_t)c * P * in;
        for (int b = b0; b < b1; b++) {
            const float *gb = g + (size_t)b * P * d;
            kfac_im2col(&ly->conv, ly->x + (size_t)b * ly->ldx, ly->ldx, 1, patches, in);
            if (grad)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, in, P, scale, gb, d, patches, in,
                            b > b0 ? 1.0f : 0.0f, partial + (size_t)c * wsize, in);
            if (dx) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, in - 1, d, 1.0f, gb, d, w, in, 0.0f,
                            dpatches, in);
                kfac_col2im(&ly->conv, dpatches, in, 1, dx + (size_t)b * lddx, lddx);
            }
        }
    }
    if (grad) {
#pragma omp parallel for schedule(static) if (wsize > KFAC_PAR_STREAM)
        for (size_t i = 0; i < wsize; i++) {
            float sum = partial[i];
            for (int c = 1; c < chunks; c++)
                sum += partial[(size_t)c * wsize + i];
            grad[i] = sum;
        }
    }
}

static void conv_backward(kfac_layer *ly, const float *w, const float *g, int batch, float *grad, float scale,
                          float *dx, size_t lddx, float *scratch)
{
    if (!ly->keep_abar) {
        backward_rebuilt(ly, w, g, batch, grad, scale, dx, lddx, scratch);
        return;
    }
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

/* R(s) = abar V^T + im2col(R(x)) W[:, :in-1]^T (abar kept: keep_abar) */
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

/* rop's patches of R(x) and backward's patch gradients, a batch's worth;
 * or, rebuilding, each chunk's patch gradients and dW */
static size_t conv_scratch(const kfac_layer *ly, int max_batch)
{
    size_t P = (size_t)ly->positions, in = (size_t)ly->d_in, chunks = (size_t)KFAC_MIN(max_batch, KFAC_CONV_CHUNKS);
    return KFAC_MAX((size_t)max_batch * P * in, chunks * (P + (size_t)ly->d_out) * in);
}

const kfac_layer_type kfac_layer_conv = {
    .name = "conv",
    .has_weights = 1,
    .spatial_input = 1,
    .drops_inputs = 1,
    .infer = conv_infer,
    .forward = conv_forward,
    .backward = conv_backward,
    .rop = conv_rop,
    .scratch = conv_scratch,
};
