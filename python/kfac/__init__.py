"""kfac - libkfac from Python, on numpy arrays.

A thin ctypes binding over libkfac.so (kfac_handles.h and the rest of the C
API): networks from net files or layer lists, trainers with every optimizer
(sgd, momentum, nesterov, adam, kfac), K-FAC for a network of your own
(Preconditioner), and data from MNIST-format files or any float array with
integer labels. A run gives bit-identical results to the C trainer's (and
the `kfac` program's) for the same seed and thread count.

    import kfac, numpy as np
    train = kfac.load_data("/usr/share/datasets/fashion-mnist", "train")
    t = kfac.Trainer("nets/small.net", train, optimizer="kfac", epochs=2)
    for stats in t.fit():
        print(stats["epoch"], stats["train_loss"])
    probs = t.network.predict(train.x[:5])

Every failure the library reports is raised as a KfacError subclass
(InvalidArgumentError and ShapeError are also ValueErrors, FileError an
OSError, ...) whose text is the library's kfac_last_error(). The library is
found through $KFAC_LIBRARY, then the repository's build/ beside python/,
then the system's libkfac.so.0.
"""
import collections
import ctypes
import math
import os

import numpy as np

from . import _lib
from ._lib import (KfacError, InvalidArgumentError, ShapeError, FormatError, FileError, NumericError,
                   StateError)

__all__ = ["__version__", "version", "library_path", "set_threads", "get_threads", "KfacError",
           "InvalidArgumentError", "ShapeError", "FormatError", "FileError", "NumericError", "StateError",
           "Params", "param_names", "param_info", "Rng", "Dataset", "load_data", "Conv", "Pool", "Network", "Trainer",
           "Preconditioner", "sample_targets", "OPTIMIZERS"]

#: the package's version; the library's is version()
__version__ = "0.1.0"

#: every optimizer a Trainer runs
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "kfac")

_L = _lib.lib


def version():
    """The version of the libkfac loaded (kfac_version())."""
    return _L.kfac_version().decode()


#: where the loaded libkfac.so is
library_path = _lib.path


def set_threads(n):
    """Threads of libkfac's OpenMP regions and OpenBLAS (process-wide);
    n <= 0: all cores. Runs are reproducible for a given thread count."""
    _L.kfac_set_threads(_int(n, "threads"))


def get_threads():
    return _L.kfac_get_threads()


# ------------------------------------------------------------- helpers


def _int(v, what):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError("%s must be an integer, not %s" % (what, type(v).__name__))
    v = int(v)
    if not -2**31 <= v < 2**31:
        raise ValueError("%s = %d is outside a C int" % (what, v))
    return v


def _f32(a, what, ndim=None):
    """a as a C-contiguous float32 array (copied if need be)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError("%s must be a real numeric array, not %s" % (what, arr.dtype))
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError("%s must have %d dimension%s, not shape %s" % (what, ndim, "" if ndim == 1 else "s",
                                                                     arr.shape))
    return arr


def _ptr(arr):
    return arr.ctypes.data_as(_lib.c_float_p) if arr is not None else None


def _copy_out(ptr, shape):
    """A copy of the library's floats at ptr as an array of shape."""
    n = int(np.prod(shape))
    if not ptr or n == 0:
        return np.zeros(shape, dtype=np.float32)
    return np.ctypeslib.as_array(ptr, shape=(n,)).copy().reshape(shape)


def _value_text(v):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError("a parameter takes a number or a name, not a bool")
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if v is None:
        return "inherit"
    return str(v)


def _from_text(s):
    """A value the library wrote: an int, a float (the library's floats
    are float32, written with %.9g: the float32 itself comes back), or a
    name."""
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(np.float32(float(s)))
    except ValueError:
        return s


class _Handle:
    """An object of the library, freed with its *_free when this goes (or
    borrowed from an owner it keeps alive)."""
    _free = None

    def __init__(self, h, owner=None):
        self._h = h
        self._owner = owner

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h and h.value and self._owner is None and self._free is not None:
            type(self)._free(h)


# ---------------------------------------------------------- parameters


def param_names():
    """Every training parameter's name, "section.key" ("train.lr",
    "kfac.damping", ...): the keys of Params. An optimizer's own settings
    are "adam.lr", "momentum.lr", ..., and a key one section alone has may
    be given alone ("damping")."""
    return [_lib.text(_L.kfac_param_info_get, i, b"name") for i in range(_L.kfac_param_count())]


_flag_table = None


def _flags():
    """{"lr": info of --lr, "kfac_lr": info of --kfac-lr, ...}"""
    global _flag_table
    if _flag_table is None:
        fields = ("name", "section", "key", "flag", "resets")
        rows = [{f: _lib.text(_L.kfac_param_info_get, i, f.encode()) for f in fields}
                for i in range(_L.kfac_param_count())]
        _flag_table = {r["flag"][2:].replace("-", "_"): r for r in rows if r["flag"].startswith("--")}
    return _flag_table


def param_info(name):
    """A dict describing one parameter: its flag, range, default, doc."""
    fields = ("name", "section", "key", "flag", "arg", "resets", "doc", "range", "default")
    for i in range(_L.kfac_param_count()):
        info = {f: _lib.text(_L.kfac_param_info_get, i, f.encode()) for f in fields}
        if name in (info["name"], info["key"]):
            return info
    raise KeyError("unknown parameter %r (kfac.param_names() lists them)" % (name,))


