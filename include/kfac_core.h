/* kfac_core.h - the core of libkfac's public API: status and errors,
 * threads, networks and losses, the first-order optimizers, and the K-FAC
 * preconditioner (kfac_precond) for any network. kfac_train.h builds the
 * training side on it; kfac.h includes both.
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
 *    Arrays passed in are borrowed for the call only (datasets given to a
 *    trainer: for the trainer's life). Parameter structs are plain data the
 *    caller owns; *_init(NULL) does nothing.
 *  - Every argument is checked before any work: NULL, sizes and ranges give
 *    KFAC_ERR_INVALID_ARG, calls in the wrong order KFAC_ERR_STATE, and the
 *    object is left as it was. Accessors given NULL return NULL, 0 (or -1
 *    where documented).
 *  - Thread safety: distinct objects may be used from distinct threads; one
 *    object must not be used from two threads at once. Each call may itself
 *    use OpenMP/OpenBLAS threads (see kfac_set_threads, which is
 *    process-wide). kfac_last_error() is per thread.
 *  - Build and link: `pkg-config --cflags --libs kfac` (kfac.pc).
 *    Only the KFAC_API functions of kfac_core.h, kfac_train.h and
 *    kfac_handles.h are exported by libkfac.so.
 */
#ifndef KFAC_KFAC_CORE_H
#define KFAC_KFAC_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks what the shared library exports: it is built with
 * -fvisibility=hidden, so exactly the functions of this header are its
 * ABI (the private kfac_* helpers of src/ stay inside). */
#if defined(__GNUC__)
#define KFAC_API __attribute__((visibility("default")))
#else
#define KFAC_API
#endif

/* The version, written here only: the string is made from the numbers,
 * and the Makefile reads them for the shared library's name and SONAME
 * and for kfac.pc. */
#define KFAC_VERSION_MAJOR 0
#define KFAC_VERSION_MINOR 1
#define KFAC_VERSION_PATCH 0
#define KFAC_VERSION_STR_(x) #x
#define KFAC_VERSION_XSTR_(x) KFAC_VERSION_STR_(x)
#define KFAC_VERSION_STRING                                                                    \
    KFAC_VERSION_XSTR_(KFAC_VERSION_MAJOR) "." KFAC_VERSION_XSTR_(KFAC_VERSION_MINOR) "." \
    KFAC_VERSION_XSTR_(KFAC_VERSION_PATCH)

/* The version of the library linked in ("0.1.0": its KFAC_VERSION_STRING);
 * a program built against another header can tell. */
KFAC_API const char *kfac_version(void);

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
    KFAC_ERR_COMM,         /* an MPI collective failed (distributed training) */
    KFAC_STATUS_COUNT
} kfac_status;

/* Short fixed description of a status; never NULL. */
KFAC_API const char *kfac_strerror(kfac_status s);

/* Detail of the last failure on this thread ("" if none). Valid until the
 * next failing call on the same thread. */
KFAC_API const char *kfac_last_error(void);

/* Threads used by OpenMP regions and OpenBLAS (one shared pool). n <= 0
 * means "all cores".
 * On a machine other processes may load, start the program with
 * GOMP_SPINCOUNT=3000 (or OMP_WAIT_POLICY=passive) in its environment:
 * libgomp's idle threads otherwise spin 300000 times (about 3 ms) before
 * they sleep, and with another process on one of 2 cores an epoch took
 * 9-12x its idle time (2.2-2.6x with GOMP_SPINCOUNT=3000). libgomp reads
 * these variables once, as it is loaded, so setenv() in a running program
 * is too late. The kfac program sets GOMP_SPINCOUNT=3000 itself unless
 * either is set. */
KFAC_API void kfac_set_threads(int n);
KFAC_API int kfac_get_threads(void);
/* Why the last kfac_set_threads runs fewer threads than it was asked
 * for ("" when it runs them all): OpenBLAS runs at most the threads it
 * was built for (64 in Debian's), and each new OpenBLAS thread maps a
 * 128 MiB buffer, which OpenBLAS waits for forever when it cannot get it.
 * So the count is also cut to what half the address space left under
 * the memory limits (RLIMIT_AS, RLIMIT_DATA, strict overcommit) holds:
 * under `ulimit -v 4000000`, 32 threads hung for good. In the same way
 * the trainer, kfac_evaluate and kfac_precond_new return KFAC_ERR_NOMEM
 * when the limits leave no room for the buffer OpenBLAS maps for the
 * caller's first product (129 MiB and 16 MiB besides), where the first
 * product waited forever. */
