"""test_kfac.py - the Python package against the C library it binds: every
entry point; the numpy trainer bit-identical to the `kfac` program's run
for the same seed and threads (every optimizer); kfac.Preconditioner's
steps bit-identical to kfac_precond's through the plain C API
(tests/precond_steps.c); bad arguments raising exceptions with the
library's message. Run by `make check-python` (so `make test`), which sets
KFAC_LIBRARY, KFAC_BIN, KFAC_PRECOND_STEPS and KFAC_ROOT. Small data
written here: a few seconds in all."""
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

import kfac

ROOT = os.environ.get("KFAC_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.environ.get("KFAC_BIN", os.path.join(ROOT, "build", "kfac"))
STEPS_BIN = os.environ.get("KFAC_PRECOND_STEPS", os.path.join(ROOT, "build", "precond_steps"))
SMALL = os.path.join(ROOT, "nets", "small.net")
TINY_CNN = os.path.join(ROOT, "nets", "tiny-cnn.net")

TMP = None
DATA = None  # a small MNIST-format directory


def write_mnist(d, n, seed, gz=False):
    """n training and n/4 test 28x28 images in IDX files, each class one
    bright row over noise (tests/test_util.c's kind of set)."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(seed)
    for name, count in (("train", n), ("t10k", n // 4)):
        labels = rng.randint(0, 10, size=count).astype(np.uint8)
        img = rng.randint(0, 60, size=(count, 28, 28)).astype(np.uint8)
        for i, lab in enumerate(labels):
            img[i, 2 + 2 * lab, :] = 255
        op = gzip.open if gz else open
        suffix = ".gz" if gz else ""
        with op(os.path.join(d, "%s-images-idx3-ubyte%s" % (name, suffix)), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, count, 28, 28) + img.tobytes())
        with op(os.path.join(d, "%s-labels-idx1-ubyte%s" % (name, suffix)), "wb") as f:
            f.write(struct.pack(">II", 0x801, count) + labels.tobytes())


def setUpModule():
    global TMP, DATA
    TMP = tempfile.mkdtemp(prefix="kfac_py_tests.")
    DATA = os.path.join(TMP, "data")
    write_mnist(DATA, 256, 5)


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


def run(args, **kw):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **kw)


class TestVersion(unittest.TestCase):
    def test_versions_agree(self):
        self.assertEqual(kfac.version(), kfac.__version__)
        self.assertTrue(os.path.exists(kfac.library_path))
        out = run([BIN, "--version"]).stdout.strip()
        self.assertEqual(out, "kfac " + kfac.version())

    def test_module_version(self):
        r = run([sys.executable, "-m", "kfac", "--version"], cwd=os.path.join(ROOT, "python"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "kfac %s (libkfac %s)" % (kfac.__version__, kfac.version()))
        r = run([sys.executable, "-m", "kfac", "--library"], cwd=os.path.join(ROOT, "python"))
        self.assertEqual(r.stdout.strip(), kfac.library_path)

    def test_threads(self):
        kfac.set_threads(1)
        self.assertEqual(kfac.get_threads(), 1)
        kfac.set_threads(2)
        self.assertEqual(kfac.get_threads(), 2)
        with self.assertRaises(TypeError):
            kfac.set_threads("2")

    def test_missing_library_is_an_import_error(self):
        env = dict(os.environ, KFAC_LIBRARY=os.path.join(TMP, "nowhere.so"))
        r = run([sys.executable, "-c", "import kfac"], cwd=os.path.join(ROOT, "python"), env=env)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError: kfac: cannot load libkfac", r.stderr)


class TestParams(unittest.TestCase):
    def test_defaults_and_names(self):
        p = kfac.Params()
        self.assertEqual(p["optimizer"], "momentum")
        self.assertEqual(p["batch"], 128)
        self.assertEqual(p["kfac.inversion"], "lowrank")
        self.assertAlmostEqual(p["train.lr"], 0.01, places=7)
        names = kfac.param_names()
        self.assertIn("kfac.damping", names)
        self.assertIn("train.seed", names)
        self.assertEqual(set(p.to_dict()), set(names))
        info = kfac.param_info("damping")
        self.assertEqual(info["flag"], "--damping")
        self.assertEqual(info["range"], "(0, 1000000]")
        with self.assertRaises(KeyError):
            kfac.param_info("nope")
        self.assertIn("damping", repr(p))

    def test_set_get_exact(self):
        p = kfac.Params({"kfac.damping": 0.03}, optimizer="adam", seed=2**64 - 1)
        self.assertEqual(p["damping"], float(np.float32(0.03)))
        self.assertEqual(p["optimizer"], "adam")
        self.assertEqual(p["seed"], 2**64 - 1)
        p["adam.lr"] = 0.001
        self.assertEqual(p["adam.lr"], float(np.float32(0.001)))
        p["adam.lr"] = None
        self.assertEqual(p["adam.lr"], "inherit")
        q = p.copy()
        q["batch"] = 7
        self.assertEqual(p["batch"], 128)
        self.assertEqual(q["batch"], 7)
        p.validate()

    def test_flags_reset_as_the_program_does(self):
        p = kfac.Params({"kfac.lr": 0.5, "adam.lr": 0.2})
        p.update(lr=0.05)
        self.assertEqual(p["train.lr"], float(np.float32(0.05)))
        self.assertEqual(p["kfac.lr"], 0)
        self.assertEqual(p["adam.lr"], "inherit")
        p.update(kfac_lr=0.3)
        self.assertEqual(p["kfac.lr"], float(np.float32(0.3)))

    def test_errors_carry_the_library_message(self):
        p = kfac.Params()
        with self.assertRaises(kfac.InvalidArgumentError) as cm:
            p["train.lr"] = -1
        self.assertEqual(str(cm.exception), "train.lr = -1 is outside (0, 1000]")
        self.assertEqual(cm.exception.status_name, "INVALID_ARG")
        self.assertIsInstance(cm.exception, ValueError)
        with self.assertRaises(kfac.KfacError) as cm:
            p["nonsense"] = 1
        self.assertIn("unknown parameter 'nonsense'", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            p["lr"] = 0.1
        self.assertIn("two sections", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            p["optimizer"] = "lbfgs"
        self.assertIn("unknown optimizer 'lbfgs'", str(cm.exception))
        with self.assertRaises(kfac.KfacError):
            p["nonsense"]
        with self.assertRaises(TypeError):
            p["batch"] = True
        self.assertEqual(p["optimizer"], "momentum")  # unchanged


class TestData(unittest.TestCase):
    def test_load_mnist_format(self):
        for gz in (False, True):
            d = os.path.join(TMP, "gz" if gz else "plain")
            write_mnist(d, 40, 9, gz)
            train = kfac.load_data(d, "train")
            test = kfac.Dataset.load(d, "test")
            self.assertEqual((len(train), train.n, train.features, train.classes), (40, 40, 784, 10))
            self.assertEqual(train.image_shape, (28, 28))
            self.assertEqual(test.n, 10)
            x, y = train.x, train.labels
            self.assertEqual(x.dtype, np.float32)
            self.assertEqual(x.shape, (40, 784))
            self.assertTrue(((x >= 0) & (x <= 1)).all())
            # each image's bright row is its label's
            rows = x.reshape(40, 28, 28).mean(axis=2).argmax(axis=1)
            np.testing.assert_array_equal((rows - 2) // 2, y)
            self.assertIn("n=40", repr(train))

    def test_from_arrays(self):
        rng = np.random.RandomState(0)
        x = rng.rand(30, 16)  # float64: converted
        y = rng.randint(0, 3, size=30).astype(np.int64)
        d = kfac.Dataset(x, y)
        self.assertEqual((d.n, d.features, d.classes, d.image_shape), (30, 16, 3, (1, 16)))
        np.testing.assert_array_equal(d.x, x.astype(np.float32))
        np.testing.assert_array_equal(d.labels, y)
        d = kfac.Dataset(x.reshape(30, 4, 4).astype(np.float32), y, classes=5)
        self.assertEqual((d.classes, d.image_shape), (5, (4, 4)))
        p = d.pool(2)
        self.assertEqual((p.features, p.image_shape), (4, (2, 2)))
        np.testing.assert_allclose(p.x[0, 0], x[0].reshape(4, 4)[:2, :2].mean(), rtol=1e-6)
        a = kfac.Dataset(x)
        self.assertIsNone(a.labels)
        self.assertEqual(a.classes, 0)

    def test_bad_data(self):
        x = np.zeros((4, 3), dtype=np.float32)
        x[1, 2] = np.nan
        with self.assertRaises(kfac.InvalidArgumentError) as cm:
            kfac.Dataset(x, [0, 1, 0, 1])
        self.assertEqual(str(cm.exception), "x[1][2] = nan is not finite")
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Dataset(np.zeros((4, 3)), [0, 1, 12, 1], classes=10)
        self.assertEqual(str(cm.exception), "labels[2] = 12 is outside [0, 10)")
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Dataset(np.zeros((4, 3)), [0, 1, -1, 1])
        self.assertIn("labels[2] = -1 is outside", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Dataset(np.zeros((4, 3)), [0, 1, 300, 1])
        self.assertIn("labels[2] = 300 is outside [0, 256)", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Dataset(np.zeros((4, 3)), [0, 1, 0, 1], classes=1000)
        self.assertIn("classes = 1000 is outside [0, 256]", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Dataset(np.zeros((0, 3)))
        self.assertIn("0 examples", str(cm.exception))
        with self.assertRaises(TypeError):
            kfac.Dataset(np.zeros((4, 3)), [0.0, 1.0, 0.0, 1.0])
        with self.assertRaises(TypeError):
            kfac.Dataset(np.array([["a"]]))
        with self.assertRaises(ValueError):
            kfac.Dataset(np.zeros((4, 3)), [0, 1])
        with self.assertRaises(ValueError):
            kfac.Dataset(np.zeros(4))
        with self.assertRaises(kfac.ShapeError) as cm:
            kfac.Dataset(np.zeros((4, 3)), [0, 1, 0, 1]).pool(2)
        self.assertIn("pool 2 does not divide 1x3 images", str(cm.exception))

    def test_missing_and_bad_files(self):
        with self.assertRaises(kfac.FileError) as cm:
            kfac.load_data(os.path.join(TMP, "nowhere"))
        self.assertIn("nowhere", str(cm.exception))
        self.assertIsInstance(cm.exception, OSError)
        bad = os.path.join(TMP, "bad")
        write_mnist(bad, 8, 1)
        with open(os.path.join(bad, "train-images-idx3-ubyte"), "r+b") as f:
            f.write(b"\x00\x00\x09\x09")
        with self.assertRaises(kfac.FormatError) as cm:
            kfac.load_data(bad)
        self.assertIn("train-images-idx3-ubyte", str(cm.exception))
        csv = os.path.join(TMP, "d.csv")
        with open(csv, "w") as f:
            f.write("a,b,label\n1,2,0\n3,4,1\n5,x,0\n")
        with self.assertRaises(kfac.FormatError) as cm:
            kfac.load_data(csv, label_column=3)
        self.assertIn("d.csv:4", str(cm.exception))
        with open(csv, "w") as f:
            f.write("1,2,0\n3,4,1\n")
        d = kfac.load_data(csv, label_column=3)
        np.testing.assert_array_equal(d.x, [[1, 2], [3, 4]])
        np.testing.assert_array_equal(d.labels, [0, 1])


def tiny_cnn(**kw):
    """nets/tiny-cnn.net's network from a layer list"""
    return kfac.Network((14, 14, 1), [kfac.Conv(4, 3, pad="same", activation="tanh"), kfac.Pool("max", 2),
                                      (10, "linear")], pool=2, **kw)


class TestNetwork(unittest.TestCase):
    def test_from_layers_and_file(self):
        n = kfac.Network(784, [32, (10, "linear")], seed=1)
        f = kfac.Network.from_file(SMALL)
        self.assertEqual(n.layers, [(32, "relu"), (10, "linear")])
        self.assertEqual(f.layers, n.layers)
        self.assertEqual((n.inputs, n.outputs, n.n_layers, n.n_params), (784, 10, 2, 32 * 785 + 10 * 33))
        self.assertEqual(n.loss_name, "softmax_xent")
        self.assertEqual(n.max_batch, 256)
        self.assertEqual(f.file_params["train.lr"], float(np.float32(0.05)))
        # small.net's seed is 1: the same weights
        np.testing.assert_array_equal(n.params, f.params)
        n.init_weights(2)
        self.assertFalse(np.array_equal(n.params, f.params))
        self.assertEqual(n.weights(1).shape, (10, 33))
        np.testing.assert_array_equal(n.weights(1).ravel(), n.params[n.layer_offset(1):])
        p = np.arange(n.n_params, dtype=np.float32)
        n.params = p
        np.testing.assert_array_equal(n.params, p)
        with self.assertRaises(ValueError):
            n.params = p[:5]
        with self.assertRaises(IndexError):
            n.weights(2)
        self.assertIn("relu", repr(n))
        t = kfac.Network(16, [8, (16, "linear")], loss="squared", init="trunc_normal", init_sigma=0.1, max_batch=4)
        self.assertEqual(t.loss_name, "squared")

    def test_network_errors(self):
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Network(784, [(32, "swish")])
        self.assertIn("unknown activation 'swish'", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Network(784, [(0, "relu")])
        self.assertIn("units = 0 is outside [1, 1000000]", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Network(784, [10], loss="hinge")
        self.assertIn("unknown loss 'hinge'", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Network(0, [10])
        self.assertIn("inputs = 0 is outside", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Network(784, [])
        self.assertIn("layer", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Network(784, [10] * 33)
        self.assertIn("at most 32 layers", str(cm.exception))
        bad = os.path.join(TMP, "bad.net")
        with open(bad, "w") as f:
            f.write("[net]\ninputs = 4\n[dense]\nsise = 3\n")
        with self.assertRaises(kfac.FormatError) as cm:
            kfac.Network.from_file(bad)
        self.assertIn("bad.net:4: unknown key 'sise'", str(cm.exception))
        with self.assertRaises(kfac.FileError):
            kfac.Network.from_file(os.path.join(TMP, "none.net"))

    def test_cnn_from_layers_and_file(self):
        n = tiny_cnn()
        f = kfac.Network.from_file(TINY_CNN)
        want = [kfac.Conv(4, (3, 3), 1, "same", "tanh"), kfac.Pool("max", 2, 2), (10, "linear")]
        self.assertEqual(n.layers, want)
        self.assertEqual(f.layers, want)
        self.assertEqual((n.shape, f.shape, n.inputs, n.outputs, n.n_params), ((14, 14, 1), (14, 14, 1), 196, 10,
                                                                             4 * 10 + 10 * (7 * 7 * 4 + 1)))
        np.testing.assert_array_equal(n.params, f.params)  # tiny-cnn.net's seed is 1
        self.assertEqual(n.weights(0).shape, (4, 3 * 3 * 1 + 1))
        self.assertEqual([n.layer_positions(l) for l in range(3)], [196, 0, 1])
        with self.assertRaises(ValueError) as cm:
            n.weights(1)
        self.assertIn("layer 1 is a pooling layer", str(cm.exception))
        self.assertIn("Conv(channels=4", repr(n))
        # the same given as inputs and shape; other windows and strides read back
        m = kfac.Network(40, [kfac.Conv(3, (3, 2), stride=2, pad=1), kfac.Pool("avg", 2, stride=1), (2, "linear")],
                         shape=(4, 5, 2))
        self.assertEqual(m.layers, [kfac.Conv(3, (3, 2), 2, 1, "relu"), kfac.Pool("avg", 2, 1), (2, "linear")])
        self.assertIsNone(kfac.Network(4, [(2, "linear")]).shape)
        # a square one-channel image without a shape
        self.assertEqual(kfac.Network(16, [kfac.Conv(2, 3), (2, "linear")]).layer_positions(0), 4)

    def test_cnn_errors(self):
        for layers, shape, text in (
                ([kfac.Conv(0, 3), (2, "linear")], (4, 4, 1), "channels = 0 is outside"),
                ([kfac.Conv(2, 65), (2, "linear")], (4, 4, 1), "kernel_h = 65 is outside"),
                ([kfac.Conv(2, 3, pad=-3), (2, "linear")], (4, 4, 1), "pad = -3"),
                ([kfac.Conv(2, 2, pad="same"), (2, "linear")], (4, 4, 1), "pad = same needs an odd kernel"),
                ([kfac.Conv(2, 5), (2, "linear")], (4, 4, 1), "layer 1 (conv)"),
                ([kfac.Conv(2, 3, activation="swish")], (4, 4, 1), "unknown activation 'swish'"),
                ([kfac.Pool("max", 0), (2, "linear")], (4, 4, 1), "size = 0"),
                ([kfac.Conv(2, 3), (2, "linear")], None, "15 inputs are not a square image")):
            with self.subTest(text):
                with self.assertRaises(kfac.KfacError) as cm:
                    kfac.Network(shape or 15, layers, shape=None) if shape is None else kfac.Network(shape, layers)
                self.assertIn(text, str(cm.exception))
        with self.assertRaises(ValueError):
            kfac.Pool("min", 2)
        with self.assertRaises(ValueError):
            kfac.Conv(2, (1, 2, 3))
        with self.assertRaises(ValueError):
            kfac.Network((4, 4, 1), [2], shape=(4, 4, 1))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Network(17, [kfac.Conv(2, 3), (2, "linear")], shape=(4, 4, 1))
        self.assertIn("input shape 4x4x1 is not 17 inputs", str(cm.exception))

    def test_cnn_passes(self):
        """A CNN's forward and backward: the patches and g each layer
        records make its gradient, (1/B) g^T abar over B x positions rows;
        predict and evaluate on images."""
        rng = np.random.RandomState(2)
        n = kfac.Network((6, 5, 2), [kfac.Conv(3, (3, 2), stride=2, pad=1, activation="tanh"), kfac.Pool("avg", 2),
                                     kfac.Conv(4, 1), (3, "linear")], max_batch=8, seed=4)
        B = 7
        x = rng.randn(B, 60).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[rng.randint(0, 3, B)]
        n.forward(x)
        grad = n.backward(y)
        P = n.layer_positions(0)
        self.assertEqual(P, 3 * 3)  # (6 + 2 - 3) // 2 + 1 rows of (5 + 2 - 2) // 2 + 1
        a0, g0 = n.layer_input(0), n.layer_pregrad(0)
        self.assertEqual((a0.shape, g0.shape), ((B * P, 3 * 2 * 2 + 1), (B * P, 3)))
        np.testing.assert_array_equal(a0[:, -1], 1)
        # the first patch of example 1: the window at (-1, -1), zeros outside, (ky, kx, c) order
        img = x[1].reshape(6, 5, 2)
        want = np.zeros((3, 2, 2), np.float32)
        want[1:, 1:] = img[:2, :1]
        np.testing.assert_array_equal(a0[P, :-1], want.ravel())
        for l in (0, 2, 3):
            a, g = n.layer_input(l), n.layer_pregrad(l)
            off, size = n.layer_offset(l), n.weights(l).size
            np.testing.assert_allclose(grad[off:off + size].reshape(n.weights(l).shape), g.T @ a / B, rtol=1e-4,
                                       atol=1e-6, err_msg="layer %d" % l)
        with self.assertRaises(ValueError):
            n.layer_input(1)
        pr = n.predict(rng.randn(20, 60))
        np.testing.assert_allclose(pr.sum(1), 1, rtol=1e-5)
        loss, acc = n.evaluate((rng.randn(20, 60), rng.randint(0, 3, 20)))
        self.assertGreater(loss, 0)

    def test_passes(self):
        rng = np.random.RandomState(1)
        n = kfac.Network(6, [(5, "tanh"), (3, "linear")], max_batch=8, seed=3)
        x = rng.randn(7, 6).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[rng.randint(0, 3, 7)]
        z = n.forward(x)
        self.assertEqual(z.shape, (7, 3))
        np.testing.assert_array_equal(z, n.output())
        loss, acc = n.loss(y)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        self.assertAlmostEqual(loss, float(-(y * np.log(p)).sum(1).mean()), places=5)
        self.assertAlmostEqual(acc, float((p.argmax(1) == y.argmax(1)).mean()))
        grad = n.backward(y)
        a1, g1 = n.layer_input(1), n.layer_pregrad(1)
        self.assertEqual(a1.shape, (7, 6))
        np.testing.assert_array_equal(a1[:, -1], 1)
        np.testing.assert_allclose(g1, p - y, atol=1e-6)
        np.testing.assert_allclose(grad[n.layer_offset(1):].reshape(3, 6), g1.T @ a1 / 7, atol=1e-6)
        self.assertEqual(n.layer_input(0).shape, (7, 7))
        self.assertEqual(n.layer_pregrad(0).shape, (7, 5))
        # predict: probabilities, any number of rows (chunks of max_batch)
        xs = rng.randn(20, 6).astype(np.float32)
        pr = n.predict(xs)
        np.testing.assert_allclose(pr.sum(1), 1, rtol=1e-5)
        np.testing.assert_array_equal(pr[9], n.predict(xs[9])[0])
        # evaluate on arrays and on a Dataset
        labels = rng.randint(0, 3, 20)
        l1 = n.evaluate((xs, labels))
        l2 = n.evaluate(kfac.Dataset(xs, labels))
        self.assertEqual(l1, l2)
        # sampled targets: one-hot rows, reproducible from the seed
        t1 = kfac.sample_targets("softmax_xent", pr, kfac.Rng(4))
        t2 = kfac.sample_targets("softmax_xent", pr, kfac.Rng(4))
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(t1.sum(1), 1)
        self.assertNotEqual(kfac.Rng(1).next(), kfac.Rng(2).next())

    def test_pass_errors(self):
        n = kfac.Network(6, [(3, "linear")], max_batch=4)
        with self.assertRaises(kfac.StateError):
            n.output()
        with self.assertRaises(ValueError):
            n.forward(np.zeros((2, 5)))
        with self.assertRaises(kfac.KfacError) as cm:
            n.forward(np.zeros((5, 6)))
        self.assertIn("batch", str(cm.exception))
        n.forward(np.zeros((2, 6)))
        with self.assertRaises(ValueError):
            n.loss(np.zeros((3, 3)))
        with self.assertRaises(ValueError):
            n.backward(np.zeros((2, 4)))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.sample_targets("nope", np.zeros((2, 3)), kfac.Rng(1))
        self.assertIn("unknown loss 'nope'", str(cm.exception))
        with self.assertRaises(TypeError):
            kfac.sample_targets("squared", np.zeros((2, 3)), 5)
        with self.assertRaises(kfac.ShapeError) as cm:
            n.evaluate((np.zeros((4, 5)), [0, 1, 2, 0]))
        self.assertIn("5", str(cm.exception))
        with self.assertRaises(kfac.FileError):
            n.load(os.path.join(TMP, "no.ckpt"))


class TestTrainer(unittest.TestCase):
    def cli_weights(self, optimizer, threads, extra=()):
        ck = os.path.join(TMP, "cli-%s-%d.ckpt" % (optimizer, threads))
        r = run([BIN, "train", SMALL, "--data", DATA, "--optimizer", optimizer, "--epochs", "2", "--batch", "32",
                 "--seed", "7", "--threads", str(threads), "--save", ck, "--quiet"] + list(extra))
        self.assertEqual(r.returncode, 0, r.stderr)
        net = kfac.Network.from_file(SMALL)
        net.load(ck)
        return net.params, r.stdout

    def test_bit_identical_to_the_program(self):
        train = kfac.load_data(DATA)
        for optimizer, threads in [(o, 1) for o in kfac.OPTIMIZERS] + [("kfac", 2), ("adam", 2)]:
            with self.subTest(optimizer=optimizer, threads=threads):
                extra = ["--cov-every", "2", "--inv-every", "3"] if optimizer == "kfac" else []
                want, stdout = self.cli_weights(optimizer, threads, extra)
                kfac.set_threads(threads)
                settings = {"cov_every": 2, "inv_every": 3} if optimizer == "kfac" else {}
                t = kfac.Trainer(SMALL, train, optimizer=optimizer, epochs=2, batch=32, seed=7, **settings)
                hist = t.fit()
                self.assertEqual([s["epoch"] for s in hist], [1, 2])
                self.assertTrue(all(s["finished"] for s in hist))
                np.testing.assert_array_equal(t.network.params, want)
                # the program's epoch lines carry the same training loss
                self.assertIn("%.6f" % hist[1]["train_loss"], stdout)

    def test_cnn_bit_identical_to_the_program(self):
        """nets/tiny-cnn.net trained with K-FAC by the kfac program, by a
        Trainer on the file and by one on the same network from a layer
        list: the same weights, bit for bit."""
        kfac.set_threads(1)
        ck = os.path.join(TMP, "cli-cnn.ckpt")
        r = run([BIN, "train", TINY_CNN, "--data", DATA, "--optimizer", "kfac", "--epochs", "1", "--batch", "32",
                 "--seed", "7", "--threads", "1", "--cov-every", "2", "--inv-every", "3", "--save", ck, "--quiet"])
        self.assertEqual(r.returncode, 0, r.stderr)
        want = kfac.Network.from_file(TINY_CNN)
        want.load(ck)
        train = kfac.load_data(DATA)
        settings = dict(optimizer="kfac", epochs=1, batch=32, seed=7, cov_every=2, inv_every=3)
        a = kfac.Trainer(TINY_CNN, train, **settings)
        hist = a.fit()
        np.testing.assert_array_equal(a.network.params, want.params)
        self.assertEqual(a.kfac_stats()["stats_rounds"], 4)
        b = kfac.Trainer(tiny_cnn(), train, {"kfac.damping": 0.001, "train.lr": 0.05}, **settings)
        b.fit()
        np.testing.assert_array_equal(b.network.params, want.params)
        self.assertLess(hist[0]["train_loss"], 2.3)
        self.assertEqual(a.network.predict(train.pool(2).x[:3]).shape, (3, 10))

    def test_arrays_and_layers_equal_files(self):
        kfac.set_threads(1)
        d = kfac.load_data(DATA)
        a = kfac.Trainer(SMALL, d, epochs=1, batch=32)
        a.fit()
        net = kfac.Network(784, [32, (10, "linear")])
        b = kfac.Trainer(net, (d.x, d.labels), {"train.lr": 0.05}, batch=32, epochs=1)
        self.assertEqual(b.params["optimizer"], "momentum")
        b.fit()
        np.testing.assert_array_equal(a.network.params, b.network.params)
        p = kfac.Params(optimizer="sgd")
        c = kfac.Trainer(SMALL, d, p, epochs=1)
        self.assertEqual(c.params["optimizer"], "sgd")
        self.assertEqual(p["epochs"], 10)  # the caller's Params untouched

    def test_save_load_and_stopping_resume_bit_identically(self):
        kfac.set_threads(1)
        d = kfac.load_data(DATA)
        test = kfac.load_data(DATA, "test")
        mk = lambda: kfac.Trainer(SMALL, d, optimizer="kfac", epochs=2, batch=32, cov_every=2, inv_every=3)
        whole = mk()
        hist = whole.fit(test=test)
        self.assertEqual(len(hist), 2)
        self.assertGreater(hist[-1]["test_acc"], 0.5)
        self.assertEqual((hist[-1]["test_loss"], hist[-1]["test_acc"]), whole.evaluate(test))
        ks = whole.kfac_stats()
        self.assertGreater(ks["inversions"], 0)
        self.assertEqual(ks["n_layers"], 2)
        self.assertEqual(len(ks["rank_a"]), 2)
        # stopped in the middle of epoch 1 by progress, saved, loaded
        part = mk()
        s = part.epoch(progress=lambda step, steps: step == 3)
        self.assertFalse(s["finished"])
        self.assertEqual(part.epochs_done, 0)
        ck = os.path.join(TMP, "mid.ckpt")
        part.save(ck)
        resumed = mk()
        resumed.load(ck)
        hist = resumed.fit()
        self.assertEqual([h["epoch"] for h in hist], [1, 2])
        np.testing.assert_array_equal(resumed.network.params, whole.network.params)
        np.testing.assert_array_equal(resumed.predict(test.x), whole.predict(test.x))

    def test_exception_in_progress_stops_the_epoch(self):
        kfac.set_threads(1)
        d = kfac.load_data(DATA)
        t = kfac.Trainer(SMALL, d, batch=32, epochs=1)

        def boom(step, steps):
            if step == 2:
                raise KeyboardInterrupt
        with self.assertRaises(KeyboardInterrupt):
            t.epoch(progress=boom)
        self.assertEqual(t.epochs_done, 0)
        s = t.epoch()
        self.assertTrue(s["finished"])
        ref = kfac.Trainer(SMALL, d, batch=32, epochs=1)
        ref.fit()
        np.testing.assert_array_equal(t.network.params, ref.network.params)

    def test_validation_early_stop_and_autoencoder(self):
        kfac.set_threads(1)
        d = kfac.load_data(DATA)
        # lr 2 overshoots: the validation loss stops falling (deterministic: one thread)
        t = kfac.Trainer(SMALL, d, batch=32, val_fraction=0.25, early_stop=2, lr=2.0, epochs=50)
        hist = t.fit(callback=lambda s: False)
        self.assertEqual(hist[0]["val_n"], 64)
        self.assertLess(len(hist), 50)
        self.assertTrue(hist[-1]["early_stop"])
        self.assertEqual(hist[-1]["best_epoch"], len(hist) - 2)
        rng = np.random.RandomState(3)
        x = rng.rand(64, 12).astype(np.float32)
        net = kfac.Network(12, [(6, "tanh"), (12, "linear")], loss="squared")
        a = kfac.Trainer(net, x, optimizer="adam", lr=0.01, batch=16, epochs=20)
        hist = a.fit()
        self.assertLess(hist[-1]["train_loss"], hist[0]["train_loss"])
        self.assertEqual(a.predict(x).shape, (64, 12))

    def test_trainer_errors(self):
        d = kfac.load_data(DATA)
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Trainer(SMALL, d, batch=1000)
        self.assertEqual(str(cm.exception), "batch 1000 larger than the training set (256 examples)")
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Trainer(SMALL, d, optimizer="rmsprop")
        self.assertIn("unknown optimizer 'rmsprop'", str(cm.exception))
        with self.assertRaises(kfac.ShapeError):
            kfac.Trainer(SMALL, (np.zeros((40, 10)), np.zeros(40, dtype=int)))
        with self.assertRaises(kfac.StateError):
            kfac.Trainer(SMALL, d, optimizer="sgd").kfac_stats()
        t = kfac.Trainer(SMALL, d, optimizer="sgd", batch=32)
        with self.assertRaises(kfac.KfacError) as cm:
            t.load(os.path.join(TMP, "nothing.ckpt"))
        self.assertIn("nothing.ckpt", str(cm.exception))
        other = kfac.Trainer(SMALL, d, optimizer="adam", batch=32)
        ck = os.path.join(TMP, "adam.ckpt")
        other.save(ck)
        before = t.network.params
        with self.assertRaises(kfac.ShapeError):
            t.load(ck)
        np.testing.assert_array_equal(t.network.params, before)
        with self.assertRaises(kfac.FileError):
            t.save(os.path.join(TMP, "no", "such", "dir", "x.ckpt"))
        with self.assertRaises(ValueError):
            kfac.Trainer(SMALL, (1, 2, 3))


class TestPreconditioner(unittest.TestCase):
    """The binding's steps against kfac_precond through the plain C API
    (tests/precond_steps.c) on the same arrays, bit for bit."""

    def reference(self, d, shapes, rows, steps, form, quadratic, params, w0, batches, fdiag, positions=None):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.txt"), "w") as f:
            f.write("layers %d\nd_in %s\nd_out %s\nrows %d\nsteps %d\nform %s\nquadratic %d\n" % (
                len(shapes), " ".join(str(s[1]) for s in shapes), " ".join(str(s[0]) for s in shapes), rows,
                steps, form, quadratic))
            if positions is not None:
                f.write("positions %s\n" % " ".join(str(p) for p in positions))
            for k, v in params.items():
                f.write("param %s %s\n" % (k, v))
        for l, w in enumerate(w0):
            w.tofile(os.path.join(d, "w%d.bin" % l))
        for k, b in enumerate(batches):
            for name, arrays in b.items():
                for l, a in enumerate(arrays):
                    a.tofile(os.path.join(d, "s%d_%s%d.bin" % (k, name, l)))
        if quadratic:
            fdiag.tofile(os.path.join(d, "fdiag.bin"))
        r = run([STEPS_BIN, d])
        self.assertEqual(r.returncode, 0, r.stderr)
        ws = [[np.fromfile(os.path.join(d, "out_s%d_w%d.bin" % (k, l)), dtype=np.float32).reshape(shapes[l])
               for l in range(len(shapes))] for k in range(steps)]
        dirs = [np.fromfile(os.path.join(d, "out_dir%d.bin" % l), dtype=np.float32).reshape(shapes[l])
                for l in range(len(shapes))]
        return ws, dirs

    def check(self, name, form, quadratic, params, positions=None):
        kfac.set_threads(1)
        rng = np.random.RandomState(11)
        shapes = [(6, 5), (3, 7)]
        pos = positions or [1, 1]
        rows, steps = 16, 10
        w0 = [(0.3 * rng.randn(*s)).astype(np.float32) for s in shapes]
        srows = -(-rows * 3 // 4) if "kfac.stat_fraction" in params else rows
        batches = []
        for _ in range(steps):
            b = {"abar": [rng.randn(rows * p, s[1]).astype(np.float32) for s, p in zip(shapes, pos)],
                 "gs": [rng.randn(srows * p, s[0]).astype(np.float32) for s, p in zip(shapes, pos)]}
            if form == "rows":
                b["g"] = [(0.1 * rng.randn(rows * p, s[0])).astype(np.float32) for s, p in zip(shapes, pos)]
            else:
                b["grad"] = [(0.1 * rng.randn(*s)).astype(np.float32) for s in shapes]
            batches.append(b)
        n = sum(s[0] * s[1] for s in shapes)
        fdiag = (0.5 + rng.rand(n)).astype(np.float32)
        want, want_dir = self.reference(os.path.join(TMP, name), shapes, rows, steps, form, quadratic, params, w0,
                                        batches, fdiag, positions)
        pc = kfac.Preconditioner(shapes, rows, params, positions=positions)
        self.assertEqual(pc.positions, pos)
        self.assertEqual(pc.n_params, n)
        self.assertEqual(pc.layer_offset(1), 30)
        self.assertIsNone(pc.direction(0))
        w = [a.copy() for a in w0]
        if quadratic:
            pc.set_fisher(lambda v: fdiag * v, lambda: 0.5 + float(w[0][0, 0]) * float(w[0][0, 0]))
        for k, b in enumerate(batches):
            due = pc.stats_due
            loss = 0.5 + float(w[0][0, 0]) * float(w[0][0, 0]) if quadratic else 0.0
            pc.step(w, grads=b.get("grad"), abar=b["abar"] if (due or form == "rows") else None,
                    g_sampled=b["gs"] if due else None, g=b.get("g"), loss=loss, rows=rows)
            for l in range(len(shapes)):
                np.testing.assert_array_equal(w[l], want[k][l], "step %d layer %d" % (k + 1, l))
        for l in range(len(shapes)):
            np.testing.assert_array_equal(pc.direction(l), want_dir[l])
        self.assertEqual(pc.steps, steps)
        self.check_bound(shapes, rows, params, w0, batches, want, quadratic, fdiag, positions)
        return pc

    def check_bound(self, shapes, rows, params, w0, batches, want, quadratic, fdiag, positions=None):
        """The same steps through bind(): buffers of more rows than the
        batch, bound once, refilled before each step."""
        pc = kfac.Preconditioner(shapes, rows + 3, params, positions=positions)
        pos = pc.positions
        w = [a.copy() for a in w0]
        cap = rows + 3
        ab = [np.zeros((cap * p, s[1]), np.float32) for s, p in zip(shapes, pos)]
        gs = [np.zeros((cap * p, s[0]), np.float32) for s, p in zip(shapes, pos)]
        form = "g" if "g" in batches[0] else "grad"
        other = [np.zeros((cap * p, s[0]) if form == "g" else s, np.float32) for s, p in zip(shapes, pos)]
        step = pc.bind(w, abar=ab, g_sampled=gs, **{"grads" if form == "grad" else "g": other})
        self.assertEqual(step.max_rows, cap)
        if quadratic:
            pc.set_fisher(lambda v: fdiag * v, lambda: 0.5 + float(w[0][0, 0]) * float(w[0][0, 0]))
        for k, b in enumerate(batches):
            for l in range(len(shapes)):
                ab[l][:rows * pos[l]] = b["abar"][l]
                gs[l][:len(b["gs"][l])] = b["gs"][l]
                if form == "g":
                    other[l][:rows * pos[l]] = b["g"][l]
                else:
                    other[l][...] = b["grad"][l]
            step(rows, loss=0.5 + float(w[0][0, 0]) * float(w[0][0, 0]) if quadratic else 0.0)
            for l in range(len(shapes)):
                np.testing.assert_array_equal(w[l], want[k][l], "bound, step %d layer %d" % (k + 1, l))
        with self.assertRaises(ValueError):
            step(cap + 1)

    def test_kl_clip_bit_identical(self):
        pc = self.check("klclip", "grads", 0, {"kfac.cov_every": 2, "kfac.inv_every": 3, "train.lr": 0.1,
                                               "kfac.damping": 0.05, "train.weight_decay": 0.001})
        st = pc.stats()
        self.assertEqual(st["stats_rounds"], 5)
        self.assertAlmostEqual(st["damping"], 0.05, places=6)

    def test_batch_form_and_eigen_bit_identical(self):
        self.check("rows", "rows", 0, {"kfac.inversion": "eigen", "kfac.stat_fraction": 0.75, "kfac.lr": 0.2,
                                       "kfac.momentum": 0.5})

    def test_quadratic_rule_bit_identical(self):
        pc = self.check("quad", "grads", 1, {"kfac.rule": "quadratic", "kfac.damping": 1, "kfac.lm_every": 2,
                                             "kfac.cov_every": 2, "kfac.inv_every": 4})
        st = pc.stats()
        self.assertNotEqual(st["alpha"], 0)

    def test_positions_bit_identical(self):
        """KFC's layers of several rows per example (a convolution's
        output pixels: kfac_precond_new_positions), both forms."""
        for form in ("grads", "rows"):
            with self.subTest(form=form):
                pc = self.check("pos_" + form, form, 0, {"kfac.cov_every": 2, "kfac.inv_every": 3, "train.lr": 0.1,
                                                         "kfac.damping": 0.05, "kfac.stat_fraction": 0.75},
                                positions=[5, 1])
                self.assertEqual(pc.stats()["stats_rounds"], 5)
        kfac.Preconditioner([(3, 4)], 8, positions=[2], inversion="ekfac")  # EKFAC takes positions too
        with self.assertRaises(kfac.InvalidArgumentError) as cm:
            kfac.Preconditioner([(3, 4)], 8, positions=[2], inversion="tridiag")
        self.assertIn("dense layers only", str(cm.exception))
        with self.assertRaises(ValueError):
            kfac.Preconditioner([(3, 4)], 8, positions=[2, 1])
        with self.assertRaises(kfac.InvalidArgumentError):
            kfac.Preconditioner([(3, 4)], 8, positions=[0])
        pc = kfac.Preconditioner([(3, 4)], 8, positions=[3])
        w = [np.zeros((3, 4), np.float32)]
        with self.assertRaises(ValueError) as cm:  # 8 examples of 3 rows: 24 rows of abar
            pc.step(w, abar=[np.ones((20, 4))], g_sampled=[np.ones((24, 3))], g=[np.ones((24, 3))], rows=8)
        self.assertIn("needs (24, 4)", str(cm.exception))
        with self.assertRaises(ValueError):
            pc.bind(w, abar=[np.ones((2, 4), np.float32)])

    def test_save_load_set_lr(self):
        shapes = [(3, 4)]
        rng = np.random.RandomState(2)
        w = [rng.randn(3, 4).astype(np.float32)]
        pc = kfac.Preconditioner(shapes, 8, cov_every=1)
        self.assertEqual(pc.stat_rows(8), 8)
        abar, gs, gr = [rng.randn(8, 4)], [rng.randn(8, 3)], [rng.randn(3, 4)]
        pc.step(w, gr, abar, gs)
        ck = os.path.join(TMP, "pc.ckpt")
        pc.save(ck)
        w2 = [w[0].copy()]
        other = kfac.Preconditioner(shapes, 8, cov_every=1)
        other.load(ck)
        pc.set_lr(0.05)
        other.set_lr(0.05)
        pc.step(w, gr, abar, gs)
        other.step(w2, gr, abar, gs)
        np.testing.assert_array_equal(w[0], w2[0])
        self.assertEqual(other.steps, 2)

    def test_bad_arguments(self):
        shapes = [(3, 4), (2, 4)]
        pc = kfac.Preconditioner(shapes, 8)
        w = [np.zeros(s, dtype=np.float32) for s in shapes]
        gr = [np.zeros(s, dtype=np.float32) for s in shapes]
        ab = [np.zeros((8, 4), dtype=np.float32)] * 2
        gs = [np.zeros((8, 3), dtype=np.float32), np.zeros((8, 2), dtype=np.float32)]
        with self.assertRaises(kfac.KfacError) as cm:
            pc.step(w, gr)  # statistics due, no abar
        self.assertIn("abar", str(cm.exception))
        self.assertEqual(pc.steps, 0)
        with self.assertRaises(TypeError):
            pc.step([w[0].astype(np.float64), w[1]], gr, ab, gs)
        with self.assertRaises(TypeError):
            pc.step([np.asfortranarray(np.zeros((3, 4), np.float32)), w[1]], gr, ab, gs)
        with self.assertRaises(ValueError):
            pc.step(w[:1], gr, ab, gs)
        with self.assertRaises(ValueError):
            pc.step(w, [gr[0], gr[0]], ab, gs)
        with self.assertRaises(ValueError):
            pc.step(w, gr, ab, [gs[0][:2], gs[1]])
        with self.assertRaises(kfac.KfacError) as cm:
            pc.step(w, gr, [np.zeros((9, 4))] * 2, gs + [], rows=9)
        self.assertIn("rows", str(cm.exception))
        bad = [g.copy() for g in gr]
        bad[1][0, 0] = np.inf
        with self.assertRaises(kfac.NumericError):
            pc.step(w, bad, ab, gs)
        self.assertEqual(pc.steps, 0)
        pc.step(w, gr, ab, gs)
        self.assertEqual(pc.steps, 1)
        # bind: arrays as they are, never converted
        with self.assertRaises(TypeError):
            pc.bind([w[0].astype(np.float64), w[1]], gr)
        with self.assertRaises(TypeError):
            pc.bind(w, gr, [np.zeros((8, 4))] * 2)
        with self.assertRaises(ValueError):
            pc.bind(w, [gr[0], gr[0]])
        with self.assertRaises(ValueError):
            pc.bind(w, g=[np.zeros((8, 2), np.float32)] * 2)
        with self.assertRaises(ValueError):
            pc.bind(w[:1], gr)
        bound = pc.bind(w, abar=ab, g_sampled=[gs[0][:2], gs[1][:2]], g=[np.zeros((8, 3), np.float32),
                                                                           np.zeros((8, 2), np.float32)])
        with self.assertRaises(TypeError):
            bound(8.0)
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Preconditioner([(3, 0)], 8)
        self.assertIn("3 x 0 weights", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.Preconditioner([(3, 4)], 8, damping=-1)
        self.assertIn("damping = -1 is outside", str(cm.exception))
        with self.assertRaises(ValueError):
            kfac.Preconditioner([], 8)
        with self.assertRaises(kfac.KfacError):
            pc.set_lr(-1)
        with self.assertRaises(IndexError):
            pc.direction(2)
        with self.assertRaises(kfac.InvalidArgumentError):
            pc.stat_rows(9)
        # the quadratic rule without callbacks, and a callback that raises
        q = kfac.Preconditioner([(3, 4)], 8, rule="quadratic")
        with self.assertRaises(kfac.StateError):
            q.step(w[:1], gr[:1], ab[:1], gs[:1], loss=1.0)

        def broken(v):
            raise RuntimeError("F v failed")
        q.set_fisher(broken, lambda: 1.0)
        with self.assertRaises(RuntimeError) as cm:
            q.step(w[:1], gr[:1], ab[:1], gs[:1], loss=1.0)
        self.assertEqual(str(cm.exception), "F v failed")


class TestCoverage(unittest.TestCase):
    def test_every_entry_point_is_called_here(self):
        """Every public name of the package, and every public method and
        property of its classes, appears in this file as a call or an
        attribute (so a new entry point without a test fails here)."""
        with open(os.path.abspath(__file__)) as f:
            text = f.read()
        missing = []
        for name in kfac.__all__:
            if "kfac.%s" % name not in text:
                missing.append(name)
            obj = getattr(kfac, name)
            if isinstance(obj, type) and obj.__module__.startswith("kfac") and not issubclass(obj, Exception):
                for attr in vars(obj):
                    if not attr.startswith("_") and ".%s" % attr not in text and "[\"%s\"]" % attr not in text:
                        missing.append("%s.%s" % (name, attr))
        self.assertEqual(missing, [])


class TestExample(unittest.TestCase):
    def test_numpy_example_runs(self):
        ex = os.path.join(ROOT, "examples", "numpy_example.py")
        r = run([sys.executable, ex, DATA], cwd=os.path.join(ROOT, "python"),
                env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("test accuracy", r.stdout)


if __name__ == "__main__":
    unittest.main()