class Params(_Handle):
    """Training parameters (kfac_train_params) by name: the [train] and
    [kfac] settings of a net file, with their defaults. Values are checked
    by the library as it sets them:

        p = kfac.Params(optimizer="kfac", lr=0.05, **{"kfac.damping": 0.03})
        p["batch"] = 256
        p["kfac.inversion"]    # 'lowrank'
    """
    _free = _L.kfac_train_params_free

    def __init__(self, settings=None, **kw):
        super().__init__(_lib.new_handle(_L.kfac_train_params_new))
        self.update(settings or {}, **kw)

    @classmethod
    def _adopt(cls, h):
        p = cls.__new__(cls)
        _Handle.__init__(p, h)
        return p

    def __setitem__(self, name, value):
        _lib.check(_L.kfac_train_params_set(self._h, _lib.enc(name), _value_text(value).encode()))

    def __getitem__(self, name):
        return _from_text(_lib.text(_L.kfac_train_params_get, self._h, _lib.enc(name)))

    def update(self, settings=None, **kw):
        """Set each name to its value. A name without a dot that is a
        command-line flag's (lr for --lr, kfac_lr for --kfac-lr, damping)
        sets what the flag sets, and resets what it resets (lr: kfac.lr
        and adam.lr, ..., as `kfac train --lr` does); any other name goes to the
        library as it is ("kfac.damping", "adam.lr")."""
        flags = _flags()
        for k, v in dict(settings or {}, **kw).items():
            f = flags.get(k) if "." not in k else None
            if f is None:
                self[k] = v
                continue
            self[f["name"]] = v
            # the flag wins over the net file's sections, as in kfac_train
            if f["resets"]:
                defaults = Params()
                self[f["resets"]] = _lib.text(_L.kfac_train_params_get, defaults._h, f["resets"].encode())
            if f["section"] == "train":
                for opt in OPTIMIZERS:
                    # refused where an optimizer has no such setting
                    _L.kfac_train_params_set(self._h, ("%s.%s" % (opt, f["key"])).encode(), b"inherit")
        return self

    def copy(self):
        return Params._adopt(_lib.new_handle(_L.kfac_train_params_clone, self._h))

    def validate(self):
        _lib.check(_L.kfac_train_params_validate(self._h))

    def to_dict(self):
        return {n: self[n] for n in param_names()}

    def __repr__(self):
        return "kfac.Params(%s)" % ", ".join("%r: %r" % kv for kv in self.to_dict().items())


def _params(params, settings):
    if params is None:
        p = Params()
    elif isinstance(params, Params):
        p = params.copy()
    else:
        p = Params(params)
    return p.update(settings)


# ----------------------------------------------------------- generator


class Rng(_Handle):
    """libkfac's generator (xoshiro256** seeded by splitmix64), for
    sample_targets and Network's weights."""
    _free = _L.kfac_rng_free

    def __init__(self, seed=1):
        super().__init__(_lib.new_handle(_L.kfac_rng_new, int(seed) & (2**64 - 1)))

    def next(self):
        """The next 64-bit number."""
        return _L.kfac_rng_next(self._h)


# ------------------------------------------------------------- data sets


class Dataset(_Handle):
    """A data set in the library's memory: n examples of `features`
    float32 values and labels in [0, classes) (or none: an autoencoder's).

    Dataset(x, labels=None, classes=0) copies any real array x, n x
    features (or n x rows x cols images: what a net's `pool` needs), and
    integer labels; the library checks every value (finite features,
    labels in range) and names the first bad one. classes 0: the largest
    label plus one. load_data() reads files.
    """
    _free = _L.kfac_dataset_delete

    def __init__(self, x, labels=None, classes=0):
        xa = np.asarray(x)
        if xa.ndim == 3:
            rows, cols = xa.shape[1], xa.shape[2]
        elif xa.ndim == 2:
            rows = cols = 0
        else:
            raise ValueError("x must be n x features or n x rows x cols, not shape %s" % (xa.shape,))
        n = xa.shape[0]
        xf = _f32(xa.reshape(n, int(np.prod(xa.shape[1:]))), "x")
        la = None
        if labels is not None:
            la = np.asarray(labels)
            if la.dtype.kind not in "iu":
                raise TypeError("labels must be integers, not %s" % la.dtype)
            if la.shape != (n,):
                raise ValueError("%d examples but labels of shape %s" % (n, la.shape))
            if la.size and (la.min() < -2**31 or la.max() >= 2**31):
                raise ValueError("labels outside a C int")
            la = np.ascontiguousarray(la, dtype=np.int32)
        h = _lib.new_handle(_L.kfac_dataset_from_arrays, _ptr(xf),
                            la.ctypes.data_as(_lib.c_int_p) if la is not None else None, _int(n, "n"),
                            _int(xf.shape[1] if xf.ndim == 2 else 0, "features"), rows, cols,
                            _int(classes, "classes"))
        super().__init__(h)

    @classmethod
    def _adopt(cls, h):
        d = cls.__new__(cls)
        _Handle.__init__(d, h)
        return d

    @classmethod
    def load(cls, path, set="train", classes=0, label_column=1):
        """kfac_data_load: `path` a directory holding MNIST IDX files
        (train-images-idx3-ubyte[.gz], ...; or train.csv/test.csv), or one
        CSV file; set "train" or "test" ("t10k")."""
        h = _lib.new_handle(_L.kfac_dataset_new)
        d = cls._adopt(h)
        _lib.check(_L.kfac_data_load(_lib.enc(path), _lib.enc(set), _int(classes, "classes"),
                                     _int(label_column, "label_column"), h))
        return d

    def pool(self, factor):
        """The images averaged over factor x factor blocks (a new Dataset)."""
        out = Dataset._adopt(_lib.new_handle(_L.kfac_dataset_new))
        _lib.check(_L.kfac_dataset_pool(self._h, _int(factor, "factor"), out._h))
        return out

    def __len__(self):
        return _L.kfac_dataset_n(self._h)

    @property
    def n(self):
        return _L.kfac_dataset_n(self._h)

    @property
    def features(self):
        return _L.kfac_dataset_features(self._h)

    @property
    def classes(self):
        return _L.kfac_dataset_classes(self._h)

    @property
    def image_shape(self):
        return (_L.kfac_dataset_rows(self._h), _L.kfac_dataset_cols(self._h))

    @property
    def x(self):
        """A copy of the features, n x features float32."""
        return _copy_out(_L.kfac_dataset_x(self._h), (self.n, self.features))

    @property
    def labels(self):
        """A copy of the labels (int32), or None."""
        p = _L.kfac_dataset_labels(self._h)
        if not p:
            return None
        return np.ctypeslib.as_array(p, shape=(self.n,)).astype(np.int32)

    def __repr__(self):
        return "kfac.Dataset(n=%d, features=%d, classes=%d)" % (self.n, self.features, self.classes)


