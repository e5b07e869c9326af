/* kfac.h - public API of libkfac: a small MLP framework in C (OpenBLAS +
 * OpenMP) built to feed K-FAC, with first-order baselines.
 *
 * Conventions
 *  - Every public name starts with kfac_ / KFAC_.
 *  - Functions that can fail return kfac_status; KFAC_OK is 0. The library
 *    never prints, exits or aborts on bad input. kfac_strerror() names a
 *    status; kfac_last_error() gives the detail of the most recent failure on
 *    the calling thread (e.g. "nets/x.net:12: unknown key 'sise'").
 *  - Matrices are float32, row-major. A minibatch is batch x features.
 *  - Ownership: an object returned through a `**out` argument belongs to the
 *    caller and is released with its *_free (NULL is accepted). Pointers
 *    returned by accessors stay owned by the object and live as long as it.
 *  - Thread safety: distinct objects may be used from distinct threads; one
 *    object must not be used from two threads at once. Each call may itself
 *    use OpenMP/OpenBLAS threads (see kfac_set_threads).
 */
#ifndef KFAC_H
#define KFAC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KFAC_VERSION_MAJOR 0
#define KFAC_VERSION_MINOR 1
#define KFAC_VERSION_PATCH 0
#define KFAC_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- status */

typedef enum kfac_status {
    KFAC_OK = 0,
    KFAC_ERR_NOMEM,        /* an allocation failed */
    KFAC_ERR_INVALID_ARG,  /* NULL, out-of-range value, wrong size */
    KFAC_ERR_IO,           /* a file could not be opened, read or written */
    KFAC_ERR_FORMAT,       /* a data file (IDX, checkpoint) is malformed */
    KFAC_ERR_PARSE,        /* a net file is malformed (detail has file:line) */
    KFAC_ERR_SHAPE,        /* sizes do not match (data vs network, ...) */
    KFAC_ERR_NUMERIC,      /* NaN/Inf or a factorisation that failed */
    KFAC_ERR_STATE,        /* call out of order */
    KFAC_STATUS_COUNT
} kfac_status;

/* Short fixed description of a status; never NULL. */
const char *kfac_strerror(kfac_status s);

/* Detail of the last failure on this thread ("" if none). Valid until the
 * next failing call on the same thread. */
const char *kfac_last_error(void);

/* Threads used by OpenMP regions and OpenBLAS (one shared pool). n <= 0
 * means "all cores". */
void kfac_set_threads(int n);
int kfac_get_threads(void);

/* ---------------------------------------------------------- enumerations */

typedef enum kfac_activation {
    KFAC_ACT_LINEAR = 0,
    KFAC_ACT_RELU,
    KFAC_ACT_TANH,
    KFAC_ACT_SIGMOID,
    KFAC_ACT_COUNT
} kfac_activation;

/* The loss L = (1/B) sum_n l(z_n, y_n) over a batch of B, z the network
 * output (the last layer's activation), y a dense target row:
 *   SOFTMAX_XENT: l = -sum_j y_j log softmax(z)_j   (y one-hot or a distribution)
 *   SIGMOID_XENT: l = -sum_j [y_j log s(z_j) + (1-y_j) log(1-s(z_j))], s sigmoid
 *   SQUARED:      l = 1/2 |z - y|^2 (a unit-variance Gaussian's -log p)
 * Softmax and sigmoid belong to the loss: the output layer is then linear. */
typedef enum kfac_loss {
    KFAC_LOSS_SOFTMAX_XENT = 0,
    KFAC_LOSS_SIGMOID_XENT,
    KFAC_LOSS_SQUARED,
    KFAC_LOSS_COUNT
} kfac_loss;

/* Weight initialisation; biases start at zero for all of them. */
typedef enum kfac_init {
    KFAC_INIT_GLOROT = 0,   /* uniform +-sqrt(6/(fan_in+fan_out)) */
    KFAC_INIT_HE,           /* normal, sigma = sqrt(2/fan_in) */
    KFAC_INIT_TRUNC_NORMAL, /* normal(0, sigma) cut at 2 sigma (DeepOBS) */
    KFAC_INIT_SPARSE,       /* Martens 2010: `sparse_count` N(0,1) weights
                               per unit, the rest zero */
    KFAC_INIT_COUNT
} kfac_init;

