/* kfac_train.h - the training side of libkfac's public API, on top of
 * kfac_core.h: data sets (IDX and CSV files, pooling), training parameters and
 * their table, the trainer and its evaluation, kfac_check, data-parallel
 * training over MPI, checkpoints and net files. The conventions are
 * kfac_core.h's. */
#ifndef KFAC_KFAC_TRAIN_H
#define KFAC_KFAC_TRAIN_H

#include "kfac_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------- data */

/* Labels are stored as bytes: at most this many classes. */
#define KFAC_MAX_CLASSES 256

/* A dataset held in memory: n examples of `features` floats and, for
 * classification, labels in [0, classes). */
typedef struct kfac_dataset {
    int n;
    int features;     /* rows * cols of each image (CSV, 2-D IDX: rows 1) */
    int rows, cols;
    int classes;      /* 10 for (Fashion-)MNIST */
    float *x;         /* n x features */
    uint8_t *labels;  /* n */
} kfac_dataset;

/* Read an IDX image file and label file (each gzipped or not; gzip is
 * detected by content; big-endian as the format says). The images may be
 * of any element type IDX defines: unsigned bytes (0x08) are scaled to
 * [0, 1] (divided by 255, as for MNIST), signed bytes (0x09), shorts
 * (0x0B), ints (0x0C), floats (0x0D) and doubles (0x0E) are taken as the
 * values they hold (rounded to float); 3 dimensions (examples x rows x
 * cols) or 2 (examples x features). The labels may be of any integer
 * type, and must lie in [0, classes); classes 0 takes the largest label
 * plus one (at most KFAC_MAX_CLASSES). Validates magic, element types,
 * dimensions, counts and the labels (a bad one is named by its index).
 * A gzipped file may hold several members one after the other; any other
 * byte after the last, or a member cut short, is KFAC_ERR_FORMAT.
 * On failure *out is untouched and the detail names the file. */
KFAC_API kfac_status kfac_idx_load(const char *images_path, const char *labels_path, int classes,
                          kfac_dataset *out);

/* Load "train" or "t10k" from a directory holding the four standard files
 * (`<set>-images-idx3-ubyte[.gz]`, `<set>-labels-idx1-ubyte[.gz]`); the
 * plain name is tried first, then `.gz`. 10 classes. t10k images of
 * another shape (rows x cols) than the train images in the directory are
 * KFAC_ERR_SHAPE, even of the same size (1x784 beside 28x28). */
KFAC_API kfac_status kfac_mnist_load(const char *dir, const char *set, kfac_dataset *out);

/* Read a CSV file (gzipped or not) of numeric features and one integer
 * label column, `label_column` (1-based), into *out (rows 1, cols the
 * features; values as they are written). A first row that does not parse
 * as numbers is a header and is skipped; empty lines are skipped; fields
 * are separated by commas, spaces around them ignored. Labels must lie in
 * [0, classes) (classes 0: the largest label plus one). Every malformed
 * row is KFAC_ERR_FORMAT with "path:line: problem" (a wrong number of
 * fields, a field that is not a finite number, a label that is not an
 * integer or is out of range); an empty file, or a header alone, too,
 * and a gzip stream cut short or followed by bytes that are not gzip. */
KFAC_API kfac_status kfac_csv_load(const char *path, int classes, int label_column, kfac_dataset *out);

/* A data set by where it is: `path` a directory holding, for `set`
 * ("train", or "test" alias "t10k"), `train.csv` / `test.csv` if present,
 * else the MNIST IDX files of kfac_mnist_load (t10k images of the train
 * images' shape); or `path` one CSV file
 * (the whole file, whatever `set`). classes and label_column as above
 * (label_column matters to CSV only). */
KFAC_API kfac_status kfac_data_load(const char *path, const char *set, int classes, int label_column,
                                    kfac_dataset *out);

KFAC_API void kfac_dataset_free(kfac_dataset *d); /* frees the buffers, zeroes *d */

/* out <- `in` with each image averaged over factor x factor blocks
 * (28x28 by 4: 7x7). The factor must divide rows and cols (else
 * KFAC_ERR_SHAPE); factor 1 copies. Labels are copied. */
KFAC_API kfac_status kfac_dataset_pool(const kfac_dataset *in, int factor, kfac_dataset *out);

#define KFAC_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
/* ------------------------------------------------------------- training */

/* How the learning rate moves over a run (docs/algorithm.md §11.1); a
 * linear warm-up over warmup_epochs may come first. */
