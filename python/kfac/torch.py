"""kfac.torch - libkfac's K-FAC as a torch.optim.Optimizer for CPU models.

    import kfac.torch
    optimizer = kfac.torch.KFAC(model, lr=0.05, damping=0.03, cov_every=10, inv_every=100)

It finds the model's nn.Linear and nn.Conv2d layers and steps them
through kfac.Preconditioner (libkfac's kfac_precond). Each layer's weight
and bias are views of one float32 array in the library's layout (d_out x
(d_in + 1), the bias the last column), which the library updates in
place.

Convolutions (KFC, Grosse & Martens 2016; docs/algorithm.md sec. 9): an
nn.Conv2d of any kernel, stride and zero padding (the strings "same" and
"valid" too), with or without bias, groups=1 and dilation=1 (others are
refused). Its array is d_out x (kh * kw * c_in + 1), each row's columns
in (ky, kx, ci) order then the bias, the library's NHWC layout; torch's
(d_out, c_in, kh, kw) weight is a strided view of it
(W[:, :-1].view(d_out, kh, kw, c_in).permute(0, 3, 1, 2)), so nothing
is copied between the two layouts at a step. The cost is that the
weight torch convolves with is not contiguous: torch's convolution may
copy it (d_out x kh kw c_in floats) on each call, which is small against
the convolution itself (that many multiply-adds per output pixel and
example). Its abar rows are the input's patches, batch x positions of
them (positions = oh x ow output pixels; example b's pixel p, row-major,
in row b positions + p): F.unfold's (c_in, ky, kx) columns permuted to
(ky, kx, ci), with the ones column; its g rows the output's gradient
permuted to (batch, oh, ow, d_out), times the batch. Every batch must
have one image size (the preconditioner is built for its positions).
nn.MaxPool2d, nn.AvgPool2d, activations and nn.Flatten need nothing:
they have no parameters, and K-FAC preconditions layer by layer, so a
Flatten of NCHW is as good as the library's NHWC.

By default (weight_grads=False) each nn.Linear and nn.Conv2d runs its
forward through a function of this module (the same F.linear or
convolution) whose backward computes only the gradient of the layer's
input and hands the library, per layer, the rows it needs: abar (the
input, or its patches, with the ones column of the bias) and g, the
per-example gradient of the loss at the output (grad_output times the
rows), from which it forms the weight gradient itself, or never forms it
where the batch form of docs/algorithm.md sec. 8 is cheaper (dense
layers), as the C trainer does. torch never computes those layers'
weight gradients, and their .grad stays None. With weight_grads=True
autograd forms them as usual, into views of one array per layer that the
library reads (the weight form; a convolution's permuted as its
weight): the way for a loop that reads or changes those gradients
(clipping, accumulation over several forward passes), or for a subclass
with a forward of its own.

Either way abar and g are copied, as they are recorded, into buffers
allocated once (abar needs its ones column, g its scale), and the
statistics' g of the sampled-target pass only when statistics are due.

Threads: torch and libkfac share one OpenMP runtime and one OpenBLAS
(Debian's python3-torch and libkfac both use openblas-openmp), so
torch.set_num_threads(n) and kfac.set_threads(n) set the same count; the
last call wins.

A KFAC-Pytorch training loop (its main.py) runs as it is: it reads
`steps` and `TCov`, and sets `acc_stats` around its own backward pass of
targets sampled from the model. Or the optimizer draws the targets itself:
`optimizer.backward(loss, output)` in place of `loss.backward()`.
"""
import os
import tempfile
import types
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import InvalidArgumentError, Params, Preconditioner, Rng, sample_targets

__all__ = ["KFAC"]

_LOSSES = ("softmax_xent", "sigmoid_xent", "squared")

# The gradients are strided views of the library's d_out x (d_in + 1)
# arrays, which autograd accumulates into in place but warns about (its
# layout contract wants dense gradients, for speed): that warning only.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract",
                        category=UserWarning)


class _LinearRows(torch.autograd.Function):
    """F.linear(x, weight, bias) whose backward hands the layer's rows
    (abar from x, g from the output's gradient) to the optimizer and
    computes the input's gradient only: the weight gradient is the
    library's to form, or not (weight_grads=False)."""

    @staticmethod
    def forward(ctx, x, weight, bias, record, serial):
        ctx.record, ctx.serial = record, serial
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        ctx.record(ctx.serial, x, grad_out)
        # dL/dx = dL/ds W
        gx = grad_out.matmul(weight) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, None