KFAC_API const char *kfac_threads_note(void);

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
KFAC_API const char *kfac_activation_name(kfac_activation a);
KFAC_API const char *kfac_loss_name(kfac_loss l);
KFAC_API const char *kfac_init_name(kfac_init i);
/* Reverse look-ups: return KFAC_OK and set *out, or KFAC_ERR_INVALID_ARG. */
KFAC_API kfac_status kfac_activation_from_name(const char *name, kfac_activation *out);
KFAC_API kfac_status kfac_loss_from_name(const char *name, kfac_loss *out);
KFAC_API kfac_status kfac_init_from_name(const char *name, kfac_init *out);

/* ---------------------------------------------------- random generator */

/* xoshiro256** seeded by splitmix64: plain data so it can be copied and
 * saved. */
typedef struct kfac_rng {
    uint64_t s[4];
} kfac_rng;

KFAC_API void kfac_rng_seed(kfac_rng *r, uint64_t seed);
KFAC_API uint64_t kfac_rng_next(kfac_rng *r);
KFAC_API double kfac_rng_uniform(kfac_rng *r);           /* [0, 1) */
KFAC_API double kfac_rng_normal(kfac_rng *r);            /* N(0, 1) */
KFAC_API uint32_t kfac_rng_below(kfac_rng *r, uint32_t n); /* uniform in [0, n), n > 0 */

/* ------------------------------------------------------- network spec */

#define KFAC_MAX_LAYERS 32

/* The kinds of layer (docs/algorithm.md §2.1 for the convolutional ones).
 * Spatial layers work on images stored channel-last (NHWC: example,
 * row, column, channel); a dense layer after a spatial one reads the
 * image flattened in that order. */
typedef enum kfac_layer_kind {
    KFAC_LAYER_DENSE = 0, /* s = W abar */
    KFAC_LAYER_CONV,      /* 2-D convolution: W applied to each patch */
    KFAC_LAYER_MAXPOOL,   /* max over each window, per channel */
    KFAC_LAYER_AVGPOOL,   /* mean over each window, per channel */
    KFAC_LAYER_COUNT
} kfac_layer_kind;

KFAC_API const char *kfac_layer_kind_name(kfac_layer_kind k);
KFAC_API kfac_status kfac_layer_kind_from_name(const char *name, kfac_layer_kind *out);

/* pad's value for 'same' padding: (kernel - 1) / 2 on every side (an odd
 * kernel and stride 1 keep the image's size) */
#define KFAC_PAD_SAME (-1)

typedef struct kfac_layer_spec {
    int units;                  /* dense: output width; conv: output
                                   channels; 1..1000000 (pooling: unused) */
    kfac_activation activation; /* default RELU (pooling: LINEAR only) */
    kfac_layer_kind kind;       /* default DENSE */
    int kernel_h, kernel_w;     /* conv and pooling: the window, 1..64 */
    int stride;                 /* conv and pooling: 1..64; 0 = the
                                   default (conv 1, pooling the window) */
    int pad;                    /* conv: zeros on each side, 0..kernel-1,
                                   or KFAC_PAD_SAME; default 0 */
} kfac_layer_spec;

typedef struct kfac_net_spec {
    int inputs;        /* input width, 1..10000000; no default (0 = unset) */
    int input_h, input_w, input_c; /* the input as an image, NHWC, for
                          spatial layers: height x width x channels equal
                          to inputs; 0 (default): none given, and then a
                          first spatial layer reads a square
                          one-channel image of `inputs` pixels */
    int n_layers;      /* number of layers, 1..KFAC_MAX_LAYERS */
    kfac_layer_spec layers[KFAC_MAX_LAYERS];
    kfac_loss loss;    /* default SOFTMAX_XENT */
    kfac_init init;    /* default GLOROT */
    float init_sigma;  /* TRUNC_NORMAL sigma; default 0.03 (DeepOBS), > 0 */
    int sparse_count;  /* SPARSE: non-zero weights per unit; default 15
                          (Martens 2010); [1, 100000] */
    int input_pool;    /* the images reach the network average-pooled in
                          input_pool x input_pool blocks (kfac_dataset_pool):
                          the trainer, kfac_evaluate and kfac_check pool a
                          data set of full-size images themselves, and take
                          one of `inputs` features as it is; default 1;
                          [1, 64] */
} kfac_net_spec;

/* Fill defaults: no layers, inputs 0 (to be set). */
KFAC_API void kfac_net_spec_init(kfac_net_spec *spec);
/* KFAC_OK if the spec describes a valid network, else INVALID_ARG with
 * detail. */
