/* conv.h - the spatial kernels of convolutional layers over NHWC images:
 * im2col and its adjoint col2im, max and average pooling (issue 15). A
 * convolution is then one product with the patches, as a dense layer's is
 * with its inputs. Not installed. */
#ifndef KFAC_CONV_H
#define KFAC_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "kfac.h"

/* Geometry of a 2-D convolution over NHWC images. */
typedef struct kfac_conv_geom {
    int h, w, c;     /* input height, width, channels */
    int kh, kw;      /* kernel */
    int stride, pad; /* same in both directions; pad = zeros on every side */
    int oh, ow;      /* output: (h + 2 pad - kh) / stride + 1, likewise ow */
} kfac_conv_geom;

/* Fill *g, oh and ow included; INVALID_ARG naming the problem (*g
 * untouched) if any size < 1, pad < 0, pad >= the kernel's size in either
 * direction, the output would be empty, or an image or a patch row would
 * hold 2^31 floats or more. */
kfac_status kfac_conv_geom_init(kfac_conv_geom *g, int h, int w, int c, int kh, int kw, int stride, int pad);

/* im2col: for `batch` examples of x (example b at x + b*ldx, h*w*c floats
 * NHWC), write batch*oh*ow rows of patches, row (b, oy, ox) at
 * patches + ((b*oh + oy)*ow + ox) * ldp, columns ordered (ky, kx, ci),
 * i.e. ky*kw*c + kx*c + ci (the window in NHWC order), zeros where the
 * window leaves the image. Column kh*kw*c (the last; ldp >= kh*kw*c + 1) is
 * not touched: the caller keeps a homogeneous 1 there, set once. */
void kfac_im2col(const kfac_conv_geom *g, const float *x, size_t ldx, int batch, float *patches, int ldp);

/* col2im, the adjoint of im2col: dx (example b at dx + b*ldx) <- the sum
 * over patch rows of dpatches' first kh*kw*c columns (leading dimension
 * ldd) added back to the pixels they came from. Overwrites dx. The same
 * result bit for bit whatever the thread count. */
void kfac_col2im(const kfac_conv_geom *g, const float *dpatches, int ldd, int batch, float *dx, size_t ldx);

/* Pooling over NHWC: window k x k, stride s, no padding, floor mode
 * (PyTorch's default): oh = (h - k) / s + 1, likewise ow. */
typedef struct kfac_pool_geom {
    int h, w, c;   /* input height, width, channels */
    int k, stride; /* window k x k */
    int oh, ow;    /* output */
} kfac_pool_geom;

/* Fill *g; INVALID_ARG naming the problem (*g untouched) if any size < 1,
 * k > h or k > w, or an image would hold 2^31 floats or more (argmax is
 * an int32). */
kfac_status kfac_pool_geom_init(kfac_pool_geom *g, int h, int w, int c, int k, int stride);

/* Max pooling: y (example b at y + b*ldy, oh*ow*c floats) and argmax
 * (oh*ow*c int32 per example, packed: example b at argmax + b*oh*ow*c),
 * each the index within its example's input, 0..h*w*c-1, of the maximum:
 * the first in (ky, kx) scan order on ties; a NaN wins (the first one), so
 * that it reaches the loss. */
void kfac_maxpool_forward(const kfac_pool_geom *g, const float *x, size_t ldx, int batch, float *y, size_t ldy,
                          int32_t *argmax);
/* dx <- 0, then dx[argmax] += dy (overwrites dx) */
void kfac_maxpool_backward(const kfac_pool_geom *g, const float *dy, size_t ldy, const int32_t *argmax, int batch,
                           float *dx, size_t ldx);
/* The R-op of max pooling: ry = rx[argmax], a gather with the recorded
 * argmax. */
void kfac_maxpool_gather(const kfac_pool_geom *g, const float *rx, size_t ldx, const int32_t *argmax, int batch,
                         float *ry, size_t ldy);

/* Average pooling: y = the mean over the window (k*k values). Linear, so
 * its R-op is the forward itself. */
void kfac_avgpool_forward(const kfac_pool_geom *g, const float *x, size_t ldx, int batch, float *y, size_t ldy);
/* dx <- 0, then each dy / (k*k) added to its window (overwrites dx) */
void kfac_avgpool_backward(const kfac_pool_geom *g, const float *dy, size_t ldy, int batch, float *dx, size_t ldx);

#endif
