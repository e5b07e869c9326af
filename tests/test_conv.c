/* test_conv.c - the spatial kernels of convolutional layers (conv.c):
 * im2col's patches entry by entry, a convolution's forward pass (im2col and
 * one product) and its weight and input gradients (col2im) against direct
 * convolutions written here with plain loops in double; col2im as the
 * adjoint of im2col; max and average pooling, their backward passes and
 * max pooling's gather against plain loops, with ties, overlapping windows
 * and central differences; the same bits on 1, 2 and 3 threads; invalid
 * geometries. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "kfac.h"
#include "tests.h"

/* marks a float the kernels must write (NaN: fails every comparison) or
 * must leave alone */
#define UNWRITTEN NAN
#define SENTINEL 12345.0f

static void fill_uniform(float *v, size_t n, kfac_rng *r)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(2.0 * kfac_rng_uniform(r) - 1.0);
}

static void *alloc_or_fail(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* |got - want| within tol of `scale` (the sum of the terms' magnitudes) */
static void assert_close(double got, double want, double scale, double tol, const char *what, size_t at)
{
    ck_assert_msg(fabs(got - want) <= tol * scale + 1e-30, "%s[%zu]: %.9g, want %.9g (scale %.3g)", what, at, got,
                  want, scale);
}

/* ------------------------------------------------------ convolution */

typedef struct conv_case {
    int h, w, c, kh, kw, stride, pad, cout, batch;
} conv_case;

/* Stride 1, 2 and 3, padding 0 to 2, non-square images and kernels, 1x1
 * kernels and windows that are the whole padded image. */
static const conv_case conv_cases[] = {
    {7, 5, 3, 3, 2, 1, 1, 4, 3},  {7, 5, 3, 3, 2, 2, 0, 4, 2}, {7, 5, 2, 3, 2, 2, 1, 3, 2},
    {6, 6, 2, 3, 3, 2, 1, 5, 2},  {5, 7, 1, 5, 5, 1, 2, 3, 3}, {8, 9, 4, 3, 3, 2, 2, 2, 2},
    {5, 8, 3, 2, 3, 3, 1, 3, 2},  {4, 4, 2, 1, 1, 1, 0, 3, 2}, {3, 3, 2, 3, 3, 1, 0, 2, 4},
    {2, 3, 2, 3, 3, 1, 1, 2, 2},  {28, 28, 1, 5, 5, 1, 2, 4, 2}, {14, 14, 6, 5, 5, 1, 2, 3, 2},
};
#define N_CONV ((int)(sizeof conv_cases / sizeof *conv_cases))

/* The buffers of one case: leading dimensions wider than the data, so
 * that every kernel is seen to keep to its rows. */
typedef struct conv_fixture {
    conv_case cc;
    kfac_conv_geom g;
    int K, rows, ldp, ldd;
    size_t pixels, ldx;
    float *x, *patches, *W, *S, *g_out, *dW, *dP, *dx;
} conv_fixture;

static void conv_fixture_new(conv_fixture *f, const conv_case *cc, uint64_t seed)
{
    f->cc = *cc;
    ck_assert_int_eq(kfac_conv_geom_init(&f->g, cc->h, cc->w, cc->c, cc->kh, cc->kw, cc->stride, cc->pad), KFAC_OK);
    f->K = cc->kh * cc->kw * cc->c;
    f->rows = cc->batch * f->g.oh * f->g.ow;
    f->ldp = f->K + 3;
    f->ldd = f->K + 2;
    f->pixels = (size_t)cc->h * cc->w * cc->c;
    f->ldx = f->pixels + 5;
    f->x = alloc_or_fail(sizeof(float) * f->ldx * cc->batch);
    f->patches = alloc_or_fail(sizeof(float) * (size_t)f->rows * f->ldp);
    f->W = alloc_or_fail(sizeof(float) * (size_t)cc->cout * (f->K + 1));
    f->S = alloc_or_fail(sizeof(float) * (size_t)f->rows * cc->cout);
    f->g_out = alloc_or_fail(sizeof(float) * (size_t)f->rows * cc->cout);
    f->dW = alloc_or_fail(sizeof(float) * (size_t)cc->cout * (f->K + 1));
    f->dP = alloc_or_fail(sizeof(float) * (size_t)f->rows * f->ldd);
    f->dx = alloc_or_fail(sizeof(float) * f->ldx * cc->batch);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    for (int b = 0; b < cc->batch; b++) {
        fill_uniform(f->x + b * f->ldx, f->pixels, &r);
        for (size_t i = f->pixels; i < f->ldx; i++)
            f->x[b * f->ldx + i] = SENTINEL;
    }
    fill_uniform(f->W, (size_t)cc->cout * (f->K + 1), &r);
    fill_uniform(f->g_out, (size_t)f->rows * cc->cout, &r);
}

static void conv_fixture_free(conv_fixture *f)
{
    free(f->x), free(f->patches), free(f->W), free(f->S), free(f->g_out), free(f->dW), free(f->dP), free(f->dx);
}

/* x[b, iy, ix, ci], 0 in the padding */
static double pixel(const conv_fixture *f, int b, int iy, int ix, int ci)
{
    if (iy < 0 || iy >= f->cc.h || ix < 0 || ix >= f->cc.w)
        return 0.0;
    return f->x[b * f->ldx + ((size_t)iy * f->cc.w + ix) * f->cc.c + ci];
}

/* patches' first K columns NaN, the homogeneous column 1, the rest of
 * each row a sentinel; then im2col */
static void run_im2col(conv_fixture *f)
{
    for (int i = 0; i < f->rows; i++)
        for (int j = 0; j < f->ldp; j++)
            f->patches[(size_t)i * f->ldp + j] = j < f->K ? UNWRITTEN : j == f->K ? 1.0f : SENTINEL;
    kfac_im2col(&f->g, f->x, f->ldx, f->cc.batch, f->patches, f->ldp);
}

/* Every entry of the patches, with the rows and columns counted here, and
 * the columns im2col must not touch. */
static void assert_patches(const conv_fixture *f)
{
    const conv_case *cc = &f->cc;
    for (int b = 0; b < cc->batch; b++)
        for (int oy = 0; oy < f->g.oh; oy++)
            for (int ox = 0; ox < f->g.ow; ox++) {
                size_t row = ((size_t)b * f->g.oh + oy) * f->g.ow + ox;
                const float *p = f->patches + row * f->ldp;
                int col = 0;
                for (int ky = 0; ky < cc->kh; ky++)
                    for (int kx = 0; kx < cc->kw; kx++)
                        for (int ci = 0; ci < cc->c; ci++, col++) {
                            double want =
                                pixel(f, b, oy * cc->stride - cc->pad + ky, ox * cc->stride - cc->pad + kx, ci);
                            ck_assert_msg(p[col] == (float)want, "patch row %zu col %d: %g, want %g", row, col,
                                          p[col], want);
                        }
                ck_assert_msg(p[f->K] == 1.0f, "row %zu: the homogeneous column changed to %g", row, p[f->K]);
                for (int j = f->K + 1; j < f->ldp; j++)
                    ck_assert_msg(p[j] == SENTINEL, "row %zu: column %d past the patch written", row, j);
            }
}

START_TEST(test_im2col_patches)
{
    conv_fixture f;
    conv_fixture_new(&f, &conv_cases[_i], 100 + _i);
    run_im2col(&f);
    assert_patches(&f);
    conv_fixture_free(&f);
}
END_TEST

/* S = patches * W^T against out[b, oy, ox, co] = bias[co] + sum over the
 * window of W[co, ky, kx, ci] x[b, oy s - p + ky, ox s - p + kx, ci]. */
START_TEST(test_conv_forward)
{
    conv_fixture f;
    const conv_case *cc = &conv_cases[_i];
    conv_fixture_new(&f, cc, 200 + _i);
    const int K1 = f.K + 1;
    run_im2col(&f);
    /* S (rows x cout) <- patches (rows x K+1) * W^T (K+1 x cout) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, f.rows, cc->cout, K1, 1.0f, f.patches, f.ldp, f.W, K1, 0.0f,
                f.S, cc->cout);
    double largest = 0.0;
    for (int b = 0; b < cc->batch; b++)
        for (int oy = 0; oy < f.g.oh; oy++)
            for (int ox = 0; ox < f.g.ow; ox++)
                for (int co = 0; co < cc->cout; co++) {
                    const float *wr = f.W + (size_t)co * K1;
                    double s = wr[f.K], scale = fabs(wr[f.K]);
                    for (int ky = 0; ky < cc->kh; ky++)
                        for (int kx = 0; kx < cc->kw; kx++)
                            for (int ci = 0; ci < cc->c; ci++) {
                                int iy = oy * cc->stride - cc->pad + ky, ix = ox * cc->stride - cc->pad + kx;
                                double t = wr[(ky * cc->kw + kx) * cc->c + ci] * pixel(&f, b, iy, ix, ci);
                                s += t, scale += fabs(t);
                            }
                    size_t at = (((size_t)b * f.g.oh + oy) * f.g.ow + ox) * cc->cout + co;
                    assert_close(f.S[at], s, scale, 1e-5, "S", at);
                    largest = fmax(largest, fabs(s));
                }
    ck_assert_msg(largest > 0.1, "outputs all near zero (%g): nothing compared", largest);
    conv_fixture_free(&f);
}
END_TEST

/* For an output gradient g (rows x cout): dW = g^T patches against
 * sum over (b, oy, ox) of g x, and dx = col2im(g W[:, :K]) against the
 * direct scatter of g W to the pixels under each window. */
START_TEST(test_conv_backward)
{
    conv_fixture f;
    const conv_case *cc = &conv_cases[_i];
    conv_fixture_new(&f, cc, 300 + _i);
    const int K1 = f.K + 1, cout = cc->cout;
    run_im2col(&f);
    /* dW (cout x K+1) <- g^T (cout x rows) * patches (rows x K+1) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cout, K1, f.rows, 1.0f, f.g_out, cout, f.patches, f.ldp, 0.0f,
                f.dW, K1);
    /* dP (rows x K) <- g (rows x cout) * W[:, :K] (cout x K) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f.rows, f.K, cout, 1.0f, f.g_out, cout, f.W, K1, 0.0f, f.dP,
                f.ldd);
    for (size_t i = 0; i < f.ldx * cc->batch; i++)
        f.dx[i] = i % f.ldx < f.pixels ? UNWRITTEN : SENTINEL;
    kfac_col2im(&f.g, f.dP, f.ldd, cc->batch, f.dx, f.ldx);

    /* the weight gradient, bias last */
    for (int co = 0; co < cout; co++) {
        for (int col = 0; col <= f.K; col++) {
            int ky = col / (cc->kw * cc->c), kx = col / cc->c % cc->kw, ci = col % cc->c;
            double s = 0.0, scale = 0.0;
            for (int b = 0; b < cc->batch; b++)
                for (int oy = 0; oy < f.g.oh; oy++)
                    for (int ox = 0; ox < f.g.ow; ox++) {
                        double gv = f.g_out[(((size_t)b * f.g.oh + oy) * f.g.ow + ox) * cout + co];
                        double t = col == f.K ? gv
                                              : gv * pixel(&f, b, oy * cc->stride - cc->pad + ky,
                                                           ox * cc->stride - cc->pad + kx, ci);
                        s += t, scale += fabs(t);
                    }
            assert_close(f.dW[(size_t)co * K1 + col], s, scale, 1e-5, "dW", (size_t)co * K1 + col);
        }
    }

    /* the input gradient, scattered window by window in double */
    size_t n = f.pixels * cc->batch;
    double *dx = calloc(n, sizeof *dx), *scale = calloc(n, sizeof *scale);
    ck_assert(dx && scale);
    for (int b = 0; b < cc->batch; b++)
        for (int oy = 0; oy < f.g.oh; oy++)
            for (int ox = 0; ox < f.g.ow; ox++)
                for (int ky = 0; ky < cc->kh; ky++)
                    for (int kx = 0; kx < cc->kw; kx++) {
                        int iy = oy * cc->stride - cc->pad + ky, ix = ox * cc->stride - cc->pad + kx;
                        if (iy < 0 || iy >= cc->h || ix < 0 || ix >= cc->w)
                            continue;
                        for (int ci = 0; ci < cc->c; ci++)
                            for (int co = 0; co < cout; co++) {
                                double t = (double)f.g_out[(((size_t)b * f.g.oh + oy) * f.g.ow + ox) * cout + co] *
                                           f.W[(size_t)co * K1 + (ky * cc->kw + kx) * cc->c + ci];
                                size_t at = b * f.pixels + ((size_t)iy * cc->w + ix) * cc->c + ci;
                                dx[at] += t, scale[at] += fabs(t);
                            }
                    }
    for (int b = 0; b < cc->batch; b++) {
        for (size_t i = 0; i < f.pixels; i++)
            assert_close(f.dx[b * f.ldx + i], dx[b * f.pixels + i], scale[b * f.pixels + i], 1e-5, "dx",
                         b * f.ldx + i);
        for (size_t i = f.pixels; i < f.ldx; i++)
            ck_assert_msg(f.dx[b * f.ldx + i] == SENTINEL, "example %d: dx written past its pixels", b);
    }
    free(dx), free(scale);
    conv_fixture_free(&f);
}
END_TEST

/* <im2col(x), P> = <x, col2im(P)> for random x and P, over the first K
 * columns (the adjoint is what backpropagation needs). */
START_TEST(test_col2im_adjoint)
{
    conv_fixture f;
    const conv_case *cc = &conv_cases[_i];
    conv_fixture_new(&f, cc, 400 + _i);
    kfac_rng r;
    kfac_rng_seed(&r, 500 + _i);
    for (int i = 0; i < f.rows; i++)
        fill_uniform(f.dP + (size_t)i * f.ldd, (size_t)f.ldd, &r);
    run_im2col(&f);
    kfac_col2im(&f.g, f.dP, f.ldd, cc->batch, f.dx, f.ldx);
    double lhs = 0.0, rhs = 0.0, scale = 0.0;
    for (int i = 0; i < f.rows; i++)
        for (int j = 0; j < f.K; j++) {
            double t = (double)f.patches[(size_t)i * f.ldp + j] * f.dP[(size_t)i * f.ldd + j];
            lhs += t, scale += fabs(t);
        }
    for (int b = 0; b < cc->batch; b++)
        for (size_t i = 0; i < f.pixels; i++)
            rhs += (double)f.x[b * f.ldx + i] * f.dx[b * f.ldx + i];
    ck_assert_msg(scale > 1.0, "sum of |terms| %g: not finite, or nothing compared", scale);
    assert_close(rhs, lhs, scale, 1e-6, "<x, col2im(P)>", 0);
    conv_fixture_free(&f);
}
END_TEST

/* ---------------------------------------------------------- pooling */

typedef struct pool_case {
    int h, w, c, k, stride, batch;
} pool_case;

/* k = stride, overlapping windows (k 3 stride 2), gaps between windows
 * (stride > k), non-square images, rows and columns floor mode drops,
 * one window the whole image. */
static const pool_case pool_cases[] = {
    {4, 4, 2, 2, 2, 2}, {7, 5, 3, 3, 2, 3}, {6, 9, 1, 2, 1, 2}, {5, 5, 4, 3, 3, 2},
    {3, 3, 1, 3, 1, 2}, {8, 7, 2, 3, 2, 2}, {9, 6, 3, 2, 3, 2}, {28, 28, 2, 2, 2, 2},
};
#define N_POOL ((int)(sizeof pool_cases / sizeof *pool_cases))

typedef struct pool_fixture {
    pool_case pc;
    kfac_pool_geom g;
    size_t pixels, outs, ldx, ldy;
    float *x, *y, *dy, *dx;
    int32_t *argmax;
} pool_fixture;

/* ties: every value one of 0, 1, 2, so most windows hold their maximum
 * more than once */
static void pool_fixture_new(pool_fixture *f, const pool_case *pc, int ties, uint64_t seed)
{
    f->pc = *pc;
    ck_assert_int_eq(kfac_pool_geom_init(&f->g, pc->h, pc->w, pc->c, pc->k, pc->stride), KFAC_OK);
    f->pixels = (size_t)pc->h * pc->w * pc->c;
    f->outs = (size_t)f->g.oh * f->g.ow * pc->c;
    f->ldx = f->pixels + 3;
    f->ldy = f->outs + 2;
    f->x = alloc_or_fail(sizeof(float) * f->ldx * pc->batch);
    f->dx = alloc_or_fail(sizeof(float) * f->ldx * pc->batch);
    f->y = alloc_or_fail(sizeof(float) * f->ldy * pc->batch);
    f->dy = alloc_or_fail(sizeof(float) * f->ldy * pc->batch);
    f->argmax = alloc_or_fail(sizeof(int32_t) * f->outs * pc->batch);
    kfac_rng r;
    kfac_rng_seed(&r, seed);
    for (size_t i = 0; i < f->ldx * pc->batch; i++) {
        f->x[i] = i % f->ldx >= f->pixels ? SENTINEL : ties ? (float)kfac_rng_below(&r, 3) : (float)kfac_rng_normal(&r);
        f->dx[i] = i % f->ldx < f->pixels ? UNWRITTEN : SENTINEL;
    }
    for (size_t i = 0; i < f->ldy * pc->batch; i++) {
        f->dy[i] = (float)kfac_rng_normal(&r);
        f->y[i] = i % f->ldy < f->outs ? UNWRITTEN : SENTINEL;
    }
    for (size_t i = 0; i < f->outs * pc->batch; i++)
        f->argmax[i] = -1;
}

static void pool_fixture_free(pool_fixture *f) { free(f->x), free(f->y), free(f->dy), free(f->dx), free(f->argmax); }

/* offset of pixel (iy, ix, ci) within an example */
static size_t at_pixel(const pool_fixture *f, int iy, int ix, int ci)
{
    return ((size_t)iy * f->pc.w + ix) * f->pc.c + ci;
}

/* the sentinels past each example's values still there */
static void assert_rows_kept(const float *v, size_t n, size_t ld, int batch, const char *what)
{
    for (int b = 0; b < batch; b++)
        for (size_t i = n; i < ld; i++)
            ck_assert_msg(v[b * ld + i] == SENTINEL, "%s: example %d written past its values", what, b);
}

/* Forward against the first maximum of a (ky, kx) scan; backward against
 * dy added to the pixel of that maximum; the gather of a second input. */
START_TEST(test_maxpool)
{
    pool_fixture f;
    const pool_case *pc = &pool_cases[_i / 2];
    const int ties = _i % 2;
    pool_fixture_new(&f, pc, ties, 600 + _i);
    kfac_maxpool_forward(&f.g, f.x, f.ldx, pc->batch, f.y, f.ldy, f.argmax);
    double *dx = calloc(f.pixels * pc->batch, sizeof *dx);
    ck_assert_ptr_nonnull(dx);
    int tied = 0;
    for (int b = 0; b < pc->batch; b++)
        for (int oy = 0; oy < f.g.oh; oy++)
            for (int ox = 0; ox < f.g.ow; ox++)
                for (int ci = 0; ci < pc->c; ci++) {
                    const float *xb = f.x + b * f.ldx;
                    size_t best = at_pixel(&f, oy * pc->stride, ox * pc->stride, ci);
                    int count = 0;
                    for (int ky = 0; ky < pc->k; ky++)
                        for (int kx = 0; kx < pc->k; kx++) {
                            size_t p = at_pixel(&f, oy * pc->stride + ky, ox * pc->stride + kx, ci);
                            if (xb[p] > xb[best])
                                best = p, count = 0;
                            count += xb[p] == xb[best];
                        }
                    tied += count > 1;
                    size_t o = ((size_t)oy * f.g.ow + ox) * pc->c + ci;
                    ck_assert_msg(f.y[b * f.ldy + o] == xb[best], "y[%d][%zu]: %g, want %g", b, o, f.y[b * f.ldy + o],
                                  xb[best]);
                    ck_assert_msg(f.argmax[b * f.outs + o] == (int32_t)best, "argmax[%d][%zu]: %d, want %zu", b, o,
                                  f.argmax[b * f.outs + o], best);
                    dx[b * f.pixels + best] += f.dy[b * f.ldy + o];
                }
    if (ties)
        ck_assert_msg(tied > 0, "no window with a tie");
    assert_rows_kept(f.y, f.outs, f.ldy, pc->batch, "maxpool y");

    kfac_maxpool_backward(&f.g, f.dy, f.ldy, f.argmax, pc->batch, f.dx, f.ldx);
    for (int b = 0; b < pc->batch; b++)
        for (size_t i = 0; i < f.pixels; i++)
            assert_close(f.dx[b * f.ldx + i], dx[b * f.pixels + i], 1.0 + fabs(dx[b * f.pixels + i]), 1e-6,
                         "maxpool dx", b * f.ldx + i);
    assert_rows_kept(f.dx, f.pixels, f.ldx, pc->batch, "maxpool dx");

    /* the gather: dy as a second input of the input's shape (dx's buffer) */
    kfac_rng r;
    kfac_rng_seed(&r, 700 + _i);
    for (int b = 0; b < pc->batch; b++)
        fill_uniform(f.dx + b * f.ldx, f.pixels, &r);
    for (size_t i = 0; i < f.ldy * pc->batch; i++)
        f.y[i] = i % f.ldy < f.outs ? UNWRITTEN : SENTINEL;
    kfac_maxpool_gather(&f.g, f.dx, f.ldx, f.argmax, pc->batch, f.y, f.ldy);
    for (int b = 0; b < pc->batch; b++)
        for (size_t o = 0; o < f.outs; o++)
            ck_assert_msg(f.y[b * f.ldy + o] == f.dx[b * f.ldx + f.argmax[b * f.outs + o]], "gather [%d][%zu]", b, o);
    assert_rows_kept(f.y, f.outs, f.ldy, pc->batch, "maxpool gather");
    free(dx);
    pool_fixture_free(&f);
}
END_TEST

/* A tie and a NaN placed by hand: 2x4 image, 2 channels, 2x2 windows. */
START_TEST(test_maxpool_tie_and_nan)
{
    kfac_pool_geom g;
    ck_assert_int_eq(kfac_pool_geom_init(&g, 2, 4, 2, 2, 2), KFAC_OK);
    ck_assert_int_eq(g.oh, 1);
    ck_assert_int_eq(g.ow, 2);
    /* x[iy][ix][ci]: window 0 channel 0 all 7 (the first wins), channel 1
     * 3 at (0,1) and (1,0); window 1 channel 0 a NaN at (1,2), channel 1
     * a NaN at (0,3) and at (1,3) */
    float x[2][4][2] = {{{7, 1}, {7, 3}, {1, 0}, {2, NAN}}, {{7, 3}, {7, 2}, {NAN, 0}, {5, NAN}}};
    float y[4];
    int32_t am[4];
    kfac_maxpool_forward(&g, &x[0][0][0], 16, 1, y, 4, am);
    ck_assert_float_eq(y[0], 7.0f);
    ck_assert_int_eq(am[0], 0); /* (0, 0, 0) */
    ck_assert_float_eq(y[1], 3.0f);
    ck_assert_int_eq(am[1], (0 * 4 + 1) * 2 + 1); /* (0, 1, 1), not (1, 0, 1) */
    ck_assert(isnan(y[2]));
    ck_assert_int_eq(am[2], (1 * 4 + 2) * 2 + 0); /* the NaN, over 5 */
    ck_assert(isnan(y[3]));
    ck_assert_int_eq(am[3], (0 * 4 + 3) * 2 + 1); /* the first NaN */
}
END_TEST

/* Forward against the mean of each window in double, backward against
 * dy / k^2 added to each pixel of the window. */
START_TEST(test_avgpool)
{
    pool_fixture f;
    const pool_case *pc = &pool_cases[_i];
    pool_fixture_new(&f, pc, 0, 800 + _i);
    kfac_avgpool_forward(&f.g, f.x, f.ldx, pc->batch, f.y, f.ldy);
    double *dx = calloc(f.pixels * pc->batch, sizeof *dx);
    ck_assert_ptr_nonnull(dx);
    const int kk = pc->k * pc->k;
    for (int b = 0; b < pc->batch; b++)
        for (int oy = 0; oy < f.g.oh; oy++)
            for (int ox = 0; ox < f.g.ow; ox++)
                for (int ci = 0; ci < pc->c; ci++) {
                    size_t o = ((size_t)oy * f.g.ow + ox) * pc->c + ci;
                    double s = 0.0, scale = 0.0;
                    for (int ky = 0; ky < pc->k; ky++)
                        for (int kx = 0; kx < pc->k; kx++) {
                            size_t p = at_pixel(&f, oy * pc->stride + ky, ox * pc->stride + kx, ci);
                            s += f.x[b * f.ldx + p], scale += fabs(f.x[b * f.ldx + p]);
                            dx[b * f.pixels + p] += (double)f.dy[b * f.ldy + o] / kk;
                        }
                    assert_close(f.y[b * f.ldy + o], s / kk, scale / kk, 1e-6, "avgpool y", b * f.ldy + o);
                }
    assert_rows_kept(f.y, f.outs, f.ldy, pc->batch, "avgpool y");
    kfac_avgpool_backward(&f.g, f.dy, f.ldy, pc->batch, f.dx, f.ldx);
    for (int b = 0; b < pc->batch; b++)
        for (size_t i = 0; i < f.pixels; i++)
            assert_close(f.dx[b * f.ldx + i], dx[b * f.pixels + i], 1.0 + fabs(dx[b * f.pixels + i]), 1e-6,
                         "avgpool dx", b * f.ldx + i);
    assert_rows_kept(f.dx, f.pixels, f.ldx, pc->batch, "avgpool dx");
    free(dx);
    pool_fixture_free(&f);
}
END_TEST

/* L(x) = sum_o r_o avgpool(x)_o: dL/dx from the backward pass with dy = r
 * against central differences, every pixel (pooling is linear, so a wide
 * step loses nothing but rounding). */
START_TEST(test_avgpool_central_differences)
{
    pool_fixture f;
    const pool_case *pc = &pool_cases[_i];
    pool_fixture_new(&f, pc, 0, 900 + _i);
    kfac_avgpool_backward(&f.g, f.dy, f.ldy, pc->batch, f.dx, f.ldx);
    const float step = 0.125f;
    double largest = 0.0;
    for (int b = 0; b < pc->batch; b++)
        for (size_t i = 0; i < f.pixels; i++) {
            float *xi = &f.x[b * f.ldx + i];
            const float keep = *xi;
            double loss[2];
            for (int side = 0; side < 2; side++) {
                *xi = keep + (side ? step : -step);
                kfac_avgpool_forward(&f.g, f.x, f.ldx, pc->batch, f.y, f.ldy);
                loss[side] = 0.0;
                for (int bb = 0; bb < pc->batch; bb++)
                    for (size_t o = 0; o < f.outs; o++)
                        loss[side] += (double)f.dy[bb * f.ldy + o] * f.y[bb * f.ldy + o];
            }
            *xi = keep;
            double fd = (loss[1] - loss[0]) / (2.0 * step), got = f.dx[b * f.ldx + i];
            ck_assert_msg(fabs(fd - got) <= 1e-4 * (1.0 + fabs(got)), "pixel %zu of example %d: backward %.7g, "
                          "central difference %.7g", i, b, got, fd);
            largest = fmax(largest, fabs(got));
        }
    ck_assert_msg(largest > 0.01, "gradient all near zero (%g)", largest);
    pool_fixture_free(&f);
}
END_TEST

/* ------------------------------------------------- threads, geometry */

/* The two layers of the target network at a training batch, far past the
 * parallel thresholds: every kernel gives the same bits on 1, 2 and 3
 * threads, and the patches are the ones counted here. */
enum { N_OUT = 7 };
static const char *const out_names[N_OUT] = {"im2col", "col2im", "maxpool", "maxpool argmax", "maxpool backward",
                                             "avgpool", "avgpool backward"};

START_TEST(test_same_bits_any_threads)
{
    static const conv_case big[] = {{28, 28, 1, 5, 5, 1, 2, 1, 128}, {14, 14, 32, 5, 5, 1, 2, 1, 16}};
    conv_fixture f;
    conv_fixture_new(&f, &big[_i], 1000 + _i);
    kfac_rng r;
    kfac_rng_seed(&r, 1100 + _i);
    for (int i = 0; i < f.rows; i++)
        fill_uniform(f.dP + (size_t)i * f.ldd, (size_t)f.ldd, &r);
    /* pooling 3x3 stride 2 (overlapping) on the same images, its output
     * gradient taken from dP */
    kfac_pool_geom pg;
    ck_assert_int_eq(kfac_pool_geom_init(&pg, f.cc.h, f.cc.w, f.cc.c, 3, 2), KFAC_OK);
    const int n = f.cc.batch;
    const size_t outs = (size_t)pg.oh * pg.ow * pg.c;
    const size_t bytes[N_OUT] = {sizeof(float) * f.rows * f.ldp, sizeof(float) * f.ldx * n, sizeof(float) * outs * n,
                                 sizeof(int32_t) * outs * n,     sizeof(float) * f.ldx * n, sizeof(float) * outs * n,
                                 sizeof(float) * f.ldx * n};
    void *ref[N_OUT], *cur[N_OUT];
    /* zeroed: the gaps between dx's examples are compared too */
    for (int k = 0; k < N_OUT; k++) {
        ref[k] = calloc(1, bytes[k]), cur[k] = calloc(1, bytes[k]);
        ck_assert(ref[k] && cur[k]);
    }
    const int threads[] = {1, 2, 3};
    for (int t = 0; t < 3; t++) {
        kfac_set_threads(threads[t]);
        ck_assert_int_eq(kfac_get_threads(), threads[t]);
        void **o = t == 0 ? ref : cur;
        run_im2col(&f);
        if (t == 0)
            assert_patches(&f);
        memcpy(o[0], f.patches, bytes[0]);
        kfac_col2im(&f.g, f.dP, f.ldd, n, o[1], f.ldx);
        kfac_maxpool_forward(&pg, f.x, f.ldx, n, o[2], outs, o[3]);
        kfac_maxpool_backward(&pg, f.dP, outs, o[3], n, o[4], f.ldx);
        kfac_avgpool_forward(&pg, f.x, f.ldx, n, o[5], outs);
        kfac_avgpool_backward(&pg, f.dP, outs, n, o[6], f.ldx);
        for (int k = 0; t > 0 && k < N_OUT; k++)
            ck_assert_msg(memcmp(ref[k], cur[k], bytes[k]) == 0, "%s: other bits on %d threads than on 1",
                          out_names[k], threads[t]);
    }
    for (int k = 0; k < N_OUT; k++)
        free(ref[k]), free(cur[k]);
    conv_fixture_free(&f);
}
END_TEST

/* Each refused with INVALID_ARG, a message naming the problem, and the
 * geometry untouched; the valid ones' output sizes. */
START_TEST(test_invalid_geometries)
{
    static const struct {
        int h, w, c, kh, kw, stride, pad;
        const char *message;
    } bad_conv[] = {
        {0, 5, 1, 3, 3, 1, 0, "input 0x5x1: every size must be at least 1"},
        {5, -2, 1, 3, 3, 1, 0, "input 5x-2x1"},
        {5, 5, 0, 3, 3, 1, 0, "input 5x5x0"},
        {5, 5, 1, 0, 3, 1, 0, "kernel 0x3: every size must be at least 1"},
        {5, 5, 1, 3, -1, 1, 0, "kernel 3x-1"},
        {5, 5, 1, 3, 3, 0, 0, "stride 0: must be at least 1"},
        {5, 5, 1, 3, 3, 1, -1, "padding -1 is negative"},
        {5, 5, 1, 3, 3, 1, 3, "padding 3 not smaller than the kernel 3x3"},
        {5, 5, 1, 5, 2, 1, 2, "padding 2 not smaller than the kernel 5x2"},
        {1, 1, 1, 5, 5, 1, 1, "kernel 5x5 larger than the padded input 3x3"},
        {7, 2, 1, 3, 5, 1, 1, "kernel 3x5 larger than the padded input 9x4"},
        {65536, 65536, 1, 3, 3, 1, 0, "input 65536x65536x1: 4294967296 floats, over 2^31 - 1"},
        {1, 1, 1 << 28, 3, 3, 1, 1, "patch rows of 2415919105 floats, over 2^31 - 1"},
    };
    for (size_t i = 0; i < sizeof bad_conv / sizeof *bad_conv; i++) {
        kfac_conv_geom g, before;
        memset(&g, 0x5a, sizeof g);
        before = g;
        kfac_status st = kfac_conv_geom_init(&g, bad_conv[i].h, bad_conv[i].w, bad_conv[i].c, bad_conv[i].kh,
                                             bad_conv[i].kw, bad_conv[i].stride, bad_conv[i].pad);
        ck_assert_msg(st == KFAC_ERR_INVALID_ARG, "conv case %zu: status %d", i, (int)st);
        ck_assert_msg(strstr(kfac_last_error(), bad_conv[i].message), "conv case %zu: '%s' lacks '%s'", i,
                      kfac_last_error(), bad_conv[i].message);
        ck_assert_msg(memcmp(&g, &before, sizeof g) == 0, "conv case %zu: geometry changed", i);
    }
    ck_assert_int_eq(kfac_conv_geom_init(NULL, 5, 5, 1, 3, 3, 1, 0), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "NULL"));

    static const struct {
        int h, w, c, k, stride;
        const char *message;
    } bad_pool[] = {
        {0, 4, 1, 2, 2, "input 0x4x1: every size must be at least 1"},
        {4, 4, -1, 2, 2, "input 4x4x-1"},
        {4, 4, 1, 0, 2, "pooling window 0: must be at least 1"},
        {4, 4, 1, 2, 0, "stride 0: must be at least 1"},
        {3, 5, 1, 4, 1, "pooling window 4x4 larger than the input 3x5"},
        {5, 3, 2, 4, 4, "pooling window 4x4 larger than the input 5x3"},
        {65536, 65536, 1, 2, 2, "input 65536x65536x1: 4294967296 floats, over 2^31 - 1"},
    };
    for (size_t i = 0; i < sizeof bad_pool / sizeof *bad_pool; i++) {
        kfac_pool_geom g, before;
        memset(&g, 0x5a, sizeof g);
        before = g;
        kfac_status st =
            kfac_pool_geom_init(&g, bad_pool[i].h, bad_pool[i].w, bad_pool[i].c, bad_pool[i].k, bad_pool[i].stride);
        ck_assert_msg(st == KFAC_ERR_INVALID_ARG, "pool case %zu: status %d", i, (int)st);
        ck_assert_msg(strstr(kfac_last_error(), bad_pool[i].message), "pool case %zu: '%s' lacks '%s'", i,
                      kfac_last_error(), bad_pool[i].message);
        ck_assert_msg(memcmp(&g, &before, sizeof g) == 0, "pool case %zu: geometry changed", i);
    }
    ck_assert_int_eq(kfac_pool_geom_init(NULL, 4, 4, 1, 2, 2), KFAC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(kfac_last_error(), "NULL"));

    /* output sizes at the edges of floor division */
    static const struct {
        int h, w, kh, kw, stride, pad, oh, ow;
    } sizes[] = {
        {28, 28, 5, 5, 1, 2, 28, 28}, {7, 5, 3, 2, 2, 1, 4, 3}, {7, 5, 3, 2, 2, 0, 3, 2},
        {2, 3, 3, 3, 1, 1, 2, 3},     {1, 1, 3, 3, 1, 1, 1, 1}, {8, 9, 3, 3, 3, 2, 4, 4},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        kfac_conv_geom g;
        ck_assert_int_eq(kfac_conv_geom_init(&g, sizes[i].h, sizes[i].w, 2, sizes[i].kh, sizes[i].kw, sizes[i].stride,
                                             sizes[i].pad),
                         KFAC_OK);
        ck_assert_msg(g.oh == sizes[i].oh && g.ow == sizes[i].ow, "conv size %zu: %dx%d, want %dx%d", i, g.oh, g.ow,
                      sizes[i].oh, sizes[i].ow);
        ck_assert_str_eq(kfac_last_error(), "");
    }
    kfac_pool_geom pg;
    ck_assert_int_eq(kfac_pool_geom_init(&pg, 7, 5, 3, 3, 2), KFAC_OK);
    ck_assert_msg(pg.oh == 3 && pg.ow == 2 && pg.c == 3, "pool 7x5 k3 s2: %dx%dx%d", pg.oh, pg.ow, pg.c);
    ck_assert_int_eq(kfac_pool_geom_init(&pg, 28, 28, 1, 2, 2), KFAC_OK);
    ck_assert_msg(pg.oh == 14 && pg.ow == 14, "pool 28x28 k2 s2: %dx%d", pg.oh, pg.ow);
}
END_TEST

Suite *conv_suite(void)
{
    Suite *s = suite_create("conv");
    TCase *tc = tcase_create("conv");
    tcase_set_timeout(tc, 120); /* generous for valgrind */
    tcase_add_loop_test(tc, test_im2col_patches, 0, N_CONV);
    tcase_add_loop_test(tc, test_conv_forward, 0, N_CONV);
    tcase_add_loop_test(tc, test_conv_backward, 0, N_CONV);
    tcase_add_loop_test(tc, test_col2im_adjoint, 0, N_CONV);
    tcase_add_loop_test(tc, test_maxpool, 0, 2 * N_POOL);
    tcase_add_test(tc, test_maxpool_tie_and_nan);
    tcase_add_loop_test(tc, test_avgpool, 0, N_POOL);
    tcase_add_loop_test(tc, test_avgpool_central_differences, 0, N_POOL);
    tcase_add_loop_test(tc, test_same_bits_any_threads, 0, 2);
    tcase_add_test(tc, test_invalid_geometries);
    suite_add_tcase(s, tc);
    return s;
}
