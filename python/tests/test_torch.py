"""test_torch.py - kfac.torch.KFAC, the torch.optim.Optimizer over libkfac:
its steps against kfac.Preconditioner and kfac_precond through the plain C
API (tests/precond_steps.c) on the same abar, g and gradients computed
here independently of its hooks; KFAC-Pytorch's training loop and the loop in
which the optimizer draws the targets; an MLP trained with it against the
C trainer on the same small MNIST-format set; bad arguments. Skipped, with
the reason, where Debian's python3-torch is missing (`make deps` installs
it). A few seconds on one thread."""
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import warnings

import numpy as np

import kfac
import test_kfac
from test_kfac import write_mnist

try:
    import torch
except ImportError as e:  # only where the package cannot be installed
    torch = None
    WHY = "kfac.torch needs PyTorch (Debian's python3-torch, which `make deps` installs): %s" % e
if torch is not None:  # kfac.torch itself failing to import is a failure, not a skip
    import torch.nn as nn
    import torch.nn.functional as F

    import kfac.torch

ROOT = os.environ.get("KFAC_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
EPOCHS = 4
TMP = None
DATA = None


def setUpModule():
    global TMP, DATA
    if torch is None:
        raise unittest.SkipTest(WHY)
    torch.set_num_threads(1)
    kfac.set_threads(1)
    # unittest shows every warning again; kfac.torch hides this one
    warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
    TMP = tempfile.mkdtemp(prefix="kfac_torch_tests.")
    DATA = os.path.join(TMP, "data")
    write_mnist(DATA, 512, 9)


def tearDownModule():
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def mlp(bias_last=True, seed=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3, bias=bias_last))


def kfac_pytorch_step(model, optimizer, inputs, targets, sampled_y=None):
    """One iteration of KFAC-Pytorch's main.py train() loop, as it is
    (CPU; sampled_y, if given, replaces its torch.multinomial draw)."""
    criterion = nn.CrossEntropyLoss()
    optimizer.zero_grad()
    outputs = model(inputs)
    loss = criterion(outputs, targets)
    if optimizer.steps % optimizer.TCov == 0:
        # compute true fisher
        optimizer.acc_stats = True
        with torch.no_grad():
            sampled = torch.multinomial(torch.nn.functional.softmax(outputs.cpu().data, dim=1), 1).squeeze()
        if sampled_y is not None:
            sampled = sampled_y
        loss_sample = criterion(outputs, sampled)
        loss_sample.backward(retain_graph=True)
        optimizer.acc_stats = False
        optimizer.zero_grad()  # clear the gradient for computing true-fisher.
    loss.backward()
    optimizer.step()
    return loss.item(), outputs


def library_weights(model, grads=False):
    """Each nn.Linear's and nn.Conv2d's weight and bias (or their
    gradients) as the library's d_out x d_in array (a convolution's
    columns in (ky, kx, ci) order)."""
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = (m.weight.grad if grads else m.weight).detach()
            if w.dim() == 4:
                w = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
            w = w.numpy()
            if m.bias is not None:
                w = np.hstack([w, (m.bias.grad if grads else m.bias).detach().numpy()[:, None]])
            out.append(np.ascontiguousarray(w, dtype=np.float32))
    return out


