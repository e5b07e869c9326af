/* init.c - weight initialisations (Glorot, He, DeepOBS truncated normal,
 * Martens' sparse). Serial draws from one generator: a seed fixes them. */
#include <math.h>
#include <string.h>

#include "common.h"
#include "net.h"

static const char *const init_names[KFAC_INIT_COUNT] = {
    [KFAC_INIT_GLOROT] = "glorot",
    [KFAC_INIT_HE] = "he",
    [KFAC_INIT_TRUNC_NORMAL] = "trunc_normal",
    [KFAC_INIT_SPARSE] = "sparse",
};

KFAC_NAMED_ENUM(kfac_init, kfac_init, init_names[k], KFAC_INIT_COUNT, "init")

/* Fill one layer's weights W (rows x (fan_in+1), bias last, left zero);
 * fan_out: the outputs one input reaches (a convolution's rows times its
 * window, as PyTorch and Glorot count them). */
static void init_layer(const kfac_net_spec *spec, float *w, int rows, int fan_in, int fan_out, kfac_rng *rng)
{
    int cols = fan_in + 1;
    memset(w, 0, sizeof *w * (size_t)rows * (size_t)cols);
    switch (spec->init) {
    case KFAC_INIT_GLOROT: {
        double r = sqrt(6.0 / (fan_in + fan_out));
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < fan_in; j++)
                w[(size_t)i * cols + j] = (float)(r * (2.0 * kfac_rng_uniform(rng) - 1.0));
        break;
    }
    case KFAC_INIT_HE: {
        double s = sqrt(2.0 / fan_in);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < fan_in; j++)
                w[(size_t)i * cols + j] = (float)(s * kfac_rng_normal(rng));
        break;
    }
    case KFAC_INIT_TRUNC_NORMAL:
        /* redraw beyond 2 sigma, as tf.truncated_normal (DeepOBS) does */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < fan_in; j++) {
                double x;
                do
                    x = kfac_rng_normal(rng);
                while (fabs(x) > 2.0);
                w[(size_t)i * cols + j] = (float)(spec->init_sigma * x);
            }
        break;
    case KFAC_INIT_SPARSE: {
        /* Martens 2010: each unit gets sparse_count N(0,1) incoming weights
         * at distinct random inputs; the scale stays O(1) whatever fan_in */
        int k = KFAC_MIN(spec->sparse_count, fan_in);
        for (int i = 0; i < rows; i++) {
            float *row = w + (size_t)i * cols;
            for (int placed = 0; placed < k;) {
                uint32_t j = kfac_rng_below(rng, (uint32_t)fan_in);
                if (row[j] != 0.0f)
                    continue;
                float x = (float)kfac_rng_normal(rng);
                if (x == 0.0f)
                    continue;
                row[j] = x;
                placed++;
            }
        }
        break;
    }
    default:
        break;
    }
}

kfac_status kfac_net_init_weights(kfac_net *net, kfac_rng *rng)
{
    if (!net || !rng)
        return kfac_fail(KFAC_ERR_INVALID_ARG, "kfac_net_init_weights: NULL argument");
    for (int l = 0; l < net->n_layers; l++) {
        const kfac_layer *ly = &net->layers[l];
        if (!ly->type->has_weights)
            continue;
        int window = ly->type == &kfac_layer_conv ? ly->spec.kernel_h * ly->spec.kernel_w : 1;
        init_layer(&net->spec, net->theta + ly->offset, ly->d_out, ly->d_in - 1, ly->d_out * window, rng);
    }
    return KFAC_OK;
}