def load_data(path, set="train", classes=0, label_column=1):
    """Read a data set with the library's kfac_data_load (Dataset.load)."""
    return Dataset.load(path, set, classes, label_column)


def _dataset(data, what="data"):
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError("%s: a Dataset, (x, labels) or x" % what)
        return Dataset(data[0], data[1])
    return Dataset(data)


# ------------------------------------------------------------- networks


class _Spec(_Handle):
    _free = _L.kfac_net_spec_free

    @classmethod
    def new(cls):
        return cls(_lib.new_handle(_L.kfac_net_spec_new))

    def get(self, name):
        return _from_text(_lib.text(_L.kfac_net_spec_get, self._h, name.encode()))

    def set(self, name, value):
        _lib.check(_L.kfac_net_spec_set(self._h, name.encode(), _value_text(value).encode()))


def _activation(name):
    out = ctypes.c_int()
    _lib.check(_L.kfac_activation_from_name(_lib.enc(name), ctypes.byref(out)))
    return out.value


def _hw(v, what):
    """k or (h, w) as (h, w)"""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v), int(v))
    v = tuple(v)
    if len(v) != 2:
        raise ValueError("%s: k or (height, width), not %r" % (what, v))
    return (_int(v[0], what), _int(v[1], what))


class Conv(collections.namedtuple("Conv", "channels kernel stride pad activation")):
    """A convolution in a Network's layer list (a net file's [conv]):
    Conv(channels, kernel, stride=1, pad=0, activation="relu"), kernel k
    or (height, width), pad the zeros on each side or "same" (an odd
    square kernel: the image keeps its size at stride 1). Its weights are
    channels x (kernel_h * kernel_w * in_channels + 1), each row's columns
    in (ky, kx, in_channel) order and the bias last: images are NHWC."""
    __slots__ = ()

    def __new__(cls, channels, kernel, stride=1, pad=0, activation="relu"):
        return super().__new__(cls, channels, _hw(kernel, "kernel"), stride, pad, activation)


class Pool(collections.namedtuple("Pool", "type size stride")):
    """A pooling layer in a Network's layer list (a net file's [pool]):
    Pool("max" or "avg", size, stride=size) over size x size windows."""
    __slots__ = ()

    def __new__(cls, type, size, stride=None):
        if type not in ("max", "avg"):
            raise ValueError("Pool type must be 'max' or 'avg', not %r" % (type,))
        return super().__new__(cls, type, size, size if stride is None else stride)


_PAD_SAME = -1  # KFAC_PAD_SAME


def _add_layer(spec, layer):
    h = spec._h
    if isinstance(layer, Conv):
        pad = _PAD_SAME if layer.pad == "same" else _int(layer.pad, "pad")
        _lib.check(_L.kfac_net_spec_add_conv(h, _int(layer.channels, "channels"), layer.kernel[0], layer.kernel[1],
                                             _int(layer.stride, "stride"), pad, _activation(layer.activation)))
    elif isinstance(layer, Pool):
        kind = ctypes.c_int()
        _lib.check(_L.kfac_layer_kind_from_name(("%spool" % layer.type).encode(), ctypes.byref(kind)))
        _lib.check(_L.kfac_net_spec_add_pool(h, kind.value, _int(layer.size, "size"), _int(layer.stride, "stride")))
    else:
        units, act = (layer, "relu") if isinstance(layer, (int, np.integer)) else layer
        _lib.check(_L.kfac_net_spec_add_layer(h, _int(units, "units"), _activation(act)))