class TestAgainstPreconditioner(unittest.TestCase):
    SETTINGS = dict(lr=0.1, momentum=0.9, damping=0.05, cov_every=2, inv_every=3, kl_clip=0.01, weight_decay=0.001)

    def reference(self, model, batches, sampled, lr_change):
        """The same steps with kfac.Preconditioner, abar, g and gradients
        computed here from the layers' pre-activations (retain_grad), not
        by the optimizer's hooks."""
        ref = copy.deepcopy(model)
        lin = [m for m in ref.modules() if isinstance(m, nn.Linear)]
        ws = library_weights(ref)
        pc = kfac.Preconditioner([w.shape for w in ws], 16, **self.SETTINGS)
        out, self.arrays = [], []
        w0 = [w.copy() for w in ws]
        for k, (x, y) in enumerate(batches):
            with torch.no_grad():
                for m, w in zip(lin, ws):
                    m.weight.copy_(torch.from_numpy(w[:, :m.in_features]))
                    if m.bias is not None:
                        m.bias.copy_(torch.from_numpy(w[:, -1]))
            s0 = lin[0](x)
            h = torch.tanh(s0)
            s1 = lin[1](h)
            s0.retain_grad()
            s1.retain_grad()
            B = x.shape[0]
            abar = [np.hstack([x.numpy(), np.ones((B, 1), np.float32)]), h.detach().numpy().copy()]
            due = pc.stats_due
            gs = None
            if due:
                F.cross_entropy(s1, sampled[k]).backward(retain_graph=True)
                gs = [(s0.grad * B).numpy().copy(), (s1.grad * B).numpy().copy()]
                ref.zero_grad()
            F.cross_entropy(s1, y).backward()
            grads = [np.hstack([lin[0].weight.grad.numpy(), lin[0].bias.grad.numpy()[:, None]]),
                     lin[1].weight.grad.numpy().copy()]
            ref.zero_grad()
            if k == lr_change:
                pc.set_lr(0.05)
            pc.step(ws, grads, abar=abar if due else None, g_sampled=gs)
            out.append(([w.copy() for w in ws], [pc.direction(l) for l in range(2)]))
            self.arrays.append(dict(abar=abar, grad=grads, **({"gs": gs} if due else {})))
        # and kfac_precond itself, through the plain C API, up to the change of lr
        params = {"train.lr": 0.1, "train.momentum": 0.9, "kfac.damping": 0.05, "kfac.cov_every": 2,
                  "kfac.inv_every": 3, "kfac.kl_clip": 0.01, "train.weight_decay": 0.001}
        self.c_weights = test_kfac.TestPreconditioner.reference(
            self, os.path.join(TMP, "torch_steps"), [w.shape for w in ws], 16, lr_change, "grads", 0, params, w0,
            self.arrays[:lr_change], None)[0]
        return out

    def test_first_steps_equal_the_preconditioner(self):
        model = mlp(bias_last=False)
        gen = torch.Generator().manual_seed(5)
        batches = [(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)) for _ in range(7)]
        sampled = [torch.randint(0, 3, (16,), generator=gen) for _ in range(7)]
        want = self.reference(model, batches, sampled, lr_change=4)
        self.assertEqual(len(self.c_weights), 4)
        opt = kfac.torch.KFAC(model, **self.SETTINGS)
        self.assertEqual((opt.steps, opt.TCov, opt.TInv), (0, 2, 3))
        self.assertTrue(opt.acc_stats is False)
        self.assertEqual(opt.kfac_stats(), {})
        for k, (x, y) in enumerate(batches):
            if k == 4:
                opt.param_groups[0]["lr"] = 0.05  # what an LR scheduler does
            kfac_pytorch_step(model, opt, x, y, sampled[k])
            self.assertEqual(opt.steps, k + 1)
            ws, dirs = want[k]
            for l, w in enumerate(library_weights(model)):
                np.testing.assert_allclose(w, ws[l], rtol=1e-5, atol=1e-6, err_msg="step %d layer %d" % (k + 1, l))
                if k < len(self.c_weights):
                    np.testing.assert_allclose(w, self.c_weights[k][l], rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(opt._pc.direction(l), dirs[l], rtol=1e-5, atol=1e-6)
        st = opt.kfac_stats()
        self.assertEqual(st["stats_rounds"], 4)
        self.assertAlmostEqual(st["damping"], 0.05, places=6)
        # the weights are views of the library's arrays: no copy either way
        lin0 = model[0]
        self.assertEqual(lin0.weight.data_ptr(), opt.layers[0].W.ctypes.data)
        self.assertEqual(lin0.bias.data_ptr(), opt.layers[0].W.ctypes.data + 4 * 6)

    def test_own_sampling_equals_the_acc_stats_loop(self):
        """backward(loss, output) draws the targets with libkfac's
        sampler: the KFAC-Pytorch loop given the same draws steps alike,
        and the sampled pass leaves the gradients alone."""
        for weight_grads in (False, True):
            with self.subTest(weight_grads=weight_grads):
                self.own_sampling(weight_grads)

    def own_sampling(self, weight_grads):
        a, b = mlp(), mlp()
        oa = kfac.torch.KFAC(a, lr=0.05, damping=0.03, cov_every=2, seed=4, weight_grads=weight_grads)
        ob = kfac.torch.KFAC(b, lr=0.05, damping=0.03, cov_every=2, weight_grads=weight_grads)
        rng = kfac.Rng(4)
        gen = torch.Generator().manual_seed(1)
        for k in range(5):
            x, y = torch.randn(12, 6, generator=gen), torch.randint(0, 3, (12,), generator=gen)
            oa.zero_grad()
            out = a(x)
            loss = F.cross_entropy(out, y)
            oa.backward(loss, out)
            plain = copy.deepcopy(a)
            plain.zero_grad()
            F.cross_entropy(plain(x), y).backward()
            if weight_grads:
                for p, q in zip(a.parameters(), plain.parameters()):
                    np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
            else:  # the gradient the rows make, (1/rows) g^T abar
                for layer, w in zip(oa.layers, library_weights(plain, grads=True)):
                    self.assertIsNone(layer.module.weight.grad)
                    np.testing.assert_allclose(layer.gt[:12].T @ layer.abar[:12] / 12, w, rtol=1e-5, atol=1e-7)
            oa.step()
            with torch.no_grad():
                z = b(x).numpy()
            sampled = None
            if ob.stats_due:
                sampled = torch.from_numpy(kfac.sample_targets("softmax_xent", z, rng).argmax(1))
            kfac_pytorch_step(b, ob, x, y, sampled)
        for wa, wb in zip(library_weights(a), library_weights(b)):
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)

    def test_recorded_g_is_per_example(self):
        """What the hooks hand the library for the last layer: abar with
        its ones column, and g = dl_n/ds per example (the mean loss's
        gradient times the batch), for targets drawn by libkfac's sampler
        under each loss."""
        for loss, weight_grads in (("softmax_xent", False), ("sigmoid_xent", False), ("squared", False),
                                   ("softmax_xent", True)):
            with self.subTest(loss=loss, weight_grads=weight_grads):
                model = mlp(bias_last=False)
                opt = kfac.torch.KFAC(model, loss=loss, seed=3, weight_grads=weight_grads)
                x = torch.randn(10, 6, generator=torch.Generator().manual_seed(4))
                out = model(x)
                z = out.detach().numpy().copy()
                y = kfac.sample_targets(loss, z, kfac.Rng(3))
                want = {"softmax_xent": np.exp(z) / np.exp(z).sum(1, keepdims=True) - y,
                        "sigmoid_xent": 1 / (1 + np.exp(-z)) - y, "squared": z - y}[loss]
                opt.zero_grad()
                opt.backward(out.sum() * 0, out)
                last = opt.layers[-1]
                np.testing.assert_allclose(last.gs[:10], want, rtol=1e-5, atol=1e-6)
                h = torch.tanh(model[0](x)).detach().numpy()
                np.testing.assert_array_equal(last.abar[:10], h)  # no bias: no ones column
                np.testing.assert_array_equal(opt.layers[0].abar[:10], np.hstack([x.numpy(), np.ones((10, 1))]))
                opt.step()
                self.assertEqual(opt.steps, 1)

    def test_larger_batch_and_other_parameters(self):
        """A batch larger than the first moves the state to a larger
        preconditioner (steps as if sized for it from the start); a
        parameter outside nn.Linear takes momentum SGD."""
        runs = []
        for max_batch in (None, 24):
            torch.manual_seed(2)
            model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
            scale = nn.Parameter(torch.ones(3))
            model.register_parameter("scale", scale)
            opt = kfac.torch.KFAC(model, lr=0.05, momentum=0.5, cov_every=1, max_batch=max_batch)
            gen = torch.Generator().manual_seed(3)
            for rows in (8, 8, 24, 16):
                x, y = torch.randn(rows, 6, generator=gen), torch.randint(0, 3, (rows,), generator=gen)
                before = scale.detach().clone()
                opt.zero_grad()
                out = model(x) * scale
                opt.backward(F.cross_entropy(out, y), out)
                g = scale.grad.clone()
                opt.step()
            self.assertEqual(opt._pc.max_rows, 24)
            self.assertEqual(opt.steps, 4)
            # the last step: buf = 0.5 buf + g, scale -= 0.05 buf
            buf = opt.state[scale]["momentum_buffer"]
            np.testing.assert_allclose(scale.detach().numpy(), (before - 0.05 * buf).numpy(), rtol=1e-6)
            self.assertFalse(torch.equal(buf, g))
            runs.append(library_weights(model))
        for wa, wb in zip(*runs):
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


