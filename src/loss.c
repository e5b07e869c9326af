/* loss.c - softmax cross-entropy, sigmoid (Bernoulli) cross-entropy and
 * squared error: values, gradients, metrics, sampling from the model,
 * output Hessian-vector products and KL divergences between the predictive
 * distributions of two outputs. All stable for large |z|. */
#include <math.h>
#include <string.h>

#include "common.h"
#include "loss.h"


/* The generator of global row `row` of a draw: splitmix64's finaliser of
 * base + (row + 1) golden-ratio steps, so nearby rows and bases give
 * unrelated streams. */
static kfac_rng row_rng(uint64_t base, long row)
{
    uint64_t z = base + (uint64_t)(row + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    kfac_rng r;
    kfac_rng_seed(&r, z ^ (z >> 31));
    return r;
}

/* p <- softmax(z) for one row; returns log-sum-exp of z */
static double softmax_row(const float *z, float *p, int d)
{
    float m = z[0];
    for (int j = 1; j < d; j++)
        m = z[j] > m ? z[j] : m;
    double s = 0.0;
    for (int j = 0; j < d; j++) {
        float e = expf(z[j] - m);
        if (p)
            p[j] = e;
        s += e;
    }
    if (p)
        for (int j = 0; j < d; j++)
            p[j] = (float)(p[j] / s);
    return m + log(s);
}

static int argmax(const float *v, int d)
{
    int k = 0;
    for (int j = 1; j < d; j++)
        if (v[j] > v[k])
            k = j;
    return k;
}

/* ---- softmax cross-entropy: l = sum_j y_j (lse(z) - z_j) */
static double softmax_value(const float *z, const float *y, int n, int d)
{
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        const float *zr = z + (size_t)i * d, *yr = y + (size_t)i * d;
        double lse = softmax_row(zr, NULL, d), l = 0.0;
        for (int j = 0; j < d; j++)
            l += (double)yr[j] * (lse - zr[j]);
        total += l;
    }
    return total;
}
static void softmax_grad(const float *z, const float *y, float *dz, int n, int d)
{
#pragma omp parallel for schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        const float *zr = z + (size_t)i * d, *yr = y + (size_t)i * d;
        float *g = dz + (size_t)i * d;
        float ysum = 0.0f;
        for (int j = 0; j < d; j++)
            ysum += yr[j];
        softmax_row(zr, g, d);
        for (int j = 0; j < d; j++)
            g[j] = g[j] * ysum - yr[j]; /* p sum(y) - y: p - y for a distribution */
    }
}
static double argmax_metric(const float *z, const float *y, int n, int d)
{
    double correct = 0.0;
    for (int i = 0; i < n; i++)
        correct += argmax(z + (size_t)i * d, d) == argmax(y + (size_t)i * d, d);
    return correct;
}
static void softmax_sample(const float *z, float *y, int n, int d, uint64_t base, long row0)
{
#pragma omp parallel for schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        float *yr = y + (size_t)i * d;
        kfac_rng rng = row_rng(base, row0 + i);
        softmax_row(z + (size_t)i * d, yr, d);
        double u = kfac_rng_uniform(&rng), c = 0.0;
        int k = d - 1; /* rounding leaves the last class if u passes the sum */
        for (int j = 0; j < d; j++) {
            c += yr[j];
            if (u < c) {
                k = j;
                break;
            }
        }
        memset(yr, 0, sizeof *yr * (size_t)d);
        yr[k] = 1.0f;
    }
}
static void softmax_hess_vec(const float *z, const float *v, float *hv, int n, int d)
{
#pragma omp parallel for schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        const float *vr = v + (size_t)i * d;
        float *h = hv + (size_t)i * d; /* holds p until overwritten */
        softmax_row(z + (size_t)i * d, h, d);
        double pv = 0.0;
        for (int j = 0; j < d; j++)
            pv += (double)h[j] * vr[j];
        for (int j = 0; j < d; j++)
            h[j] = (float)(h[j] * (vr[j] - pv)); /* (diag(p) - p p^T) v */
    }
}

