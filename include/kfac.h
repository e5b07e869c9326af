/* kfac.h - public API of libkfac: a small MLP framework in C (OpenBLAS +
 * OpenMP) built to feed K-FAC, with first-order baselines.
 *
 * Two layers, as ggml layers ggml-opt.h on ggml.h:
 *  - kfac_core.h: status and errors, threads, networks and losses, the
 *    first-order optimizers, the K-FAC preconditioner for any network
 *    (and the API's conventions);
 *  - kfac_train.h: data, training parameters, the trainer, checks, process
 *    groups, checkpoints and net files;
 * and, on both, kfac_handles.h: the same API by handles and plain arrays,
 * for bindings in other languages (python/kfac).
 * Including this header gives all three. */
#ifndef KFAC_H
#define KFAC_H

#include "kfac_core.h"
#include "kfac_train.h"
#include "kfac_handles.h"

#endif /* KFAC_H */