/* Name tables shared by the net-file parser, checkpoints and messages.
 * Return NULL for out-of-range values. */
const char *kfac_activation_name(kfac_activation a);
const char *kfac_loss_name(kfac_loss l);
const char *kfac_init_name(kfac_init i);
/* Reverse look-ups: return KFAC_OK and set *out, or KFAC_ERR_INVALID_ARG. */
kfac_status kfac_activation_from_name(const char *name, kfac_activation *out);
kfac_status kfac_loss_from_name(const char *name, kfac_loss *out);
kfac_status kfac_init_from_name(const char *name, kfac_init *out);

/* ---------------------------------------------------- random generator */

/* xoshiro256** seeded by splitmix64: plain data so it can be copied and
 * saved. */
typedef struct kfac_rng {
    uint64_t s[4];
} kfac_rng;

void kfac_rng_seed(kfac_rng *r, uint64_t seed);
uint64_t kfac_rng_next(kfac_rng *r);
double kfac_rng_uniform(kfac_rng *r);           /* [0, 1) */
double kfac_rng_normal(kfac_rng *r);            /* N(0, 1) */
uint32_t kfac_rng_below(kfac_rng *r, uint32_t n); /* uniform in [0, n), n > 0 */

/* ------------------------------------------------------- network spec */

#define KFAC_MAX_LAYERS 32

typedef struct kfac_layer_spec {
    int units;                  /* output width, 1..1000000 */
    kfac_activation activation; /* default RELU */
} kfac_layer_spec;

typedef struct kfac_net_spec {
    int inputs;        /* input width, 1..10000000; no default (0 = unset) */
    int n_layers;      /* number of dense layers, 1..KFAC_MAX_LAYERS */
    kfac_layer_spec layers[KFAC_MAX_LAYERS];
    kfac_loss loss;    /* default SOFTMAX_XENT */
    kfac_init init;    /* default GLOROT */
    float init_sigma;  /* TRUNC_NORMAL sigma; default 0.03 (DeepOBS), > 0 */
    int sparse_count;  /* SPARSE: non-zero weights per unit; default 15
                          (Martens 2010), >= 1 */
} kfac_net_spec;

/* Fill defaults: no layers, inputs 0 (to be set). */
void kfac_net_spec_init(kfac_net_spec *spec);
/* KFAC_OK if the spec describes a valid network, else INVALID_ARG with
 * detail. */
kfac_status kfac_net_spec_validate(const kfac_net_spec *spec);

/* ------------------------------------------------------------ network */

/* A dense network: layer l (0-based) maps abar_{l-1} (batch x (d_{l-1}+1),
 * the input with a homogeneous 1 appended) to s_l = abar_{l-1} W_l^T and
 * a_l = phi_l(s_l); W_l is d_l x (d_{l-1}+1), its last column the bias.
 * All weights live in one contiguous float vector (layer 0 first), as does
 * the gradient, so optimizers work on flat vectors.
 *
 * Forward records each layer's input abar (KFAC.md 2); backward records each
 * layer's per-example pre-activation gradient g_l = dl_n/ds_l (NOT divided
 * by the batch size) and, if asked, the mean gradient
 * dW_l = (1/B) g_l^T abar_{l-1}: the only place the 1/B appears.
 * forward/backward allocate nothing. */
typedef struct kfac_net kfac_net;

kfac_status kfac_net_new(const kfac_net_spec *spec, int max_batch, kfac_net **out);
void kfac_net_free(kfac_net *net);

/* Initialise all weights from spec->init with the given generator. */
kfac_status kfac_net_init_weights(kfac_net *net, kfac_rng *rng);

const kfac_net_spec *kfac_net_get_spec(const kfac_net *net);
int kfac_net_max_batch(const kfac_net *net);
int kfac_net_inputs(const kfac_net *net);
int kfac_net_outputs(const kfac_net *net);
int kfac_net_n_layers(const kfac_net *net);
size_t kfac_net_n_params(const kfac_net *net);