/* log-sum-exp of one row, in double */
static double lse_row(const float *z, int d)
{
    double m = z[0], s = 0.0;
    for (int j = 1; j < d; j++)
        m = z[j] > m ? z[j] : m;
    for (int j = 0; j < d; j++)
        s += exp((double)z[j] - m);
    return m + log(s);
}
/* KL(p || q) = sum_j p_j (log p_j - log q_j), log p = zp - lse(zp): written
 * as lse(zq) - lse(zp) - p^T (zq - zp), the Bregman divergence of lse, so
 * no log of an underflowed p is ever taken */
static double softmax_kl(const float *zp, const float *zq, int n, int d)
{
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        const float *pr = zp + (size_t)i * d, *qr = zq + (size_t)i * d;
        double lp = lse_row(pr, d), lq = lse_row(qr, d), dot = 0.0;
        for (int j = 0; j < d; j++)
            dot += exp((double)pr[j] - lp) * ((double)qr[j] - pr[j]);
        double kl = lq - lp - dot;
        total += kl > 0.0 ? kl : 0.0; /* >= 0 exactly; rounding may dip below */
    }
    return total;
}

/* ---- sigmoid cross-entropy: l = sum_j softplus(z_j) - y_j z_j */
static inline float sigmoidf(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}
static double sigmoid_value(const float *z, const float *y, int n, int d)
{
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        const float *zr = z + (size_t)i * d, *yr = y + (size_t)i * d;
        double l = 0.0;
        for (int j = 0; j < d; j++) {
            float x = zr[j];
            double softplus = (x > 0.0f ? x : 0.0f) + log1p(exp(-fabs((double)x)));
            l += softplus - (double)yr[j] * x;
        }
        total += l;
    }
    return total;
}
static void sigmoid_grad(const float *z, const float *y, float *dz, int n, int d)
{
    long nd = (long)n * d;
#pragma omp parallel for schedule(static) if (nd > KFAC_PAR_TRANSCENDENTAL)
    for (long k = 0; k < nd; k++)
        dz[k] = sigmoidf(z[k]) - y[k];
}
static double sigmoid_metric(const float *z, const float *y, int n, int d)
{
    long nd = (long)n * d;
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (nd > KFAC_PAR_TRANSCENDENTAL)
    for (long k = 0; k < nd; k++) {
        double e = (double)sigmoidf(z[k]) - y[k];
        total += e * e;
    }
    return total;
}
static void sigmoid_sample(const float *z, float *y, int n, int d, uint64_t base, long row0)
{
#pragma omp parallel for schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        kfac_rng rng = row_rng(base, row0 + i);
        for (size_t k = (size_t)i * d; k < (size_t)(i + 1) * d; k++)
            y[k] = kfac_rng_uniform(&rng) < sigmoidf(z[k]) ? 1.0f : 0.0f;
    }
}
static void sigmoid_hess_vec(const float *z, const float *v, float *hv, int n, int d)
{
    long nd = (long)n * d;
#pragma omp parallel for schedule(static) if (nd > KFAC_PAR_TRANSCENDENTAL)
    for (long k = 0; k < nd; k++) {
        float p = sigmoidf(z[k]);
        hv[k] = p * (1.0f - p) * v[k];
    }
}

static inline double softplus(double x) { return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x))); }
/* Bernoulli KL per unit, p = s(a), q = s(b): log p = -softplus(-a) and
 * log(1-p) = -softplus(a) reduce it to softplus(b) - softplus(a) - p (b - a),
 * the Bregman divergence of softplus: finite for any |a|, |b| */
static double sigmoid_kl(const float *zp, const float *zq, int n, int d)
{
    long nd = (long)n * d;
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (nd > KFAC_PAR_TRANSCENDENTAL)
    for (long k = 0; k < nd; k++) {
        double a = zp[k], b = zq[k];
        double p = a >= 0.0 ? 1.0 / (1.0 + exp(-a)) : exp(a) / (1.0 + exp(a));
        double kl = softplus(b) - softplus(a) - p * (b - a);
        total += kl > 0.0 ? kl : 0.0;
    }
    return total;
}