class Network(_Handle):
    """A network (kfac_net): Network(inputs, layers, loss=..., ...) from a
    layer list, or Network.from_file (a net file). A layer is `units` (a
    dense ReLU layer), (units, activation) with activation linear, relu,
    tanh or sigmoid, Conv(...) or Pool(...). inputs is a count, or the
    input image's (height, width, channels) for convolutions (or give
    `shape`; without one a first convolution reads a square one-channel
    image). Images are flattened channel-last (NHWC: row, column,
    channel), and so is a convolution's output where a dense layer
    follows it. Its weights start from `seed` as the C library draws
    them. max_batch bounds forward's batch (predict takes any number)."""
    _free = _L.kfac_net_free

    def __init__(self, inputs, layers, loss="softmax_xent", init="glorot", seed=1, max_batch=256,
                 init_sigma=None, sparse_count=None, pool=None, shape=None):
        spec = _Spec.new()
        if not isinstance(inputs, (int, np.integer)):
            if shape is not None:
                raise ValueError("give the input's shape once: inputs = (height, width, channels) or shape")
            shape, inputs = inputs, None
        if shape is not None:
            shape = tuple(_int(v, "shape") for v in shape)
            if len(shape) != 3:
                raise ValueError("shape: (height, width, channels), not %r" % (shape,))
            if inputs is None:
                inputs = shape[0] * shape[1] * shape[2]
        spec.set("inputs", _int(inputs, "inputs"))
        if shape is not None:
            spec.set("shape", "%dx%dx%d" % shape)
        for k, v in (("loss", loss), ("init", init), ("init_sigma", init_sigma), ("sparse_count", sparse_count),
                     ("pool", pool)):
            if v is not None:
                spec.set(k, v)
        for layer in layers:
            _add_layer(spec, layer)
        self._build(spec, max_batch, seed)

    def _build(self, spec, max_batch, seed):
        h = _lib.new_handle(_L.kfac_net_new, spec._h, _int(max_batch, "max_batch"))
        _Handle.__init__(self, h)
        self._spec = spec
        self.init_weights(seed)

    @classmethod
    def from_file(cls, path, max_batch=256, seed=None):
        """The network of a net file; `seed` None takes its [train] seed.
        The file's training parameters are in .file_params."""
        spec, params = _Spec.new(), Params()
        _lib.check(_L.kfac_netfile_load(_lib.enc(path), spec._h, params._h))
        net = cls.__new__(cls)
        net._build(spec, max_batch, params["seed"] if seed is None else seed)
        net.file_params = params
        return net

    @classmethod
    def _borrow(cls, h, owner):
        net = cls.__new__(cls)
        _Handle.__init__(net, h, owner)
        net._spec = _Spec(_lib.c_void_p(_L.kfac_net_get_spec(h)), owner)
        return net

    def init_weights(self, seed):
        """Draw the weights afresh, as the C library does from `seed`."""
        rng = Rng(seed)
        _lib.check(_L.kfac_net_init_weights(self._h, rng._h))

    # sizes
    inputs = property(lambda self: _L.kfac_net_inputs(self._h))
    outputs = property(lambda self: _L.kfac_net_outputs(self._h))
    n_layers = property(lambda self: _L.kfac_net_n_layers(self._h))
    n_params = property(lambda self: _L.kfac_net_n_params(self._h))
    max_batch = property(lambda self: _L.kfac_net_max_batch(self._h))

    @property
    def loss_name(self):
        return self._spec.get("loss")

    @property
    def shape(self):
        """The input image's (height, width, channels), or None if none was
        given."""
        s = self._spec.get("shape")
        return tuple(int(v) for v in s.split("x")) if s else None

    @property
    def layers(self):
        """The layer list: (units, activation) for a dense layer, Conv(...)
        and Pool(...) for the others."""
        out = []
        for l in range(self.n_layers):
            kind, get = self._spec.get("kind.%d" % l), (lambda f: self._spec.get("%s.%d" % (f, l)))
            if kind == "dense":
                out.append((get("units"), get("activation")))
                continue
            kernel = tuple(int(v) for v in str(get("kernel")).split("x"))
            if kind == "conv":
                out.append(Conv(get("units"), kernel, get("stride"), get("pad"), get("activation")))
            else:
                out.append(Pool(kind[:3], kernel[0], get("stride")))
        return out

    @property
    def params(self):
        """A copy of the flat parameter vector (layer 0 first; each layer's
        weights row-major with the bias as the last column)."""
        return _copy_out(_L.kfac_net_params(self._h), (self.n_params,))

    @params.setter
    def params(self, value):
        v = _f32(value, "params", 1)
        if v.shape != (self.n_params,):
            raise ValueError("params: %d values for a network of %d" % (v.size, self.n_params))
        ctypes.memmove(_L.kfac_net_params(self._h), v.ctypes.data, v.nbytes)

    def _weights(self, l):
        l = self._layer(l)
        r, c = ctypes.c_int(), ctypes.c_int()
        p = _L.kfac_net_layer_weights(self._h, l, ctypes.byref(r), ctypes.byref(c))
        if not p:
            raise ValueError("layer %d is a pooling layer: it has no weights" % l)
        return p, (r.value, c.value)

    def weights(self, l):
        """A copy of layer l's weights, d_out x (d_in + 1) (bias last); a
        convolution's: channels x (kernel_h * kernel_w * in_channels + 1),
        columns in (ky, kx, in_channel) order (torch's Conv2d weight w is
        w.permute(0, 2, 3, 1).reshape(channels, -1) here). ValueError for
        a pooling layer."""
        p, shape = self._weights(l)
        return _copy_out(p, shape)

    def layer_positions(self, l):
        """Rows of layer_input and layer_pregrad per example: 1 for a dense
        layer, a convolution's output pixels, 0 for pooling."""
        return _L.kfac_net_layer_positions(self._h, self._layer(l))

    def _layer(self, l):
        l = _int(l, "layer")
        if not 0 <= l < self.n_layers:
            raise IndexError("layer %d of a network of %d" % (l, self.n_layers))
        return l

    def _rows(self, x, width, what):
        a = _f32(x, what)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2 or a.shape[1] != width:
            raise ValueError("%s must be batch x %d, not shape %s" % (what, width, np.shape(x)))
        return a

    def predict(self, x):
        """The model's mean prediction for the rows of x: softmax
        probabilities, sigmoid probabilities or the output itself."""
        a = self._rows(x, self.inputs, "x")
        out = np.empty((a.shape[0], self.outputs), dtype=np.float32)
        step = self.max_batch
        for i in range(0, a.shape[0], step):
            b = min(step, a.shape[0] - i)
            _lib.check(_L.kfac_net_predict(self._h, _ptr(a[i:i + b]), b, _ptr(out[i:i + b])))
        return out

    def forward(self, x):
        """A forward pass over one batch (at most max_batch rows); returns
        the output z and records each layer's input for layer_input()."""
        a = self._rows(x, self.inputs, "x")
        _lib.check(_L.kfac_net_forward(self._h, _ptr(a), a.shape[0]))
        return self.output()

    def _batch(self):
        b = _L.kfac_net_batch(self._h)
        if b < 1:
            raise StateError(8, "no forward pass yet")
        return b

    def output(self):
        return _copy_out(_L.kfac_net_output(self._h), (self._batch(), self.outputs))

    def _targets(self, y):
        a = self._rows(y, self.outputs, "y")
        if a.shape[0] != self._batch():
            raise ValueError("y has %d rows; the last forward pass had %d" % (a.shape[0], self._batch()))
        return a

    def loss(self, y):
        """(mean loss, mean metric) of the last forward pass against dense
        targets y (batch x outputs)."""
        a = self._targets(y)
        loss, metric = ctypes.c_double(), ctypes.c_double()
        _lib.check(_L.kfac_net_loss(self._h, _ptr(a), ctypes.byref(loss), ctypes.byref(metric)))
        return loss.value, metric.value

    def backward(self, y):
        """Back-propagate targets y of the last forward pass; returns the
        mean gradient (flat, as params) and records each layer's g."""
        a = self._targets(y)
        grad = np.empty(self.n_params, dtype=np.float32)
        _lib.check(_L.kfac_net_backward(self._h, _ptr(a), _ptr(grad)))
        return grad

    def layer_input(self, l):
        """abar of layer l from the last pass: batch x (d_in + 1), ones
        last; a convolution's patches, batch * positions rows (example
        b's output pixel p, row-major, in row b * positions + p) of its
        weights' columns."""
        _, (rows, cols) = self._weights(l)
        return _copy_out(_L.kfac_net_layer_input(self._h, l), (self._batch() * self.layer_positions(l), cols))

    def layer_pregrad(self, l):
        """g of layer l from the last backward pass: batch x d_out (a
        convolution: batch * positions x channels), per example (not
        divided by the batch)."""
        _, (rows, cols) = self._weights(l)
        return _copy_out(_L.kfac_net_layer_pregrad(self._h, l), (self._batch() * self.layer_positions(l), rows))

    def layer_offset(self, l):
        return _L.kfac_net_layer_offset(self._h, self._layer(l))

    def evaluate(self, data):
        """(mean loss, accuracy or reconstruction error) on a Dataset,
        (x, labels) or x (kfac_evaluate)."""
        d = _dataset(data)
        loss, metric = ctypes.c_double(), ctypes.c_double()
        _lib.check(_L.kfac_evaluate(self._h, d._h, ctypes.byref(loss), ctypes.byref(metric)))
        return loss.value, metric.value

    def load(self, path):
        """The weights of a trainer checkpoint (same architecture)."""
        _lib.check(_L.kfac_net_load_checkpoint(self._h, _lib.enc(path)))

    def __repr__(self):
        return "kfac.Network(%r, %r, loss=%r)" % (self.shape or self.inputs, self.layers, self.loss_name)