class TestRowsPath(unittest.TestCase):
    """weight_grads=False (the default: the layers' abar and g rows go to
    the library, which forms the gradient or takes the batch form, and
    torch computes no weight gradient) against weight_grads=True (torch's
    .grad, the weight form): the same steps within float32 rounding."""

    def run_both(self, make, batches, sampled, **settings):
        out = []
        for weight_grads in (False, True):
            model = make()
            opt = kfac.torch.KFAC(model, weight_grads=weight_grads, **settings)
            ws = []
            for k, (x, y) in enumerate(batches):
                kfac_pytorch_step(model, opt, x, y, sampled[k])
                ws.append(library_weights(model))
            out.append((ws, opt))
        (rows, o_rows), (grads, o_grads) = out
        for k, (a, b) in enumerate(zip(rows, grads)):
            for l, (wa, wb) in enumerate(zip(a, b)):
                np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=2e-6, err_msg="step %d layer %d" % (k + 1, l))
        return o_rows, o_grads

    def test_rows_equal_weight_grads(self):
        gen = torch.Generator().manual_seed(12)
        batches = [(torch.randn(12, 60, generator=gen), torch.randint(0, 4, (12,), generator=gen)) for _ in range(9)]
        sampled = [torch.randint(0, 4, (12,), generator=gen) for _ in range(9)]

        def make():
            torch.manual_seed(4)
            return nn.Sequential(nn.Linear(60, 50), nn.ReLU(), nn.Linear(50, 20, bias=False), nn.Tanh(),
                                 nn.Linear(20, 4))
        for name, settings in (("defaults", {}), ("low rank", dict(rank_max=4)),
                               ("weight decay", dict(weight_decay=0.01)),
                               ("eigen", dict(inversion="eigen", stat_fraction=0.5))):
            with self.subTest(name):
                o_rows, o_grads = self.run_both(make, batches, sampled, lr=0.05, damping=0.05, cov_every=2,
                                                inv_every=4, **settings)
                self.assertEqual(o_rows.steps, 9)
                self.assertEqual(o_rows.kfac_stats()["stats_rounds"], o_grads.kfac_stats()["stats_rounds"])
                for layer in o_rows.layers:
                    self.assertIsNone(layer.module.weight.grad)
                if name == "defaults":  # the batch form taken where it pays; with grads, never
                    self.assertIn(1, o_rows.kfac_stats()["batch_form"])
                    self.assertEqual(o_grads.kfac_stats()["batch_form"], [0, 0, 0])

    def test_more_dimensions_and_a_second_backward(self):
        """Rows of a 3-d input (batch x time x features) and two backward
        passes of one forward pass (their gradients add) step as torch's
        gradients do."""
        gen = torch.Generator().manual_seed(2)
        xs = [torch.randn(5, 3, 6, generator=gen) for _ in range(4)]
        out = []
        for weight_grads in (False, True):
            torch.manual_seed(1)
            model = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 2))
            opt = kfac.torch.KFAC(model, lr=0.05, cov_every=1, weight_grads=weight_grads)
            for x in xs:
                opt.zero_grad()
                z = model(x)
                opt.acc_stats = True
                z.square().mean().backward(retain_graph=True)
                opt.acc_stats = False
                opt.zero_grad()
                z.sum().backward(retain_graph=True)
                (0.5 * z[:, 0].abs().sum()).backward()
                opt.step()
            out.append(library_weights(model))
        for wa, wb in zip(*out):
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)

    def test_refused_and_copied(self):
        model = mlp()
        opt = kfac.torch.KFAC(model, cov_every=5)
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        kfac_pytorch_step(model, opt, x, y)
        # a copy of the model is a plain torch model: its own gradients,
        # nothing recorded for the optimizer
        twin = copy.deepcopy(model)
        F.cross_entropy(twin(x), y).backward()
        self.assertIsNotNone(twin[0].weight.grad)
        self.assertEqual(opt.layers[0].gt_rows, 8)  # the step's, untouched
        # two forward passes' gradients: refused (accumulation needs weight_grads)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        F.cross_entropy(model(x[:4]), y[:4]).backward()
        with self.assertRaises(RuntimeError) as cm:
            opt.step()
        self.assertIn("weight_grads=True", str(cm.exception))
        # a gradient the rows do not show (a loss term on the weights)
        opt.zero_grad()
        (F.cross_entropy(model(x), y) + model[0].weight.square().sum()).backward()
        with self.assertRaises(RuntimeError) as cm:
            opt.step()
        self.assertIn("weight_grads=True", str(cm.exception))
        self.assertEqual(opt.steps, 1)
        opt.zero_grad()
        self.assertIsNone(model[0].weight.grad)

        class Scaled(nn.Linear):
            def forward(self, x):
                return 2 * super().forward(x)
        with self.assertRaises(ValueError):
            kfac.torch.KFAC(nn.Sequential(Scaled(3, 2)))
        kfac.torch.KFAC(nn.Sequential(Scaled(3, 2)), weight_grads=True)
        opt.remove_hooks()
        self.assertNotIn("forward", vars(model[0]))


