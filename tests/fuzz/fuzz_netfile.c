/* fuzz_netfile.c - libFuzzer harness for the net-file parser
 * (kfac_netfile_parse). Whatever the text, the parser either returns a
 * spec and training parameters that validate (and a network that can be
 * built, if it is of a sane size) or fails with "fuzz.net:LINE: ..." or
 * "fuzz.net: ...". */
#include "fuzz.h"

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
    double params = 0.0;
    int prev = spec.inputs;
    for (int l = 0; l < spec.n_layers; l++) {
        params += (double)(prev + 1) * spec.layers[l].units;
        prev = spec.layers[l].units;
    }
    if (params <= 1e6 && spec.inputs <= 100000) {
        kfac_net *net = NULL;
        st = kfac_net_new(&spec, 2, &net);
        FUZZ_REQUIRE(st == KFAC_OK, "a validated spec was refused: %s", kfac_last_error());
        kfac_net_free(net);
    }
    return 0;
}