class _Conv2dRows(torch.autograd.Function):
    """An nn.Conv2d's convolution whose backward hands the layer's rows
    (the input's patches, and g from the output's gradient) to the
    optimizer and computes the input's gradient only, as _LinearRows."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer, record, serial):
        ctx.layer, ctx.record, ctx.serial = layer, record, serial
        ctx.save_for_backward(x, weight)
        return layer.conv(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        ctx.record(ctx.serial, x, grad_out)
        gx = ctx.layer.conv_input_grad(x, weight, grad_out) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, None, None


def _conv_padding(m):
    """An nn.Conv2d's zero padding as (top, bottom, left, right)."""
    kh, kw = m.kernel_size
    if m.padding == "valid":
        return (0, 0, 0, 0)
    if m.padding == "same":
        # torch's: the extra row or column of an even kernel at the end
        th, tw = kh - 1, kw - 1
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = m.padding
    return (ph, ph, pw, pw)


def _check_conv(m):
    """What kfac.torch preconditions of nn.Conv2d, or ValueError."""
    bad = []
    if m.groups != 1:
        bad.append("groups=%d" % m.groups)
    if tuple(m.dilation) != (1, 1):
        bad.append("dilation=%s" % (tuple(m.dilation),))
    if m.padding_mode != "zeros":
        bad.append("padding_mode=%r" % m.padding_mode)
    if bad:
        raise ValueError("%r: kfac.torch.KFAC preconditions nn.Conv2d with groups=1, dilation=1 and zero padding "
                         "only, not %s (freeze its parameters, requires_grad=False, or leave it out of the "
                         "model to train it otherwise)" % (m, ", ".join(bad)))


