#!/usr/bin/python3
"""bench_cnn.py - libkfac's convolutional epoch against PyTorch's on the CPU
(issue 15's benchmark), and K-FAC's epoch against SGD's.

    KFAC_LIBRARY=build/libkfac.so /usr/bin/python3 bench/bench_cnn.py \\
        [--epochs 2] [--threads 2] [--out FILE] [--quick]

On nets/fmnist-cnn (DeepOBS fmnist_2c2d: conv 32 5x5 same + ReLU, max pool
2, conv 64 5x5 same + ReLU, max pool 2, dense 1024 ReLU, dense 10) and the
Fashion-MNIST training set, batch 128, the same threads for every row
(torch.set_num_threads and kfac.set_threads: torch and libkfac share one
OpenMP runtime), it trains in one process:

  libkfac SGD    the C trainer (kfac.Trainer, what `kfac train` runs),
                 plain SGD;
  torch SGD      the equivalent nn.Sequential (Conv2d(1,32,5,padding=2),
                 ReLU, MaxPool2d(2), Conv2d(32,64,5,padding=2), ReLU,
                 MaxPool2d(2), Flatten, Linear(3136,1024), ReLU,
                 Linear(1024,10)), torch.optim.SGD, the same lr, NCHW;
  libkfac K-FAC  the C trainer with the net file's [kfac] settings (KFC
                 factors for the convolutions).

Every row starts from the same weights (the net file's truncated normal,
drawn by libkfac from --seed; the report gives the largest difference of
the two networks' softmax outputs on 16 images, to show the mapping of the
NHWC weights into torch's layout is exact). The epochs are interleaved
(epoch 1 of every row, then epoch 2, ..., the order rotating), so the
machine's drift falls on all alike. Per row: the median seconds per epoch,
each epoch's seconds and mean training loss, and the test accuracy at the
end (evaluation is not timed). Then the target, printed beside the
measured ratio: libkfac's SGD epoch at most 1.0x torch's; and K-FAC's epoch
over libkfac's SGD epoch.

--quick: the first 640 training images and 1000 test images, 1 epoch: a
smoke test of the whole benchmark (seconds), not a measurement. Run the
real one on an otherwise idle machine: `make bench` (bench/README.md).
"""
import argparse
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)

# kfac first: it sets GOMP_SPINCOUNT before libgomp loads (with libkfac),
# as the kfac program does; torch then shares that runtime.
import kfac  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

# the machine's description, as bench_torch.py reports it
from bench_torch import Batches, CRow, Row, fmt_s, machine, openblas, repo_commit, sgd_loop  # noqa: E402