def blobs(n, seed):
    """n examples of 20 features in 10 overlapping Gaussian classes (the
    same class means for every seed): a set no network learns perfectly."""
    means = np.random.RandomState(0).randn(10, 20)
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 10, size=n)
    x = means[labels] + 1.2 * rng.randn(n, 20)
    return x.astype(np.float32), labels.astype(np.int32)


def small_cnn(seed=3):
    """Conv2d + ReLU + MaxPool2d + Flatten + Linear on 2 x 6 x 6 images"""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 4))


def patches(x, k, pad, stride=1):
    """The library's abar of a k x k convolution of NCHW images x,
    computed directly: one row per example and output pixel (row-major),
    the window in (ky, kx, ci) order, then a 1."""
    x = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    B, C, H, W = x.shape
    oh, ow = (H - k) // stride + 1, (W - k) // stride + 1
    rows = []
    for b in range(B):
        for oy in range(oh):
            for ox in range(ow):
                win = x[b, :, oy * stride:oy * stride + k, ox * stride:ox * stride + k]
                rows.append(np.append(win.transpose(1, 2, 0).ravel(), 1))
    return np.array(rows, dtype=np.float32)


class TestConv(unittest.TestCase):
    """nn.Conv2d preconditioned as the library's convolutions (KFC):
    abar the input's patches, g the output's gradient per pixel."""
    SETTINGS = dict(lr=0.1, momentum=0.9, damping=0.05, cov_every=2, inv_every=3, kl_clip=0.01, weight_decay=0.001)

    def reference(self, model, batches, sampled):
        """The steps of kfac.Preconditioner with positions, on abar, g and
        gradients computed here (patches() and retain_grad), not by the
        optimizer's hooks."""
        ref = copy.deepcopy(model)
        conv, lin = ref[0], ref[4]
        ws = library_weights(ref)
        pc = kfac.Preconditioner([w.shape for w in ws], 16, positions=[36, 1], **self.SETTINGS)
        out = []
        for k, (x, y) in enumerate(batches):
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(ws[0][:, :-1].reshape(3, 3, 3, 2)).permute(0, 3, 1, 2))
                conv.bias.copy_(torch.from_numpy(ws[0][:, -1]))
                lin.weight.copy_(torch.from_numpy(ws[1][:, :-1]))
                lin.bias.copy_(torch.from_numpy(ws[1][:, -1]))
            s0 = conv(x)
            h = torch.flatten(F.max_pool2d(F.relu(s0), 2), 1)
            s1 = lin(h)
            s0.retain_grad()
            s1.retain_grad()
            B = x.shape[0]
            abar = [patches(x, 3, 1), np.hstack([h.detach().numpy(), np.ones((B, 1), np.float32)])]

            def gs_of(s0g, s1g):  # per example: the mean loss's gradient times B
                return [(s0g * B).permute(0, 2, 3, 1).reshape(B * 36, 3).numpy().copy(), (s1g * B).numpy().copy()]
            due = pc.stats_due
            gs = None
            if due:
                F.cross_entropy(s1, sampled[k]).backward(retain_graph=True)
                gs = gs_of(s0.grad, s1.grad)
                ref.zero_grad()
                s0.grad = s1.grad = None
            F.cross_entropy(s1, y).backward()
            grads = library_weights(ref, grads=True)
            # the gradient is (1/B) g^T abar over the B x 36 rows
            gt = gs_of(s0.grad, s1.grad)
            np.testing.assert_allclose(gt[0].T @ abar[0] / B, grads[0], rtol=1e-4, atol=1e-6)
            ref.zero_grad()
            pc.step(ws, grads, abar=abar if due else None, g_sampled=gs)
            out.append([w.copy() for w in ws])
        return out

    def batches(self, n, seed=5):
        gen = torch.Generator().manual_seed(seed)
        batches = [(torch.randn(16, 2, 6, 6, generator=gen), torch.randint(0, 4, (16,), generator=gen))
                   for _ in range(n)]
        sampled = [torch.randint(0, 4, (16,), generator=gen) for _ in range(n)]
        return batches, sampled

    def test_first_steps_equal_the_preconditioner(self):
        batches, sampled = self.batches(6)
        want = self.reference(small_cnn(), batches, sampled)
        for weight_grads in (False, True):
            with self.subTest(weight_grads=weight_grads):
                model = small_cnn()
                opt = kfac.torch.KFAC(model, weight_grads=weight_grads, **self.SETTINGS)
                self.assertEqual([l.kind for l in opt.layers], ["nn.Conv2d", "nn.Linear"])
                for k, (x, y) in enumerate(batches):
                    kfac_pytorch_step(model, opt, x, y, sampled[k])
                    for l, w in enumerate(library_weights(model)):
                        np.testing.assert_allclose(w, want[k][l], rtol=1e-5, atol=1e-6,
                                                   err_msg="step %d layer %d" % (k + 1, l))
                self.assertEqual(opt._pc.positions, [36, 1])
                self.assertEqual(opt.kfac_stats()["stats_rounds"], 3)
                # the torch weight is a view of the library's array: (ky, kx, ci) columns
                conv = model[0]
                self.assertEqual(conv.weight.data_ptr(), opt.layers[0].W.ctypes.data)
                self.assertEqual(conv.weight[1, 0, 2, 1].item(), opt.layers[0].W[1, (2 * 3 + 1) * 2 + 0])
                self.assertEqual(conv.bias[2].item(), opt.layers[0].W[2, -1])
                if not weight_grads:
                    self.assertIsNone(conv.weight.grad)

    def test_rows_equal_weight_grads(self):
        """Other geometries, both paths: stride 2 with unequal padding, an
        even kernel with padding='same' (one more zero row and column at
        the end), no bias, unbatched images; the rows path's gradient is
        torch's."""
        def make():
            torch.manual_seed(6)
            return nn.Sequential(nn.Conv2d(3, 4, 2, padding="same", bias=False), nn.Tanh(), nn.AvgPool2d(2),
                                 nn.Conv2d(4, 5, (3, 2), stride=2, padding=(1, 0)), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(5 * 3 * 2, 3))
        gen = torch.Generator().manual_seed(3)
        data = [(torch.randn(6, 3, 10, 9, generator=gen), torch.randint(0, 3, (6,), generator=gen)) for _ in range(5)]
        runs = []
        for weight_grads in (False, True):
            model = make()
            opt = kfac.torch.KFAC(model, lr=0.05, damping=0.05, cov_every=2, inv_every=3, weight_grads=weight_grads)
            for k, (x, y) in enumerate(data):
                opt.zero_grad()
                out = model(x)
                opt.backward(F.cross_entropy(out, y), out)
                if not weight_grads and k == 0:
                    plain = copy.deepcopy(model)
                    F.cross_entropy(plain(x), y).backward()
                    for layer, g in zip(opt.layers, library_weights(plain, grads=True)):
                        rows = layer.gt_rows * layer.pos
                        np.testing.assert_allclose(layer.gt[:rows].T @ layer.abar[:rows] / 6, g, rtol=1e-4,
                                                   atol=1e-6)
                opt.step()
            self.assertEqual([l.pos for l in opt.layers], [90, 6, 1])
            # an unbatched image goes through (as torch allows), and no_grad passes record nothing
            model[0](x[0]).sum().backward()
            with torch.no_grad():
                model(x)
            runs.append(library_weights(model))
        for l, (a, b) in enumerate(zip(*runs)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6, err_msg="layer %d" % l)

    def test_save_load_before_the_first_forward(self):
        """load() before a convolution's first forward pass (its positions
        unknown) takes the state at the first step."""
        batches, sampled = self.batches(5, seed=8)
        a = small_cnn()
        oa = kfac.torch.KFAC(a, lr=0.05, cov_every=2, inv_every=3)
        for k in range(2):
            kfac_pytorch_step(a, oa, *batches[k], sampled[k])
        ck = os.path.join(TMP, "cnn.ckpt")
        oa.save(ck)
        weights = copy.deepcopy(a.state_dict())
        b = small_cnn(seed=9)
        b.load_state_dict(weights)
        ob = kfac.torch.KFAC(b, lr=0.05, cov_every=2, inv_every=3)
        ob.load(ck)
        self.assertEqual(ob.steps, 2)
        self.assertTrue(ob.stats_due)
        for k in range(2, 5):
            kfac_pytorch_step(a, oa, *batches[k], sampled[k])
            kfac_pytorch_step(b, ob, *batches[k], sampled[k])
        for wa, wb in zip(library_weights(a), library_weights(b)):
            np.testing.assert_array_equal(wa, wb)
        # one image size only: the factors are per output pixel
        ob.zero_grad()
        with self.assertRaises(ValueError) as cm:
            b[0](torch.randn(4, 2, 8, 8)).sum().backward()
        self.assertIn("every batch must have one image size", str(cm.exception))

    def test_refused(self):
        for conv, text in ((nn.Conv2d(2, 3, 3, dilation=2), "not dilation=(2, 2)"),
                           (nn.Conv2d(2, 4, 3, groups=2), "not groups=2"),
                           (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), "not padding_mode='reflect'")):
            with self.subTest(text):
                with self.assertRaises(ValueError) as cm:
                    kfac.torch.KFAC(nn.Sequential(conv, nn.Flatten(), nn.Linear(3, 2)))
                self.assertIn("kfac.torch.KFAC preconditions nn.Conv2d with groups=1, dilation=1 and zero padding "
                              "only", str(cm.exception))
                self.assertIn(text, str(cm.exception))
        # a frozen one is left alone
        frozen = nn.Conv2d(2, 3, 3, dilation=2).requires_grad_(False)
        opt = kfac.torch.KFAC(nn.Sequential(frozen, nn.Flatten(), nn.Linear(3 * 2 * 2, 2)))
        self.assertEqual([l.kind for l in opt.layers], ["nn.Linear"])

        class Own(nn.Conv2d):
            def forward(self, x):
                return 2 * super().forward(x)
        with self.assertRaises(ValueError) as cm:
            kfac.torch.KFAC(nn.Sequential(Own(1, 1, 1)))
        self.assertIn("weight_grads=True", str(cm.exception))
        (x, y), = self.batches(1)[0]
        # EKFAC on a convolution: steps, and moves the weights
        opt = kfac.torch.KFAC(small_cnn(), inversion="ekfac")
        before = [p.detach().clone() for p in opt.model.parameters()]
        for _ in range(2):
            kfac_pytorch_step(opt.model, opt, x, y)
        moved = [float((p.detach() - b).abs().max()) for p, b in zip(opt.model.parameters(), before)]
        self.assertTrue(all(np.isfinite(moved)) and max(moved) > 0, moved)