class _Layer:
    """One nn.Linear or nn.Conv2d: its weight and bias as views of W
    (d_out x d_in, d_in counting the bias column), their gradients as
    views of G (weight_grads only), and the buffers of its rows: abar
    (cap * pos x d_in, ones last), gs (cap * pos x d_out, the sampled
    pass's g) and gt (cap * pos x d_out, the loss's g; rows path only),
    cap examples of pos rows each (a convolution's output pixels: known
    from its first forward pass)."""

    def __init__(self, module, weight_grads):
        self.module = module
        self.is_conv = isinstance(module, torch.nn.Conv2d)
        self.has_bias = module.bias is not None
        if self.is_conv:
            _check_conv(module)
            self.d_out, self.c_in, self.kh, self.kw = module.weight.shape
            self.fan_in = self.kh * self.kw * self.c_in
            self.stride = tuple(module.stride)
            self.pads = _conv_padding(module)
            self.pos, self.out_hw = None, None
            self.kind = "nn.Conv2d"
        else:
            self.fan_in = module.in_features
            self.d_out = module.out_features
            self.pos = 1
            self.kind = "nn.Linear"
        self.d_in = self.fan_in + (1 if self.has_bias else 0)
        self.W = np.zeros((self.d_out, self.d_in), dtype=np.float32)
        self.Wt = torch.from_numpy(self.W)
        self.G = self.Gt = None
        if weight_grads:
            self.G = np.zeros((self.d_out, self.d_in), dtype=np.float32)
            self.Gt = torch.from_numpy(self.G)
        self.abar = self.gs = self.gt = None
        self.abar_t = self.gs_t = self.gt_t = None
        self.cap = 0
        self.rows = 0        # rows of the last forward pass in grad mode (weight_grads)
        self.a_step = -1     # weight_grads: the step whose abar is in the buffer
        self.g_step = -1     # the step whose sampled g is in gs
        # the rows path: which forward pass (its serial number) each
        # buffer holds, and how many rows gt holds (0: none since zero_grad)
        self.abar_of = self.gs_of = self.gt_of = None
        self.gt_rows = 0
        self.mixed = False   # gt got a second forward pass's rows
        self.adopt_weights()
        if weight_grads:
            self.adopt_grads()

    def params(self):
        return [self.module.weight] + ([self.module.bias] if self.has_bias else [])

    def _views(self, t):
        if self.is_conv:
            # (d_out, kh * kw * c_in) in (ky, kx, ci) order seen as torch's
            # (d_out, c_in, kh, kw): a strided view, no copy
            v = [t[:, :self.fan_in].view(self.d_out, self.kh, self.kw, self.c_in).permute(0, 3, 1, 2)]
        else:
            v = [t[:, :self.fan_in]]
        if self.has_bias:
            v.append(t[:, self.fan_in])
        return v

    # -- convolutions

    def conv(self, x, weight, bias):
        """The module's convolution (padding resolved to four sides)."""
        t, b, l, r = self.pads
        if t == b and l == r:
            return F.conv2d(x, weight, bias, self.stride, (t, l))
        return F.conv2d(F.pad(x, (l, r, t, b)), weight, bias, self.stride)

    def conv_input_grad(self, x, weight, grad_out):
        # dL/dx: the transposed convolution of the output's gradient
        t, b, l, r = self.pads
        if t == b and l == r:
            return torch.nn.grad.conv2d_input(x.shape, weight, grad_out, self.stride, (t, l))
        shape = (x.shape[0], x.shape[1], x.shape[2] + t + b, x.shape[3] + l + r)
        gp = torch.nn.grad.conv2d_input(shape, weight, grad_out, self.stride, 0)
        return gp[:, :, t:t + x.shape[2], l:l + x.shape[3]]

    def set_positions(self, out):
        """A convolution's output pixels from its output (B x d_out x oh
        x ow, or unbatched); the same for every forward pass."""
        hw = (out.shape[-2], out.shape[-1])
        if self.out_hw is None:
            self.out_hw, self.pos = hw, hw[0] * hw[1]
        elif hw != self.out_hw:
            raise ValueError("%r: an output of %dx%d pixels, and earlier %dx%d: K-FAC's factors of a convolution "
                             "are per output pixel, so every batch must have one image size"
                             % (self.module, hw[0], hw[1], self.out_hw[0], self.out_hw[1]))

    def examples(self, x):
        """Examples in a forward pass's input x (rows for nn.Linear: every
        leading dimension)."""
        if self.is_conv:
            return x.shape[0] if x.dim() == 4 else 1
        return x.numel() // self.fan_in

    def g_rows(self, grad, rows):
        """The output's gradient as the shape of g_dest(., rows)."""
        if not self.is_conv:
            return grad.reshape(rows, self.d_out)
        if grad.dim() == 3:
            grad = grad.unsqueeze(0)
        return grad.permute(0, 2, 3, 1)  # example, oy, ox, channel: the library's row order

    def g_dest(self, buf, rows):
        if not self.is_conv:
            return buf[:rows]
        return buf[:rows * self.pos].view(rows, self.out_hw[0], self.out_hw[1], self.d_out)

    def write_abar(self, x, rows):
        """abar <- the rows of the input x: nn.Linear's x, nn.Conv2d's
        patches in (ky, kx, ci) order (F.unfold's are (ci, ky, kx))."""
        if not self.is_conv:
            self.abar_t[:rows, :self.fan_in].copy_(x.reshape(rows, self.fan_in))
            return
        if x.dim() == 3:
            x = x.unsqueeze(0)
        t, b, l, r = self.pads
        if t == b and l == r:
            cols = F.unfold(x, (self.kh, self.kw), padding=(t, l), stride=self.stride)
        else:
            cols = F.unfold(F.pad(x, (l, r, t, b)), (self.kh, self.kw), stride=self.stride)
        P = self.pos
        dst = self.abar_t[:rows * P, :self.fan_in].view(rows, P, self.kh, self.kw, self.c_in)
        dst.copy_(cols.view(rows, self.c_in, self.kh, self.kw, P).permute(0, 4, 2, 3, 1))

    @staticmethod
    def _same(p, view):
        return p is not None and p.data_ptr() == view.data_ptr() and p.stride() == view.stride() \
            and p.shape == view.shape and p.dtype == view.dtype

    def adopt_weights(self):
        """Copy the parameters into W and make them views of it (again,
        if the user replaced a parameter's data)."""
        for p, v in zip(self.params(), self._views(self.Wt)):
            if not self._same(p.data, v):
                if p.dtype != torch.float32 or p.device.type != "cpu":
                    raise TypeError("kfac.torch.KFAC needs float32 CPU parameters, not %s on %s"
                                    % (p.dtype, p.device))
                v.copy_(p.data)
                p.data = v

    def adopt_grads(self, copy=True):
        """Make the parameters' gradients views of G, copying (or zeroing,
        for a missing gradient) what autograd put elsewhere; copy False:
        only the views (G zeroed by the caller)."""
        for p, v in zip(self.params(), self._views(self.Gt)):
            if not self._same(p.grad, v):
                if copy and p.grad is not None:
                    v.copy_(p.grad)
                elif copy:
                    v.zero_()
                p.grad = v

    def reserve(self, rows):
        """Buffers for at least `rows` examples; True if they were replaced
        (what they held is gone)."""
        if rows <= self.cap:
            return False
        cap = max(rows, 2 * self.cap)
        old = (self.abar, self.gs, self.gt)
        P = self.pos
        self.abar = np.zeros((cap * P, self.d_in), dtype=np.float32)
        if self.has_bias:
            self.abar[:, -1] = 1
        self.gs = np.zeros((cap * P, self.d_out), dtype=np.float32)
        self.gt = np.zeros((cap * P, self.d_out), dtype=np.float32)
        if old[0] is not None:  # what they held, with its tags, is kept
            for new, a in zip((self.abar, self.gs, self.gt), old):
                new[:self.cap * P] = a
        self.abar_t, self.gs_t, self.gt_t = (torch.from_numpy(a) for a in (self.abar, self.gs, self.gt))
        self.cap = cap
        return True

    def take_abar(self, serial, x, rows):
        """abar <- the rows of x (forward pass `serial`), once."""
        if self.abar_of != serial:
            self.write_abar(x, rows)
            self.abar_of = serial


