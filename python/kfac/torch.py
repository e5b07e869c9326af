"""kfac.torch - libkfac's K-FAC as a torch.optim.Optimizer for CPU models.

    import kfac.torch
    optimizer = kfac.torch.KFAC(model, lr=0.05, damping=0.03, cov_every=10, inv_every=100)

It finds the model's nn.Linear layers and steps them through
kfac.Preconditioner (libkfac's kfac_precond). Each layer's weight and bias
are views of one float32 array in the library's layout (d_out x (d_in + 1),
the bias the last column), which the library updates in place.

By default (weight_grads=False) each nn.Linear runs its forward through a
function of this module (the same F.linear) whose backward computes only
the gradient of the layer's input and hands the library, per layer, the
rows it needs: abar (the input with the ones column of the bias) and g,
the per-example gradient of the loss at the output (grad_output times the
rows), from which it forms the weight gradient itself, or never forms it
where the batch form of docs/algorithm.md sec. 8 is cheaper, as the C
trainer does. torch never computes the nn.Linear layers' weight
gradients, and their .grad stays None. With weight_grads=True autograd
forms them as usual, into views of one array per layer that the library
reads (the weight form): the way for a loop that reads or changes those
gradients (clipping, accumulation over several forward passes).

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


class _Layer:
    """One nn.Linear: its weight and bias as views of W (d_out x d_in,
    d_in counting the bias column), their gradients as views of G
    (weight_grads only), and the buffers of its rows: abar (cap x d_in,
    ones last), gs (cap x d_out, the sampled pass's g) and gt (cap x
    d_out, the loss's g; rows path only)."""

    def __init__(self, module, weight_grads):
        self.module = module
        self.fan_in = module.in_features
        self.has_bias = module.bias is not None
        self.d_out = module.out_features
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
        v = [t[:, :self.fan_in]]
        if self.has_bias:
            v.append(t[:, self.fan_in])
        return v

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
        """Buffers for at least `rows` rows; True if they were replaced
        (what they held is gone)."""
        if rows <= self.cap:
            return False
        cap = max(rows, 2 * self.cap)
        old = (self.abar, self.gs, self.gt)
        self.abar = np.zeros((cap, self.d_in), dtype=np.float32)
        if self.has_bias:
            self.abar[:, -1] = 1
        self.gs = np.zeros((cap, self.d_out), dtype=np.float32)
        self.gt = np.zeros((cap, self.d_out), dtype=np.float32)
        if old[0] is not None:  # what they held, with its tags, is kept
            for new, a in zip((self.abar, self.gs, self.gt), old):
                new[:self.cap] = a
        self.abar_t, self.gs_t, self.gt_t = (torch.from_numpy(a) for a in (self.abar, self.gs, self.gt))
        self.cap = cap
        return True

    def take_abar(self, serial, x, rows):
        """abar <- the rows of x (forward pass `serial`), once."""
        if self.abar_of != serial:
            self.abar_t[:rows, :self.fan_in].copy_(x.reshape(rows, self.fan_in))
            self.abar_of = serial


class _Forward:
    """The rows path's forward of one nn.Linear, set on the module as an
    instance attribute over nn.Linear.forward (the same F.linear, through
    _LinearRows in grad mode); remove() takes it away. A copy of the
    module (copy.deepcopy of the model) gets a forward bound to itself,
    which is plain nn.Linear's."""

    def __init__(self, opt, layer):
        module = layer.module

        def record(serial, x, grad_out):
            opt._record_rows(layer, serial, x, grad_out)

        def forward(mod, x):
            if mod is not module or not torch.is_grad_enabled():
                return F.linear(x, mod.weight, mod.bias)
            opt._serial += 1
            return _LinearRows.apply(x, mod.weight, mod.bias, record, opt._serial)

        module.forward = types.MethodType(forward, module)
        self.module = module

    def remove(self):
        if self.module is not None and "forward" in vars(self.module):
            del self.module.forward
        self.module = None


class KFAC(torch.optim.Optimizer):
    """K-FAC for the nn.Linear layers of a CPU float32 model, with
    libkfac's preconditioner and step rule (kfac_precond, the C trainer's
    K-FAC).

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

    Each step() preconditions the gradient of every nn.Linear layer (its
    weight and bias as one d_out x (d_in + 1) matrix) and updates the
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
    - nn.Conv2d layers are not preconditioned (libkfac has no
      convolutions yet); like every parameter outside an nn.Linear, they
      take momentum SGD with the same lr, momentum and weight decay.
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
        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.requires_grad]
        if not linear:
            raise ValueError("the model has no nn.Linear layer to precondition")
        for m in linear:
            if not self.weight_grads and (type(m).forward is not torch.nn.Linear.forward or "forward" in vars(m)):
                raise ValueError("%s has a forward of its own, which the rows path (weight_grads=False) would "
                                 "replace: construct with weight_grads=True" % type(m).__name__)
        self.layers = [_Layer(m, self.weight_grads) for m in linear]
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
        for layer in self.layers:
            if self.weight_grads:
                self._handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
            else:
                self._handles.append(_Forward(self, layer))

    # ------------------------------------------------ KFAC-Pytorch's names

    @property
    def steps(self):
        """Steps taken (kfac_precond_steps)."""
        return self._pc.steps if self._pc is not None else 0

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

    def _forward_hook(self, layer):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled():
                return
            x = inputs[0]
            rows = x.numel() // layer.fan_in
            layer.rows = rows
            if not self.stats_due:
                return
            layer.reserve(rows)
            layer.abar_t[:rows, :layer.fan_in].copy_(x.detach().reshape(rows, layer.fan_in))
            layer.a_step = self.steps
            if output.requires_grad:
                output.register_hook(self._grad_hook(layer, rows, x.shape[0] if x.dim() > 1 else 1))
        return hook

    def _grad_hook(self, layer, rows, batch):
        def hook(grad):
            if self.acc_stats and layer.cap >= rows:
                g = layer.gs_t[:rows]
                g.copy_(grad.detach().reshape(rows, layer.d_out))
                if self.batch_averaged:
                    g.mul_(batch)
                layer.g_step = self.steps
        return hook

    def _record_rows(self, layer, serial, x, grad_out):
        # the rows path: _LinearRows.backward of forward pass `serial`
        rows = x.numel() // layer.fan_in
        gout = grad_out.reshape(rows, layer.d_out)
        if self.acc_stats:
            if not self.stats_due:
                return
            layer.reserve(rows)
            layer.take_abar(serial, x, rows)
            torch.mul(gout, x.shape[0] if self.batch_averaged and x.dim() > 1 else 1, out=layer.gs_t[:rows])
            layer.gs_of, layer.g_step = serial, self.steps
            return
        layer.reserve(rows)
        if layer.gt_rows and layer.gt_of == serial:
            # another backward pass of the same forward pass: gradients add
            layer.gt_t[:rows].add_(gout, alpha=rows)
            return
        if layer.gt_rows:
            layer.mixed = True
        layer.take_abar(serial, x, rows)
        # g = dL/ds times the rows: (1/rows) g^T abar is the gradient
        torch.mul(gout, rows, out=layer.gt_t[:rows])
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

    def _preconditioner(self, rows):
        want = max(rows, int(self.max_batch or 0))
        if self._pc is None:
            self._pc = Preconditioner([(l.d_out, l.d_in) for l in self.layers], want, self.kfac_params)
        elif rows > self._pc.max_rows:
            # a larger batch: the same state in a larger preconditioner
            with tempfile.TemporaryDirectory(prefix="kfac_torch.") as tmp:
                path = os.path.join(tmp, "pc.ckpt")
                self._pc.save(path)
                pc = Preconditioner([(l.d_out, l.d_in) for l in self.layers], want, self.kfac_params)
                pc.load(path)
            self._pc = pc
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
            "K-FAC statistics are due at step %d (steps %% TCov == 0) but %s of nn.Linear layer %d was not "
            "recorded: run the forward pass with gradients enabled and a backward pass of targets sampled from "
            "the model with optimizer.acc_stats = True (KFAC-Pytorch's loop), or call "
            "optimizer.backward(loss, output)" % (self.steps, what, l))

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
                raise ValueError("layer %d saw %d rows and layer 0 %d: every nn.Linear must see the batch's rows"
                                 % (l, layer.rows, rows))
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
                        "nn.Linear layer %d's parameters have a .grad, from something other than its output (a "
                        "loss term on its weights?), which the rows path does not see: construct the optimizer "
                        "with weight_grads=True, or use its weight_decay" % l)
            if layer.mixed:
                raise RuntimeError(
                    "nn.Linear layer %d took backward passes of two forward passes since zero_grad(): the rows "
                    "path steps on one forward pass's rows; construct the optimizer with weight_grads=True to "
                    "accumulate gradients" % l)
            if layer.gt_rows:
                if rows and layer.gt_rows != rows:
                    raise ValueError("layer %d saw %d rows and another %d: every nn.Linear must see the batch's "
                                     "rows" % (l, layer.gt_rows, rows))
                rows = layer.gt_rows
        if rows < 1:
            raise RuntimeError("no backward pass through the nn.Linear layers since zero_grad() before step()")
        for l, layer in enumerate(self.layers):
            if not layer.gt_rows:  # no gradient reached it: a zero gradient
                layer.reserve(rows)
                layer.abar[:rows, :layer.fan_in] = 0
                layer.gt[:rows] = 0
                layer.abar_of, layer.gt_of, layer.gt_rows = None, None, rows
            if due and layer.g_step != self.steps:
                raise self._due_error(l, "g")
            if due and layer.gs_of != layer.gt_of:
                raise RuntimeError("K-FAC statistics are due at step %d: the sampled-target pass and the loss's "
                                   "backward pass must be of the same forward pass (nn.Linear layer %d)"
                                   % (self.steps, l))
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
        inversion (the library checks them)."""
        pc = Preconditioner([(l.d_out, l.d_in) for l in self.layers], max(1, int(self.max_batch or 0)),
                            self.kfac_params)
        pc.load(path)
        self._pc = pc
        self._set_lr_again()

    def remove_hooks(self):
        """Detach the optimizer's hooks from the model (and its forward of
        the nn.Linear layers: weight_grads False)."""
        for h in self._handles:
            h.remove()
        self._handles = []
