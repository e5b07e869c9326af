"""_lib.py - libkfac.so through ctypes: finding the library, every
function's prototype (from include/kfac_core.h, kfac_train.h and
kfac_handles.h), and library statuses turned into Python exceptions that
carry kfac_last_error()'s text.

Only handles (void pointers), plain numbers, strings and arrays cross the
boundary: the structs are allocated by the library (kfac_handles.h), so none
is mirrored here.
"""
import ctypes
import ctypes.util
import os

_here = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("KFAC_LIBRARY")
    if env:
        yield env
        return
    # an installed copy: the library installed with it (make install)
    try:
        from . import _install
        yield _install.LIBRARY
    except ImportError:
        pass
    # the repository's own build, for python/ used in place
    yield os.path.join(_here, "..", "..", "build", "libkfac.so.0")
    yield "libkfac.so.0"
    found = ctypes.util.find_library("kfac")
    if found:
        yield found


def _load():
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            errors.append("%s: no such file" % path)
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append(str(e))
    raise ImportError("kfac: cannot load libkfac (set KFAC_LIBRARY to the path of libkfac.so): "
                      + "; ".join(errors))


# libgomp's idle threads spin about 3 ms before they sleep, which on a
# machine other processes load costs an epoch many times its time; libgomp
# reads its settings once, as it loads (with libkfac, below), so they are
# set here as the kfac program sets them, unless the user chose.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"

lib, path = _load()

# ---------------------------------------------------------------- errors

OK = 0
_STATUS_NAMES = ["OK", "NOMEM", "INVALID_ARG", "IO", "FORMAT", "PARSE", "SHAPE", "NUMERIC", "STATE", "COMM"]