class TestFashionMnistCnn(unittest.TestCase):
    def test_cnn_reduces_the_loss(self):
        """A small CNN trained with kfac.torch on 512 Fashion-MNIST
        images: the loss falls well below its start."""
        path = os.environ.get("KFAC_DATA", "/usr/share/datasets/fashion-mnist")
        if not os.path.exists(os.path.join(path, "train-images-idx3-ubyte.gz")) and \
                not os.path.exists(os.path.join(path, "train-images-idx3-ubyte")):
            self.skipTest("no Fashion-MNIST in %s (Debian's dataset-fashion-mnist, which `make deps` installs)"
                          % path)
        d = kfac.load_data(path, "train")
        n = 512
        x = torch.from_numpy(d.x[:n].reshape(n, 1, 28, 28))
        y = torch.from_numpy(d.labels[:n].astype(np.int64))
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3),
                              nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
        opt = kfac.torch.KFAC(model, lr=0.05, damping=0.03, cov_every=5, inv_every=20)
        with torch.no_grad():
            start = F.cross_entropy(model(x), y).item()
        gen = torch.Generator().manual_seed(2)
        for epoch in range(4):
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, 64):
                idx = order[i:i + 64]
                kfac_pytorch_step(model, opt, x[idx], y[idx])
        with torch.no_grad():
            end = F.cross_entropy(model(x), y).item()
            acc = (model(x).argmax(1) == y).float().mean().item()
        self.assertLess(end, 0.5 * start, "loss %.3f -> %.3f" % (start, end))
        self.assertGreater(acc, 0.6)