/* ---- squared error: l = 1/2 |z - y|^2 */
static double squared_value(const float *z, const float *y, int n, int d)
{
    long nd = (long)n * d;
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (nd > KFAC_PAR_TRANSCENDENTAL)
    for (long k = 0; k < nd; k++) {
        double e = (double)z[k] - y[k];
        total += 0.5 * e * e;
    }
    return total;
}
static void squared_grad(const float *z, const float *y, float *dz, int n, int d)
{
    long nd = (long)n * d;
#pragma omp parallel for schedule(static) if (nd > KFAC_PAR_TRANSCENDENTAL)
    for (long k = 0; k < nd; k++)
        dz[k] = z[k] - y[k];
}
static double squared_metric(const float *z, const float *y, int n, int d)
{
    return 2.0 * squared_value(z, y, n, d);
}
static void squared_sample(const float *z, float *y, int n, int d, uint64_t base, long row0)
{
#pragma omp parallel for schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++) {
        kfac_rng rng = row_rng(base, row0 + i);
        for (size_t k = (size_t)i * d; k < (size_t)(i + 1) * d; k++)
            y[k] = z[k] + (float)kfac_rng_normal(&rng);
    }
}
static void squared_hess_vec(const float *z, const float *v, float *hv, int n, int d)
{
    (void)z;
    memcpy(hv, v, sizeof *hv * (size_t)n * (size_t)d);
}

/* unit-variance Gaussians: KL = 1/2 |zp - zq|^2 */
static double squared_kl(const float *zp, const float *zq, int n, int d)
{
    return squared_value(zp, zq, n, d);
}

static void softmax_mean(const float *z, float *p, int n, int d)
{
#pragma omp parallel for schedule(static) if ((long)n * d > KFAC_PAR_TRANSCENDENTAL)
    for (int i = 0; i < n; i++)
        softmax_row(z + (size_t)i * d, p + (size_t)i * d, d);
}
static void sigmoid_mean(const float *z, float *p, int n, int d)
{
    long nd = (long)n * d;
#pragma omp parallel for schedule(static) if (nd > KFAC_PAR_TRANSCENDENTAL)
    for (long k = 0; k < nd; k++)
        p[k] = sigmoidf(z[k]);
}
static void squared_mean(const float *z, float *p, int n, int d)
{
    memcpy(p, z, sizeof *p * (size_t)n * (size_t)d);
}

const kfac_loss_type kfac_loss_types[KFAC_LOSS_COUNT] = {
    [KFAC_LOSS_SOFTMAX_XENT] = {"softmax_xent", softmax_value, softmax_grad, argmax_metric,
                                softmax_sample, softmax_hess_vec, softmax_kl, softmax_mean},
    [KFAC_LOSS_SIGMOID_XENT] = {"sigmoid_xent", sigmoid_value, sigmoid_grad, sigmoid_metric,
                                sigmoid_sample, sigmoid_hess_vec, sigmoid_kl, sigmoid_mean},
    [KFAC_LOSS_SQUARED] = {"squared", squared_value, squared_grad, squared_metric, squared_sample,
                           squared_hess_vec, squared_kl, squared_mean},
};

kfac_status kfac_sample_targets(kfac_loss loss, const float *z, float *y, int n, int d, kfac_rng *rng)
{
    kfac_clear_error();
    if (!z || !y || !rng)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_sample_targets: NULL argument");
    if ((unsigned)loss >= KFAC_LOSS_COUNT)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_sample_targets: unknown loss %d", (int)loss);
    if (n < 1 || d < 1)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_sample_targets: %d x %d targets", n, d);
    /* one number from rng seeds every row's own generator (loss.h) */
    kfac_loss_types[loss].sample(z, y, n, d, kfac_rng_next(rng), 0);
    return KFAC_OK;
}

KFAC_NAMED_ENUM(kfac_loss, kfac_loss, kfac_loss_types[k].name, KFAC_LOSS_COUNT, "loss")
