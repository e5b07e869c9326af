/* kfac_handles.h - the API by handles and plain arrays, for bindings
 * (ctypes, cffi, another language's FFI): the library allocates every
 * struct a call needs, reads and sets its fields by name, and takes
 * batches as arrays of pointers, so no struct is mirrored across the
 * boundary or passed by value. The handles are the public structs of
 * kfac_core.h and kfac_train.h, so every function there takes them as
 * they are (kfac_netfile_load(path, spec, params), kfac_trainer_new(spec,
 * params, data, &t), ...). python/kfac is built on this header. The
 * conventions are kfac_core.h's. */
#ifndef KFAC_KFAC_HANDLES_H
#define KFAC_KFAC_HANDLES_H

#include "kfac_core.h"
#include "kfac_train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------- network specs */

/* A spec with kfac_net_spec_init's defaults (no layers, inputs 0): fill
 * it with kfac_netfile_load or kfac_netfile_parse (a layer list is a net
 * file's text), or with kfac_net_spec_add_layer after setting "inputs". */
KFAC_API kfac_status kfac_net_spec_new(kfac_net_spec **out);
KFAC_API void kfac_net_spec_free(kfac_net_spec *spec);
/* Append a dense layer of `units` (1..1000000); INVALID_ARG past
 * KFAC_MAX_LAYERS or for an unknown activation. */
KFAC_API kfac_status kfac_net_spec_add_layer(kfac_net_spec *spec, int units, kfac_activation activation);
/* Append a convolution ([conv]): `channels` outputs (1..1000000), a
 * kernel_h x kernel_w window (1..64 each), stride 1..64 (0: 1), pad
 * zeros on each side 0..63 or KFAC_PAD_SAME (an odd square kernel). A
 * first spatial layer reads the image of the spec's "shape" (set it
 * with kfac_net_spec_set), or a square one-channel image of `inputs`.
 * INVALID_ARG for a value out of range, past KFAC_MAX_LAYERS or an
 * unknown activation; the rest (the image fits the window, pad below
 * the kernel) is kfac_net_spec_validate's. */
KFAC_API kfac_status kfac_net_spec_add_conv(kfac_net_spec *spec, int channels, int kernel_h, int kernel_w,
                                            int stride, int pad, kfac_activation activation);
/* Append a pooling layer ([pool]): kind KFAC_LAYER_MAXPOOL or
 * KFAC_LAYER_AVGPOOL over size x size windows (1..64), stride 1..64
 * (0: the size). No activation (LINEAR), no weights. */
KFAC_API kfac_status kfac_net_spec_add_pool(kfac_net_spec *spec, kfac_layer_kind kind, int size, int stride);
/* A field by its net-file name, as text: "inputs", "shape" ("HxWxC", ""
 * when none is set), "loss", "init", "init_sigma" (%.9g),
 * "sparse_count", "pool", "layers" (their count), and layer l's
 * (0-based l): "kind.l" (dense, conv, maxpool, avgpool), "units.l" (a
 * convolution's channels), "activation.l", and for conv and pooling
 * layers "kernel.l" ("HxW"), "stride.l" (the one in effect: conv 1,
 * pooling the window, unless set) and "pad.l" ("same" or the number;
 * conv only). INVALID_ARG for an unknown name, a field the layer's kind
 * has not, or a buffer too small. */
KFAC_API kfac_status kfac_net_spec_get(const kfac_net_spec *spec, const char *name, char *buf, size_t size);
/* Set one of the [net] keys ("inputs", "shape", "loss", "init",
 * "init_sigma", "sparse_count", "pool") from text, checked as the net
 * file checks it; on failure spec is unchanged. */
KFAC_API kfac_status kfac_net_spec_set(kfac_net_spec *spec, const char *name, const char *value);

/* ------------------------------------------------- training parameters */

/* Parameters with kfac_train_params_init's defaults; read and set them
 * with kfac_train_params_get and kfac_train_params_set. */
KFAC_API kfac_status kfac_train_params_new(kfac_train_params **out);
KFAC_API void kfac_train_params_free(kfac_train_params *p);
/* *out <- a new copy of p (free with kfac_train_params_free). */
KFAC_API kfac_status kfac_train_params_clone(const kfac_train_params *p, kfac_train_params **out);
/* Field `field` of parameter i's description (kfac_param_get_info), as
 * text: "name" (section.key, the name kfac_train_params_set takes),
 * "section", "key", "flag", "arg", "resets" ("" if none), "doc",
 * "range", "default"; 0 <= i < kfac_param_count(). */
KFAC_API kfac_status kfac_param_info_get(int i, const char *field, char *buf, size_t size);

/* ------------------------------------------------------------ data sets */

/* An empty data set (all zero) for the loaders (kfac_data_load,
 * kfac_mnist_load, kfac_idx_load, kfac_csv_load, kfac_dataset_pool) to
 * fill. kfac_dataset_delete frees one made here or by
 * kfac_dataset_from_arrays, buffers and all (kfac_dataset_free frees only
 * the buffers of a caller's struct). */