def sample_targets(loss, z, rng):
    """Targets drawn from the model's predictive distribution for outputs
    z (n x d) under `loss` ("softmax_xent", "sigmoid_xent", "squared"),
    with an Rng: what K-FAC's G factor needs (kfac_sample_targets)."""
    lk = ctypes.c_int()
    _lib.check(_L.kfac_loss_from_name(_lib.enc(loss), ctypes.byref(lk)))
    za = _f32(z, "z", 2)
    if not isinstance(rng, Rng):
        raise TypeError("rng must be a kfac.Rng")
    y = np.empty_like(za)
    _lib.check(_L.kfac_sample_targets(lk.value, _ptr(za), _ptr(y), za.shape[0], za.shape[1] if za.ndim == 2 else 0,
                                      rng._h))
    return y


# ------------------------------------------------------------- trainer


def _stats(get, field, h):
    out, i = {}, 0
    while True:
        name = field(i)
        if name is None:
            return out
        v = ctypes.c_double()
        _lib.check(get(h, name, ctypes.byref(v)))
        out[name.decode()] = v.value
        i += 1


def _ints(d, names):
    for n in names:
        if n in d:
            d[n] = int(d[n])
    return d


class _KfacStats(_Handle):
    _free = _L.kfac_kfac_stats_free

    def __init__(self):
        super().__init__(_lib.new_handle(_L.kfac_kfac_stats_new))

    _ARRAYS = ("rank_a", "rank_g", "batch_form", "flops_batch", "flops_weights")

    def read(self):
        out, i = {}, 0
        while True:
            name = _L.kfac_kfac_stats_field(i)
            i += 1
            if name is None:
                break
            if name.decode() in self._ARRAYS:
                continue
            v = ctypes.c_double()
            _lib.check(_L.kfac_kfac_stats_get(self._h, name, ctypes.byref(v)))
            out[name.decode()] = v.value
        _ints(out, ("stats_rounds", "inversions", "fallbacks", "damping_retries", "steps_rejected", "n_layers"))
        for arr in self._ARRAYS:
            vals = []
            for l in range(out.get("n_layers", 0)):
                v = ctypes.c_double()
                _lib.check(_L.kfac_kfac_stats_get(self._h, ("%s.%d" % (arr, l)).encode(), ctypes.byref(v)))
                vals.append(int(v.value) if not arr.startswith("flops") else v.value)
            out[arr] = vals
        return out


def _no_progress(step, steps):
    return False