class KfacError(Exception):
    """A failure reported by libkfac: `status` is the kfac_status value,
    `status_name` its name ("INVALID_ARG", ...) and str(e) the library's
    kfac_last_error() text (or kfac_strerror()'s when that is empty)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.status_name = _STATUS_NAMES[status] if 0 <= status < len(_STATUS_NAMES) else str(status)
        self.message = message


class InvalidArgumentError(KfacError, ValueError):
    """KFAC_ERR_INVALID_ARG: a bad value, name or size."""


class ShapeError(KfacError, ValueError):
    """KFAC_ERR_SHAPE: sizes that do not match (data against the network)."""


class FormatError(KfacError, ValueError):
    """KFAC_ERR_FORMAT or KFAC_ERR_PARSE: a malformed data, checkpoint or net file."""


class FileError(KfacError, OSError):
    """KFAC_ERR_IO: a file that could not be opened, read or written."""


class NumericError(KfacError, ArithmeticError):
    """KFAC_ERR_NUMERIC: NaN or Inf, or a factorisation that failed."""


class StateError(KfacError, RuntimeError):
    """KFAC_ERR_STATE: a call out of order."""


_CLASSES = {2: InvalidArgumentError, 6: ShapeError, 4: FormatError, 5: FormatError, 3: FileError,
            7: NumericError, 8: StateError, 1: MemoryError}


def error(status):
    """The exception for a failed call's status, with the library's text."""
    message = lib.kfac_last_error().decode("utf-8", "replace")
    if not message:
        message = lib.kfac_strerror(status).decode()
    cls = _CLASSES.get(status, KfacError)
    if cls is MemoryError:
        return MemoryError(message)
    return cls(status, message)


def check(status):
    if status != OK:
        raise error(status)


# ----------------------------------------------------------- prototypes

c_int, c_long, c_double, c_float, c_char_p, c_void_p, c_size_t = (
    ctypes.c_int, ctypes.c_long, ctypes.c_double, ctypes.c_float, ctypes.c_char_p, ctypes.c_void_p,
    ctypes.c_size_t)
c_uint64 = ctypes.c_uint64
P = ctypes.POINTER
c_float_p = P(c_float)
c_int_p = P(c_int)
c_double_p = P(c_double)
c_void_pp = P(c_void_p)

# callbacks: kfac_progress_fn, kfac_fisher_vec_fn, kfac_batch_loss_fn
PROGRESS_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_long, c_long)
FISHER_VEC_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_float_p, c_float_p)
BATCH_LOSS_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_double_p)

_PROTOTYPES = {
    # core
    "kfac_version": (c_char_p, []),
    "kfac_strerror": (c_char_p, [c_int]),
    "kfac_last_error": (c_char_p, []),
    "kfac_set_threads": (None, [c_int]),
    "kfac_get_threads": (c_int, []),
    "kfac_activation_from_name": (c_int, [c_char_p, c_int_p]),
    "kfac_activation_name": (c_char_p, [c_int]),
    "kfac_layer_kind_from_name": (c_int, [c_char_p, c_int_p]),
    "kfac_loss_from_name": (c_int, [c_char_p, c_int_p]),
    "kfac_loss_name": (c_char_p, [c_int]),
    "kfac_optimizer_name": (c_char_p, [c_int]),
    # networks
    "kfac_net_new": (c_int, [c_void_p, c_int, c_void_pp]),
    "kfac_net_free": (None, [c_void_p]),
    "kfac_net_init_weights": (c_int, [c_void_p, c_void_p]),
    "kfac_net_get_spec": (c_void_p, [c_void_p]),
    "kfac_net_max_batch": (c_int, [c_void_p]),
    "kfac_net_inputs": (c_int, [c_void_p]),
    "kfac_net_outputs": (c_int, [c_void_p]),
    "kfac_net_n_layers": (c_int, [c_void_p]),
    "kfac_net_n_params": (c_size_t, [c_void_p]),
    "kfac_net_params": (c_float_p, [c_void_p]),
    "kfac_net_layer_weights": (c_float_p, [c_void_p, c_int, c_int_p, c_int_p]),
    "kfac_net_layer_offset": (c_size_t, [c_void_p, c_int]),
    "kfac_net_forward": (c_int, [c_void_p, c_float_p, c_int]),
    "kfac_net_output": (c_float_p, [c_void_p]),
    "kfac_net_loss": (c_int, [c_void_p, c_float_p, c_double_p, c_double_p]),
    "kfac_net_backward": (c_int, [c_void_p, c_float_p, c_float_p]),
    "kfac_net_predict": (c_int, [c_void_p, c_float_p, c_int, c_float_p]),
    "kfac_sample_targets": (c_int, [c_int, c_float_p, c_float_p, c_int, c_int, c_void_p]),
    "kfac_net_layer_input": (c_float_p, [c_void_p, c_int]),
    "kfac_net_layer_pregrad": (c_float_p, [c_void_p, c_int]),
    "kfac_net_layer_positions": (c_int, [c_void_p, c_int]),
    "kfac_net_batch": (c_int, [c_void_p]),
    "kfac_net_load_checkpoint": (c_int, [c_void_p, c_char_p]),
    "kfac_net_spec_validate": (c_int, [c_void_p]),
    # data
    "kfac_data_load": (c_int, [c_char_p, c_char_p, c_int, c_int, c_void_p]),
    "kfac_mnist_load": (c_int, [c_char_p, c_char_p, c_void_p]),
    "kfac_dataset_pool": (c_int, [c_void_p, c_int, c_void_p]),
    # parameters, net files
    "kfac_train_params_set": (c_int, [c_void_p, c_char_p, c_char_p]),
    "kfac_train_params_get": (c_int, [c_void_p, c_char_p, c_char_p, c_size_t]),
    "kfac_train_params_validate": (c_int, [c_void_p]),
    "kfac_param_count": (c_int, []),
    "kfac_netfile_load": (c_int, [c_char_p, c_void_p, c_void_p]),
    "kfac_netfile_parse": (c_int, [c_char_p, c_char_p, c_void_p, c_void_p]),
    # trainer
    "kfac_trainer_new": (c_int, [c_void_p, c_void_p, c_void_p, c_void_pp]),
    "kfac_trainer_free": (None, [c_void_p]),
    "kfac_trainer_net": (c_void_p, [c_void_p]),
    "kfac_trainer_epoch": (c_int, [c_void_p, PROGRESS_FN, c_void_p, c_void_p]),
    "kfac_trainer_kfac_stats": (c_int, [c_void_p, c_void_p]),
    "kfac_evaluate": (c_int, [c_void_p, c_void_p, c_double_p, c_double_p]),
    "kfac_trainer_epochs_done": (c_int, [c_void_p]),
    "kfac_trainer_save": (c_int, [c_void_p, c_char_p]),
    "kfac_trainer_load": (c_int, [c_void_p, c_char_p]),
    # the preconditioner
    "kfac_precond_free": (None, [c_void_p]),
    "kfac_precond_set_fisher": (c_int, [c_void_p, FISHER_VEC_FN, BATCH_LOSS_FN, c_void_p]),
    "kfac_precond_stats_due": (c_int, [c_void_p]),
    "kfac_precond_stat_rows": (c_int, [c_void_p, c_int]),
    "kfac_precond_n_params": (c_size_t, [c_void_p]),
    "kfac_precond_layer_offset": (c_size_t, [c_void_p, c_int]),
    "kfac_precond_steps": (c_long, [c_void_p]),
    "kfac_precond_direction": (c_float_p, [c_void_p, c_int]),
    "kfac_precond_set_lr": (c_int, [c_void_p, c_float]),
    "kfac_precond_get_stats": (c_int, [c_void_p, c_void_p]),
    "kfac_precond_save": (c_int, [c_void_p, c_char_p]),
    "kfac_precond_load": (c_int, [c_void_p, c_char_p]),
    # kfac_handles.h
    "kfac_net_spec_new": (c_int, [c_void_pp]),
    "kfac_net_spec_free": (None, [c_void_p]),
    "kfac_net_spec_add_layer": (c_int, [c_void_p, c_int, c_int]),
    "kfac_net_spec_add_conv": (c_int, [c_void_p, c_int, c_int, c_int, c_int, c_int, c_int]),
    "kfac_net_spec_add_pool": (c_int, [c_void_p, c_int, c_int, c_int]),
    "kfac_net_spec_get": (c_int, [c_void_p, c_char_p, c_char_p, c_size_t]),
    "kfac_net_spec_set": (c_int, [c_void_p, c_char_p, c_char_p]),
    "kfac_train_params_new": (c_int, [c_void_pp]),
    "kfac_train_params_free": (None, [c_void_p]),
    "kfac_train_params_clone": (c_int, [c_void_p, c_void_pp]),
    "kfac_param_info_get": (c_int, [c_int, c_char_p, c_char_p, c_size_t]),
    "kfac_dataset_new": (c_int, [c_void_pp]),
    "kfac_dataset_delete": (None, [c_void_p]),
    "kfac_dataset_from_arrays": (c_int, [c_float_p, c_int_p, c_int, c_int, c_int, c_int, c_int, c_void_pp]),
    "kfac_dataset_n": (c_int, [c_void_p]),
    "kfac_dataset_features": (c_int, [c_void_p]),
    "kfac_dataset_classes": (c_int, [c_void_p]),
    "kfac_dataset_rows": (c_int, [c_void_p]),
    "kfac_dataset_cols": (c_int, [c_void_p]),
    "kfac_dataset_x": (c_float_p, [c_void_p]),
    "kfac_dataset_labels": (P(ctypes.c_uint8), [c_void_p]),
    "kfac_rng_new": (c_int, [c_uint64, c_void_pp]),
    "kfac_rng_free": (None, [c_void_p]),
    "kfac_rng_next": (c_uint64, [c_void_p]),
    "kfac_epoch_stats_new": (c_int, [c_void_pp]),
    "kfac_epoch_stats_free": (None, [c_void_p]),
    "kfac_epoch_stats_get": (c_int, [c_void_p, c_char_p, c_double_p]),
    "kfac_epoch_stats_field": (c_char_p, [c_int]),
    "kfac_kfac_stats_new": (c_int, [c_void_pp]),
    "kfac_kfac_stats_free": (None, [c_void_p]),
    "kfac_kfac_stats_get": (c_int, [c_void_p, c_char_p, c_double_p]),
    "kfac_kfac_stats_field": (c_char_p, [c_int]),
    "kfac_precond_new_params": (c_int, [c_int, c_int_p, c_int_p, c_int, c_void_p, c_void_pp]),
    "kfac_precond_new_params_positions": (c_int, [c_int, c_int_p, c_int_p, c_int_p, c_int, c_void_p, c_void_pp]),
    "kfac_precond_step_arrays": (c_int, [c_void_p, c_int, c_void_pp, c_void_pp, c_void_pp, c_void_pp, c_void_pp,
                                         c_double]),
}

for _name, (_res, _args) in _PROTOTYPES.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args


def new_handle(fn, *args):
    """Call a kfac_*_new(..., &out) and return out (raising on failure)."""
    out = c_void_p()
    check(fn(*args, ctypes.byref(out)))
    return out


def text(fn, *args, size=512):
    """Call a get(..., buf, size) that writes text; return it."""
    buf = ctypes.create_string_buffer(size)
    check(fn(*args, buf, size))
    return buf.value.decode()


def enc(s):
    """A str or path as bytes for a const char * argument."""
    if isinstance(s, bytes):
        return s
    return os.fsencode(s) if isinstance(s, os.PathLike) else str(s).encode()