KFAC_API kfac_status kfac_net_spec_validate(const kfac_net_spec *spec);
/* The outputs per example of a valid spec's network (0 if invalid). */
KFAC_API int kfac_net_spec_outputs(const kfac_net_spec *spec);
/* The architecture in one line, into buf (always terminated):
 * "784-conv32(5x5/1,same):relu-maxpool2x2/2-1024:relu-10:linear
 * softmax_xent loss", the input's shape and pool when set. */
KFAC_API void kfac_net_spec_describe(const kfac_net_spec *spec, char *buf, size_t size);

/* ------------------------------------------------------------ network */

/* A network of the spec's layers. A dense layer l (0-based) maps
 * abar_{l-1} (batch x (d_{l-1}+1), the input with a homogeneous 1
 * appended) to s_l = abar_{l-1} W_l^T and a_l = phi_l(s_l); W_l is
 * d_l x (d_{l-1}+1), its last column the bias. A convolution does the
 * same on its input's patches, positions rows per example
 * (docs/algorithm.md §2.1); pooling has no weights.
 * All weights live in one contiguous float vector (layer 0 first), as does
 * the gradient, so optimizers work on flat vectors.
 *
 * Forward records each layer's input abar (docs/algorithm.md §2); backward records each
 * layer's per-example pre-activation gradient g_l = dl_n/ds_l (NOT divided
 * by the batch size) and, if asked, the mean gradient
 * dW_l = (1/B) g_l^T abar_{l-1}: the only place the 1/B appears.
 * forward/backward allocate nothing. */
typedef struct kfac_net kfac_net;

KFAC_API kfac_status kfac_net_new(const kfac_net_spec *spec, int max_batch, kfac_net **out);
KFAC_API void kfac_net_free(kfac_net *net);

/* Initialise all weights from spec->init with the given generator. */
KFAC_API kfac_status kfac_net_init_weights(kfac_net *net, kfac_rng *rng);

KFAC_API const kfac_net_spec *kfac_net_get_spec(const kfac_net *net);
KFAC_API int kfac_net_max_batch(const kfac_net *net);
KFAC_API int kfac_net_inputs(const kfac_net *net);
KFAC_API int kfac_net_outputs(const kfac_net *net);
KFAC_API int kfac_net_n_layers(const kfac_net *net);
KFAC_API size_t kfac_net_n_params(const kfac_net *net);

/* Flat parameter vector theta (n_params floats); writable. */
KFAC_API float *kfac_net_params(kfac_net *net);
/* Layer l's weight matrix inside theta: rows d_l, cols d_{l-1}+1 (a
 * convolution: rows its output channels, cols its window's
 * kernel_h x kernel_w x input channels + 1, NHWC order); NULL for a
 * pooling layer, which has none. */
KFAC_API float *kfac_net_layer_weights(kfac_net *net, int l, int *rows, int *cols);
/* Offset of layer l's weights in the flat vectors. */
KFAC_API size_t kfac_net_layer_offset(const kfac_net *net, int l);

/* x: batch x inputs. Records abar for every layer and the output z. */
KFAC_API kfac_status kfac_net_forward(kfac_net *net, const float *x, int batch);

/* Output z of the last forward pass: batch x outputs. */
KFAC_API const float *kfac_net_output(const kfac_net *net);

/* Mean loss of the last forward pass against targets y (batch x outputs)
 * and, if `metric` is not NULL, the mean metric: for SOFTMAX_XENT the
 * fraction of rows whose argmax matches y's (accuracy); otherwise the
 * squared error of the prediction (sigmoid(z) or z) summed over outputs
 * (reconstruction error). Either pointer may be NULL. */
KFAC_API kfac_status kfac_net_loss(const kfac_net *net, const float *y, double *loss, double *metric);

/* Back-propagate from targets y (batch x outputs) of the last forward pass.
 * Records g for every layer. If grad is not NULL it receives the mean
 * gradient (n_params floats, same layout as theta). */
KFAC_API kfac_status kfac_net_backward(kfac_net *net, const float *y, float *grad);

/* The model's mean prediction for x (batch x inputs, batch in
 * [1, max_batch]) into out (batch x outputs): softmax probabilities
 * (SOFTMAX_XENT), per-output sigmoid probabilities (SIGMOID_XENT) or z
 * itself (SQUARED). A forward pass: it replaces what the last pass
 * recorded. */
