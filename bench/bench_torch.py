#!/usr/bin/python3
"""bench_torch.py - libkfac's K-FAC from PyTorch against the K-FAC a
PyTorch user would otherwise pick (issue 16's benchmark).

    KFAC_PYTORCH_DIR=/path/to/KFAC-Pytorch /usr/bin/python3 bench/bench_torch.py \
        [--epochs 3] [--threads 2] [--out FILE] [--quick]

On nets/fmnist-mlp (784-1000-500-100-10, ReLU) and the Fashion-MNIST
training set, batch 128, T_cov 10, T_inv 100, the same threads for every
row (torch.set_num_threads and kfac.set_threads: torch and libkfac share
one OpenMP runtime), it trains:

  kfac.torch   kfac.torch.KFAC in KFAC-Pytorch's own training loop (its
               main.py train(), on the CPU);
  KFAC-Pytorch KFACOptimizer from the clone KFAC_PYTORCH_DIR names, in the
               same loop (without the variable the row is skipped, saying
               so); none of its code is kept in this repository;
  C trainer    the C trainer's K-FAC epoch (kfac.Trainer, kfac_trainer:
               what `kfac train` runs), same net, batch and settings;
  torch SGD    torch.optim.SGD with momentum 0.9, the same loop without
               the sampled pass, as a reference.

Every row starts from the same weights (the net file's truncated normal,
drawn by libkfac from --seed); the three torch rows see the same batches
in the same order. Their epochs are interleaved (epoch 1 of every row,
then epoch 2, ..., the order rotating), so the machine's drift falls on all
alike. Per row: the median seconds per epoch, each epoch's seconds and mean
training loss (over the examples of the epoch, as the C trainer's), the
time to a mean training loss of --target-loss (0.25) within the epochs
run, and the test accuracy at the end (evaluation is not timed). Then the
targets: kfac.torch at least 4x faster per epoch than KFAC-Pytorch, and at
most 1.3x the C trainer's K-FAC epoch.

Both K-FAC optimizers get the same keyword arguments (KFAC-Pytorch's
names, which kfac.torch.KFAC accepts): the net file's [kfac] section
(lr 0.03, damping 0.1, kl_clip 1e-3, T_cov 10, T_inv 100), momentum 0.9,
stat_decay 0.95, weight_decay 0. The two interpret damping differently
(kfac.torch.KFAC's docstring), so --kp-lr, --kp-damping and --kp-kl-clip
give KFAC-Pytorch its own for the time-to-loss figure.

KFAC-Pytorch (2019) calls torch.symeig, deprecated since torch 1.9 (torch
1.13 warns and still runs it) and gone from later releases: where torch
has no symeig, the benchmark lends it torch.linalg.eigh under that name,
and says so in the report. Its other deprecation warnings
(register_backward_hook, the add_(Number, Tensor) overloads) are silenced.

--quick: the first 640 training images and 1 epoch, a smoke test of the
whole benchmark (a few seconds), not a measurement. Run the real one on an
otherwise idle machine: `make bench-torch` (bench/README.md).
"""
import argparse
import contextlib
import copy
import ctypes
import hashlib
import io
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

# kfac first: it sets GOMP_SPINCOUNT before libgomp loads (with libkfac),
# as the kfac program does; torch then shares that runtime.
import kfac  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import kfac.torch  # noqa: E402