typedef enum kfac_lr_schedule {
    KFAC_LR_CONSTANT, /* lr throughout */
    KFAC_LR_STEP,     /* lr x lr_step_factor every lr_step_epochs epochs */
    KFAC_LR_COSINE,   /* from lr down to 0 along half a cosine */
    KFAC_LR_COUNT
} kfac_lr_schedule;

KFAC_API const char *kfac_lr_schedule_name(kfac_lr_schedule s);
KFAC_API kfac_status kfac_lr_schedule_from_name(const char *name, kfac_lr_schedule *out);

typedef struct kfac_train_params {
    kfac_optimizer_kind optimizer; /* default MOMENTUM */
    kfac_optim_params optim;       /* see kfac_optim_params_init */
    kfac_kfac_params kfac;         /* used when optimizer is KFAC */
    int batch;                     /* default 128; 1..max_batch of the net */
    int epochs;                    /* default 10; 1..100000 */
    uint64_t seed;                 /* default 1: weights and data order */
    kfac_lr_schedule lr_schedule;  /* default CONSTANT */
    float warmup_epochs;           /* linear warm-up from 0; default 0; [0, 100000] */
    int lr_step_epochs;            /* STEP: epochs between drops; default 30 */
    float lr_step_factor;          /* STEP: each drop's factor; default 0.1; (0, 1] */
    /* One optimizer's own settings, so one net file (or one `kfac
     * compare`) runs each optimizer at its tuned values: the [sgd],
     * [momentum], [nesterov] and [adam] sections, or the names
     * "adam.lr", ... of kfac_train_params_set. A field that is NaN (the
     * default: "inherit") takes optim's. K-FAC's own are kfac.lr and
     * kfac.momentum. */
    kfac_optim_params per_optimizer[KFAC_OPT_COUNT];
    float val_fraction;            /* default 0 (none); [0, 1): the last
                                      fraction of the training set (rounded
                                      to the nearest example), held out
                                      before any shuffling and evaluated
                                      after each epoch */
    int early_stop;                /* default 0 (off); 0..100000: stop when
                                      the validation loss has not improved
                                      for N epochs (needs val_fraction) */
    int label_column;              /* default 1; 1..1000001: a CSV file's
                                      label column (1-based) */
} kfac_train_params;

KFAC_API void kfac_train_params_init(kfac_train_params *p);
KFAC_API kfac_status kfac_train_params_validate(const kfac_train_params *p);
/* The first-order settings the run of p->optimizer uses: optim, with that
 * optimizer's own section applied (for K-FAC, kfac.lr and kfac.momentum
 * where set). */
KFAC_API void kfac_train_params_resolve(const kfac_train_params *p, kfac_optim_params *out);

/* Training parameters by name. One table in the library gives every
 * [train] and [kfac] setting of a net file its name, command-line flag,
 * type, range, default and a line of documentation; these read it (for
 * bindings, and for the kfac program's flags and --help). A name is
 * "section.key" ("kfac.damping") or a key that one section alone has
 * ("damping"); an optimizer's own settings are "adam.lr", "momentum.lr",
 * ..., and the value "inherit" makes one take [train]'s again. set checks
 * the text as the net file does (number, range, enum name); on failure p
 * is unchanged and kfac_last_error() says why. */
KFAC_API kfac_status kfac_train_params_set(kfac_train_params *p, const char *name, const char *value);
/* The value as text: floats with %.9g (they read back exactly), enums by
 * name. */
KFAC_API kfac_status kfac_train_params_get(const kfac_train_params *p, const char *name, char *buf, size_t size);

typedef struct kfac_param_info {
    const char *section; /* "train" or "kfac": its net-file section */
    const char *key;     /* its key there */
    const char *flag;    /* the kfac program's flag, "--kfac-lr" */
    const char *arg;     /* the flag's value: "X" (number), "N" (integer), "NAME" */
    const char *resets;  /* the flag also restores this one to its default
                            ("kfac.lr" for --lr); NULL */
    const char *doc;     /* one line */
    char range[128];     /* "(0, 1000]", "[1, 100000]", "0 or more", "a | b" */
    char def[32];        /* the default, as text */
} kfac_param_info;

/* The number of parameters, and parameter i's description (0 <= i < count). */
KFAC_API int kfac_param_count(void);
KFAC_API kfac_status kfac_param_get_info(int i, kfac_param_info *out);