KFAC_API kfac_status kfac_net_predict(kfac_net *net, const float *x, int batch, float *out);

/* Draw targets y (n x d) from the predictive distribution of the outputs
 * z (n x d) under `loss`: one-hot categorical from softmax(z), per-output
 * Bernoulli from sigmoid(z), or z + N(0, I). Back-propagating these instead
 * of the labels gives the per-example g whose statistics make K-FAC's G
 * factor an estimate of the true Fisher (docs/algorithm.md §3); see kfac_precond.
 * Takes one number from rng, which with the row's index seeds each row's
 * own generator: the draw depends on the seed alone, not on the threads.
 * n, d >= 1. */
KFAC_API kfac_status kfac_sample_targets(kfac_loss loss, const float *z, float *y, int n, int d, kfac_rng *rng);

/* What the last pass recorded for layer l with weights (valid until the
 * next pass; NULL for a pooling layer), with P = its positions:
 * abar: batch x P rows of cols (kfac_net_layer_weights), last column all
 *       ones: a dense layer's input, a convolution's patches (the window
 *       of output pixel p of example b in row b P + p, NHWC order).
 * g:    batch x P rows of rows, per-example dl_n/ds.
 * A trainer keeps a convolution's patches only for a step that reads
 * them (K-FAC's statistics rounds, the quadratic rule; never a
 * first-order method: its backward pass rebuilds them), so on its network
 * a conv layer's abar is in general not the last pass's. */
KFAC_API const float *kfac_net_layer_input(const kfac_net *net, int l);
KFAC_API const float *kfac_net_layer_pregrad(const kfac_net *net, int l);
/* Layer l's positions: rows of abar and g per example (a dense layer 1,
 * a convolution its output pixels, pooling 0). */
KFAC_API int kfac_net_layer_positions(const kfac_net *net, int l);
KFAC_API int kfac_net_batch(const kfac_net *net); /* batch of the last forward */
/* ---------------------------------------------------------- optimizers */

typedef enum kfac_optimizer_kind {
    KFAC_OPT_SGD = 0,
    KFAC_OPT_MOMENTUM,  /* heavy ball: v = mu v + g; theta -= lr v */
    KFAC_OPT_NESTEROV,  /* v = mu v + g; theta -= lr (g + mu v) */
    KFAC_OPT_ADAM,      /* Kingma & Ba 2015 with bias correction */
    KFAC_OPT_KFAC,      /* K-FAC (Martens & Grosse 2015): see kfac_kfac_params */
    KFAC_OPT_COUNT
} kfac_optimizer_kind;

KFAC_API const char *kfac_optimizer_name(kfac_optimizer_kind k);
KFAC_API kfac_status kfac_optimizer_from_name(const char *name, kfac_optimizer_kind *out);

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

KFAC_API void kfac_optim_params_init(kfac_optim_params *p);
KFAC_API kfac_status kfac_optim_params_validate(const kfac_optim_params *p);

/* A first-order optimizer's state for one parameter vector. */
typedef struct kfac_optimizer kfac_optimizer;

KFAC_API kfac_status kfac_optimizer_new(kfac_optimizer_kind kind, const kfac_optim_params *p,
                               size_t n_params, kfac_optimizer **out);
KFAC_API void kfac_optimizer_free(kfac_optimizer *opt);
/* One update of theta (n_params floats) from the gradient; grad may be
 * modified (weight decay is added to it in place). */
KFAC_API kfac_status kfac_optimizer_step(kfac_optimizer *opt, float *theta, float *grad);
/* Steps taken so far. */
KFAC_API long kfac_optimizer_steps(const kfac_optimizer *opt);
KFAC_API kfac_optimizer_kind kfac_optimizer_get_kind(const kfac_optimizer *opt);

/* ---------------------------------------------------------------- K-FAC */

/* Which targets the G factor's gradients come from (docs/algorithm.md §1, 3). */
typedef enum kfac_fisher_kind {
    KFAC_FISHER_SAMPLED = 0, /* y ~ p(y|x, theta): the Fisher (default) */
    KFAC_FISHER_EMPIRICAL,   /* the training labels: NOT the Fisher (Martens
                                2020 sec. 11), for comparison only */
    KFAC_FISHER_COUNT
} kfac_fisher_kind;

