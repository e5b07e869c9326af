/* conv.c - im2col, col2im and pooling over NHWC images (conv.h). In NHWC
 * one kernel row of a window, kw pixels of c channels, is kw*c floats
 * contiguous in the image: each kernel row is copied (or added back) as
 * one run, with the part outside the image cut off its ends. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "common.h"
#include "conv.h"

kfac_status kfac_conv_geom_init(kfac_conv_geom *g, int h, int w, int c, int kh, int kw, int stride, int pad)
{
    kfac_clear_error();
    if (!g)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_conv_geom_init: geometry is NULL");
    if (h < 1 || w < 1 || c < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "input %dx%dx%d: every size must be at least 1", h, w, c);
    if (kh < 1 || kw < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kernel %dx%d: every size must be at least 1", kh, kw);
    if (stride < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "stride %d: must be at least 1", stride);
    if (pad < 0)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "padding %d is negative", pad);
    /* a wider padding would give windows of zeros alone */
    if (pad >= kh || pad >= kw)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "padding %d not smaller than the kernel %dx%d", pad, kh, kw);
    long long ph = (long long)h + 2LL * pad, pw = (long long)w + 2LL * pad;
    if (kh > ph || kw > pw)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kernel %dx%d larger than the padded input %lldx%lld", kh, kw, ph,
                         pw);
    /* int offsets within an example and int columns */
    long long pixels = (long long)h * w * c, cols = (long long)kh * kw * c + 1;
    if (pixels > INT_MAX)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "input %dx%dx%d: %lld floats, over 2^31 - 1", h, w, c, pixels);
    if (cols > INT_MAX)
        return kfac_fail(KFAC_ERR_INVALID_ARG,
                         "kernel %dx%d over %d channels: patch rows of %lld floats, over 2^31 - 1", kh, kw, c, cols);
    g->h = h, g->w = w, g->c = c;
    g->kh = kh, g->kw = kw;
    g->stride = stride, g->pad = pad;
    g->oh = (int)((ph - kh) / stride + 1);
    g->ow = (int)((pw - kw) / stride + 1);
    return KFAC_OK;
}

/* The kernel columns [*lo, *hi) of a window starting at image column x0
 * that fall inside the image's n columns. */
static inline void inside(int x0, int k, int n, int *lo, int *hi)
{
    *lo = KFAC_MAX(0, -x0);
    *hi = KFAC_MIN(k, n - x0);
    if (*hi < *lo)
        *hi = *lo;
}

void kfac_im2col(const kfac_conv_geom *g, const float *x, size_t ldx, int batch, float *patches, int ldp)
{
    const int h = g->h, w = g->w, c = g->c, kh = g->kh, kw = g->kw;
    const int oh = g->oh, ow = g->ow, stride = g->stride, pad = g->pad;
    const int run = kw * c; /* one kernel row of the window */
    const long units = (long)batch * oh;
    /* one unit is one output row (b, oy) of one example: ow patch rows */
#pragma omp parallel for schedule(static) if (units * ow * kh * run > KFAC_PAR_COPY)
    for (long u = 0; u < units; u++) {
        const float *xb = x + (size_t)(u / oh) * ldx;
        const int iy0 = (int)(u % oh) * stride - pad;
        float *row = patches + (size_t)u * ow * ldp;
        for (int ox = 0; ox < ow; ox++, row += ldp) {
            const int ix0 = ox * stride - pad;
            int lo, hi;
            inside(ix0, kw, w, &lo, &hi);
            for (int ky = 0; ky < kh; ky++) {
                float *dst = row + (size_t)ky * run;
                const int iy = iy0 + ky;
                if (iy < 0 || iy >= h) {
                    memset(dst, 0, sizeof *dst * run);
                    continue;
                }
                if (lo > 0)
                    memset(dst, 0, sizeof *dst * lo * c);
                memcpy(dst + lo * c, xb + ((size_t)iy * w + ix0 + lo) * c, sizeof *dst * (hi - lo) * c);
                if (hi < kw)
                    memset(dst + hi * c, 0, sizeof *dst * (kw - hi) * c);
            }
        }
    }
}