/* What an epoch (or an evaluation) measured. */
typedef struct kfac_epoch_stats {
    int epoch;           /* 1-based */
    double seconds;      /* training seconds so far, evaluation excluded */
    double train_loss;   /* mean loss over the epoch's batches */
    double test_loss;    /* mean loss on the test set */
    double test_acc;     /* accuracy (classification) or, for the other
                            losses, mean squared error per example
                            (sum over outputs) */
    int val_n;           /* examples held out (val_fraction); 0: none, and
                            the val_ fields are zero */
    double val_loss;     /* mean loss on them after the epoch */
    double val_acc;      /* their accuracy (or reconstruction error) */
    int best_epoch;      /* the epoch of the lowest validation loss so far */
    int early_stop;      /* 1: early_stop epochs without a lower
                            validation loss than best_epoch's: stop */
} kfac_epoch_stats;

/* Called after each training step (step of steps_in_epoch, from 1); it
 * may call kfac_trainer_position for the running loss. Return non-zero to
 * stop: the epoch stops after this step (in a process group, all ranks
 * at the next step's agreement, before computing it) and, unless that was
 * its last step, stays unfinished: kfac_trainer_epochs_done does not count
 * it, kfac_trainer_position says how far it went, a checkpoint saved now
 * holds that position, and the next kfac_trainer_epoch (after a load too)
 * finishes it with the same batches, so the run goes on bit-identically.
 * The stats of a stopped epoch are those of its part done. */
typedef int (*kfac_progress_fn)(void *user, long step, long steps_in_epoch);

/* A trainer owns a network, its optimizer, the data order and the
 * generator. The datasets are borrowed and must outlive it. For the
 * autoencoder (inputs == outputs, non-softmax loss) the images are the
 * targets. */
typedef struct kfac_trainer kfac_trainer;

KFAC_API kfac_status kfac_trainer_new(const kfac_net_spec *spec, const kfac_train_params *p,
                             const kfac_dataset *train, kfac_trainer **out);
KFAC_API void kfac_trainer_free(kfac_trainer *t);

KFAC_API kfac_net *kfac_trainer_net(kfac_trainer *t);
/* One pass over the training data in a fresh shuffled order. stats->test_*
 * are left zero; use kfac_evaluate. With val_fraction > 0 the held-out
 * examples are then evaluated (stats->val_*, not in stats->seconds), and
 * stats->early_stop says when early_stop epochs have passed without a
 * lower validation loss (this count starts afresh on a loaded checkpoint).
 * Meanwhile the calling thread and the threads of its OpenMP pool flush
 * denormal results and inputs to zero (x86-64: MXCSR's FTZ and DAZ; other
 * machines are left as they are), as Adam's decaying state otherwise
 * spends much of an epoch in slow denormal arithmetic. Before it returns,
 * each thread gets its floating-point modes back (rounding, exception
 * masks, FTZ, DAZ); exception flags raised stay raised. kfac_evaluate and
 * kfac_precond_step leave the environment as they find it. */
KFAC_API kfac_status kfac_trainer_epoch(kfac_trainer *t, kfac_progress_fn progress, void *user,
                               kfac_epoch_stats *stats);
/* How good K-FAC is on a tiny network (docs/algorithm.md §7): measured against the
 * exact Fisher F = (1/N) sum_n J_n^T H_n J_n of N examples and the exact
 * natural gradient d = (F + lambda I)^-1 grad. */
typedef struct kfac_check_report {
    int n_params;          /* P */
    int examples;          /* N */
    double damping;        /* lambda, for both K-FAC and the exact solve */
    double cos_kfac;       /* cosine(K-FAC direction, d): the inversion
                              of p->kfac */
    double cos_by_inversion[KFAC_INV_COUNT]; /* the same for each
                              inversion kind (the same samples); NaN for
                              TRIDIAG on a network with convolutions */
    int n_layers;          /* entries of the per-layer arrays */
    int rank_a[KFAC_MAX_LAYERS], rank_g[KFAC_MAX_LAYERS]; /* LOWRANK's
                              ranks of A^-1 and G^-1 (a factor's size:
                              dense) */
    double cos_grad;       /* cosine(gradient, d) */
    double kl_quadratic;   /* 1/2 s^T F s for the step s = -eps d */
    double kl_measured;    /* mean KL(p_theta || p_{theta + s}) */
    double grad_rel_err;   /* |grad - central differences| / |grad|, over
                              every parameter (explicit) or grad_samples
                              of them */
    double fvp_rel_err;    /* |R-op F v - F v| / |F v| for a random v;
                              NaN without the explicit F */
    double warmup_loss;    /* training loss at the checked point */
    /* d, the exact damped natural gradient (F + lambda I)^-1 grad, comes
     * from the explicit F by Cholesky when P <= 20000 (explicit 1), else
     * from conjugate gradients on exact F products (the R-op) alone */
    int explicit_fisher;
    int cg_iterations;     /* CG's iterations, and its final residual */
    double cg_rel_residual; /* |(F + lambda I) x - grad| / |grad| */
    double cg_rel_err;     /* |x_CG - d_Cholesky| / |d_Cholesky| (explicit
                              only; else NaN): CG's own check */
    int grad_samples;      /* parameters checked by central differences */
    double cos_layer_grad[KFAC_MAX_LAYERS], cos_layer_kfac[KFAC_MAX_LAYERS];
                           /* the cosines per layer: each layer's block of
                              the direction against d's */
    double model_grad, model_kfac, model_exact;
                           /* each direction u's quadratic-model
                              reduction at its best scale,
                              min_a 1/2 a^2 u^T (F + lambda I) u - a grad^T u
                              = -(grad^T u)^2 / (2 u^T (F + lambda I) u);
                              the exact d's is the least possible */
    double seconds;        /* the check's time after the warm-up */
} kfac_check_report;