/* How the damped factors are inverted (docs/algorithm.md §4). */
typedef enum kfac_inversion {
    KFAC_INV_CHOLESKY = 0, /* (A + pi sqrt(l) I)^-1, (G + sqrt(l)/pi I)^-1,
                              pi by the trace norm: factored Tikhonov */
    KFAC_INV_EIGEN,        /* eigendecompositions; exact Tikhonov
                              (A (x) G + l I)^-1 in the eigenbasis */
    KFAC_INV_LOWRANK,      /* CHOLESKY's factored damping, each large
                              factor's inverse from its top eigenpairs
                              (randomized subspace iteration) and one
                              constant for the rest of its spectrum: the
                              fast mode (default) */
    KFAC_INV_EKFAC,        /* EIGEN's eigenbases with the diagonal
                              re-estimated from the per-example gradients
                              projected into them (George et al. 2018) */
    KFAC_INV_TRIDIAG,      /* block-tridiagonal inverse (Martens & Grosse
                              2015 sec. 4.3): adjacent layers coupled
                              through their cross moments; dense layers
                              only, factored Tikhonov on the diagonal
                              blocks (docs/algorithm.md §4.7) */
    KFAC_INV_COUNT
} kfac_inversion;

/* How the preconditioned direction becomes an update (docs/algorithm.md §5). */
typedef enum kfac_step_rule {
    KFAC_RULE_KL_CLIP = 0, /* lr and momentum, the step scaled down so that
                              lr^2 <Delta, grad> <= kl_clip (Ba et al.) */
    KFAC_RULE_QUADRATIC,   /* alpha, mu minimising the quadratic model with
                              exact Fisher-vector products, Levenberg-
                              Marquardt adaptation of the damping */
    KFAC_RULE_COUNT
} kfac_step_rule;

KFAC_API const char *kfac_fisher_name(kfac_fisher_kind k);
KFAC_API const char *kfac_inversion_name(kfac_inversion k);
KFAC_API const char *kfac_step_rule_name(kfac_step_rule k);
KFAC_API kfac_status kfac_fisher_from_name(const char *name, kfac_fisher_kind *out);
KFAC_API kfac_status kfac_inversion_from_name(const char *name, kfac_inversion *out);
KFAC_API kfac_status kfac_step_rule_from_name(const char *name, kfac_step_rule *out);

/* K-FAC's hyper-parameters. The learning rate and momentum of the KL_CLIP
 * rule, and weight decay, come from kfac_optim_params. */
typedef struct kfac_kfac_params {
    float damping;     /* lambda, Tikhonov damping; default 0.1; (0, 1e6].
                          The QUADRATIC rule adapts it from here, slowly:
                          start it high (0.1 to 150, the paper's value). */
    float decay;       /* running-average decay of A and G; default 0.95;
                          [0, 1). epsilon = min(1 - 1/k, decay) */
    int cov_every;     /* T_cov: factor statistics every T_cov steps;
                          default 10; [1, 1000000] */
    int inv_every;     /* T_inv: inverses every T_inv steps, and at each
                          statistics update during the first T_inv steps;
                          default 100; [1, 1000000] */
    float stat_fraction; /* fraction of the batch used for statistics (the
                          paper: 1/8); default 1; (0, 1] */
    kfac_fisher_kind fisher;  /* default SAMPLED */
    kfac_inversion inversion; /* default LOWRANK */
    kfac_step_rule rule;      /* default KL_CLIP */
    float kl_clip;     /* c of KL_CLIP; default 1e-3 (KFAC-Pytorch); (0, 1e6] */
    int lm_every;      /* T1 of the QUADRATIC rule's damping adaptation;
                          default 5; [1, 1000000] */
    float lr;          /* K-FAC's own learning rate, so one net file can
                          tune K-FAC and a first-order baseline side by
                          side; 0 means kfac_optim_params.lr; default 0;
                          [0, 1000] */
    float momentum;    /* K-FAC's own momentum (KL_CLIP rule), likewise;
                          negative means kfac_optim_params.momentum;
                          default -1; [-1, 1) */
    float fvp_fraction; /* QUADRATIC in the trainer: the exact F products
                          of the quadratic model on this first fraction of
                          the batch (Martens & Grosse 2015 use a subset);
                          kfac_precond's callback decides its own rows;
                          default 1; (0, 1] */
    int damping_half_life; /* KL_CLIP: the damping halves every this many
                          steps, lambda_t = damping 2^(-(t-1)/half_life),
                          taking effect at each inversion; 0 keeps it
                          constant; default 0; [0, 100000000] */
    int rank_max;      /* LOWRANK: at most this many eigenpairs per factor
                          (those of at least 0.1 x the factor's damping
                          are kept); factors smaller than 2 (rank_max + 8)
                          stay dense; default 64; [1, 4096] */
} kfac_kfac_params;