void kfac_col2im(const kfac_conv_geom *g, const float *dpatches, int ldd, int batch, float *dx, size_t ldx)
{
    const int h = g->h, w = g->w, c = g->c, kh = g->kh, kw = g->kw;
    const int oh = g->oh, ow = g->ow, stride = g->stride, pad = g->pad;
    const int run = kw * c;
    /* Each example's pixels are its own: no two threads add to one, and
     * every pixel sums its terms in the same order whatever the threads. */
#pragma omp parallel for schedule(static) if ((long)batch * oh * ow * kh * run > KFAC_PAR_STREAM)
    for (int b = 0; b < batch; b++) {
        float *xb = dx + (size_t)b * ldx;
        memset(xb, 0, sizeof *xb * (size_t)h * w * c);
        const float *row = dpatches + (size_t)b * oh * ow * ldd;
        for (int oy = 0; oy < oh; oy++) {
            const int iy0 = oy * stride - pad;
            for (int ox = 0; ox < ow; ox++, row += ldd) {
                const int ix0 = ox * stride - pad;
                int lo, hi;
                inside(ix0, kw, w, &lo, &hi);
                const int n = (hi - lo) * c;
                for (int ky = KFAC_MAX(0, -iy0); ky < KFAC_MIN(kh, h - iy0); ky++) {
                    float *restrict dst = xb + ((size_t)(iy0 + ky) * w + ix0 + lo) * c;
                    const float *restrict src = row + (size_t)ky * run + lo * c;
                    for (int j = 0; j < n; j++)
                        dst[j] += src[j];
                }
            }
        }
    }
}

kfac_status kfac_pool_geom_init(kfac_pool_geom *g, int h, int w, int c, int k, int stride)
{
    kfac_clear_error();
    if (!g)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_pool_geom_init: geometry is NULL");
    if (h < 1 || w < 1 || c < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "input %dx%dx%d: every size must be at least 1", h, w, c);
    if (k < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "pooling window %d: must be at least 1", k);
    if (stride < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "stride %d: must be at least 1", stride);
    if (k > h || k > w)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "pooling window %dx%d larger than the input %dx%d", k, k, h, w);
    /* argmax holds an index within the example as an int32 */
    long long pixels = (long long)h * w * c;
    if (pixels > INT32_MAX)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "input %dx%dx%d: %lld floats, over 2^31 - 1", h, w, c, pixels);
    g->h = h, g->w = w, g->c = c;
    g->k = k, g->stride = stride;
    g->oh = (h - k) / stride + 1;
    g->ow = (w - k) / stride + 1;
    return KFAC_OK;
}

void kfac_maxpool_forward(const kfac_pool_geom *g, const float *x, size_t ldx, int batch, float *y, size_t ldy,
                          int32_t *argmax)
{
    const int w = g->w, c = g->c, k = g->k, oh = g->oh, ow = g->ow, stride = g->stride;
    const long units = (long)batch * oh;
    const size_t per = (size_t)oh * ow * c;
#pragma omp parallel for schedule(static) if (units * ow * k * k * c > KFAC_PAR_COPY)
    for (long u = 0; u < units; u++) {
        const size_t b = (size_t)(u / oh);
        const int oy = (int)(u % oh);
        const float *xb = x + b * ldx;
        for (int ox = 0; ox < ow; ox++) {
            const size_t o = ((size_t)oy * ow + ox) * c;
            float *restrict yo = y + b * ldy + o;
            int32_t *restrict ao = argmax + b * per + o;
            const int32_t base = ((int32_t)oy * stride * w + ox * stride) * c;
            for (int ci = 0; ci < c; ci++) {
                yo[ci] = xb[base + ci];
                ao[ci] = base + ci;
            }
            /* the channels innermost: contiguous in NHWC */
            for (int ky = 0; ky < k; ky++)
                for (int kx = ky ? 0 : 1; kx < k; kx++) {
                    const int32_t at = base + ((int32_t)ky * w + kx) * c;
                    /* branch-free, so it vectorizes over the channels:
                     * a larger value, or a first NaN, takes the place */
                    const float *restrict src = xb + at;
                    for (int ci = 0; ci < c; ci++) {
                        const float v = src[ci], m = yo[ci];
                        const int take = v > m || (v != v && m == m);
                        yo[ci] = take ? v : m;
                        ao[ci] = take ? at + ci : ao[ci];
                    }
                }
        }
    }
}