class Trainer(_Handle):
    """The C trainer (kfac_trainer): a network, its optimizer, the data
    order and the generator.

        Trainer(net, data, params=None, **settings)

    net is a net file's path (its [train] and [kfac] settings are the
    starting parameters) or a Network (its architecture; the trainer draws
    the weights from the seed, as the C trainer does). data is a Dataset,
    (x, labels) or x (an autoencoder's). params (Params or a dict) and the
    settings override by name ("optimizer", "lr", "kfac.damping", ...).
    The same seed, data and threads give the C trainer's results bit for
    bit."""
    _free = _L.kfac_trainer_free

    def __init__(self, net, data, params=None, **settings):
        if isinstance(net, Network):
            spec = net._spec
            base = params
        else:
            spec, base = _Spec.new(), Params()
            _lib.check(_L.kfac_netfile_load(_lib.enc(net), spec._h, base._h))
            if isinstance(params, Params):
                base = params
            elif params is not None:
                base.update(params)
        self.params = _params(base, settings)
        self.data = _dataset(data)
        self._spec = spec
        h = _lib.new_handle(_L.kfac_trainer_new, spec._h, self.params._h, self.data._h)
        super().__init__(h)
        self.network = Network._borrow(_lib.c_void_p(_L.kfac_trainer_net(h)), self)
        self._estats = _lib.new_handle(_L.kfac_epoch_stats_new)

    def __del__(self):
        es, self._estats = getattr(self, "_estats", None), None
        if es:
            _L.kfac_epoch_stats_free(es)
        super().__del__()

    @property
    def epochs_done(self):
        return _L.kfac_trainer_epochs_done(self._h)

    def epoch(self, progress=None):
        """One pass over the data in a fresh shuffled order; returns its
        statistics (epoch, seconds, train_loss, val_loss, ..., finished).
        progress(step, steps) is called after each step; a true result
        stops the epoch there (unfinished: the next epoch() finishes it,
        bit-identically, and save() keeps the position). An exception in
        progress, or Ctrl-C's KeyboardInterrupt during the epoch, stops it
        the same way after the current step and is raised again."""
        caught = []

        def cb(user, step, steps):
            try:
                return 1 if progress(step, steps) else 0
            except BaseException as e:  # noqa: B036 (raised again below)
                caught.append(e)
                return 1

        # always a callback, so that Ctrl-C (KeyboardInterrupt, raised when
        # Python code next runs) stops the epoch after the step it came in
        if progress is None:
            progress = _no_progress
        fn = _lib.PROGRESS_FN(cb)
        before = self.epochs_done
        _lib.check(_L.kfac_trainer_epoch(self._h, fn, None, self._estats))
        if caught:
            raise caught[0]
        s = _ints(_stats(_L.kfac_epoch_stats_get, _L.kfac_epoch_stats_field, self._estats),
                  ("epoch", "val_n", "best_epoch", "early_stop"))
        s["early_stop"] = bool(s["early_stop"])
        s["finished"] = self.epochs_done > before
        return s

    def fit(self, epochs=None, test=None, progress=None, callback=None):
        """Train `epochs` more epochs (default: the parameters' epochs less
        those done); with `test` data each epoch's test_loss and test_acc
        are filled in (kfac_evaluate). callback(stats) after each epoch may
        return True to stop. Stops at early stopping or when progress
        stopped an epoch. Returns the list of epoch statistics."""
        if epochs is None:
            epochs = max(0, int(self.params["epochs"]) - self.epochs_done)
        test_d = _dataset(test, "test") if test is not None else None
        history = []
        for _ in range(_int(epochs, "epochs")):
            s = self.epoch(progress)
            if test_d is not None:
                s["test_loss"], s["test_acc"] = self.network.evaluate(test_d)
            history.append(s)
            if not s["finished"] or s["early_stop"] or (callback is not None and callback(s)):
                break
        return history

    def evaluate(self, data):
        return self.network.evaluate(data)

    def predict(self, x):
        return self.network.predict(x)

    def kfac_stats(self):
        """K-FAC's counters, timings and damping (StateError if the
        optimizer is not K-FAC)."""
        ks = _KfacStats()
        _lib.check(_L.kfac_trainer_kfac_stats(self._h, ks._h))
        return ks.read()

    def save(self, path):
        """The whole state in the checkpoint format (atomic)."""
        _lib.check(_L.kfac_trainer_save(self._h, _lib.enc(path)))

    def load(self, path):
        """Resume from a checkpoint of the same network, optimizer and
        data size; the run goes on bit-identically."""
        _lib.check(_L.kfac_trainer_load(self._h, _lib.enc(path)))


# -------------------------------------------------------- preconditioner