QUICK_EXAMPLES = 640
TARGET_PT = 4.0   # kfac.torch at least this many times faster per epoch than KFAC-Pytorch
TARGET_C = 1.3    # kfac.torch's epoch at most this many C trainer epochs

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": None}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default=os.path.join(ROOT, "nets", "fmnist-mlp.net"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="the four MNIST IDX files (gzipped or not)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of every row (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="default: the net file's (128)")
    ap.add_argument("--seed", type=int, default=1, help="the weights' seed; the data order's too")
    ap.add_argument("--target-loss", type=float, default=0.25)
    ap.add_argument("--sgd-lr", type=float, default=0.05)
    ap.add_argument("--kp-lr", type=float, default=None, help="KFAC-Pytorch's lr (default: kfac.torch's)")
    ap.add_argument("--kp-damping", type=float, default=None)
    ap.add_argument("--kp-kl-clip", type=float, default=None)
    ap.add_argument("--examples", type=int, default=None, help="the first N training images (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="%d images, 1 epoch: a smoke test, not a measurement" % QUICK_EXAMPLES)
    ap.add_argument("--out", default=None, help="also write the report to this file")
    a = ap.parse_args()
    if a.quick:
        a.epochs = 1
        a.examples = a.examples or QUICK_EXAMPLES
    if a.epochs < 1 or a.threads < 1:
        ap.error("--epochs and --threads must be at least 1")
    return a


# ------------------------------------------------------------- the machine

def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    model = ""
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = ", %.0f GiB" % (kb / 2**20)
    except (OSError, ValueError, IndexError):
        pass
    return "%s, %d CPUs (%d usable)%s, %s %s" % (model or platform.processor() or "unknown CPU", cpus, usable, mem,
                                                 platform.system(), platform.release())


def openblas():
    """The OpenBLAS this process loaded: its own version string, its core,
    the file, and the Debian package."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                if "openblas" in os.path.basename(p) and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    out = []
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
            lib.openblas_get_config.restype = ctypes.c_char_p
            cfg = lib.openblas_get_config().decode()
            try:
                lib.openblas_get_corename.restype = ctypes.c_char_p
                cfg += ", core " + lib.openblas_get_corename().decode()
            except AttributeError:
                pass
            out.append("%s (%s)" % (cfg, p))
        except (OSError, AttributeError):
            out.append(p)
    pkgs = [l for l in _run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "libopenblas0-openmp",
                             "libopenblas0-pthread"]).splitlines() if l.split()[1:]]
    return "; ".join(out or ["not found in the process"]) + ("; Debian " + ", ".join(pkgs) if pkgs else "")


def repo_commit(path):
    c = _run(["git", "-C", path, "log", "-1", "--format=%h %cd", "--date=short"])
    dirty = _run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"])
    return (c + (" (with local changes)" if dirty else "")) if c else "not a git checkout"


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


# ---------------------------------------------------------- KFAC-Pytorch

def load_kfac_pytorch(report):
    """KFACOptimizer from $KFAC_PYTORCH_DIR, or None (said why)."""
    d = os.environ.get("KFAC_PYTORCH_DIR")
    if not d:
        report("KFAC-Pytorch: KFAC_PYTORCH_DIR is not set: its row is skipped "
               "(git clone https://github.com/alecwangcq/KFAC-Pytorch and set KFAC_PYTORCH_DIR to the clone)")
        return None
    d = os.path.abspath(d)
    src = os.path.join(d, "optimizers", "kfac.py")
    if not os.path.isfile(src):
        report("KFAC-Pytorch: KFAC_PYTORCH_DIR=%s has no optimizers/kfac.py: its row is skipped" % d)
        return None
    sys.path.insert(0, d)
    try:
        from optimizers import KFACOptimizer  # KFAC-Pytorch's package (its utils/ comes with it)
    except Exception as e:  # noqa: BLE001 (any failure of their import skips the row, saying why)
        report("KFAC-Pytorch: importing optimizers from %s failed (%s: %s): its row is skipped"
               % (d, type(e).__name__, e))
        return None
    finally:
        sys.path.remove(d)
    note = "torch.symeig as it is (deprecated, still in torch %s)" % torch.__version__
    if not hasattr(torch, "symeig"):
        def symeig(a, eigenvectors=False, upper=True):
            w, v = torch.linalg.eigh(a, UPLO="U" if upper else "L")
            return w, (v if eigenvectors else torch.empty(0, dtype=a.dtype))
        torch.symeig = symeig
        note = "torch %s has no torch.symeig: lent torch.linalg.eigh under that name" % torch.__version__
    for msg in ("torch.symeig is deprecated", "Using a non-full backward hook", "This overload of add_ is deprecated",
                "Using backward hooks on a module"):
        warnings.filterwarnings("ignore", message=msg)
    util = os.path.join(d, "utils", "kfac_utils.py")
    report("KFAC-Pytorch: %s, %s (optimizers/kfac.py sha256 %s, utils/kfac_utils.py %s); %s"
           % (d, repo_commit(d), sha(src), sha(util) if os.path.isfile(util) else "missing", note))
    return KFACOptimizer


# ----------------------------------------------------------------- rows

def kfac_pytorch_loop(net, optimizer, criterion, batches):
    """KFAC-Pytorch's main.py train() loop as it is, on the CPU (its
    sampled targets' .cuda() dropped); returns the loss summed over the
    examples and their count."""
    loss_sum, seen = 0.0, 0
    for batch_idx, (inputs, targets) in enumerate(batches):
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        if optimizer.steps % optimizer.TCov == 0:
            # compute true fisher
            optimizer.acc_stats = True
            with torch.no_grad():
                sampled_y = torch.multinomial(torch.nn.functional.softmax(outputs.cpu().data, dim=1),
                                              1).squeeze()
            loss_sample = criterion(outputs, sampled_y)
            loss_sample.backward(retain_graph=True)
            optimizer.acc_stats = False
            optimizer.zero_grad()  # clear the gradient for computing true-fisher.
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * inputs.shape[0]
        seen += inputs.shape[0]
    return loss_sum, seen


def sgd_loop(net, optimizer, criterion, batches):
    loss_sum, seen = 0.0, 0
    for inputs, targets in batches:
        optimizer.zero_grad()
        loss = criterion(net(inputs), targets)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * inputs.shape[0]
        seen += inputs.shape[0]
    return loss_sum, seen


class Row:
    def __init__(self, name):
        self.name = name
        self.seconds, self.losses = [], []
        self.error = None
        self.accuracy = None
        self.schedule = ""


class TorchRow(Row):
    """A torch model with an optimizer and a loop; its own torch random
    state (the loop's torch.multinomial), kept between its epochs so that
    the interleaving does not change its draws."""

    def __init__(self, name, model, make_optimizer, loop, data, seed):
        super().__init__(name)
        self.model = model
        self.optimizer = make_optimizer(model)
        self.loop = loop
        self.data = data
        self.criterion = nn.CrossEntropyLoss()
        g = torch.Generator()
        g.manual_seed(seed)
        self.rng_state = g.get_state()

    def epoch(self, e):
        batches = self.data.batches(e)
        saved = torch.get_rng_state()
        torch.set_rng_state(self.rng_state)
        t0 = time.perf_counter()
        loss_sum, seen = self.loop(self.model, self.optimizer, self.criterion, batches)
        dt = time.perf_counter() - t0
        self.rng_state = torch.get_rng_state()
        torch.set_rng_state(saved)
        return dt, loss_sum / seen

    def evaluate(self, x, y):
        with torch.no_grad():
            return (self.model(x).argmax(1) == y).float().mean().item()


class CRow(Row):
    def __init__(self, name, trainer, test):
        super().__init__(name)
        self.trainer = trainer
        self.test = test

    def epoch(self, e):
        t0 = time.perf_counter()
        s = self.trainer.epoch()
        return time.perf_counter() - t0, s["train_loss"]

    def evaluate(self, x, y):
        return self.trainer.evaluate(self.test)[1]


class Batches:
    """The torch rows' batches: the same shuffled order for every row, a
    new one each epoch, gathered as each step needs them (timed, as the C
    trainer's gathering is)."""

    def __init__(self, x, y, batch, seed):
        self.x, self.y, self.batch, self.seed = x, y, batch, seed

    def batches(self, epoch):
        n = self.x.shape[0]
        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(n, generator=g)

        def gen():
            for i in range(0, n, self.batch):
                idx = order[i:i + self.batch]
                yield self.x[idx], self.y[idx]
        return gen()


def torch_model(net):
    """The torch model of a libkfac network (dense layers), with its
    weights (each layer d_out x (d_in + 1), the bias last)."""
    mods, fan_in = [], net.inputs
    for l, (units, act) in enumerate(net.layers):
        lin = nn.Linear(fan_in, units)
        w = torch.from_numpy(net.weights(l))
        with torch.no_grad():
            lin.weight.copy_(w[:, :fan_in])
            lin.bias.copy_(w[:, fan_in])
        mods.append(lin)
        if act not in ACTIVATIONS:
            raise SystemExit("bench_torch: activation %s has no torch counterpart here" % act)
        if ACTIVATIONS[act] is not None:
            mods.append(ACTIVATIONS[act]())
        fan_in = units
    return nn.Sequential(*mods)


# ---------------------------------------------------------------- report

def fmt_s(v):
    return "%.2f" % v if v < 100 else "%.0f" % v


def schedule(rounds, inversions):
    return "%d statistics round%s, %d inversion%s" % (rounds, "" if rounds == 1 else "s", inversions,
                                                      "" if inversions == 1 else "s")


def time_to(row, target):
    t = 0.0
    for e, (s, loss) in enumerate(zip(row.seconds, row.losses)):
        t += s
        if loss <= target:
            return "%s s (epoch %d)" % (fmt_s(t), e + 1)
    if not row.losses:
        return "-"
    return "not in %d epoch%s (%.4f)" % (len(row.losses), "" if len(row.losses) == 1 else "s", row.losses[-1])


def main():
    args = parse_args()
    lines = []

    def report(s=""):
        print(s, flush=True)
        lines.append(s)

    torch.set_num_threads(args.threads)
    kfac.set_threads(args.threads)  # the same runtime: the last call wins, the same count
    load0 = os.getloadavg()[0]

    report("# bench_torch: %s under PyTorch: kfac.torch.KFAC, KFAC-Pytorch's KFACOptimizer, the C trainer"
           % os.path.basename(args.net))
    if args.quick:
        report("(--quick: %d images, 1 epoch: a smoke test of the benchmark, not a measurement)" % args.examples)
    report()
    report("date: %s UTC" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
    report("machine: %s; load average %.2f at the start" % (machine(), load0))
    report("threads: %d (torch.set_num_threads and kfac.set_threads, one OpenMP runtime: torch %d, libkfac %d); "
           "GOMP_SPINCOUNT=%s" % (args.threads, torch.get_num_threads(), kfac.get_threads(),
                                  os.environ.get("GOMP_SPINCOUNT", "unset")))
    report("python %s, torch %s, numpy %s" % (platform.python_version(), torch.__version__, np.__version__))
    report("OpenBLAS: %s" % openblas())
    report("libkfac %s (%s), repository %s" % (kfac.version(), kfac.library_path, repo_commit(ROOT)))
    KFACOptimizer = load_kfac_pytorch(report)

    # the data
    train = kfac.load_data(args.data, "train")
    test = kfac.load_data(args.data, "test")
    n = min(args.examples or train.n, train.n)
    x_np, y_np = np.ascontiguousarray(train.x[:n]), np.ascontiguousarray(train.labels[:n])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np).long()
    xt, yt = torch.from_numpy(test.x), torch.from_numpy(test.labels).long()

    # the network, its settings and its first weights
    net = kfac.Network.from_file(args.net, max_batch=256, seed=args.seed)
    fp = net.file_params
    batch = args.batch or int(fp["train.batch"])
    kw = dict(lr=fp["kfac.lr"] if fp["kfac.lr"] > 0 else fp["train.lr"],
              momentum=fp["kfac.momentum"] if fp["kfac.momentum"] >= 0 else fp["train.momentum"],
              stat_decay=fp["kfac.decay"], damping=fp["kfac.damping"], kl_clip=fp["kfac.kl_clip"],
              weight_decay=fp["train.weight_decay"], TCov=int(fp["kfac.cov_every"]), TInv=int(fp["kfac.inv_every"]))
    kw = {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in kw.items()}
    kp_kw = dict(kw)
    for k, v in (("lr", args.kp_lr), ("damping", args.kp_damping), ("kl_clip", args.kp_kl_clip)):
        if v is not None:
            kp_kw[k] = v
    steps = (n + batch - 1) // batch
    report("data: %s, %d training images (batch %d: %d steps an epoch), %d test images; %d epoch%s per row, "
           "interleaved" % (args.data, n, batch, steps, test.n, args.epochs, "" if args.epochs == 1 else "s"))
    report("network: %s, %s, %d parameters; every row from the same weights (libkfac's draw, seed %d)"
           % (os.path.relpath(args.net, ROOT) if args.net.startswith(ROOT) else args.net,
              "-".join([str(net.inputs)] + [str(u) for u, _ in net.layers]), net.n_params, args.seed))
    report("K-FAC settings (KFAC-Pytorch's keywords, given to both): %s"
           % ", ".join("%s=%s" % kv for kv in kw.items()))
    if kp_kw != kw:
        report("KFAC-Pytorch's own: %s" % ", ".join("%s=%s" % (k, v) for k, v in kp_kw.items() if kw[k] != v))
    report("torch SGD: lr %g, momentum %g" % (args.sgd_lr, 0.9))
    report()

    init = torch_model(net)
    data = Batches(x, y, batch, args.seed)
    rows = []

    def k_torch(m):
        return kfac.torch.KFAC(m, params=fp, **kw)
    rows.append(TorchRow("kfac.torch.KFAC (KFAC-Pytorch's loop)", copy.deepcopy(init), k_torch, kfac_pytorch_loop,
                         data, args.seed))
    if KFACOptimizer is not None:
        def k_pt(m):
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the model and its layers
                return KFACOptimizer(m, **kp_kw)
        try:
            rows.append(TorchRow("KFAC-Pytorch KFACOptimizer", copy.deepcopy(init), k_pt, kfac_pytorch_loop, data,
                                 args.seed))
        except Exception as e:  # noqa: BLE001 (reported, the row skipped)
            report("KFAC-Pytorch: KFACOptimizer(...) failed: %s: %s" % (type(e).__name__, e))
    c_data = kfac.Dataset(x_np, y_np, classes=train.classes) if n < train.n else train
    trainer = kfac.Trainer(args.net, c_data, optimizer="kfac", seed=args.seed, batch=batch)
    trainer.network.params = np.concatenate([net.weights(l).ravel() for l in range(net.n_layers)])
    rows.append(CRow("C trainer K-FAC (kfac.Trainer)", trainer, test))
    rows.append(TorchRow("torch SGD-momentum", copy.deepcopy(init),
                         lambda m: torch.optim.SGD(m.parameters(), lr=args.sgd_lr, momentum=0.9), sgd_loop, data,
                         args.seed))

    # the epochs, interleaved, the order rotating
    for e in range(args.epochs):
        live = [r for r in rows if r.error is None]
        k = e % len(live)
        for row in live[k:] + live[:k]:
            try:
                with warnings.catch_warnings():
                    if isinstance(row, TorchRow) and "KFAC-Pytorch" in row.name:
                        warnings.simplefilter("ignore", UserWarning)  # its deprecated calls, every step
                    s, loss = row.epoch(e)
            except Exception as ex:  # noqa: BLE001 (a failing row is reported, the others go on)
                row.error = "%s: %s" % (type(ex).__name__, ex)
                report("epoch %d: %s failed: %s" % (e + 1, row.name, row.error))
                continue
            row.seconds.append(s)
            row.losses.append(loss)
            print("  epoch %d  %-40s %7.2f s  train loss %.4f" % (e + 1, row.name, s, loss), flush=True)

    # schedules and accuracies (not timed)
    for row in rows:
        if row.error is None and row.losses:
            row.accuracy = row.evaluate(xt, yt)
        if isinstance(row, CRow):
            st = row.trainer.kfac_stats()
            row.schedule = schedule(st["stats_rounds"], st["inversions"])
        elif isinstance(row.optimizer, kfac.torch.KFAC):
            st = row.optimizer.kfac_stats()
            if st:
                row.schedule = schedule(st["stats_rounds"], st["inversions"])
        elif hasattr(row.optimizer, "TInv"):  # KFAC-Pytorch's: at steps % TCov == 0 and steps % TInv == 0
            s_ = row.optimizer.steps
            row.schedule = schedule(-(-s_ // row.optimizer.TCov), -(-s_ // row.optimizer.TInv))

    report()
    report("| row | s/epoch (median) | each epoch, s | train loss per epoch | time to loss %g | test acc | K-FAC "
           "schedule |" % args.target_loss)
    report("|---|---|---|---|---|---|---|")
    med = {}
    for row in rows:
        if row.error and not row.seconds:
            report("| %s | failed: %s | | | | | |" % (row.name, row.error))
            continue
        med[row.name] = statistics.median(row.seconds)
        report("| %s | %s | %s | %s | %s | %s | %s |" % (
            row.name + (" (failed: %s)" % row.error if row.error else ""), fmt_s(med[row.name]),
            ", ".join(fmt_s(s) for s in row.seconds), ", ".join("%.4f" % v for v in row.losses),
            time_to(row, args.target_loss), "%.4f" % row.accuracy if row.accuracy is not None else "-",
            row.schedule or "-"))
    if KFACOptimizer is None:
        report("| KFAC-Pytorch KFACOptimizer | skipped: no KFAC_PYTORCH_DIR (or no usable clone there) | | | | | |")

    report()
    ours, theirs, c = (med.get(r) for r in ("kfac.torch.KFAC (KFAC-Pytorch's loop)", "KFAC-Pytorch KFACOptimizer",
                                            "C trainer K-FAC (kfac.Trainer)"))
    tag = (" (--quick: not a measurement)" if args.quick else
           " (%d of %d images: not the benchmark)" % (n, train.n) if n < train.n else "")
    if ours and theirs:
        r = theirs / ours
        report("target: kfac.torch at least %gx faster per epoch than KFAC-Pytorch: %.2fx (%s / %s s): %s%s"
               % (TARGET_PT, r, fmt_s(theirs), fmt_s(ours), "met" if r >= TARGET_PT else "NOT met", tag))
    else:
        report("target: kfac.torch at least %gx faster per epoch than KFAC-Pytorch: not measured (no KFAC-Pytorch row)"
               % TARGET_PT)
    if ours and c:
        r = ours / c
        report("target: kfac.torch's epoch at most %gx the C trainer's K-FAC epoch: %.2fx (%s / %s s): %s%s"
               % (TARGET_C, r, fmt_s(ours), fmt_s(c), "met" if r <= TARGET_C else "NOT met", tag))
    load1 = os.getloadavg()[0]
    busy = load0 > 0.5 or load1 > args.threads + 0.5
    report("load average %.2f at the end%s" % (
        load1, " (with %.2f at the start: the machine was not idle, the times are not an idle machine's)" % load0
        if busy else ""))

    if args.out:
        d = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(d, exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print("written to %s" % args.out)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