KFAC_API kfac_status kfac_dataset_new(kfac_dataset **out);
KFAC_API void kfac_dataset_delete(kfac_dataset *d);

/* A data set copied from the caller's arrays: x, n x features float32
 * (row-major), every value finite; labels, n ints in [0, classes), or
 * NULL (an autoencoder's data: no labels, classes 0). classes 0 takes the
 * largest label plus one; at most KFAC_MAX_CLASSES. rows x cols is the
 * image shape kfac_dataset_pool (a net's `pool`) needs; 0, 0 means 1 x
 * features. The arrays are copied (the data set stores labels as bytes),
 * so they may be freed at once. INVALID_ARG, naming the first bad value
 * by its index, otherwise. */
KFAC_API kfac_status kfac_dataset_from_arrays(const float *x, const int *labels, int n, int features, int rows,
                                              int cols, int classes, kfac_dataset **out);

/* Fields (0 or NULL for NULL): examples, features per example, classes,
 * image rows and cols; the features (n x features) and labels (n bytes,
 * NULL without labels), owned by the data set. */
KFAC_API int kfac_dataset_n(const kfac_dataset *d);
KFAC_API int kfac_dataset_features(const kfac_dataset *d);
KFAC_API int kfac_dataset_classes(const kfac_dataset *d);
KFAC_API int kfac_dataset_rows(const kfac_dataset *d);
KFAC_API int kfac_dataset_cols(const kfac_dataset *d);
KFAC_API const float *kfac_dataset_x(const kfac_dataset *d);
KFAC_API const uint8_t *kfac_dataset_labels(const kfac_dataset *d);

/* ------------------------------------------------------------ generator */

/* A generator seeded as kfac_rng_seed seeds it, for kfac_net_init_weights
 * and kfac_sample_targets. */
KFAC_API kfac_status kfac_rng_new(uint64_t seed, kfac_rng **out);
KFAC_API void kfac_rng_free(kfac_rng *r);

/* ------------------------------------------------------------- results */

/* Epoch statistics for kfac_trainer_epoch to fill, read by field name:
 * "epoch", "seconds", "train_loss", "test_loss", "test_acc", "val_n",
 * "val_loss", "val_acc", "best_epoch", "early_stop". kfac_epoch_stats_field
 * gives name i (NULL past the last). */
KFAC_API kfac_status kfac_epoch_stats_new(kfac_epoch_stats **out);
KFAC_API void kfac_epoch_stats_free(kfac_epoch_stats *s);
KFAC_API kfac_status kfac_epoch_stats_get(const kfac_epoch_stats *s, const char *name, double *out);
KFAC_API const char *kfac_epoch_stats_field(int i);

/* K-FAC's statistics (kfac_trainer_kfac_stats, kfac_precond_get_stats),
 * read by field name: every scalar field of kfac_kfac_stats by its name
 * ("damping", "inversions", ...), and the per-layer ones as
 * "rank_a.l", "rank_g.l", "batch_form.l", "flops_batch.l",
 * "flops_weights.l" (0 <= l < n_layers). */
KFAC_API kfac_status kfac_kfac_stats_new(kfac_kfac_stats **out);
KFAC_API void kfac_kfac_stats_free(kfac_kfac_stats *s);
KFAC_API kfac_status kfac_kfac_stats_get(const kfac_kfac_stats *s, const char *name, double *out);
KFAC_API const char *kfac_kfac_stats_field(int i);

/* --------------------------------------- K-FAC for your own network */

/* kfac_precond_new with the training parameters' K-FAC settings (p->kfac)
 * and first-order ones as the trainer's K-FAC resolves them (lr, momentum,
 * weight decay; kfac.lr and kfac.momentum where set); p NULL: defaults. */
KFAC_API kfac_status kfac_precond_new_params(int n_layers, const int *d_in, const int *d_out, int max_rows,
                                             const kfac_train_params *p, kfac_precond **out);

/* kfac_precond_new_params with positions[l] rows of abar and g per
 * example (kfac_precond_new_positions: a convolution's output pixels;
 * NULL: 1 each, kfac_precond_new_params). */
KFAC_API kfac_status kfac_precond_new_params_positions(int n_layers, const int *d_in, const int *d_out,
                                                       const int *positions, int max_rows,
                                                       const kfac_train_params *p, kfac_precond **out);

/* kfac_precond_step with the fields of kfac_precond_batch as arguments:
 * each array holds n_layers pointers (grads, abar, g_sampled and g may be
 * NULL as that struct says). */
KFAC_API kfac_status kfac_precond_step_arrays(kfac_precond *pc, int rows, float *const *weights,
                                              const float *const *grads, const float *const *abar,
                                              const float *const *g_sampled, const float *const *g, double loss);

#ifdef __cplusplus
}
#endif
#endif /* KFAC_KFAC_HANDLES_H */