void kfac_maxpool_backward(const kfac_pool_geom *g, const float *dy, size_t ldy, const int32_t *argmax, int batch,
                           float *dx, size_t ldx)
{
    const size_t per = (size_t)g->oh * g->ow * g->c;
    /* overlapping windows (stride < k) add to one pixel: by example, as
     * col2im */
#pragma omp parallel for schedule(static) if ((long)batch * per > KFAC_PAR_STREAM)
    for (int b = 0; b < batch; b++) {
        float *xb = dx + (size_t)b * ldx;
        const float *yb = dy + (size_t)b * ldy;
        const int32_t *ab = argmax + (size_t)b * per;
        memset(xb, 0, sizeof *xb * (size_t)g->h * g->w * g->c);
        for (size_t o = 0; o < per; o++)
            xb[ab[o]] += yb[o];
    }
}

void kfac_maxpool_gather(const kfac_pool_geom *g, const float *rx, size_t ldx, const int32_t *argmax, int batch,
                         float *ry, size_t ldy)
{
    const size_t per = (size_t)g->oh * g->ow * g->c;
#pragma omp parallel for schedule(static) if ((long)batch * per > KFAC_PAR_COPY)
    for (int b = 0; b < batch; b++) {
        const float *xb = rx + (size_t)b * ldx;
        const int32_t *ab = argmax + (size_t)b * per;
        float *yb = ry + (size_t)b * ldy;
        for (size_t o = 0; o < per; o++)
            yb[o] = xb[ab[o]];
    }
}

void kfac_avgpool_forward(const kfac_pool_geom *g, const float *x, size_t ldx, int batch, float *y, size_t ldy)
{
    const int w = g->w, c = g->c, k = g->k, oh = g->oh, ow = g->ow, stride = g->stride;
    const float scale = 1.0f / (float)(k * k);
    const long units = (long)batch * oh;
#pragma omp parallel for schedule(static) if (units * ow * k * k * c > KFAC_PAR_COPY)
    for (long u = 0; u < units; u++) {
        const size_t b = (size_t)(u / oh);
        const int oy = (int)(u % oh);
        const float *xb = x + b * ldx;
        for (int ox = 0; ox < ow; ox++) {
            float *restrict yo = y + b * ldy + ((size_t)oy * ow + ox) * c;
            const size_t base = ((size_t)oy * stride * w + (size_t)ox * stride) * c;
            for (int ci = 0; ci < c; ci++)
                yo[ci] = 0.0f;
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    const float *restrict xp = xb + base + ((size_t)ky * w + kx) * c;
                    for (int ci = 0; ci < c; ci++)
                        yo[ci] += xp[ci];
                }
            for (int ci = 0; ci < c; ci++)
                yo[ci] *= scale;
        }
    }
}

void kfac_avgpool_backward(const kfac_pool_geom *g, const float *dy, size_t ldy, int batch, float *dx, size_t ldx)
{
    const int w = g->w, c = g->c, k = g->k, oh = g->oh, ow = g->ow, stride = g->stride;
    const float scale = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) if ((long)batch * oh * ow * k * k * c > KFAC_PAR_STREAM)
    for (int b = 0; b < batch; b++) {
        float *xb = dx + (size_t)b * ldx;
        const float *yb = dy + (size_t)b * ldy;
        memset(xb, 0, sizeof *xb * (size_t)g->h * w * c);
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                const float *yo = yb + ((size_t)oy * ow + ox) * c;
                const size_t base = ((size_t)oy * stride * w + (size_t)ox * stride) * c;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        float *restrict xp = xb + base + ((size_t)ky * w + kx) * c;
                        for (int ci = 0; ci < c; ci++)
                            xp[ci] += yo[ci] * scale;
                    }
            }
    }
}