class TestState(unittest.TestCase):
    def test_save_load_resumes(self):
        """The model's state_dict and the optimizer's save(): a fresh model
        and optimizer go on as the first would have."""
        gen = torch.Generator().manual_seed(8)
        batches = [(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen),
                    torch.randint(0, 3, (16,), generator=gen)) for _ in range(6)]
        a = mlp()
        oa = kfac.torch.KFAC(a, lr=0.05, damping=0.03, cov_every=2, inv_every=3)
        with self.assertRaises(RuntimeError):
            oa.save(os.path.join(TMP, "none.ckpt"))
        for x, y, s in batches[:3]:
            kfac_pytorch_step(a, oa, x, y, s)
        ck = os.path.join(TMP, "torch.ckpt")
        oa.save(ck)
        weights = copy.deepcopy(a.state_dict())
        for x, y, s in batches[3:]:
            kfac_pytorch_step(a, oa, x, y, s)
        b = mlp(seed=99)
        ob = kfac.torch.KFAC(b, lr=0.05, damping=0.03, cov_every=2, inv_every=3)
        b.load_state_dict(weights)
        ob.load(ck)
        self.assertEqual(ob.steps, 3)
        self.assertFalse(ob.stats_due)
        for x, y, s in batches[3:]:
            kfac_pytorch_step(b, ob, x, y, s)
        for wa, wb in zip(library_weights(a), library_weights(b)):
            np.testing.assert_array_equal(wa, wb)
        other = kfac.torch.KFAC(nn.Sequential(nn.Linear(6, 4)))
        with self.assertRaises(kfac.KfacError):
            other.load(ck)

    def test_lr_scheduler_and_state_dict(self):
        """KFAC-Pytorch's MultiStepLR drives the library's lr; torch's
        state_dict round trip (the other parameters' momentum) works."""
        model = mlp()
        opt = kfac.torch.KFAC(model, lr=0.1, cov_every=1)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)
        gen = torch.Generator().manual_seed(6)
        for epoch in range(3):
            x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
            kfac_pytorch_step(model, opt, x, y)
            sched.step()
        self.assertAlmostEqual(opt._lr, 0.01, places=7)
        state = opt.state_dict()
        opt.load_state_dict(state)
        self.assertAlmostEqual(opt.param_groups[0]["lr"], 0.01, places=7)

    def test_every_entry_point_is_called_here(self):
        """Every public method and property of kfac.torch.KFAC appears in
        this file as a call or an attribute."""
        with open(os.path.abspath(__file__)) as f:
            text = f.read()
        missing = [a for a in vars(kfac.torch.KFAC) if not a.startswith("_") and ".%s" % a not in text]
        self.assertEqual(missing, [])
        self.assertEqual(kfac.torch.__all__, ["KFAC"])