KFAC_API void kfac_kfac_params_init(kfac_kfac_params *p);
/* kfac_kfac_params_validate is below. */

/* What an inversion needed beyond the plain float Cholesky (bits). */
enum {
    KFAC_FALLBACK_DOUBLE = 1,     /* factorisation redone in double */
    KFAC_FALLBACK_DAMPING = 2,    /* damping raised (x10 at a time) */
    KFAC_FALLBACK_EIGEN_CLIP = 4, /* eigendecomposition, eigenvalues clipped at 0 */
};

/* What K-FAC has done so far in a trainer: cumulative seconds per part of
 * the step, counts, and the state of its step rule. */
typedef struct kfac_kfac_stats {
    double seconds_stats;   /* sampled targets, extra backward, A and G */
    double seconds_invert;  /* damped inverses or eigendecompositions */
    double seconds_precond; /* preconditioned direction and the update */
    double seconds_fvp;     /* exact Fisher-vector products (QUADRATIC) */
    long stats_rounds;      /* factor statistics taken */
    long inversions;        /* inversions done */
    int fallbacks;          /* OR of every inversion's KFAC_FALLBACK_* bits */
    long damping_retries;   /* directions (or QUADRATIC models) recomputed
                               with 10x damping after a non-finite value or
                               an impossible predicted decrease */
    long steps_rejected;    /* QUADRATIC steps undone: the loss after them
                               was not finite */
    double damping;         /* current lambda (adapted by QUADRATIC) */
    double nu;              /* last KL-clip factor in (0, 1] (KL_CLIP) */
    double alpha, mu;       /* last step's coefficients (QUADRATIC) */
    double rho;             /* last reduction ratio (QUADRATIC) */
    int n_layers;           /* entries of the per-layer arrays below */
    int rank_a[KFAC_MAX_LAYERS], rank_g[KFAC_MAX_LAYERS]; /* ranks of the
                               last inverses of A and G: the eigenpairs
                               kept (LOWRANK), or the factor's size */
    int batch_form[KFAC_MAX_LAYERS]; /* 1: the last full batch (or the
                               first step) preconditioned the layer from
                               the batch rows of abar and g (its cost
                               model's choice), 0: from its gradient (fused
                               where both inverses are low-rank under the
                               kl_clip rule) */
    double flops_batch[KFAC_MAX_LAYERS], flops_weights[KFAC_MAX_LAYERS];
                            /* why: the cost model's count for each form
                               at that step (beyond the product both
                               share; 0 where no choice was made) */
} kfac_kfac_stats;
KFAC_API kfac_status kfac_kfac_params_validate(const kfac_kfac_params *p);

/* ------------------------------------------ K-FAC for your own network */

/* The K-FAC preconditioner and step rules of the built-in optimizer, for a
 * network that is not a kfac_net (the built-in optimizer is this object on
 * a kfac_net). The caller runs its own forward and backward passes and
 * hands over, per dense layer l (a convolution: kfac_precond_new_positions,
 * with positions rows per example where rows are said below):
 *
 *   W_l      d_out[l] x d_in[l], row-major: the weights, updated in place;
 *   grad_l   d_out[l] x d_in[l]: the mean gradient of the batch loss,
 *            (1/B) sum_n g_n abar_n^T (weight decay is added here);
 *   abar_l   rows x d_in[l]: the layer's inputs, one row per example;
 *   g_l      rows x d_out[l]: per-example dl_n/ds_l (s_l = W_l abar_l, the
 *            pre-activation; NOT divided by the batch) for targets drawn
 *            from the model with kfac_sample_targets: these make G a
 *            Fisher estimate. (Passing the labels' g gives the empirical
 *            Fisher, which is not the Fisher: Martens 2020 sec. 11.)
 *
 * d_in counts every column of W_l: a layer with a bias has the bias as the
 * LAST column of W_l and a LAST column of ones in abar_l, and d_in[l] =
 * fan_in + 1; a layer without bias has d_in[l] = fan_in.
 *
 * Each kfac_precond_step: every cov_every steps folds abar and g into the
 * running factors A and G; every inv_every steps (and at each statistics
 * round of the first inv_every) recomputes the damped inverses or
 * eigenbases; computes Delta_l = (G + .)^-1 grad_l (A + .)^-1; and updates
 * the weights with the step rule of kfac_kfac_params:
 *   KL_CLIP    v <- mu v + nu Delta; W <- W - lr v, nu the KL clip;
 *   QUADRATIC  W <- W + alpha (-Delta) + mu delta0, alpha and mu minimising
 *              the quadratic model with exact Fisher-vector products that
 *              the caller provides (kfac_precond_set_fisher), damping
 *              adapted by Levenberg-Marquardt.
 * Damping, inversion, T_cov/T_inv, stat_fraction, kl_clip and lm_every mean
 * what they mean for the trainer (kfac_kfac_params); `fisher` is ignored
 * (the caller chooses its g). A step allocates nothing.
 *
 * Thread safety: as every object, one kfac_precond per thread at a time;
 * the callbacks run on the calling thread. */
