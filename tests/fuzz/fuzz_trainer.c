/* fuzz_trainer.c - libFuzzer harness for what a caller hands the trainer:
 * a kfac_dataset built by hand (a public struct: any counts, shapes,
 * classes and labels) and a data order (the permutation a checkpoint
 * carries). An input is
 *
 *   [8 bytes: the set-up][4 bytes: a CNN's geometry, if set-up byte 1
 *   says so][n bytes: labels][n x features bytes: pixels]
 *   [the rest: up to N_ORDER u32 LE, a data order]
 *
 * Set-up bytes: 0 flags (bits 0-1 loss, 2-3 optimizer, 4 inputs one more
 * than the features, 5 the net pools by 2, 6 a validation split, 7 no
 * labels), 1 examples (1..32: bits 0-4; bit 5 a CNN), 2 rows and 3 cols
 * (signed), 4 features (0: rows x cols where that is 1..256; else the
 * byte, whatever rows and cols say), 5 classes (signed), 6 batch, 7 seed.
 * The buffers hold exactly what the counts say, so a read the counts do
 * not allow is a sanitizer report. A pixel byte 0xFF is NaN, 0xFE
 * infinity.
 *
 * A CNN (docs/algorithm.md §9) is a convolution, then pooling or not, a
 * second convolution or not, then the two dense layers of the other
 * nets; its geometry bytes: 0 channels (bits 0-2, 1..8) and kernel height
 * (bits 3-4, 1..4), 1 kernel width (bits 0-1, 1..4), stride (bits 2-3, 0
 * the default) and padding (bits 4-5: 0, 1, 2 or same), 2 pooling (bits
 * 0-1: none, max, average, max), its window (bits 2-3, 1..4) and stride
 * (bits 4-5, 0 the default), 3 the input shape given (bit 0: rows x cols x
 * 1 of the images the net reads; else none, a square image), a second 1x1
 * convolution (bit 1), the convolution's activation (bits 2-3), the shape
 * one column too wide (bit 4). Any geometry: an impossible one must be
 * refused, a possible one trained.
 *
 * Invariants: kfac_trainer_new either succeeds, and then the dataset was
 * consistent (labels below the classes, rows x cols the features, the net
 * fits) and an epoch and kfac_evaluate return a status, or fails with a
 * message and *out NULL. The data order is spliced into a valid
 * checkpoint of a trainer of N_ORDER examples (crc recomputed): a load
 * succeeds only for a permutation of [0, N_ORDER), and then trains; a
 * failure names the file and leaves the trainer as it was.
 *
 * With KFAC_FUZZ_SEEDS=DIR in the environment it writes seeds there (good
 * set-ups of each loss and optimizer, and the checkpoint's own order) and
 * exits. */
#include <math.h>

#include <zlib.h>

#include "fuzz.h"

#define MAX_OF(a, b) ((a) > (b) ? (a) : (b))

enum { N_ORDER = 16, ORDER_IN = 6, ORDER_OUT = 3, MAX_N = 32, MAX_F = 256 };

static fuzz_file input;
static kfac_trainer *order_trainer;
static kfac_dataset order_data;
static uint8_t *good_ckpt; /* order_trainer's checkpoint, its order at the end */
static size_t good_len;
static float *theta0;

static int is_permutation(const uint32_t *v, size_t n)
{
    uint8_t seen[N_ORDER] = {0};
    for (size_t i = 0; i < n; i++) {
        if (v[i] >= n || seen[v[i]])
            return 0;
        seen[v[i]] = 1;
    }
    return 1;
}

/* The order in a checkpoint's bytes: the payload's last 4 N_ORDER bytes,
 * before the crc32. */