/* Flat parameter vector theta (n_params floats); writable. */
float *kfac_net_params(kfac_net *net);
/* Layer l's weight matrix inside theta: rows d_l, cols d_{l-1}+1. */
float *kfac_net_layer_weights(kfac_net *net, int l, int *rows, int *cols);
/* Offset of layer l's weights in the flat vectors. */
size_t kfac_net_layer_offset(const kfac_net *net, int l);

/* x: batch x inputs. Records abar for every layer and the output z. */
kfac_status kfac_net_forward(kfac_net *net, const float *x, int batch);

/* Output z of the last forward pass: batch x outputs. */
const float *kfac_net_output(const kfac_net *net);

/* Mean loss of the last forward pass against targets y (batch x outputs)
 * and, if `metric` is not NULL, the mean metric: for SOFTMAX_XENT the
 * fraction of rows whose argmax matches y's (accuracy); otherwise the
 * squared error of the prediction (sigmoid(z) or z) summed over outputs
 * (reconstruction error). Either pointer may be NULL. */
kfac_status kfac_net_loss(const kfac_net *net, const float *y, double *loss, double *metric);

/* Back-propagate from targets y (batch x outputs) of the last forward pass.
 * Records g for every layer. If grad is not NULL it receives the mean
 * gradient (n_params floats, same layout as theta). */
kfac_status kfac_net_backward(kfac_net *net, const float *y, float *grad);

/* What the last pass recorded for layer l (valid until the next pass):
 * abar_{l-1}: batch x (d_{l-1}+1), last column all ones.
 * g_l:        batch x d_l, per-example dl_n/ds_l. */
const float *kfac_net_layer_input(const kfac_net *net, int l);
const float *kfac_net_layer_pregrad(const kfac_net *net, int l);
int kfac_net_batch(const kfac_net *net); /* batch of the last forward */

/* --------------------------------------------------------------- data */

/* A dataset held in memory: n examples of `features` floats in [0, 1] and,
 * for classification, labels in [0, classes). */
typedef struct kfac_dataset {
    int n;
    int features;     /* rows * cols of each image */
    int rows, cols;
    int classes;      /* 10 for (Fashion-)MNIST */
    float *x;         /* n x features */
    uint8_t *labels;  /* n */
} kfac_dataset;

/* Read an IDX image file and label file (each gzipped or not; gzip is
 * detected by content). Validates magic, element type (unsigned byte),
 * dimensions, counts and label range (< classes). Pixels are scaled to
 * [0, 1]. On failure *out is untouched and the detail names the file. */
kfac_status kfac_idx_load(const char *images_path, const char *labels_path, int classes,
                          kfac_dataset *out);

/* Load "train" or "t10k" from a directory holding the four standard files
 * (`<set>-images-idx3-ubyte[.gz]`, `<set>-labels-idx1-ubyte[.gz]`); the
 * plain name is tried first, then `.gz`. */
kfac_status kfac_mnist_load(const char *dir, const char *set, kfac_dataset *out);

void kfac_dataset_free(kfac_dataset *d); /* frees the buffers, zeroes *d */

#define KFAC_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* ---------------------------------------------------------- optimizers */

typedef enum kfac_optimizer_kind {
    KFAC_OPT_SGD = 0,
    KFAC_OPT_MOMENTUM,  /* heavy ball: v = mu v + g; theta -= lr v */
    KFAC_OPT_NESTEROV,  /* v = mu v + g; theta -= lr (g + mu v) */
    KFAC_OPT_ADAM,      /* Kingma & Ba 2015 with bias correction */
    KFAC_OPT_COUNT
} kfac_optimizer_kind;

const char *kfac_optimizer_name(kfac_optimizer_kind k);
kfac_status kfac_optimizer_from_name(const char *name, kfac_optimizer_kind *out);

/* Hyper-parameters of every optimizer; each field's default and range. */
typedef struct kfac_optim_params {
    float lr;           /* learning rate; default 0.01; (0, 1e3] */
    float momentum;     /* MOMENTUM/NESTEROV mu; default 0.9; [0, 1) */
    float beta1;        /* ADAM; default 0.9; [0, 1) */
    float beta2;        /* ADAM; default 0.999; [0, 1) */
    float eps;          /* ADAM; default 1e-8; (0, 1] */
    float weight_decay; /* L2 coefficient added to the gradient
                           (g += wd * theta, weights and biases alike);
                           default 0; [0, 1e3] */
} kfac_optim_params;