class _Forward:
    """The rows path's forward of one nn.Linear or nn.Conv2d, set on the
    module as an instance attribute over the class's forward (the same
    F.linear or convolution, through _LinearRows or _Conv2dRows in grad
    mode); remove() takes it away. A copy of the module (copy.deepcopy
    of the model) gets a forward bound to itself, which is the class's
    plain one."""

    def __init__(self, opt, layer):
        module = layer.module

        def record(serial, x, grad_out):
            opt._record_rows(layer, serial, x, grad_out)

        def forward(mod, x):
            if mod is not module or not torch.is_grad_enabled():
                return type(mod).forward(mod, x)
            opt._serial += 1
            if not layer.is_conv:
                return _LinearRows.apply(x, mod.weight, mod.bias, record, opt._serial)
            if x.dim() == 3:  # one unbatched image
                return _Conv2dRows.apply(x.unsqueeze(0), mod.weight, mod.bias, layer, record, opt._serial).squeeze(0)
            return _Conv2dRows.apply(x, mod.weight, mod.bias, layer, record, opt._serial)

        module.forward = types.MethodType(forward, module)
        self.module = module

    def remove(self):
        if self.module is not None and "forward" in vars(self.module):
            del self.module.forward
        self.module = None


class KFAC(torch.optim.Optimizer):
    """K-FAC for the nn.Linear and nn.Conv2d layers of a CPU float32
    model, with libkfac's preconditioner and step rule (kfac_precond, the
    C trainer's K-FAC; the module's docstring for convolutions).

        KFAC(model, lr=None, *, momentum=None, damping=None, cov_every=None,
             inv_every=None, kl_clip=None, weight_decay=None, decay=None,
             loss="softmax_xent", batch_averaged=True, max_batch=None,
             seed=1, weight_grads=False, params=None, **settings)

    Options and their defaults are the C trainer's (None: its default):
    lr 0.01, momentum 0.9, damping 0.1, cov_every (T_cov) 10, inv_every
    (T_inv) 100, kl_clip 1e-3, weight_decay 0, decay (the factors'
    running average) 0.95; any other training parameter by name in
    settings (inversion="eigen", stat_fraction=0.25, rank_max=32,
    damping_half_life=..., kfac_lr=...), or a kfac.Params or dict as
    params. KFAC-Pytorch's names are accepted too: TCov for cov_every,
    TInv for inv_every, stat_decay for decay, so its constructor call
    (main.py's, by keywords) works with the class name changed. All but
    lr are keyword-only: the two classes order their arguments
    differently. Bad values raise the
    library's exception (kfac.InvalidArgumentError, a ValueError) with its
    message. The quadratic rule (rule="quadratic") needs exact
    Fisher-vector products this optimizer does not compute: refused.

    Each step() preconditions the gradient of every nn.Linear and
    nn.Conv2d layer (its weight and bias as one d_out x (d_in + 1)
    matrix, a convolution's d_in = kh kw c_in) and updates the
    weights: v <- momentum v + nu Delta, W <- W - lr v, with nu the KL
    clip. Statistics are due when steps % TCov == 0: a backward pass of
    targets sampled from the model's output records g (and abar), either
    the caller's with acc_stats True (KFAC-Pytorch's loop) or the
    optimizer's own (backward()), of the same forward pass as the loss's
    backward pass. step() raises RuntimeError when statistics are due and
    that pass is missing.
    `batch_averaged` (KFAC-Pytorch's) says that the sampled loss is a mean
    over the batch: its output gradients are then multiplied by the batch
    to give the per-example g the library takes.

    The gradient each step follows is that of the last backward pass
    since zero_grad() (more than one backward pass of the same forward
    pass add up), whatever the loss's scale. With weight_grads False (the
    default, and the fast way) it reaches the library as each nn.Linear's
    rows, abar and g = grad_output times the rows, from which the library
    forms the gradient, or applies the preconditioner to the rows
    directly where that is cheaper (the batch form, as in the C trainer):
    torch computes no weight gradient for those layers, and their .grad
    stays None (zero_grad() sets it so). A loss term on a layer's weights
    themselves (anything but its output) has no rows to show: step()
    refuses such a gradient, as it refuses the rows of two forward passes
    (gradient accumulation). weight_grads True: autograd forms the
    layers' .grad as for any optimizer (views of one array per layer) and
    step() preconditions those, whatever made them: slower, for loops that
    read, change or accumulate the gradients.
    `loss` names the output distribution backward() samples from
    (softmax_xent: categorical; sigmoid_xent; squared: Gaussian).
    `max_batch` sizes the buffers (default: the first batch; a larger
    batch later grows them). `seed` seeds backward()'s sampler.

    Where this differs from KFAC-Pytorch's KFACOptimizer:
    - defaults: KFAC-Pytorch's are lr 0.001, damping 0.001, kl_clip 0.001,
      TCov 10, TInv 100, stat_decay 0.95, momentum 0.9, weight_decay 0.
    - damping: factored Tikhonov, (A + pi sqrt(l) I) and (G + sqrt(l)/pi
      I) with pi by the trace norm (Martens & Grosse 2015, sec. 6.3), the
      large factors' inverses low-rank (inversion "lowrank"). KFAC-Pytorch
      adds l to the eigenvalue products (exact Tikhonov in the eigenbasis),
      which is inversion="eigen" here.
    - the factors' running averages start from the first statistics,
      epsilon = min(1 - 1/k, decay); KFAC-Pytorch starts them at the
      identity.
    - inverses at every statistics round of the first T_inv steps, then
      every T_inv steps; KFAC-Pytorch's only every TInv steps.
    - weight decay is added to the gradient before preconditioning, from
      the first step, weights and biases alike; KFAC-Pytorch adds it after
      preconditioning and the KL clip, and only from step 20 * TCov on.
    - nn.Conv2d layers are preconditioned with the C trainer's KFC
      factors (A the mean over examples and output pixels of the
      patches' outer products, G the mean over examples of the sum over
      pixels of g g^T); KFAC-Pytorch's are not checked against these
      here. Other layers with parameters (Conv1d, ConvTranspose2d,
      normalizations, embeddings), like every parameter outside an
      nn.Linear or nn.Conv2d, take momentum SGD with the same lr,
      momentum and weight decay. inversion="tridiag" is refused for
      convolutions (the block-tridiagonal inverse is for dense layers).
    - of the param_groups entries only "lr" is read at each step (so LR
      schedulers work); momentum, damping and weight_decay are fixed at
      construction.
    - the rows path (weight_grads False) sets each nn.Linear's forward
      as an attribute of the module (remove_hooks() takes it away):
      torch.save(model) pickles it no more than it pickles hooks (save
      the state_dict(), as usual), and a copy.deepcopy of the model
      runs plain nn.Linear forwards.
    """

    def __init__(self, model, lr=None, *, momentum=None, damping=None, cov_every=None, inv_every=None, kl_clip=None,
                 weight_decay=None, decay=None, loss="softmax_xent", batch_averaged=True, max_batch=None, seed=1,
                 weight_grads=False, params=None, stat_decay=None, TCov=None, TInv=None, **settings):
        if not isinstance(model, torch.nn.Module):
            raise TypeError("model must be a torch.nn.Module, not %s" % type(model).__name__)
        for ours, theirs, name in ((cov_every, TCov, "cov_every and TCov"), (inv_every, TInv, "inv_every and TInv"),
                                   (decay, stat_decay, "decay and stat_decay")):
            if ours is not None and theirs is not None:
                raise TypeError("give one of %s" % name)
        cov_every = TCov if cov_every is None else cov_every
        inv_every = TInv if inv_every is None else inv_every
        decay = stat_decay if decay is None else decay
        if loss not in _LOSSES:
            raise ValueError("loss must be one of %s, not %r" % (", ".join(_LOSSES), loss))
        p = Params(params) if not isinstance(params, Params) else params.copy()
        given = dict(lr=lr, momentum=momentum, damping=damping, cov_every=cov_every, inv_every=inv_every,
                     kl_clip=kl_clip, weight_decay=weight_decay, decay=decay)
        p.update({k: v for k, v in given.items() if v is not None}, **settings)
        p["optimizer"] = "kfac"
        p.validate()
        if p["kfac.rule"] != "kl_clip":
            raise InvalidArgumentError(2, "kfac.rule = %s: kfac.torch.KFAC has the kl_clip rule only (the "
                                          "quadratic rule needs exact Fisher-vector products)" % p["kfac.rule"])
        self.kfac_params = p
        # the values the preconditioner resolves (kfac.lr > 0 and
        # kfac.momentum >= 0 override the trainer's), for param_groups
        eff_lr = p["kfac.lr"] if p["kfac.lr"] > 0 else p["train.lr"]
        eff_mom = p["kfac.momentum"] if p["kfac.momentum"] >= 0 else p["train.momentum"]
        self.weight_grads = bool(weight_grads)
        found = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
                 and m.weight.requires_grad]
        if not found:
            raise ValueError("the model has no nn.Linear or nn.Conv2d layer to precondition")
        for m in found:
            base = torch.nn.Conv2d if isinstance(m, torch.nn.Conv2d) else torch.nn.Linear
            if not self.weight_grads and (type(m).forward is not base.forward or "forward" in vars(m)):
                raise ValueError("%s has a forward of its own, which the rows path (weight_grads=False) would "
                                 "replace: construct with weight_grads=True" % type(m).__name__)
        self.layers = [_Layer(m, self.weight_grads) for m in found]
        defaults = dict(lr=eff_lr, momentum=eff_mom, damping=p["kfac.damping"],
                        weight_decay=p["train.weight_decay"])
        super().__init__([q for q in model.parameters() if q.requires_grad], defaults)
        self.model = model
        self.loss = loss
        self.batch_averaged = bool(batch_averaged)
        self.acc_stats = False
        self.max_batch = max_batch
        self._in_layer = {id(q) for l in self.layers for q in l.params()}
        self._pc = None
        self._lr = self._lr0 = eff_lr
        self._rng = Rng(seed)
        self._cov_every = int(p["kfac.cov_every"])
        self._inv_every = int(p["kfac.inv_every"])
        self._handles = []
        self._serial = 0          # forward passes through the rows path
        self._bound, self._bound_key = None, None
        self._pending = None      # load()'s file, until the convolutions' positions are known
        for layer in self.layers:
            if self.weight_grads:
                self._handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
            else:
                self._handles.append(_Forward(self, layer))

    # ------------------------------------------------ KFAC-Pytorch's names

    @property
    def steps(self):
        """Steps taken (kfac_precond_steps)."""
        if self._pc is None:
            return self._pending[1] if self._pending else 0
        return self._pc.steps

    @property
    def TCov(self):
        return self._cov_every

    @property
    def TInv(self):
        return self._inv_every

    @property
    def stats_due(self):
        """True if the next step folds in statistics: steps % TCov == 0."""
        return self.steps % self._cov_every == 0

    # --------------------------------------------------------------- hooks

    @staticmethod
    def _batch(layer, x):
        # the examples of the mean loss KFAC-Pytorch's batch_averaged means
        return layer.examples(x) if layer.is_conv else (x.shape[0] if x.dim() > 1 else 1)

    def _forward_hook(self, layer):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled():
                return
            x = inputs[0]
            if layer.is_conv:
                layer.set_positions(output)
            rows = layer.examples(x)
            layer.rows = rows
            if not self.stats_due:
                return
            layer.reserve(rows)
            layer.write_abar(x.detach(), rows)
            layer.a_step = self.steps
            if output.requires_grad:
                output.register_hook(self._grad_hook(layer, rows, self._batch(layer, x)))
        return hook

    def _grad_hook(self, layer, rows, batch):
        def hook(grad):
            if self.acc_stats and layer.cap >= rows:
                g = layer.g_dest(layer.gs_t, rows)
                torch.mul(layer.g_rows(grad.detach(), rows), batch if self.batch_averaged else 1, out=g)
                layer.g_step = self.steps
        return hook

    def _record_rows(self, layer, serial, x, grad_out):
        # the rows path: _LinearRows.backward or _Conv2dRows.backward of
        # forward pass `serial`
        if layer.is_conv:
            layer.set_positions(grad_out)
        rows = layer.examples(x)
        gout = layer.g_rows(grad_out, rows)
        if self.acc_stats:
            if not self.stats_due:
                return
            layer.reserve(rows)
            layer.take_abar(serial, x, rows)
            torch.mul(gout, self._batch(layer, x) if self.batch_averaged else 1, out=layer.g_dest(layer.gs_t, rows))
            layer.gs_of, layer.g_step = serial, self.steps
            return
        layer.reserve(rows)
        if layer.gt_rows and layer.gt_of == serial:
            # another backward pass of the same forward pass: gradients add
            layer.g_dest(layer.gt_t, rows).add_(gout, alpha=rows)
            return
        if layer.gt_rows:
            layer.mixed = True
        layer.take_abar(serial, x, rows)
        # g = dL/ds times the examples: (1/rows) g^T abar is the gradient
        # (a convolution's summed over its rows * positions rows)
        torch.mul(gout, rows, out=layer.g_dest(layer.gt_t, rows))
        layer.gt_of, layer.gt_rows = serial, rows

    # ------------------------------------------------------------ backward

    def backward(self, loss, output, retain_graph=None):
        """loss.backward(), preceded when statistics are due by the
        backward pass of targets drawn from the model's distribution at
        `output` (the network's output z, batch x outputs, under the
        constructor's `loss`) with libkfac's sampler: the loop without
        KFAC-Pytorch's acc_stats. The sampled pass leaves the parameters'
        gradients untouched."""
        if self.stats_due:
            z = output.detach()
            if z.dim() != 2:
                raise ValueError("output must be batch x outputs, not of shape %s" % (tuple(z.shape),))
            zn = np.ascontiguousarray(z.numpy(), dtype=np.float32)
            y = sample_targets(self.loss, zn, self._rng)
            if self.loss == "softmax_xent":
                e = np.exp(zn - zn.max(axis=1, keepdims=True))
                dz = e / e.sum(axis=1, keepdims=True) - y
            elif self.loss == "sigmoid_xent":
                dz = 1 / (1 + np.exp(-zn)) - y
            else:
                dz = zn - y
            # the gradient of the mean sampled loss: the hooks scale it back
            dz = torch.from_numpy(dz.astype(np.float32) / (zn.shape[0] if self.batch_averaged else 1))
            weights = [q for l in self.layers for q in l.params()]
            self.acc_stats = True
            try:
                torch.autograd.grad(output, weights, grad_outputs=dz, retain_graph=True, allow_unused=True)
            finally:
                self.acc_stats = False
        loss.backward(retain_graph=retain_graph)

    # ---------------------------------------------------------------- step

    def zero_grad(self, set_to_none=False):
        """Zero the gradients: the nn.Linear layers' rows (weight_grads
        False: their .grad set to None) or .grad in place (weight_grads:
        views of the library's gradient arrays); set_to_none as torch's
        for the other parameters."""
        for layer in self.layers:
            if self.weight_grads:
                layer.G.fill(0)
                layer.adopt_grads(copy=False)
                continue
            layer.gt_rows, layer.gt_of, layer.mixed = 0, None, False
            for q in layer.params():
                q.grad = None
        for group in self.param_groups:
            for q in group["params"]:
                if id(q) in self._in_layer or q.grad is None:
                    continue
                if set_to_none:
                    q.grad = None
                else:
                    q.grad.detach_()
                    q.grad.zero_()

    def _new_preconditioner(self, rows, state=None):
        """A Preconditioner for batches of up to `rows` examples, with the
        state of a save() file's bytes if given."""
        pc = Preconditioner([(l.d_out, l.d_in) for l in self.layers], rows, self.kfac_params,
                            positions=[l.pos for l in self.layers])
        if state is not None:
            with tempfile.TemporaryDirectory(prefix="kfac_torch.") as tmp:
                path = os.path.join(tmp, "pc.ckpt")
                with open(path, "wb") as f:
                    f.write(state)
                pc.load(path)
        return pc

    def _state_bytes(self):
        with tempfile.TemporaryDirectory(prefix="kfac_torch.") as tmp:
            path = os.path.join(tmp, "pc.ckpt")
            self._pc.save(path)
            with open(path, "rb") as f:
                return f.read()

    def _preconditioner(self, rows):
        want = max(rows, int(self.max_batch or 0))
        if self._pc is None:
            for l, layer in enumerate(self.layers):
                if layer.pos is None:
                    raise RuntimeError("%s layer %d had no forward pass with gradients enabled before step(): its "
                                       "output's size is unknown" % (layer.kind, l))
            self._pc = self._new_preconditioner(want, self._pending[0] if self._pending else None)
            self._pending = None
            self._set_lr_again()
        elif rows > self._pc.max_rows:
            # a larger batch: the same state in a larger preconditioner
            self._pc = self._new_preconditioner(want, self._state_bytes())
            self._set_lr_again()
        return self._pc

    def _set_lr_again(self):
        # a new preconditioner starts at the constructor's lr
        if self._lr != self._lr0:
            self._pc.set_lr(self._lr)

    def step(self, closure=None):
        """One K-FAC step of every nn.Linear layer (momentum SGD for the
        other parameters). closure, if given, is called with gradients
        enabled and its result returned, as torch's optimizers do."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.weight_grads:
            self._step_grads()
        else:
            self._step_rows()
        self._sgd_others()
        return loss

    def _due_error(self, l, what):
        return RuntimeError(
            "K-FAC statistics are due at step %d (steps %% TCov == 0) but %s of %s layer %d was not "
            "recorded: run the forward pass with gradients enabled and a backward pass of targets sampled from "
            "the model with optimizer.acc_stats = True (KFAC-Pytorch's loop), or call "
            "optimizer.backward(loss, output)" % (self.steps, what, self.layers[l].kind, l))

    def _lr_now(self, pc):
        lr = float(self.param_groups[0]["lr"])
        if lr != self._lr:
            pc.set_lr(lr)
            self._lr = lr

    def _step_grads(self):
        due = self.stats_due
        rows = self.layers[0].rows
        for l, layer in enumerate(self.layers):
            if layer.rows != rows:
                raise ValueError("layer %d saw %d rows and layer 0 %d: every nn.Linear and nn.Conv2d must see the "
                                 "batch's rows (its examples; an nn.Linear's input rows)" % (l, layer.rows, rows))
            if due and (layer.a_step != self.steps or layer.g_step != self.steps):
                raise self._due_error(l, "g" if layer.a_step == self.steps else "abar")
        if rows < 1:
            raise RuntimeError("no forward pass with gradients enabled before step()")
        pc = self._preconditioner(rows)
        self._lr_now(pc)
        for layer in self.layers:
            layer.adopt_weights()
            layer.adopt_grads()
        pc.step([l.W for l in self.layers], grads=[l.G for l in self.layers],
                abar=[l.abar for l in self.layers] if due else None,
                g_sampled=[l.gs for l in self.layers] if due else None, rows=rows)

    def _step_rows(self):
        due = self.stats_due
        rows = 0
        for l, layer in enumerate(self.layers):
            for q in layer.params():
                if q.grad is not None:
                    raise RuntimeError(
                        "%s layer %d's parameters have a .grad, from something other than its output (a "
                        "loss term on its weights?), which the rows path does not see: construct the optimizer "
                        "with weight_grads=True, or use its weight_decay" % (layer.kind, l))
            if layer.mixed:
                raise RuntimeError(
                    "%s layer %d took backward passes of two forward passes since zero_grad(): the rows "
                    "path steps on one forward pass's rows; construct the optimizer with weight_grads=True to "
                    "accumulate gradients" % (layer.kind, l))
            if layer.gt_rows:
                if rows and layer.gt_rows != rows:
                    raise ValueError("layer %d saw %d rows and another %d: every nn.Linear and nn.Conv2d must see "
                                     "the batch's rows (its examples; an nn.Linear's input rows)"
                                     % (l, layer.gt_rows, rows))
                rows = layer.gt_rows
        if rows < 1:
            raise RuntimeError("no backward pass through the nn.Linear and nn.Conv2d layers since zero_grad() "
                               "before step()")
        for l, layer in enumerate(self.layers):
            if not layer.gt_rows:  # no gradient reached it: a zero gradient
                if layer.pos is None:
                    raise RuntimeError("%s layer %d had no forward pass with gradients enabled before step(): its "
                                       "output's size is unknown" % (layer.kind, l))
                layer.reserve(rows)
                layer.abar[:rows * layer.pos, :layer.fan_in] = 0
                layer.gt[:rows * layer.pos] = 0
                layer.abar_of, layer.gt_of, layer.gt_rows = None, None, rows
            if due and layer.g_step != self.steps:
                raise self._due_error(l, "g")
            if due and layer.gs_of != layer.gt_of:
                raise RuntimeError("K-FAC statistics are due at step %d: the sampled-target pass and the loss's "
                                   "backward pass must be of the same forward pass (%s layer %d)"
                                   % (self.steps, layer.kind, l))
        pc = self._preconditioner(rows)
        self._lr_now(pc)
        key = (pc, tuple(layer.cap for layer in self.layers))
        if self._bound_key != key:
            self._bound = pc.bind([l.W for l in self.layers], abar=[l.abar for l in self.layers],
                                  g_sampled=[l.gs for l in self.layers], g=[l.gt for l in self.layers])
            self._bound_key = key
        for layer in self.layers:
            layer.adopt_weights()
        self._bound(rows)

    @torch.no_grad()
    def _sgd_others(self):
        for group in self.param_groups:
            for q in group["params"]:
                if id(q) in self._in_layer or q.grad is None:
                    continue
                d = q.grad
                if group["weight_decay"] != 0:
                    d = d.add(q, alpha=group["weight_decay"])
                if group["momentum"] != 0:
                    st = self.state[q]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = d.clone()
                    else:
                        st["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    d = st["momentum_buffer"]
                q.add_(d, alpha=-group["lr"])

    # --------------------------------------------------------------- state

    def kfac_stats(self):
        """The preconditioner's counters, timings and damping (as
        kfac.Preconditioner.stats()); {} before the first step."""
        return self._pc.stats() if self._pc is not None else {}

    def save(self, path):
        """K-FAC's state (factors, inverses, damping, momentum, step
        count: kfac_precond_save) in the checkpoint format. With the
        model's state_dict() and this optimizer's state_dict() (the other
        parameters' momentum), a run resumes where it was."""
        if self._pc is None:
            raise RuntimeError("nothing to save before the first step")
        self._pc.save(path)

    def load(self, path):
        """Resume K-FAC's state from save()'s file, for the same layers and
        inversion (the library checks them). Before the convolutions'
        first forward pass (their output's size unknown) the file is read
        now and its state taken at the first step."""
        with open(path, "rb") as f:
            state = f.read()
        if any(l.pos is None for l in self.layers):
            # checked now all the same, with any number of positions
            probe = Preconditioner([(l.d_out, l.d_in) for l in self.layers], 1, self.kfac_params)
            probe.load(path)
            self._pc, self._pending = None, (state, probe.steps)
            return
        self._pc = self._new_preconditioner(max(1, int(self.max_batch or 0)), state)
        self._set_lr_again()

    def remove_hooks(self):
        """Detach the optimizer's hooks from the model (and its forward of
        the nn.Linear layers: weight_grads False)."""
        for h in self._handles:
            h.remove()
        self._handles = []