static void order_of(const uint8_t *ck, size_t len, uint32_t *v)
{
    const uint8_t *p = ck + len - 4 - 4 * N_ORDER;
    for (int i = 0; i < N_ORDER; i++, p += 4)
        v[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void seed_file(const char *dir, const char *name, const uint8_t *b, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FUZZ_REQUIRE(f && fwrite(b, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

static void write_seeds(const char *dir)
{
    /* 12 examples of 2x3, 3 classes: each loss and optimizer; then one
     * with the checkpoint's own order after it */
    for (int loss = 0; loss < 3; loss++)
        for (int opt = 0; opt < 4; opt++) {
            uint8_t b[8 + 12 + 12 * 6 + 4 * N_ORDER];
            size_t n = 8 + 12 + 12 * 6;
            b[0] = (uint8_t)(loss | opt << 2), b[1] = 11, b[2] = 2, b[3] = 3, b[4] = 0, b[5] = 3, b[6] = 4,
            b[7] = (uint8_t)(loss * 4 + opt);
            for (int i = 0; i < 12; i++)
                b[8 + i] = (uint8_t)(i % 3);
            for (int i = 0; i < 12 * 6; i++)
                b[20 + i] = (uint8_t)(i * 37 % 250);
            if (loss == 0 && opt == 2) { /* the order of the good checkpoint */
                uint32_t v[N_ORDER];
                order_of(good_ckpt, good_len, v);
                for (int i = 0; i < N_ORDER; i++)
                    for (int k = 0; k < 4; k++)
                        b[n++] = (uint8_t)(v[i] >> (8 * k));
            }
            char name[64];
            snprintf(name, sizeof name, "setup-loss%d-opt%d", loss, opt);
            seed_file(dir, name, b, n);
        }
    /* CNNs on 12 images of 4x4: a 3x3 'same' convolution of 3 channels and
     * 2x2 max pooling, K-FAC (KL clip); a 2x3 convolution of 2, stride 2,
     * pad 1, average pooling of 1 with stride 1, and the second
     * convolution, under the quadratic rule; no shape given, a 2x2
     * convolution, the autoencoder's loss, SGD */
    static const struct {
        const char *name;
        uint8_t flags, geo[4];
    } cnns[] = {
        {"setup-cnn-kfac", 2 << 2, {2 | 2 << 3, 2 | 3 << 4, 1 | 1 << 2, 1 | 2 << 2}},
        {"setup-cnn-quadratic", 3 << 2, {1 | 1 << 3, 2 | 2 << 2 | 1 << 4, 2 | 0 << 2 | 1 << 4, 1 | 2 | 1 << 2}},
        {"setup-cnn-autoencoder-sgd", 1, {0 | 1 << 3, 1, 0, 0}},
    };
    for (size_t c = 0; c < sizeof cnns / sizeof *cnns; c++) {
        uint8_t b[8 + 4 + 12 + 12 * 16];
        size_t n = 0;
        b[n++] = cnns[c].flags, b[n++] = 11 | 0x20, b[n++] = 4, b[n++] = 4, b[n++] = 0, b[n++] = 3, b[n++] = 4,
        b[n++] = (uint8_t)(20 + c);
        for (int i = 0; i < 4; i++)
            b[n++] = cnns[c].geo[i];
        for (int i = 0; i < 12; i++)
            b[n++] = (uint8_t)(i % 3);
        for (int i = 0; i < 12 * 16; i++)
            b[n++] = (uint8_t)(i * 37 % 250);
        seed_file(dir, cnns[c].name, b, n);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    kfac_set_threads(1);
    fuzz_file_open(&input, "trainer-checkpoint");
    /* the trainer whose checkpoint takes the fuzzed orders */
    kfac_net_spec spec;
    kfac_net_spec_init(&spec);
    spec.inputs = ORDER_IN;
    spec.n_layers = 2;
    spec.layers[0] = (kfac_layer_spec){5, KFAC_ACT_TANH};
    spec.layers[1] = (kfac_layer_spec){ORDER_OUT, KFAC_ACT_LINEAR};
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.batch = 5, p.seed = 4;
    order_data = (kfac_dataset){.n = N_ORDER, .features = ORDER_IN, .rows = 2, .cols = 3, .classes = ORDER_OUT};
    order_data.x = malloc(sizeof(float) * N_ORDER * ORDER_IN);
    order_data.labels = malloc(N_ORDER);
    for (int i = 0; i < N_ORDER * ORDER_IN; i++)
        order_data.x[i] = (float)(i % 7) / 7.0f;
    for (int i = 0; i < N_ORDER; i++)
        order_data.labels[i] = (uint8_t)(i % ORDER_OUT);
    FUZZ_REQUIRE(kfac_trainer_new(&spec, &p, &order_data, &order_trainer) == KFAC_OK, "%s", kfac_last_error());
    FUZZ_REQUIRE(kfac_trainer_epoch(order_trainer, NULL, NULL, NULL) == KFAC_OK, "%s", kfac_last_error());
    char dir[] = "/tmp/kfac-fuzz-trainer.XXXXXX", path[64];
    FUZZ_REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/good.ckpt", dir);
    FUZZ_REQUIRE(kfac_trainer_save(order_trainer, path) == KFAC_OK, "%s", kfac_last_error());
    FILE *f = fopen(path, "rb");
    FUZZ_REQUIRE(f != NULL, "cannot read %s", path);
    good_ckpt = malloc(1 << 16);
    good_len = fread(good_ckpt, 1, 1 << 16, f);
    fclose(f);
    unlink(path);
    rmdir(dir);
    /* the order really is where order_of looks (version 1: last) */
    uint32_t v[N_ORDER];
    FUZZ_REQUIRE(good_len > 4 + 4 * N_ORDER, "checkpoint of %zu bytes", good_len);
    order_of(good_ckpt, good_len, v);
    FUZZ_REQUIRE(is_permutation(v, N_ORDER), "the checkpoint's last %d entries are not its order", N_ORDER);
    kfac_net *net = kfac_trainer_net(order_trainer);
    theta0 = malloc(sizeof(float) * kfac_net_n_params(net));
    memcpy(theta0, kfac_net_params(net), sizeof(float) * kfac_net_n_params(net));
    const char *seeds = getenv("KFAC_FUZZ_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    return 0;
}

/* Whether the trainer may take d for a net of `spec` (the library's own
 * rules, written again): then it must. */
static int consistent(const kfac_dataset *d, const kfac_net_spec *spec)
{
    if (d->n < 1 || d->rows < 1 || d->cols < 1 || (long)d->rows * d->cols != d->features)
        return 0;
    int outputs = spec->layers[spec->n_layers - 1].units;
    if (spec->loss == KFAC_LOSS_SOFTMAX_XENT) {
        if (!d->labels || d->classes != outputs)
            return 0;
        for (int i = 0; i < d->n; i++)
            if (d->labels[i] >= outputs)
                return 0;
    }
    return 1;
}

/* The CNN's spatial layers from its 4 geometry bytes (the comment at the
 * top), on images of h x w the net reads. */
static void cnn_layers(kfac_net_spec *spec, const uint8_t *g, int h, int w)
{
    static const int pads[4] = {0, 1, 2, KFAC_PAD_SAME};
    static const kfac_layer_kind pools[4] = {KFAC_LAYER_DENSE, KFAC_LAYER_MAXPOOL, KFAC_LAYER_AVGPOOL,
                                             KFAC_LAYER_MAXPOOL};
    kfac_layer_spec *ly = &spec->layers[spec->n_layers++];
    *ly = (kfac_layer_spec){.units = 1 + (g[0] & 7),
                            .activation = (kfac_activation)((g[3] >> 2) & 3),
                            .kind = KFAC_LAYER_CONV,
                            .kernel_h = 1 + ((g[0] >> 3) & 3),
                            .kernel_w = 1 + (g[1] & 3),
                            .stride = (g[1] >> 2) & 3,
                            .pad = pads[(g[1] >> 4) & 3]};
    if (g[2] & 3) {
        int k = 1 + ((g[2] >> 2) & 3);
        spec->layers[spec->n_layers++] = (kfac_layer_spec){.activation = KFAC_ACT_LINEAR,
                                                           .kind = pools[g[2] & 3],
                                                           .kernel_h = k,
                                                           .kernel_w = k,
                                                           .stride = (g[2] >> 4) & 3};
    }
    if (g[3] & 2)
        spec->layers[spec->n_layers++] =
            (kfac_layer_spec){3, KFAC_ACT_RELU, KFAC_LAYER_CONV, .kernel_h = 1, .kernel_w = 1};
    if (g[3] & 1) {
        spec->input_h = h;
        spec->input_w = w + !!(g[3] & 0x10);
        spec->input_c = 1;
    }
}

static void try_dataset(const uint8_t *b, size_t size, size_t *used)
{
    if (size < 8)
        return;
    int flags = b[0], n = 1 + b[1] % MAX_N, rows = (int8_t)b[2], cols = (int8_t)b[3], cnn = b[1] & 0x20;
    int features = b[4] ? b[4] : (rows >= 1 && cols >= 1 && rows * cols <= MAX_F ? rows * cols : 1);
    int classes = (int8_t)b[5], batch = 1 + b[6] % (n + 2);
    kfac_loss loss = (kfac_loss)((flags & 3) % 3);
    int opt = (flags >> 2) & 3;
    *used = 8;
    uint8_t geo[4] = {0};
    if (cnn)
        for (int i = 0; i < 4; i++)
            geo[i] = *used < size ? b[(*used)++] : 0;

    kfac_dataset d = {.n = n, .features = features, .rows = rows, .cols = cols, .classes = classes};
    d.x = malloc(sizeof(float) * (size_t)n * (size_t)features);
    if (!(flags & 0x80)) {
        d.labels = malloc((size_t)n);
        for (int i = 0; i < n; i++)
            d.labels[i] = *used < size ? b[(*used)++] : (uint8_t)i;
    }
    for (size_t i = 0; i < (size_t)n * (size_t)features; i++) {
        uint8_t v = *used < size ? b[(*used)++] : (uint8_t)(i * 31);
        d.x[i] = v == 0xFF ? NAN : v == 0xFE ? INFINITY : (float)(v - 128) / 64.0f;
    }

    kfac_net_spec spec;
    kfac_net_spec_init(&spec);
    spec.loss = loss;
    spec.inputs = MAX_OF(features, 1) + !!(flags & 0x10);
    if (flags & 0x20) { /* the net pools by 2: its inputs those of the pooled images */
        spec.input_pool = 2;
        if (rows >= 2 && cols >= 2)
            spec.inputs = (rows / 2) * (cols / 2);
    }
    int outputs = loss == KFAC_LOSS_SOFTMAX_XENT ? (classes >= 1 && classes <= 16 ? classes : 3) : spec.inputs;
    if (cnn)
        cnn_layers(&spec, geo, flags & 0x20 ? rows / 2 : rows, flags & 0x20 ? cols / 2 : cols);
    spec.layers[spec.n_layers++] = (kfac_layer_spec){4, KFAC_ACT_TANH};
    spec.layers[spec.n_layers++] = (kfac_layer_spec){outputs, KFAC_ACT_LINEAR};
    kfac_train_params p;
    kfac_train_params_init(&p);
    p.batch = batch, p.seed = b[7];
    p.optimizer = opt == 0 ? KFAC_OPT_SGD : opt == 1 ? KFAC_OPT_ADAM : KFAC_OPT_KFAC;
    if (opt == 3) {
        p.kfac.rule = KFAC_RULE_QUADRATIC;
        p.kfac.damping = 1.0f;
    }
    p.kfac.cov_every = p.kfac.inv_every = 1;
    if (flags & 0x40)
        p.val_fraction = 0.25f;

    kfac_trainer *t = (kfac_trainer *)&t;
    kfac_status st = kfac_trainer_new(&spec, &p, &d, &t);
    if (st != KFAC_OK) {
        FUZZ_REQUIRE(t == NULL && kfac_last_error()[0], "failed (%d) without a message or with *out set", (int)st);
    } else {
        FUZZ_REQUIRE(consistent(&d, &spec), "a trainer of an inconsistent dataset");
        st = kfac_trainer_epoch(t, NULL, NULL, NULL);
        FUZZ_REQUIRE(st == KFAC_OK || kfac_last_error()[0], "epoch status %d without a message", (int)st);
        double l, m;
        st = kfac_evaluate(kfac_trainer_net(t), &d, &l, &m);
        FUZZ_REQUIRE(st == KFAC_OK || kfac_last_error()[0], "evaluate status %d without a message", (int)st);
        kfac_trainer_free(t);
    }
    if (rows >= 1 && cols >= 1) { /* pooling by what the set-up says */
        kfac_dataset out = {0};
        st = kfac_dataset_pool(&d, 1 + b[7] % 4, &out);
        FUZZ_REQUIRE(st != KFAC_OK || (long)rows * cols == features, "pooled %dx%d images of %d features", rows,
                     cols, features);
        kfac_dataset_free(&out);
    }
    kfac_dataset_free(&d);
}

static void try_order(const uint8_t *b, size_t size)
{
    if (size == 0)
        return;
    static uint8_t ck[1 << 16];
    memcpy(ck, good_ckpt, good_len);
    uint32_t v[N_ORDER];
    order_of(good_ckpt, good_len, v);
    for (size_t i = 0; i < N_ORDER && 4 * i < size; i++) {
        uint32_t x = 0;
        for (size_t k = 0; k < 4 && 4 * i + k < size; k++)
            x |= (uint32_t)b[4 * i + k] << (8 * k);
        v[i] = x;
    }
    uint8_t *p = ck + good_len - 4 - 4 * N_ORDER;
    for (int i = 0; i < N_ORDER; i++)
        for (int k = 0; k < 4; k++)
            *p++ = (uint8_t)(v[i] >> (8 * k));
    uint32_t crc = (uint32_t)crc32(0L, ck, (uInt)(good_len - 4));
    for (int k = 0; k < 4; k++)
        ck[good_len - 4 + k] = (uint8_t)(crc >> (8 * k));
    fuzz_file_put(&input, ck, good_len);

    kfac_net *net = kfac_trainer_net(order_trainer);
    size_t np = kfac_net_n_params(net);
    kfac_status st = kfac_trainer_load(order_trainer, input.path);
    if (st != KFAC_OK) {
        fuzz_require_named(st, input.path);
        FUZZ_REQUIRE(!is_permutation(v, N_ORDER), "a permutation refused: %s", kfac_last_error());
        FUZZ_REQUIRE(memcmp(kfac_net_params(net), theta0, sizeof(float) * np) == 0 &&
                         kfac_trainer_epochs_done(order_trainer) == 1,
                     "a failed load changed the trainer");
        return;
    }
    FUZZ_REQUIRE(is_permutation(v, N_ORDER), "an order that is not a permutation was loaded");
    st = kfac_trainer_epoch(order_trainer, NULL, NULL, NULL);
    FUZZ_REQUIRE(st == KFAC_OK || kfac_last_error()[0], "status %d without a message", (int)st);
    /* back to the good state */
    fuzz_file_put(&input, good_ckpt, good_len);
    FUZZ_REQUIRE(kfac_trainer_load(order_trainer, input.path) == KFAC_OK, "reload: %s", kfac_last_error());
}

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size)
{
    size_t used = 0;
    try_dataset(bytes, size, &used);
    try_order(bytes + used, size - used);
    return 0;
}