void kfac_optim_params_init(kfac_optim_params *p);
kfac_status kfac_optim_params_validate(const kfac_optim_params *p);

/* A first-order optimizer's state for one parameter vector. */
typedef struct kfac_optimizer kfac_optimizer;

kfac_status kfac_optimizer_new(kfac_optimizer_kind kind, const kfac_optim_params *p,
                               size_t n_params, kfac_optimizer **out);
void kfac_optimizer_free(kfac_optimizer *opt);
/* One update of theta (n_params floats) from the gradient; grad may be
 * modified (weight decay is added to it in place). */
kfac_status kfac_optimizer_step(kfac_optimizer *opt, float *theta, float *grad);
/* Steps taken so far. */
long kfac_optimizer_steps(const kfac_optimizer *opt);
kfac_optimizer_kind kfac_optimizer_get_kind(const kfac_optimizer *opt);

/* ------------------------------------------------------------- training */

typedef struct kfac_train_params {
    kfac_optimizer_kind optimizer; /* default MOMENTUM */
    kfac_optim_params optim;       /* see kfac_optim_params_init */
    int batch;                     /* default 128; 1..max_batch of the net */
    int epochs;                    /* default 10; 1..100000 */
    uint64_t seed;                 /* default 1: weights and data order */
} kfac_train_params;

void kfac_train_params_init(kfac_train_params *p);
kfac_status kfac_train_params_validate(const kfac_train_params *p);

/* What an epoch (or an evaluation) measured. */
typedef struct kfac_epoch_stats {
    int epoch;           /* 1-based */
    double seconds;      /* training seconds so far, evaluation excluded */
    double train_loss;   /* mean loss over the epoch's batches */
    double test_loss;    /* mean loss on the test set */
    double test_acc;     /* accuracy (classification) or, for the other
                            losses, mean squared error per example
                            (sum over outputs) */
} kfac_epoch_stats;

/* Called after each training step; return non-zero to stop the epoch. */
typedef int (*kfac_progress_fn)(void *user, long step, long steps_in_epoch);

/* A trainer owns a network, its optimizer, the data order and the
 * generator. The datasets are borrowed and must outlive it. For the
 * autoencoder (inputs == outputs, non-softmax loss) the images are the
 * targets. */
typedef struct kfac_trainer kfac_trainer;

kfac_status kfac_trainer_new(const kfac_net_spec *spec, const kfac_train_params *p,
                             const kfac_dataset *train, kfac_trainer **out);
void kfac_trainer_free(kfac_trainer *t);

kfac_net *kfac_trainer_net(kfac_trainer *t);
/* One pass over the training data in a fresh shuffled order. stats->test_*
 * are left zero; use kfac_trainer_evaluate. */
kfac_status kfac_trainer_epoch(kfac_trainer *t, kfac_progress_fn progress, void *user,
                               kfac_epoch_stats *stats);
/* Mean loss and accuracy (or reconstruction error) on a dataset. */
kfac_status kfac_evaluate(kfac_net *net, const kfac_dataset *d, double *loss, double *metric);

/* ------------------------------------------------------------ net files */

/* A net file is INI-like text; `#` or `;` start a comment:
 *
 *   [net]                 inputs, loss, init, init_sigma, sparse_count
 *   [dense]               one per layer, in order: units, activation
 *   [train]               optimizer, lr, momentum, beta1, beta2, eps,
 *                         weight_decay, batch, epochs, seed
 *
 * Keys take the names of the fields above and the enum names of
 * kfac_*_name(). Unknown sections or keys, duplicated keys, missing
 * required keys (net.inputs, dense.units) and bad values are
 * KFAC_ERR_PARSE with "file:line: problem" in kfac_last_error().
 * `spec` and `train` are filled with defaults first; on failure they are
 * left unspecified. */
kfac_status kfac_netfile_load(const char *path, kfac_net_spec *spec, kfac_train_params *train);
/* The same from a NUL-terminated string; `filename` is used in messages. */
kfac_status kfac_netfile_parse(const char *text, const char *filename, kfac_net_spec *spec,
                               kfac_train_params *train);

#ifdef __cplusplus
}
#endif
#endif /* KFAC_H */