/* What kfac_check measures on; kfac_check_options_init gives the defaults. */
typedef struct kfac_check_options {
    int warmup_epochs; /* epochs with p first, so the point is representative [1] */
    int examples;      /* the first N training examples [1000] */
    double cg_tol;     /* CG stops at this relative residual [1e-4] */
    int cg_max_iter;   /* or after this many iterations [1000] */
    int grad_samples;  /* parameters checked by central differences when
                          P > 20000 (each costs two losses over N) [64] */
} kfac_check_options;
KFAC_API void kfac_check_options_init(kfac_check_options *o);

/* Train o->warmup_epochs epochs with p (any optimizer) so the check runs at
 * a representative point, then measure on the first o->examples training
 * examples: the exact damped natural gradient d (explicit F and Cholesky
 * for P <= 20000, where CG is checked against it; CG alone above), and
 * every direction against it (docs/algorithm.md §7). */
KFAC_API kfac_status kfac_check_with(const kfac_net_spec *spec, const kfac_train_params *p,
                                     const kfac_dataset *train, const kfac_check_options *o,
                                     kfac_check_report *out);
/* kfac_check_with with the default options but these two. */
KFAC_API kfac_status kfac_check(const kfac_net_spec *spec, const kfac_train_params *p, const kfac_dataset *train,
                       int warmup_epochs, int examples, kfac_check_report *out);

/* K-FAC's counters and timings; KFAC_ERR_STATE if the trainer's optimizer
 * is not K-FAC. */
KFAC_API kfac_status kfac_trainer_kfac_stats(const kfac_trainer *t, kfac_kfac_stats *out);

/* Mean loss and accuracy (or reconstruction error) on a dataset. */
KFAC_API kfac_status kfac_evaluate(kfac_net *net, const kfac_dataset *d, double *loss, double *metric);

/* Epochs completed (counting those of a loaded checkpoint); -1 for NULL. */
KFAC_API int kfac_trainer_epochs_done(const kfac_trainer *t);

/* Where a trainer stands in its current epoch, the one kfac_trainer_epoch
 * runs or finishes next. */
typedef struct kfac_epoch_position {
    int epoch;        /* epochs done + 1 */
    long examples;    /* its examples trained on: 0 at an epoch boundary,
                         else those before a progress callback stopped it
                         (or, from the callback, those so far) */
    long total;       /* examples in an epoch (the training set) */
    double mean_loss; /* mean loss over those examples' batches; NaN for 0 */
} kfac_epoch_position;
KFAC_API kfac_status kfac_trainer_position(const kfac_trainer *t, kfac_epoch_position *out);

/* ------------------------------------------- data-parallel training (MPI) */

/* A trainer can run as one of a group of MPI processes (`mpirun -np N`),
 * with libkfac built by `make MPI=1`. Every process creates the same
 * trainer (same net, parameters, seed and data set: each loads all of
 * it), then joins the group with kfac_trainer_set_mpi_comm. From then on
 * each epoch is collective: every rank takes the same shuffled batches of
 * `batch` rows and computes its slice of each (rows [r B/N, (r+1) B/N) of
 * a batch of B over N ranks); losses and gradients are averaged over the
 * batch with MPI_Allreduce, and so are K-FAC's factor statistics, so all
 * ranks keep identical weights, factors and optimizer state. K-FAC's
 * inversions are spread over the ranks, each layer's A or G on one rank
 * (balanced by the d^3 cost), and broadcast. N ranks with batch B compute
 * what one process does with batch B, up to float rounding. A failure on
 * one rank (a non-finite loss, an inversion) is returned by every rank.
 *
 * The program initialises MPI; the library never calls MPI_Init. Only the
 * trainer is distributed: kfac_precond (your own network) and kfac_check
 * run in one process. */

