/* activation.c - relu, tanh, sigmoid, linear and their derivatives. The
 * derivative is taken from the output, so forward need not keep s. */
#include <math.h>
#include <string.h>

#include "activation.h"
#include "common.h"

static void linear_fwd(float *a, int rows, int cols, int ld) { (void)a, (void)rows, (void)cols, (void)ld; }
static void linear_bwd(float *g, int ldg, const float *a, int lda, int rows, int cols)
{
    (void)g, (void)ldg, (void)a, (void)lda, (void)rows, (void)cols;
}

static void relu_fwd(float *a, int rows, int cols, int ld)
{
#pragma omp parallel for schedule(static) if ((long)rows * cols > KFAC_PAR_STREAM)
    for (int i = 0; i < rows; i++) {
        float *r = a + (size_t)i * ld;
        for (int j = 0; j < cols; j++)
            r[j] = r[j] > 0.0f ? r[j] : 0.0f;
    }
}
static void relu_bwd(float *g, int ldg, const float *a, int lda, int rows, int cols)
{
#pragma omp parallel for schedule(static) if ((long)rows * cols > KFAC_PAR_STREAM)
    for (int i = 0; i < rows; i++) {
        float *gr = g + (size_t)i * ldg;
        const float *ar = a + (size_t)i * lda;
        for (int j = 0; j < cols; j++)
            gr[j] = ar[j] > 0.0f ? gr[j] : 0.0f;
    }
}

static void tanh_fwd(float *a, int rows, int cols, int ld)
{
#pragma omp parallel for schedule(static) if ((long)rows * cols > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < rows; i++) {
        float *r = a + (size_t)i * ld;
        for (int j = 0; j < cols; j++)
            r[j] = tanhf(r[j]);
    }
}
static void tanh_bwd(float *g, int ldg, const float *a, int lda, int rows, int cols)
{
#pragma omp parallel for schedule(static) if ((long)rows * cols > KFAC_PAR_STREAM)
    for (int i = 0; i < rows; i++) {
        float *gr = g + (size_t)i * ldg;
        const float *ar = a + (size_t)i * lda;
        for (int j = 0; j < cols; j++)
            gr[j] *= 1.0f - ar[j] * ar[j]; /* tanh' = 1 - tanh^2 */
    }
}

/* 1/(1+e^-x) written so that neither branch overflows */
static inline float sigmoidf(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}
static void sigmoid_fwd(float *a, int rows, int cols, int ld)
{
#pragma omp parallel for schedule(static) if ((long)rows * cols > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < rows; i++) {
        float *r = a + (size_t)i * ld;
        for (int j = 0; j < cols; j++)
            r[j] = sigmoidf(r[j]);
    }
}
static void sigmoid_bwd(float *g, int ldg, const float *a, int lda, int rows, int cols)
{
#pragma omp parallel for schedule(static) if ((long)rows * cols > KFAC_PAR_STREAM)
    for (int i = 0; i < rows; i++) {
        float *gr = g + (size_t)i * ldg;
        const float *ar = a + (size_t)i * lda;
        for (int j = 0; j < cols; j++)
            gr[j] *= ar[j] * (1.0f - ar[j]); /* s' = s (1 - s) */
    }
}

const kfac_activation_type kfac_activation_types[KFAC_ACT_COUNT] = {
    [KFAC_ACT_LINEAR] = {"linear", linear_fwd, linear_bwd},
    [KFAC_ACT_RELU] = {"relu", relu_fwd, relu_bwd},
    [KFAC_ACT_TANH] = {"tanh", tanh_fwd, tanh_bwd},
    [KFAC_ACT_SIGMOID] = {"sigmoid", sigmoid_fwd, sigmoid_bwd},
};

KFAC_NAMED_ENUM(kfac_activation, kfac_activation, kfac_activation_types[k].name, KFAC_ACT_COUNT, "activation")