def _ptr_array(arrays):
    if arrays is None:
        return None
    return (_lib.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


class Preconditioner(_Handle):
    """K-FAC for a network of your own (kfac_precond) on numpy arrays.

        pc = kfac.Preconditioner([w.shape for w in weights], max_rows=B,
                                 lr=0.1, **{"kfac.damping": 0.03})

    shapes are the dense layers' weight shapes (d_out, d_in), d_in counting
    a bias column (the last) if the layer has one. params and settings are
    the trainer's names (kfac.*, lr, momentum, weight_decay). Each step():

        pc.step(weights, grads, abar=..., g_sampled=...)

    weights: the layers' float32 C-contiguous arrays, updated in place;
    grads: mean gradients (d_out x d_in); abar: rows x d_in inputs (ones
    last for a bias); g_sampled: per-example dl/ds for targets drawn from
    the model (sample_targets), read when stats_due; g: the labels'
    per-example g, which with abar may stand in for grads. See
    kfac_core.h's kfac_precond for the algorithm.

    Convolutions (KFC, kfac_precond_new_positions): positions[l] rows of
    abar and g per example for layer l (its output pixels; None: 1 for
    every layer). `rows` and max_rows still count examples: layer l's
    abar, g_sampled and g then hold rows * positions[l] rows, example b's
    in rows b * positions[l] to (b + 1) * positions[l] - 1; abar's rows
    are the input patches (with the ones column for a bias), g's the
    per-example dl/ds at each output pixel, and the gradient is
    (1/rows) g^T abar. Not with inversion "tridiag"."""
    _free = _L.kfac_precond_free

    def __init__(self, shapes, max_rows, params=None, positions=None, **settings):
        shapes = [tuple(int(v) for v in s) for s in shapes]
        if not shapes or any(len(s) != 2 for s in shapes):
            raise ValueError("shapes: one (d_out, d_in) per layer, at least one")
        self.shapes = shapes
        if positions is None:
            self.positions = [1] * len(shapes)
        else:
            self.positions = [_int(p, "positions") for p in positions]
            if len(self.positions) != len(shapes):
                raise ValueError("positions: %d values for %d layers" % (len(self.positions), len(shapes)))
        self.params = _params(params, settings)
        d_in = (_lib.c_int * len(shapes))(*[s[1] for s in shapes])
        d_out = (_lib.c_int * len(shapes))(*[s[0] for s in shapes])
        pos = (_lib.c_int * len(shapes))(*self.positions)
        self.max_rows = _int(max_rows, "max_rows")
        self._fisher = None
        self._caught = []
        super().__init__(_lib.new_handle(_L.kfac_precond_new_params_positions, _int(len(shapes), "layers"), d_in,
                                         d_out, pos, self.max_rows, self.params._h))

    @property
    def n_layers(self):
        return len(self.shapes)

    @property
    def stats_due(self):
        """True if the next step folds in statistics (reads abar, g_sampled)."""
        return bool(_L.kfac_precond_stats_due(self._h))

    def stat_rows(self, rows):
        """Rows of abar and g_sampled the statistics read for a batch."""
        r = _L.kfac_precond_stat_rows(self._h, _int(rows, "rows"))
        if r < 0:
            raise InvalidArgumentError(2, "rows = %d is outside [1, %d]" % (rows, self.max_rows))
        return r

    @property
    def steps(self):
        return _L.kfac_precond_steps(self._h)

    @property
    def n_params(self):
        return _L.kfac_precond_n_params(self._h)

    def layer_offset(self, l):
        return _L.kfac_precond_layer_offset(self._h, self._layer(l))

    def _layer(self, l):
        l = _int(l, "layer")
        if not 0 <= l < self.n_layers:
            raise IndexError("layer %d of %d" % (l, self.n_layers))
        return l

    def direction(self, l):
        """Layer l's last preconditioned gradient (d_out x d_in), or None
        before the first step."""
        p = _L.kfac_precond_direction(self._h, self._layer(l))
        return _copy_out(p, self.shapes[l]) if p else None

    def set_lr(self, lr):
        _lib.check(_L.kfac_precond_set_lr(self._h, float(lr)))

    def stats(self):
        ks = _KfacStats()
        _lib.check(_L.kfac_precond_get_stats(self._h, ks._h))
        return ks.read()

    def save(self, path):
        _lib.check(_L.kfac_precond_save(self._h, _lib.enc(path)))

    def load(self, path):
        _lib.check(_L.kfac_precond_load(self._h, _lib.enc(path)))

    def set_fisher(self, fisher_vec, batch_loss):
        """The quadratic rule's callbacks: fisher_vec(v) -> F v (flat
        float32 vectors of n_params, layer l at layer_offset(l)) and
        batch_loss() -> the mean loss at the current weights."""
        n = self.n_params

        def fv_cb(user, v, fv):
            try:
                out = _f32(fisher_vec(np.ctypeslib.as_array(v, shape=(n,)).copy()), "fisher_vec's result", 1)
                if out.shape != (n,):
                    raise ValueError("fisher_vec returned %d values, not %d" % (out.size, n))
                ctypes.memmove(fv, out.ctypes.data, out.nbytes)
                return 0
            except BaseException as e:  # noqa: B036 (raised again by step)
                self._caught.append(e)
                return 2

        def loss_cb(user, loss):
            try:
                loss[0] = float(batch_loss())
                return 0
            except BaseException as e:  # noqa: B036
                self._caught.append(e)
                return 2

        fns = (_lib.FISHER_VEC_FN(fv_cb) if fisher_vec is not None else ctypes.cast(None, _lib.FISHER_VEC_FN),
               _lib.BATCH_LOSS_FN(loss_cb) if batch_loss is not None else ctypes.cast(None, _lib.BATCH_LOSS_FN))
        _lib.check(_L.kfac_precond_set_fisher(self._h, fns[0], fns[1], None))
        self._fisher = fns  # kept alive as long as the library may call them

    def _arrays(self, arrays, what, rows_of, exact=False):
        if arrays is None:
            return None
        arrays = list(arrays)
        if len(arrays) != self.n_layers:
            raise ValueError("%s: %d arrays for %d layers" % (what, len(arrays), self.n_layers))
        out = []
        for l, a in enumerate(arrays):
            a = _f32(a, "%s[%d]" % (what, l), 2)
            want = rows_of(l)
            if a.shape[1] != want[1] or a.shape[0] < want[0] or (exact and a.shape != want):
                raise ValueError("%s[%d] has shape %s, needs %s" % (what, l, a.shape, want))
            out.append(a)
        return out

    def step(self, weights, grads=None, abar=None, g_sampled=None, g=None, loss=0.0, rows=None):
        """One step (kfac_precond_step): statistics when due, inversions,
        the preconditioned direction and the update of `weights` in place.
        rows (the batch) defaults to abar's, else g's, else g_sampled's."""
        weights = list(weights)
        if len(weights) != self.n_layers:
            raise ValueError("weights: %d arrays for %d layers" % (len(weights), self.n_layers))
        for l, w in enumerate(weights):
            if not isinstance(w, np.ndarray) or w.dtype != np.float32 or not w.flags.c_contiguous \
                    or not w.flags.writeable:
                raise TypeError("weights[%d] must be a writeable C-contiguous float32 numpy array "
                                "(it is updated in place)" % l)
            if w.shape != self.shapes[l]:
                raise ValueError("weights[%d] has shape %s, not %s" % (l, w.shape, self.shapes[l]))
        if rows is None:
            for src in (abar, g, g_sampled):
                if src is not None and len(src) > 0:
                    rows = np.shape(src[0])[0] // self.positions[0]
                    break
            else:
                rows = 1
        rows = _int(rows, "rows")
        srows = _L.kfac_precond_stat_rows(self._h, rows)
        pos = self.positions
        gr = self._arrays(grads, "grads", lambda l: self.shapes[l], exact=True)
        ab = self._arrays(abar, "abar", lambda l: (rows * pos[l], self.shapes[l][1]))
        gs = self._arrays(g_sampled, "g_sampled", lambda l: (max(srows, 0) * pos[l], self.shapes[l][0]))
        gl = self._arrays(g, "g", lambda l: (rows * pos[l], self.shapes[l][0]))
        self._caught = []
        st = _L.kfac_precond_step_arrays(self._h, rows, _ptr_array(weights), _ptr_array(gr), _ptr_array(ab),
                                         _ptr_array(gs), _ptr_array(gl), float(loss))
        if self._caught:
            raise self._caught[0]
        _lib.check(st)

    def bind(self, weights, grads=None, abar=None, g_sampled=None, g=None):
        """The arrays of every step, checked once, for a caller that
        reuses its buffers (kfac.torch does): returns a BoundStep, whose
        call step(rows, loss=0.0) is step() on these arrays without the
        per-step checks and conversions. Each must be a C-contiguous
        float32 numpy array (never copied: the library reads and writes
        them in place), weights writeable and of the layers' shapes, grads
        (if given) too; abar, g_sampled and g any number of rows (the
        buffers' capacity, at least the batch's times the layer's
        positions). Change an array's
        contents freely between calls, but not the array: bind again."""
        return BoundStep(self, weights, grads, abar, g_sampled, g)


class BoundStep:
    """Preconditioner.bind's result: step(rows, loss=0.0) runs
    kfac_precond_step on the bound arrays' first `rows` examples (rows
    times each layer's positions)."""

    def __init__(self, pc, weights, grads, abar, g_sampled, g):
        self.pc = pc
        self._arrays = []  # kept alive as long as the pointers are used
        self._cap = pc.max_rows

        def check(arrays, what, cols_of, exact=False, writeable=False):
            if arrays is None:
                return None
            arrays = list(arrays)
            if len(arrays) != pc.n_layers:
                raise ValueError("%s: %d arrays for %d layers" % (what, len(arrays), pc.n_layers))
            for l, a in enumerate(arrays):
                if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous \
                        or a.ndim != 2 or (writeable and not a.flags.writeable):
                    raise TypeError("%s[%d] must be a %sC-contiguous float32 numpy array of 2 dimensions (it is "
                                    "bound, not copied)" % (what, l, "writeable " if writeable else ""))
                d_out, d_in = pc.shapes[l]
                if exact and a.shape != (d_out, d_in):
                    raise ValueError("%s[%d] has shape %s, not %s" % (what, l, a.shape, (d_out, d_in)))
                if not exact and (a.shape[1] != cols_of(d_out, d_in) or a.shape[0] < 1):
                    raise ValueError("%s[%d] has shape %s, needs (rows, %d)" % (what, l, a.shape,
                                                                               cols_of(d_out, d_in)))
                if not exact and what != "g_sampled":
                    self._cap = min(self._cap, a.shape[0] // pc.positions[l])
            self._arrays.append(arrays)
            return _ptr_array(arrays)

        self._w = check(weights, "weights", None, exact=True, writeable=True)
        if self._w is None:
            raise ValueError("weights: one array per layer")
        self._gr = check(grads, "grads", None, exact=True)
        self._ab = check(abar, "abar", lambda o, i: i)
        self._gs = check(g_sampled, "g_sampled", lambda o, i: o)
        self._gl = check(g, "g", lambda o, i: o)
        self._gs_rows = min(a.shape[0] // p for a, p in zip(g_sampled, pc.positions)) if g_sampled is not None else 0
        if self._cap < 1:
            raise ValueError("the bound arrays hold fewer rows than one example's positions")

    @property
    def max_rows(self):
        """The largest batch the bound arrays hold."""
        return self._cap

    def __call__(self, rows, loss=0.0):
        pc = self.pc
        rows = _int(rows, "rows")
        if not 1 <= rows <= self._cap:
            raise ValueError("rows = %d: the bound arrays hold 1 to %d" % (rows, self._cap))
        if self._gs is not None and pc.stats_due and _L.kfac_precond_stat_rows(pc._h, rows) > self._gs_rows:
            raise ValueError("g_sampled holds %d examples, the statistics of %d read %d"
                             % (self._gs_rows, rows, _L.kfac_precond_stat_rows(pc._h, rows)))
        pc._caught = []
        st = _L.kfac_precond_step_arrays(pc._h, rows, self._w, self._gr, self._ab, self._gs, self._gl, float(loss))
        if pc._caught:
            raise pc._caught[0]
        _lib.check(st)