class TestAgainstTheTrainer(unittest.TestCase):
    def test_mlp_reaches_the_c_trainers_accuracy_band(self):
        """A 20-32-10 ReLU network, K-FAC with the same settings, on
        overlapping classes: the C trainer and the torch optimizer
        (KFAC-Pytorch's loop) end in the same band of test accuracy."""
        (xtr, ytr), (xte, yte) = blobs(2000, 1), blobs(1000, 2)
        settings = dict(lr=0.05, momentum=0.9, damping=0.1, cov_every=5, inv_every=20)
        net = kfac.Network(20, [32, (10, "linear")])
        t = kfac.Trainer(net, (xtr, ytr), optimizer="kfac", epochs=EPOCHS, batch=32, seed=7, **settings)
        t.fit()
        c_acc = t.evaluate((xte, yte))[1]
        torch.manual_seed(7)
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
        opt = kfac.torch.KFAC(model, **settings)
        x, y = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
        gen = torch.Generator().manual_seed(7)
        for epoch in range(EPOCHS):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 32):
                idx = order[i:i + 32]
                kfac_pytorch_step(model, opt, x[idx], y[idx])
        with torch.no_grad():
            pred = model(torch.from_numpy(xte)).argmax(1).numpy()
        t_acc = float((pred == yte).mean())
        if os.environ.get("KFAC_TEST_VERBOSE"):
            print("test accuracy: torch %.4f, C trainer %.4f" % (t_acc, c_acc))
        self.assertGreater(c_acc, 0.6)
        self.assertGreater(t_acc, 0.6)
        self.assertLess(abs(t_acc - c_acc), 0.05, "torch %.3f, C trainer %.3f" % (t_acc, c_acc))