typedef struct kfac_precond kfac_precond;

/* n_layers in [1, KFAC_MAX_LAYERS]; d_in[l], d_out[l] in [1, 46340];
 * max_rows in [1, 1000000] bounds the rows of every batch. From `op`
 * (NULL: defaults) come lr, momentum and weight_decay, overridden by
 * kp->lr > 0 and kp->momentum >= 0 as in the trainer; kp NULL: defaults.
 * d_in and d_out are copied. */
KFAC_API kfac_status kfac_precond_new(int n_layers, const int *d_in, const int *d_out, int max_rows,
                             const kfac_optim_params *op, const kfac_kfac_params *kp, kfac_precond **out);
/* kfac_precond_new for layers with several rows of abar and g per
 * example: positions[l] of them (a convolution's output pixels, whose
 * abar rows are its input patches; NULL: 1 each, kfac_precond_new). Every
 * `rows` stays a count of examples: layer l's abar and g then hold rows x
 * positions[l] rows, and its factors are KFC's (docs/algorithm.md §3.1):
 * A the mean over examples and positions, G the mean over examples of the
 * sum over positions. Not with inversion EKFAC or TRIDIAG (INVALID_ARG). */
KFAC_API kfac_status kfac_precond_new_positions(int n_layers, const int *d_in, const int *d_out,
                                                const int *positions, int max_rows, const kfac_optim_params *op,
                                                const kfac_kfac_params *kp, kfac_precond **out);
KFAC_API void kfac_precond_free(kfac_precond *pc);

/* fv <- F v for the current batch, F the Fisher (for our three losses the
 * generalized Gauss-Newton matrix) of the mean batch loss. v and fv are
 * flat: layer l's d_out x d_in block at kfac_precond_layer_offset(pc, l). */
typedef kfac_status (*kfac_fisher_vec_fn)(void *user, const float *v, float *fv);
/* *loss <- the mean loss of the current batch at the current weights (the
 * QUADRATIC rule calls it after updating them, every lm_every steps). */
typedef kfac_status (*kfac_batch_loss_fn)(void *user, double *loss);

/* The callbacks the QUADRATIC rule needs (KFAC_ERR_STATE from a step
 * without them); `user` is passed back. Either may be NULL for KL_CLIP. */
KFAC_API kfac_status kfac_precond_set_fisher(kfac_precond *pc, kfac_fisher_vec_fn fisher_vec, kfac_batch_loss_fn loss,
                                    void *user);
/* The rule needs only v1^T F v2 for the direction and the previous
 * update, so a caller with forward-mode products can give those instead
 * of F v (half the work: no backward pass; docs/algorithm.md §6): s[0..2]
 * <- the sums over the callback's rows of (J v1)^T H (J v1),
 * (J v1)^T H (J v2) and (J v2)^T H (J v2) (v2 NULL: the first alone;
 * sums, not means: the step divides by the rows). When set it is used in
 * place of kfac_precond_set_fisher's fisher_vec, whose loss callback is
 * still needed; NULL unsets it. */
typedef kfac_status (*kfac_fisher_forms_fn)(void *user, const float *v1, const float *v2, double s[3]);
KFAC_API kfac_status kfac_precond_set_fisher_forms(kfac_precond *pc, kfac_fisher_forms_fn forms, void *user);
/* The forms and, besides, the slopes the same forward passes give for a
 * dot each: s[3], s[4] <- the sums over the callback's rows of
 * (dl_n/dz_n)^T J_n v1 and (dl_n/dz_n)^T J_n v2, each example's derivative
 * of its loss along v1 and v2 (v2 NULL: s[4] unused). Over the whole
 * batch (kfac_precond_step always; the trainer with fvp_fraction 1) and
 * without weight decay, the step then takes the gradient's dot with the
 * previous update from s[4] (docs/algorithm.md §5.2), so it forms no
 * gradient for a layer given by abar and g rows: one product per layer
 * fewer. Used in place of the forms callback; NULL unsets it. */