QUICK_EXAMPLES = 640
QUICK_TEST = 1000
TARGET_TORCH = 1.0  # libkfac's SGD epoch at most this many torch SGD epochs


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default=os.path.join(ROOT, "nets", "fmnist-cnn.net"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="the four MNIST IDX files (gzipped or not)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of every row (default 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="default: the net file's (128)")
    ap.add_argument("--seed", type=int, default=1, help="the weights' seed; the data order's too")
    ap.add_argument("--lr", type=float, default=0.01, help="both SGD rows' lr (default 0.01)")
    ap.add_argument("--no-kfac", action="store_true", help="leave the K-FAC row out")
    ap.add_argument("--examples", type=int, default=None, help="the first N training images (default: all)")
    ap.add_argument("--test-examples", type=int, default=None, help="the first N test images (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="%d images, 1 epoch: a smoke test, not a measurement" % QUICK_EXAMPLES)
    ap.add_argument("--out", default=None, help="also write the report to this file")
    a = ap.parse_args()
    if a.quick:
        a.epochs = 1
        a.examples = a.examples or QUICK_EXAMPLES
        a.test_examples = a.test_examples or QUICK_TEST
    if a.epochs < 1 or a.threads < 1:
        ap.error("--epochs and --threads must be at least 1")
    return a


def torch_cnn(net):
    """fmnist_2c2d as an nn.Sequential, with net's weights. libkfac keeps
    a convolution's weights d_out x (kh*kw*c_in + 1), the columns in its
    im2col order (ky, kx, c) and the bias last; torch's are
    (d_out, c_in, kh, kw). The dense layer after the last pooling reads
    NHWC (y, x, c) in libkfac and NCHW (c, y, x) after torch's Flatten."""
    m = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(3136, 1024), nn.ReLU(), nn.Linear(1024, 10))
    ours = [l for l in range(net.n_layers) if net.layer_positions(l) > 0]  # pooling: 0, no weights
    theirs = [i for i, mod in enumerate(m) if isinstance(mod, (nn.Conv2d, nn.Linear))]
    n_torch = sum(p.numel() for p in m.parameters())
    if len(ours) != len(theirs) or net.n_params != n_torch:
        raise SystemExit("bench_cnn: %s (%d parameters in %d weighted layers) is not fmnist_2c2d (%d in %d)"
                         % (net, net.n_params, len(ours), n_torch, len(theirs)))
    with torch.no_grad():
        for l, i in zip(ours, theirs):
            w, mod = net.weights(l), m[i]
            d = w.shape[0]
            if isinstance(mod, nn.Conv2d):
                c_in, kh, kw = mod.in_channels, mod.kernel_size[0], mod.kernel_size[1]
                k = w[:, :-1].reshape(d, kh, kw, c_in).transpose(0, 3, 1, 2)
            elif i == theirs[2]:  # the first dense layer: 7 x 7 x 64 NHWC -> NCHW
                k = w[:, :-1].reshape(d, 7, 7, 64).transpose(0, 3, 1, 2).reshape(d, -1)
            else:
                k = w[:, :-1]
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
            mod.bias.copy_(torch.from_numpy(np.ascontiguousarray(w[:, -1])))
    return m


class TorchCNNRow(Row):
    def __init__(self, name, model, lr, data):
        super().__init__(name)
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        self.criterion = nn.CrossEntropyLoss()
        self.data = data

    def epoch(self, e):
        batches = self.data.batches(e)
        t0 = time.perf_counter()
        loss_sum, seen = sgd_loop(self.model, self.optimizer, self.criterion, batches)
        return time.perf_counter() - t0, loss_sum / seen

    def evaluate(self, x, y):
        with torch.no_grad():
            return sum((self.model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
                       for i in range(0, x.shape[0], 1000)) / x.shape[0]


def main():
    args = parse_args()
    lines = []

    def report(s=""):
        print(s, flush=True)
        lines.append(s)

    torch.set_num_threads(args.threads)
    kfac.set_threads(args.threads)  # the same runtime: the last call wins, the same count
    load0 = os.getloadavg()

    report("# bench_cnn: %s, libkfac's epoch against PyTorch's (CPU), and K-FAC's against SGD's"
           % os.path.basename(args.net))
    if args.quick:
        report("(--quick: %d images, 1 epoch: a smoke test of the benchmark, not a measurement)" % args.examples)
    report()
    report("date: %s UTC" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
    report("machine: %s; load average %.2f %.2f %.2f at the start" % ((machine(),) + load0))
    report("threads: %d (torch.set_num_threads and kfac.set_threads, one OpenMP runtime: torch %d, libkfac %d); "
           "GOMP_SPINCOUNT=%s, OPENBLAS_CORETYPE=%s" % (args.threads, torch.get_num_threads(), kfac.get_threads(),
                                                         os.environ.get("GOMP_SPINCOUNT", "unset"),
                                                         os.environ.get("OPENBLAS_CORETYPE", "unset")))
    report("python %s, torch %s (mkldnn %s), numpy %s" % (
        platform.python_version(), torch.__version__,
        "available" if torch.backends.mkldnn.is_available() else "not available", np.__version__))
    report("OpenBLAS: %s" % openblas())
    report("libkfac %s (%s), repository %s" % (kfac.version(), kfac.library_path, repo_commit(ROOT)))

    train = kfac.load_data(args.data, "train")
    test = kfac.load_data(args.data, "test")
    n = min(args.examples or train.n, train.n)
    nt = min(args.test_examples or test.n, test.n)
    x_np, y_np = np.ascontiguousarray(train.x[:n]), np.ascontiguousarray(train.labels[:n])
    # 1 channel: NCHW and NHWC are the same bytes
    x, y = torch.from_numpy(x_np).reshape(-1, 1, 28, 28), torch.from_numpy(y_np).long()
    xt = torch.from_numpy(np.ascontiguousarray(test.x[:nt])).reshape(-1, 1, 28, 28)
    yt = torch.from_numpy(np.ascontiguousarray(test.labels[:nt])).long()
    c_train = kfac.Dataset(x_np, y_np, classes=train.classes) if n < train.n else train
    c_test = kfac.Dataset(np.ascontiguousarray(test.x[:nt]), np.ascontiguousarray(test.labels[:nt]),
                          classes=test.classes) if nt < test.n else test

    net = kfac.Network.from_file(args.net, max_batch=256, seed=args.seed)
    fp = net.file_params
    batch = args.batch or int(fp["train.batch"])
    init = torch_cnn(net)
    with torch.no_grad():
        diff = np.abs(net.predict(x_np[:16]) - torch.softmax(init(x[:16]), 1).numpy()).max()
    steps = (n + batch - 1) // batch
    report("data: %s, %d training images (batch %d: %d steps an epoch), %d test images; %d epoch%s per row, "
           "interleaved" % (args.data, n, batch, steps, nt, args.epochs, "" if args.epochs == 1 else "s"))
    report("network: %s, %d parameters; every row from the same weights (libkfac's draw, seed %d; the torch "
           "model's softmax outputs differ from libkfac's by at most %.1e on 16 images)"
           % (os.path.relpath(args.net, ROOT) if args.net.startswith(ROOT) else args.net, net.n_params, args.seed,
              diff))
    report("SGD rows: lr %g, no momentum; K-FAC: the net file's [kfac] (lr %g, damping %g, T_cov %d, T_inv %d)"
           % (args.lr, fp["kfac.lr"], fp["kfac.damping"], fp["kfac.cov_every"], fp["kfac.inv_every"]))
    report()

    params = np.concatenate([net.weights(l).ravel() for l in range(net.n_layers) if net.layer_positions(l) > 0])

    def c_row(name, **kw):
        t = kfac.Trainer(args.net, c_train, seed=args.seed, batch=batch, **kw)
        t.network.params = params
        return CRow(name, t, c_test)

    rows = [c_row("libkfac SGD", optimizer="sgd", lr=args.lr),
            TorchCNNRow("torch SGD", init, args.lr, Batches(x, y, batch, args.seed))]
    if not args.no_kfac:
        rows.append(c_row("libkfac K-FAC", optimizer="kfac"))

    for e in range(args.epochs):
        k = e % len(rows)
        for row in rows[k:] + rows[:k]:
            s, loss = row.epoch(e)
            row.seconds.append(s)
            row.losses.append(loss)
            print("  epoch %d  %-16s %7.2f s  train loss %.4f" % (e + 1, row.name, s, loss), flush=True)
    for row in rows:
        row.accuracy = row.evaluate(xt, yt)

    report("| row | s/epoch (median) | each epoch, s | train loss per epoch | test acc |")
    report("|---|---|---|---|---|")
    med = {}
    for row in rows:
        med[row.name] = statistics.median(row.seconds)
        report("| %s | %s | %s | %s | %.4f |" % (row.name, fmt_s(med[row.name]), ", ".join(fmt_s(s) for s in row.seconds),
                                                ", ".join("%.4f" % v for v in row.losses), row.accuracy))
    report()
    tag = (" (--quick: not a measurement)" if args.quick else
           " (%d of %d images: not the benchmark)" % (n, train.n) if n < train.n else "")
    ours, theirs = med["libkfac SGD"], med["torch SGD"]
    r = ours / theirs
    report("target: libkfac's SGD epoch at most %.1fx torch's: %.2fx (%s / %s s): %s%s"
           % (TARGET_TORCH, r, fmt_s(ours), fmt_s(theirs), "met" if r <= TARGET_TORCH else "NOT met", tag))
    if "libkfac K-FAC" in med:
        report("K-FAC's epoch / libkfac's SGD epoch: %.2fx (%s / %s s)%s"
               % (med["libkfac K-FAC"] / ours, fmt_s(med["libkfac K-FAC"]), fmt_s(ours), tag))
    load1 = os.getloadavg()
    busy = load0[0] > 0.5 or load1[0] > args.threads + 0.5
    report("load average %.2f %.2f %.2f at the end%s" % (load1 + (
        " (with %.2f at the start: the machine was not idle, the times are not an idle machine's)" % load0[0]
        if busy else "",)))

    if args.out:
        d = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(d, exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print("written to %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
