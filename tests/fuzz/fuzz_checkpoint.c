/* fuzz_checkpoint.c - libFuzzer harness for the checkpoint loaders
 * (kfac_trainer_load, kfac_net_load_checkpoint). Four trainers on synthetic
 * data, each one epoch in, take every input: three of a small dense
 * network (K-FAC with the KL clip and Cholesky inverses, K-FAC with the
 * quadratic rule and eigenbases, Adam) and K-FAC (KL clip, Cholesky) on a
 * small CNN, whose checkpoint is format version 3 (layer kinds, windows,
 * the input's shape) and whose factors are KFC's. A load either fails
 * with a message naming the file and leaves the trainer exactly as it
 * was, or succeeds, and then the trainer must still train (a status,
 * never a crash). The fuzzing build skips the checksum (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) so that
 * mutations reach the parser behind it.
 *
 * With KFAC_FUZZ_SEEDS=DIR in the environment it writes the four valid
 * checkpoints there (the seed corpus) and exits. */
#include "fuzz.h"

enum { N = 16, IN = 6, OUT = 3, N_TRAINERS = 4 };

static const char *const NET =
    "[net]\ninputs = 6\n[dense]\nunits = 5\nactivation = tanh\n[dense]\nunits = 3\nactivation = linear\n"
    "[train]\nbatch = 8\nseed = 3\n";
/* the 2x3 images as a CNN sees them: a 2x2 convolution padded by 1 (3x4x2),
 * 2x2 max pooling with stride 1 (2x3x2), a dense layer */
static const char *const CNN =
    "[net]\ninputs = 6\nshape = 2x3x1\n[conv]\nchannels = 2\nkernel = 2\npad = 1\nactivation = tanh\n"
    "[pool]\ntype = max\nsize = 2\nstride = 1\n[dense]\nunits = 3\nactivation = linear\n"
    "[train]\nbatch = 8\nseed = 5\n";

static kfac_dataset data;
static kfac_trainer *trainer[N_TRAINERS];
static fuzz_file input;
static char good[N_TRAINERS][1100]; /* each trainer's own checkpoint */
static char tmpdir[] = "/tmp/kfac-fuzz.XXXXXX";

static void remove_tmpdir(void)
{
    for (int i = 0; i < N_TRAINERS; i++)
        if (good[i][0])
            unlink(good[i]);
    rmdir(tmpdir);
}
static kfac_net *bare, *bare_cnn; /* for kfac_net_load_checkpoint */
static float *theta0[N_TRAINERS];

static void setup(kfac_trainer **t, const char *text, kfac_net **bare_net, kfac_optimizer_kind kind, int quadratic)
{
    kfac_net_spec spec;
    kfac_train_params p;
    FUZZ_REQUIRE(kfac_netfile_parse(text, "fuzz.net", &spec, &p) == KFAC_OK, "%s", kfac_last_error());
    p.optimizer = kind;
    p.kfac.inversion = KFAC_INV_CHOLESKY; /* as the seed corpus was written */
    if (quadratic) {
        p.kfac.rule = KFAC_RULE_QUADRATIC;
        p.kfac.inversion = KFAC_INV_EIGEN;
        p.kfac.damping = 1.0f;
    }
    p.kfac.cov_every = 1;
    p.kfac.inv_every = 1;
    FUZZ_REQUIRE(kfac_trainer_new(&spec, &p, &data, t) == KFAC_OK, "%s", kfac_last_error());
    FUZZ_REQUIRE(kfac_trainer_epoch(*t, NULL, NULL, NULL) == KFAC_OK, "%s", kfac_last_error());
    if (!*bare_net)
        FUZZ_REQUIRE(kfac_net_new(&spec, 1, bare_net) == KFAC_OK, "%s", kfac_last_error());
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    kfac_set_threads(1);
    data.n = N, data.rows = 2, data.cols = 3, data.features = IN, data.classes = OUT;
    data.x = malloc(sizeof(float) * N * IN);
    data.labels = malloc(N);
    kfac_rng r;
    kfac_rng_seed(&r, 7);
    for (int i = 0; i < N * IN; i++)
        data.x[i] = (float)kfac_rng_uniform(&r);
    for (int i = 0; i < N; i++)
        data.labels[i] = (uint8_t)kfac_rng_below(&r, OUT);
    setup(&trainer[0], NET, &bare, KFAC_OPT_KFAC, 0);
    setup(&trainer[1], NET, &bare, KFAC_OPT_KFAC, 1);
    setup(&trainer[2], NET, &bare, KFAC_OPT_ADAM, 0);
    setup(&trainer[3], CNN, &bare_cnn, KFAC_OPT_KFAC, 0);

    /* a real directory: a save writes a temporary file beside its target */
    const char *seeds = getenv("KFAC_FUZZ_SEEDS");
    FUZZ_REQUIRE(mkdtemp(tmpdir) != NULL, "mkdtemp");
    atexit(remove_tmpdir);
    static const char *const names[N_TRAINERS] = {"kfac-klclip", "kfac-quadratic-eigen", "adam", "cnn-kfac-v3"};
    fuzz_file_open(&input, "checkpoint");
    for (int i = 0; i < N_TRAINERS; i++) {
        snprintf(good[i], sizeof good[i], "%s/%s.ckpt", seeds ? seeds : tmpdir, names[i]);
        FUZZ_REQUIRE(kfac_trainer_save(trainer[i], good[i]) == KFAC_OK, "%s", kfac_last_error());
        size_t n = kfac_net_n_params(kfac_trainer_net(trainer[i]));
        theta0[i] = malloc(sizeof(float) * n);
        memcpy(theta0[i], kfac_net_params(kfac_trainer_net(trainer[i])), sizeof(float) * n);
    }
    if (seeds) {
        memset(good, 0, sizeof good); /* keep them */
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size)
{
    fuzz_file_put(&input, bytes, size);
    for (int i = 0; i < N_TRAINERS; i++) {
        kfac_trainer *t = trainer[i];
        kfac_net *net = kfac_trainer_net(t);
        size_t n = kfac_net_n_params(net);
        int epochs = kfac_trainer_epochs_done(t);
        kfac_status st = kfac_trainer_load(t, input.path);
        if (st != KFAC_OK) {
            fuzz_require_named(st, input.path);
            FUZZ_REQUIRE(memcmp(kfac_net_params(net), theta0[i], sizeof(float) * n) == 0 &&
                             kfac_trainer_epochs_done(t) == epochs,
                         "a failed load changed trainer %d", i);
            continue;
        }
        /* loaded: it must train or fail cleanly, then go back to its state */
        st = kfac_trainer_epoch(t, NULL, NULL, NULL);
        FUZZ_REQUIRE(st == KFAC_OK || kfac_last_error()[0] != '\0', "status %d without a message", (int)st);
        FUZZ_REQUIRE(kfac_trainer_load(t, good[i]) == KFAC_OK, "reload: %s", kfac_last_error());
    }
    kfac_net *nets[2] = {bare, bare_cnn};
    for (int i = 0; i < 2; i++) {
        kfac_status st = kfac_net_load_checkpoint(nets[i], input.path);
        if (st != KFAC_OK)
            fuzz_require_named(st, input.path);
    }
    return 0;
}