class TestErrors(unittest.TestCase):
    def test_bad_arguments(self):
        model = mlp()
        with self.assertRaises(kfac.InvalidArgumentError) as cm:
            kfac.torch.KFAC(model, damping=-1)
        self.assertEqual(str(cm.exception), "damping = -1 is outside (0, 1000000]")
        with self.assertRaises(kfac.InvalidArgumentError) as cm:
            kfac.torch.KFAC(model, TCov=0)
        self.assertIn("cov_every = 0 is outside", str(cm.exception))
        with self.assertRaises(kfac.KfacError) as cm:
            kfac.torch.KFAC(model, inversion="qr")
        self.assertIn("qr", str(cm.exception))
        with self.assertRaises(kfac.InvalidArgumentError) as cm:
            kfac.torch.KFAC(model, rule="quadratic")
        self.assertIn("kl_clip rule only", str(cm.exception))
        with self.assertRaises(TypeError):
            kfac.torch.KFAC(model, cov_every=2, TCov=2)
        with self.assertRaises(TypeError):
            kfac.torch.KFAC([p for p in model.parameters()])
        with self.assertRaises(ValueError):
            kfac.torch.KFAC(nn.Sequential(nn.Tanh()))
        with self.assertRaises(ValueError):
            kfac.torch.KFAC(model, loss="hinge")
        with self.assertRaises(TypeError):
            kfac.torch.KFAC(mlp().double())

    def test_kfac_pytorch_constructor_call(self):
        """KFAC-Pytorch main.py's constructor call, its defaults, with the
        class name changed; positional options past lr are refused."""
        opt = kfac.torch.KFAC(mlp(), lr=0.01, momentum=0.9, stat_decay=0.95, damping=1e-3, kl_clip=1e-2,
                              weight_decay=3e-3, TCov=10, TInv=100)
        p = opt.kfac_params
        self.assertEqual((opt.TCov, opt.TInv), (10, 100))
        self.assertEqual((p["kfac.decay"], p["kfac.damping"], p["kfac.kl_clip"]),
                         tuple(float(np.float32(v)) for v in (0.95, 1e-3, 1e-2)))
        self.assertEqual(opt.param_groups[0]["weight_decay"], float(np.float32(3e-3)))
        with self.assertRaises(TypeError):
            kfac.torch.KFAC(mlp(), 0.01, 0.9)

    def test_bad_steps(self):
        model = mlp()
        opt = kfac.torch.KFAC(model, cov_every=2)
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        with self.assertRaises(RuntimeError) as cm:
            opt.step()  # no forward pass
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with self.assertRaises(RuntimeError) as cm:
            opt.step()  # statistics due, no sampled pass
        self.assertIn("acc_stats", str(cm.exception))
        self.assertEqual(opt.steps, 0)
        opt.zero_grad()
        kfac_pytorch_step(model, opt, x, y)
        self.assertEqual(opt.steps, 1)
        # a non-finite gradient: the library's NumericError, nothing changed
        before = library_weights(model)
        opt.zero_grad()
        out = model(x)
        opt.backward(F.cross_entropy(out, y), out)
        opt.layers[0].gt[0, 0] = float("nan")  # as a NaN in the loss's gradient would be
        with self.assertRaises(kfac.NumericError):
            opt.step()
        self.assertEqual(opt.steps, 1)
        for a, b in zip(before, library_weights(model)):
            np.testing.assert_array_equal(a, b)
        opt.param_groups[0]["lr"] = -1.0
        opt.zero_grad()
        out = model(x)
        opt.backward(F.cross_entropy(out, y), out)
        with self.assertRaises(kfac.InvalidArgumentError):
            opt.step()
        opt.remove_hooks()
        self.assertEqual(opt._handles, [])


class TestExample(unittest.TestCase):
    def test_torch_example_runs(self):
        ex = os.path.join(ROOT, "examples", "torch_example.py")
        r = subprocess.run([sys.executable, ex, DATA], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, cwd=os.path.join(ROOT, "python"),
                           env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OMP_NUM_THREADS="1"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("test accuracy", r.stdout)


if __name__ == "__main__":
    unittest.main()
