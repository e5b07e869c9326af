#!/usr/bin/python3
"""numpy_example.py - libkfac from Python on numpy arrays: the C trainer
with K-FAC on MNIST-format files, the same trainer on arrays of your own,
predictions and checkpoints, and K-FAC (kfac.Preconditioner) stepping a
network written in numpy, against plain SGD.

    /usr/bin/python3 examples/numpy_example.py [DATA_DIR]

DATA_DIR holds the four MNIST IDX files (default: Debian's
dataset-fashion-mnist). Uses the installed kfac package, or python/ of
this repository with its build/libkfac.so. Exit 0 if every part learns.
"""
import os
import sys
import tempfile

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
try:
    import kfac
except ImportError:  # in the repository: python/ beside examples/
    sys.path.insert(0, os.path.join(here, "..", "python"))
    import kfac

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
net_file = os.path.join(here, "..", "nets", "small.net")
if not os.path.exists(net_file):  # installed: the nets are in share/kfac
    net_file = os.path.join(sys.prefix, "share", "kfac", "nets", "small.net")
kfac.set_threads(2)
print("kfac %s, libkfac %s" % (kfac.__version__, kfac.version()))

# 1. MNIST-format files, read by the library; the C trainer with K-FAC.
train = kfac.load_data(data_dir, "train")
test = kfac.load_data(data_dir, "test")
print("data: %d training and %d test examples of %d features" % (train.n, test.n, train.features))
t = kfac.Trainer(net_file, train, optimizer="kfac", epochs=2, batch=128, damping=0.03)
for s in t.fit(test=test):
    print("kfac  epoch %d: %5.2f s, train loss %.4f, test accuracy %.4f"
          % (s["epoch"], s["seconds"], s["train_loss"], s["test_acc"]))
acc_kfac = s["test_acc"]

# 2. Any float32 array with integer labels: here the first 10000 images.
x, y = train.x[:10000], train.labels[:10000]
a = kfac.Trainer(net_file, (x, y), optimizer="adam", lr=0.001, epochs=2)
for s in a.fit(test=(test.x, test.labels)):
    print("adam  epoch %d: %5.2f s, train loss %.4f, test accuracy %.4f"
          % (s["epoch"], s["seconds"], s["train_loss"], s["test_acc"]))

# 3. Predictions, and a checkpoint the network (or the `kfac` program) loads.
probs = t.predict(test.x[:5])
print("predicted classes", probs.argmax(1), "labels", test.labels[:5])
with tempfile.TemporaryDirectory() as tmp:
    ck = os.path.join(tmp, "small.ckpt")
    t.save(ck)
    net = kfac.Network.from_file(net_file)
    net.load(ck)
    assert np.array_equal(net.predict(test.x[:5]), probs)

# 4. K-FAC for a network of your own: 784-64-10, tanh and softmax, with
# forward and backward passes in numpy; libkfac samples the targets and
# preconditions.
rng = np.random.RandomState(0)
n_train = min(12000, train.n)
X, Y = train.x[:n_train], train.labels[:n_train]
B, H = 128, 64


def init():
    return [(rng.randn(H, 785) * np.sqrt(1 / 785)).astype(np.float32),
            (rng.randn(10, H + 1) * np.sqrt(1 / (H + 1))).astype(np.float32)]


def forward(w, xb):
    a0 = np.hstack([xb, np.ones((len(xb), 1), np.float32)])  # abar_0: ones last (the bias)
    h = np.tanh(a0 @ w[0].T)
    a1 = np.hstack([h, np.ones((len(xb), 1), np.float32)])
    z = a1 @ w[1].T
    p = np.exp(z - z.max(1, keepdims=True))
    return a0, h, a1, z, p / p.sum(1, keepdims=True)


def backward(w, h, p, targets):
    """Per-example dl/ds of each layer for one-hot targets (not / B)."""
    g1 = p - targets
    g0 = (g1 @ w[1][:, :H]) * (1 - h * h)
    return [g0.astype(np.float32), g1.astype(np.float32)]


def accuracy(w, xs, ys):
    return float((forward(w, xs)[4].argmax(1) == ys).mean())


w_kfac, w_sgd = init(), None
w_sgd = [v.copy() for v in w_kfac]
pc = kfac.Preconditioner([v.shape for v in w_kfac], B, lr=0.05, damping=0.03, cov_every=5, inv_every=50)
sampler = kfac.Rng(1)
for step in range(300):
    idx = rng.randint(0, n_train, B)
    xb, onehot = X[idx], np.eye(10, dtype=np.float32)[Y[idx]]
    # K-FAC
    a0, h, a1, z, p = forward(w_kfac, xb)
    g = backward(w_kfac, h, p, onehot)
    grads = [g[0].T @ a0 / B, g[1].T @ a1 / B]
    gs = None
    if pc.stats_due:  # targets drawn from the model make G a Fisher estimate
        gs = backward(w_kfac, h, p, kfac.sample_targets("softmax_xent", z, sampler))
    pc.step(w_kfac, grads, abar=[a0, a1], g_sampled=gs)
    # SGD, the same batches
    a0, h, a1, z, p = forward(w_sgd, xb)
    g = backward(w_sgd, h, p, onehot)
    w_sgd[0] -= 0.1 * (g[0].T @ a0 / B)
    w_sgd[1] -= 0.1 * (g[1].T @ a1 / B)
acc_own, acc_sgd = accuracy(w_kfac, test.x, test.labels), accuracy(w_sgd, test.x, test.labels)
print("own network, 300 steps: K-FAC test accuracy %.4f, SGD %.4f (damping %.3g, %d inversions)"
      % (acc_own, acc_sgd, pc.stats()["damping"], pc.stats()["inversions"]))
sys.exit(0 if acc_kfac > 0.5 and acc_own > 0.5 and acc_own >= acc_sgd - 0.02 else 1)