typedef kfac_status (*kfac_fisher_model_fn)(void *user, const float *v1, const float *v2, double s[5]);
KFAC_API kfac_status kfac_precond_set_fisher_model(kfac_precond *pc, kfac_fisher_model_fn model, void *user);
/* Inside the QUADRATIC rule's callbacks, the first forward-mode product
 * of layer l along v1 (the direction) for the first `rows` examples of the
 * step's batch: out (rows x d_out[l]) <- abar_l[:rows] delta_l^T, from
 * the batch form's factors when layer l took that form in this step, in
 * 2 rows B d_out flops instead of 2 rows d_in d_out (docs/algorithm.md
 * §5.2). 1 if written; 0 if not available (another form, another rule,
 * or batches past 1024 rows: multiply by v1 as usual); -1 for bad
 * arguments. */
KFAC_API int kfac_precond_direction_rows(const kfac_precond *pc, int l, int rows, float *out);

/* 1 if the next step folds in statistics (it then reads abar and g), else
 * 0 (also for NULL): a caller can skip the sampled-target backward pass. */
KFAC_API int kfac_precond_stats_due(const kfac_precond *pc);
/* Rows of abar and g the statistics read for a batch of `rows`:
 * ceil(stat_fraction * rows), at least 1; -1 for bad arguments. */
KFAC_API int kfac_precond_stat_rows(const kfac_precond *pc, int rows);

/* One batch, as arrays of n_layers pointers. */
typedef struct kfac_precond_batch {
    int rows;                      /* B, in [1, max_rows] */
    float *const *weights;         /* W_l: updated in place */
    const float *const *grads;     /* grad_l: mean gradient, no decay;
                                      or NULL, given abar and g below */
    const float *const *abar;      /* abar_l: read when statistics are due
                                      (NULL otherwise allowed) */
    const float *const *g_sampled; /* g_l of sampled targets, first
                                      kfac_precond_stat_rows rows read; when
                                      statistics are due (else NULL allowed) */
    double loss;                   /* QUADRATIC: mean batch loss at the
                                      current weights, finite and >= 0 (the
                                      rule assumes a loss bounded below by
                                      0); ignored by KL_CLIP */
    const float *const *g;         /* g_l of the training targets, rows x
                                      d_out, per example (not divided by
                                      rows), or NULL. With grads NULL, abar
                                      (every row) and g replace the
                                      gradients, grad_l = (1/rows) g_l^T
                                      abar_l, and each layer may take the
                                      batch form (the cost model's choice,
                                      as in the trainer): the gradient
                                      need never be formed */
} kfac_precond_batch;

/* Statistics, inversion, preconditioning and the update, as above. Every
 * argument is checked before anything changes. KFAC_ERR_NUMERIC, nothing
 * changed, if a gradient or the statistics due (abar, g_sampled) hold NaN
 * or Inf; KFAC_ERR_NUMERIC if the direction is not finite even with 1000x
 * damping. */
KFAC_API kfac_status kfac_precond_step(kfac_precond *pc, const kfac_precond_batch *batch);

/* Sizes and state. Offsets index the flat vectors of kfac_fisher_vec_fn
 * (0 for bad arguments). */
KFAC_API size_t kfac_precond_n_params(const kfac_precond *pc);
KFAC_API size_t kfac_precond_layer_offset(const kfac_precond *pc, int l);
KFAC_API long kfac_precond_steps(const kfac_precond *pc); /* steps taken (0 for NULL) */
/* Layer l's last preconditioned gradient Delta_l (d_out x d_in), valid
 * until the next step; NULL before the first step or for bad arguments. */
KFAC_API const float *kfac_precond_direction(const kfac_precond *pc, int l);
/* Counters, timings and the current damping, as for the trainer. */
/* The learning rate of the next steps (a schedule's), (0, 1000]; the
 * kl_clip rule's. */
KFAC_API kfac_status kfac_precond_set_lr(kfac_precond *pc, float lr);
KFAC_API kfac_status kfac_precond_get_stats(const kfac_precond *pc, kfac_kfac_stats *out);

/* The preconditioner's whole state (factors, inverses, damping, momentum
 * or previous update, step count) in the checkpoint format, written
 * atomically; loading needs an object with the same layers, inversion and
 * rule. The caller saves its own weights. */
KFAC_API kfac_status kfac_precond_save(const kfac_precond *pc, const char *path);
KFAC_API kfac_status kfac_precond_load(kfac_precond *pc, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* KFAC_KFAC_CORE_H */