/* 1 if this libkfac was built with MPI, else 0. */
KFAC_API int kfac_mpi_available(void);

/* Join the group of the MPI_Comm that `comm` points to, e.g.
 *     MPI_Comm world = MPI_COMM_WORLD;
 *     kfac_trainer_set_mpi_comm(t, &world);
 * (a pointer, so this header needs no mpi.h). Collective over comm; the
 * communicator is duplicated, so the caller's messages and ours never
 * mix. A communicator of one process leaves the trainer as it was.
 * Checks that every rank's trainer is the same (weights, generator, data
 * order and size, hyper-parameters: KFAC_ERR_INVALID_ARG on every rank
 * otherwise) and that every batch, the last short one too, has at least
 * one row per rank (KFAC_ERR_INVALID_ARG). KFAC_ERR_STATE if the library
 * has no MPI, MPI is not initialised, or the trainer already has a
 * group. Checkpoints load collectively (all ranks read the file; a
 * failure on any rank is returned by all) and the state they save is the
 * group's, so a run saved with N ranks resumes with any number; save from
 * one rank. */
KFAC_API kfac_status kfac_trainer_set_mpi_comm(kfac_trainer *t, const void *comm);
/* This process's rank in the trainer's group and the group's size (0 and
 * 1 alone; -1 for NULL). */
KFAC_API int kfac_trainer_rank(const kfac_trainer *t);
KFAC_API int kfac_trainer_ranks(const kfac_trainer *t);

/* ---------------------------------------------------------- checkpoints */

/* A checkpoint holds everything a trainer needs to go on exactly where it
 * stopped: the network's architecture (so a file for another network is
 * refused), theta, the optimizer's kind and state (step count, momentum or
 * Adam vectors; for K-FAC the factors A and G, their inverses or
 * eigenbases and eigenvalues, the damping, the statistics rounds and the
 * previous update), and the trainer's epoch count, training seconds,
 * generator state and data order, and in an epoch a progress callback
 * stopped, how far it went (format version 2; version 1 otherwise).
 * Resuming gives bit-identical parameters to an uninterrupted run at the
 * same thread count.
 *
 * The format is versioned, little-endian whatever the machine, and ends
 * with a crc32. Loading names the file in kfac_last_error() and returns
 * KFAC_ERR_IO (cannot read), KFAC_ERR_FORMAT (not a checkpoint, another
 * version, truncated, checksum mismatch) or KFAC_ERR_SHAPE (another
 * network, optimizer or data set size); a failed load leaves the object
 * unchanged. */

/* Write t's state to `path`: into a unique temporary file beside it,
 * flushed and fsync'ed, then renamed over `path`, so an interrupted save
 * never destroys the previous checkpoint. The file gets the mode the umask
 * gives a new file (0666 less the umask). Not during kfac_trainer_epoch on
 * the same trainer. */
KFAC_API kfac_status kfac_trainer_save(const kfac_trainer *t, const char *path);

/* Restore a trainer created with the same network spec, optimizer kind
 * (and, for K-FAC, inversion and step rule) and training-set size. The
 * other hyper-parameters (learning rate, epochs, ...) stay t's. */
KFAC_API kfac_status kfac_trainer_load(kfac_trainer *t, const char *path);

/* Load only theta from a trainer checkpoint into a network of the same
 * architecture (for evaluation and prediction). */
KFAC_API kfac_status kfac_net_load_checkpoint(kfac_net *net, const char *path);

/* ------------------------------------------------------------ net files */

/* A net file is INI-like text; `#` or `;` start a comment:
 *
 *   [net]                 inputs, loss, init, init_sigma, sparse_count,
 *                         pool (the field input_pool)
 *   [dense]               one per layer, in order: units, activation
 *   [train], [kfac]       the training parameters: every one that
 *                         kfac_param_get_info lists, under its key
 *
 * Keys take the names of the fields above and the enum names of
 * kfac_*_name(). Unknown sections or keys, duplicated keys, missing
 * required keys (net.inputs, dense.units) and bad values are
 * KFAC_ERR_PARSE with "file:line: problem" in kfac_last_error().
 * `spec` and `train` are filled with defaults first; on failure they are
 * left unspecified. */
KFAC_API kfac_status kfac_netfile_load(const char *path, kfac_net_spec *spec, kfac_train_params *train);
/* The same from a NUL-terminated string; `filename` is used in messages. */
KFAC_API kfac_status kfac_netfile_parse(const char *text, const char *filename, kfac_net_spec *spec,
                               kfac_train_params *train);

#ifdef __cplusplus
}
#endif
#endif /* KFAC_KFAC_TRAIN_H */
