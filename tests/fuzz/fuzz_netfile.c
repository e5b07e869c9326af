/* fuzz_netfile.c - libFuzzer harness for the net-file parser
 * (kfac_netfile_parse). Whatever the text, the parser either returns a
 * spec and training parameters that validate (and a network that can be
 * built, if it is of a sane size) or fails with "fuzz.net:LINE: ..." or
 * "fuzz.net: ...". */
#include <math.h>

#include "fuzz.h"

/* About the floats a network of batch 2 allocates (parameters, inputs,
 * abar and g per layer), following the geometry of a spec that validated:
 * the library's rules (src/conv.c, layer_conv.c, layer_pool.c) written
 * again, and generously, since only the order of magnitude matters. */
static double net_floats(const kfac_net_spec *spec)
{
    double total = 0.0, h = 1, w = 1, c = spec->inputs;
    for (int l = 0; l < spec->n_layers; l++) {
        const kfac_layer_spec *ly = &spec->layers[l];
        double in = h * w * c, d_in = in + 1, positions = 1;
        if (ly->kind == KFAC_LAYER_DENSE) {
            h = w = 1, c = ly->units;
        } else {
            if (l == 0) {
                if (spec->input_h)
                    h = spec->input_h, w = spec->input_w, c = spec->input_c;
                else
                    h = w = floor(sqrt((double)spec->inputs) + 0.5), c = 1;
                in = h * w * c;
            }
            int conv = ly->kind == KFAC_LAYER_CONV;
            int stride = ly->stride ? ly->stride : conv ? 1 : ly->kernel_h;
            int pad = !conv ? 0 : ly->pad == KFAC_PAD_SAME ? (ly->kernel_h - 1) / 2 : ly->pad;
            h = floor((h + 2 * pad - ly->kernel_h) / stride) + 1;
            w = floor((w + 2 * pad - ly->kernel_w) / stride) + 1;
            d_in = conv ? (double)ly->kernel_h * ly->kernel_w * c + 1 : 0;
            positions = h * w;
            if (conv)
                c = ly->units;
            total += conv ? d_in * c : 0; /* the kernels */
        }
        if (ly->kind == KFAC_LAYER_DENSE)
            total += d_in * c;
        total += 2 * (in + positions * d_in + 2 * h * w * c);
    }
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    kfac_net_spec spec;
    kfac_train_params train;
    kfac_status st = kfac_netfile_parse(text, "fuzz.net", &spec, &train);
    free(text);
    if (st != KFAC_OK) {
        const char *msg = kfac_last_error();
        FUZZ_REQUIRE(st == KFAC_ERR_PARSE || st == KFAC_ERR_INVALID_ARG, "status %d (%s)", (int)st, msg);
        FUZZ_REQUIRE(strncmp(msg, "fuzz.net:", 9) == 0, "message \"%s\" does not start with the file name", msg);
        return 0;
    }
    FUZZ_REQUIRE(kfac_net_spec_validate(&spec) == KFAC_OK, "parsed spec does not validate: %s", kfac_last_error());
    FUZZ_REQUIRE(kfac_train_params_validate(&train) == KFAC_OK, "parsed training parameters do not validate: %s",
                 kfac_last_error());
    /* build it when small: the spec must be one the network accepts */
    if (net_floats(&spec) <= 2e7) {
        kfac_net *net = NULL;
        st = kfac_net_new(&spec, 2, &net);
        FUZZ_REQUIRE(st == KFAC_OK, "a validated spec was refused: %s", kfac_last_error());
        kfac_net_free(net);
    }
    return 0;
}
