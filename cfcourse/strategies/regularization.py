"""L2 to the previous weights, EWC, online EWC and SI; see lesson 04.

All four add a quadratic pull towards remembered weights to the loss:
penalty = strength * sum_i importance_i * (w_i - anchor_i)^2, which is exactly zero at the anchor
and grows with the distance from it. They differ only in how they measure each weight's importance:
L2 treats every weight alike, EWC uses the diagonal Fisher information, SI the path integral of the
loss along the training trajectory. They work on any torch.nn.Module; only trainable parameters count.

The defaults suit permuted MNIST with the runner's SGD (lr 0.01, momentum 0.9); split MNIST wants
stronger pulls (see lesson 04). SGD with momentum m is stable on a pull of curvature k (the penalty's
second derivative in one weight: ewc_lambda * F_i for EWC, 2 * si_c * omega_i for SI) only while
lr * k < 2 (1 + m); past that the weights oscillate and blow up and the old task drops to chance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..data import Task, to_inputs
from . import HParam, Strategy, register

Tensors = dict[str, torch.Tensor]  # parameter name -> tensor of that parameter's shape

FISHER_KINDS = ("empirical", "true")
EWC_LAMBDA = HParam("ewc_lambda", float, 100.0, low=0.0, help="strength of the pull towards the old weights")
FISHER_SAMPLES = HParam("fisher_samples", int, 1000, low=1, help="training samples used to estimate the Fisher")
FISHER = HParam("fisher", str, "empirical", choices=FISHER_KINDS,
                help="empirical: gradients for the true labels; true: for labels drawn from the model's prediction")


# --- the shared pieces: snapshots and the quadratic penalty ----------------------------------------

def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that training changes, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> Tensors:
    """A detached copy of the trainable weights (the anchor a penalty pulls towards)."""
    return {name: p.detach().clone() for name, p in trainable(model).items()}


def quadratic_sum(params, anchors, importance=None) -> torch.Tensor:
    """sum_i importance_i * (w_i - anchor_i)^2 over matching lists of tensors (importance 1 when None)."""
    total = params[0].new_zeros(()) if len(params) else torch.zeros(())
    for i, (w, w_old) in enumerate(zip(params, anchors)):
        diff = w - w_old  # same shape as the parameter
        total = total + (diff * diff if importance is None else diff * importance[i] * diff).sum()
    return total


def quadratic_penalty(model: nn.Module, anchor: Tensors, importance: Tensors | None = None) -> torch.Tensor:
    """sum_i importance_i * (w_i - anchor_i)^2 (importance 1 when None): zero at the anchor; see lesson 04.
    Weights frozen since the anchor was taken do not count."""
    params = trainable(model)
    names = [name for name in anchor if name in params]
    if not names:
        return torch.zeros((), device=next(iter(params.values())).device) if params else torch.zeros(())
    return quadratic_sum([params[n] for n in names], [anchor[n] for n in names],
                         None if importance is None else [importance[n] for n in names])


@torch.no_grad()
def add_quadratic_grad(model: nn.Module, anchor: Tensors, importance: Tensors | None, strength: float) -> None:
    """Add the gradient of strength/2 * quadratic_penalty, strength * importance_i * (w_i - anchor_i), to each
    weight's .grad in place.

    The same gradient as backpropagating through the penalty, without autograd keeping a copy of every
    difference: one weight's temporary at a time instead of a few hundred MB for a 135M-weight language model.
    """
    params = trainable(model)
    for name, w_old in anchor.items():
        p = params.get(name)
        if p is None:
            continue
        d = p - w_old
        if importance is not None:
            d.mul_(importance[name])
        if p.grad is None:
            p.grad = d.mul_(strength)
        else:
            p.grad.add_(d, alpha=strength)


class Pull(Strategy):
    """A quadratic pull, strength/2 * sum_i importance_i * (w_i - anchor_i)^2 (+ a constant), towards
    remembered weights; L2, EWC, online EWC and SI say what the anchor and the importance are (`pull`).

    With `grad_in_place` the runner adds the pull's gradient after backward (`add_penalty_grad`) instead of
    backpropagating through it: the choice for large models, where autograd's copies cost hundreds of MB.
    """

    def __init__(self, grad_in_place: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.grad_in_place = bool(grad_in_place)

    def pull(self) -> tuple[Tensors, Tensors | None, float, torch.Tensor | float] | None:
        """(anchor, importance or None, strength, constant), or None before anything is remembered."""
        return None

    def penalty(self, model: nn.Module, x: torch.Tensor, task_ids) -> torch.Tensor | float:
        pulled = self.pull()
        if pulled is None or self.grad_in_place:
            return 0.0
        anchor, importance, strength, constant = pulled
        return strength / 2 * (quadratic_penalty(model, anchor, importance) + constant)

    def add_penalty_grad(self, model: nn.Module) -> None:
        pulled = self.pull()
        if pulled is not None and self.grad_in_place:
            add_quadratic_grad(model, pulled[0], pulled[1], pulled[2])


# --- the diagonal Fisher information ---------------------------------------------------------------

def _sample_indices(n_total: int, n_samples: int, seed: int = 0) -> torch.Tensor:
    """`n_samples` distinct indices out of `n_total`, the same ones every time for a given seed."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n_samples]


def _call(model: nn.Module, params: Tensors, consts: Tensors, x: torch.Tensor, task_id: int) -> torch.Tensor:
    """The model's logits with the given weights; multi-head models get the task's head."""
    args = (x, task_id) if getattr(model, "multi_head", False) else (x,)
    return functional_call(model, (params, consts), args)  # (batch, classes)


def _per_sample_sq_grads(model: nn.Module, task_id: int):
    """A function (params, consts, x (batch, 784), y (batch,)) -> the squared gradients of log p(y_b | x_b),
    one per sample: name -> (batch, *param shape). vmap runs the one-sample gradient over the batch."""
    def log_lik(params: Tensors, consts: Tensors, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(_call(model, params, consts, x[None], task_id), y[None])  # x (784,), y ()
    per_sample_grad = vmap(grad(log_lik), in_dims=(None, None, 0, 0))

    def sq_grads(params: Tensors, consts: Tensors, x: torch.Tensor, y: torch.Tensor) -> Tensors:
        return {name: g.square_() for name, g in per_sample_grad(params, consts, x, y).items()}
    return sq_grads


@torch.no_grad()
def _model_labels(model: nn.Module, params: Tensors, consts: Tensors, x: torch.Tensor, task_id: int,
                  gen: torch.Generator) -> torch.Tensor:
    """One label per sample drawn from the model's own predictive distribution p(y | x) (the true Fisher)."""
    probs = _call(model, params, consts, x, task_id).softmax(-1)  # (batch, classes)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(x.device)  # (batch,)


def _check_fisher_args(model: nn.Module, n_samples: int, kind: str, batch_size: int) -> None:
    if not trainable(model):
        raise ValueError("the model has no trainable parameters (requires_grad=True), so it has no Fisher")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if kind not in FISHER_KINDS:
        raise ValueError(f"unknown Fisher kind {kind!r}; choose one of {', '.join(FISHER_KINDS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _classifier_sq_grad_sums(model: nn.Module, task: Task, idx: torch.Tensor, kind: str, batch_size: int,
                             seed: int) -> Tensors:
    """Sum over the samples `idx` of `task` of each weight's squared gradient of log p(y | x): vmap runs the
    one-sample gradient over a batch at a time."""
    params = {name: p.detach() for name, p in trainable(model).items()}
    consts = {**{n: p.detach() for n, p in model.named_parameters() if not p.requires_grad},
              **dict(model.named_buffers())}
    dev = next(iter(params.values())).device
    sq_grads, gen = _per_sample_sq_grads(model, task.task_id), torch.Generator().manual_seed(seed)
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    for i in range(0, len(idx), batch_size):
        x = to_inputs(task.train_x[idx[i:i + batch_size]].to(dev))  # (batch, features)
        y = task.train_y[idx[i:i + batch_size]].to(dev)  # (batch,)
        if kind == "true":
            y = _model_labels(model, params, consts, x, task.task_id, gen)
        for name, g2 in sq_grads(params, consts, x, y).items():
            sums[name] += g2.sum(0)
    return sums


def _looped_sq_grad_sums(model: nn.Module, task, idx: torch.Tensor) -> Tensors:
    """The same sums for a task that scores one sample at a time (`task.sample_loss(model, i)`, e.g. a language
    model's mean next-token loss on one block): one backward pass per sample."""
    params = trainable(model)
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    for i in idx.tolist():
        grads = torch.autograd.grad(task.sample_loss(model, i), list(params.values()), allow_unused=True)
        for name, g in zip(params, grads):
            if g is not None:
                sums[name] += g.detach() ** 2
    return sums


def diagonal_fisher(model: nn.Module, task: Task, n_samples: int = 1000, kind: str = "empirical",
                    batch_size: int = 100, seed: int = 0, normalise: bool = False) -> Tensors:
    """Diagonal Fisher information; see lessons 04 and 09.

    The mean over `n_samples` training samples of `task` (a seeded sample) of each trainable weight's squared
    per-sample gradient of log p(y | x), with y the true label (empirical) or a label drawn from the model's
    own prediction (true). A task with `sample_loss` (a language model's text) is scored one sample at a time;
    a classifier's, a batch at a time. Runs in eval mode, so neither dropout nor batch norm moves it. With
    `normalise` the Fisher is divided by its mean over all weights, so that an EWC strength reads like an L2
    strength (a weight of average importance feels exactly the L2 pull).
    """
    _check_fisher_args(model, n_samples, kind, batch_size)
    looped = hasattr(task, "sample_loss")
    if looped and kind != "empirical":
        raise ValueError(f"the {kind} Fisher needs labels to draw; for {task.name!r} use kind='empirical'")
    idx = _sample_indices(len(task.train_y), n_samples, seed)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        sums = (_looped_sq_grad_sums(model, task, idx) if looped
                else _classifier_sq_grad_sums(model, task, idx, kind, batch_size, seed))
    finally:
        for m, training in modes.items():  # each module back to its own mode
            m.training = training
    fisher = {name: f / len(idx) for name, f in sums.items()}
    if normalise:
        mean = sum(float(f.sum()) for f in fisher.values()) / sum(f.numel() for f in fisher.values())
        if mean > 0:
            fisher = {name: f / mean for name, f in fisher.items()}
    return fisher


# --- synaptic intelligence's importance ------------------------------------------------------------

def si_importance(path: torch.Tensor, start: torch.Tensor, end: torch.Tensor, xi: float) -> torch.Tensor:
    """SI's importance of each weight for one task (Zenke et al. 2017); see lesson 04.

    omega = max(0, path / ((end - start)^2 + xi)): `path` is the running sum over the task's steps of
    -grad * step (each weight's share of the loss decrease), divided by the squared total displacement plus
    the damping xi. A negative share would push weights away, so it counts as zero.
    """
    return (path / ((end - start).pow(2) + xi)).clamp(min=0)


# --- the strategies --------------------------------------------------------------------------------

@register
class L2(Pull):
    """Pull every weight towards its value at the end of the previous task, all weights alike:
    l2_lambda / 2 * sum_i (w_i - anchor_i)^2. For a language model the previous task is what it knew before
    fine-tuning, so the pull is towards the starting weights (lesson 09)."""

    name = "l2"
    hparams = (HParam("l2_lambda", float, 0.03, low=0.0, help="strength of the pull towards the old weights"),)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.anchor: Tensors | None = None

    def after_task(self, model: nn.Module, task: Task) -> None:
        self.anchor = snapshot(model)

    def pull(self):
        return None if self.anchor is None else (self.anchor, None, self.l2_lambda, 0.0)


def merge_quadratics(memories: list[tuple[Tensors, Tensors]]) -> tuple[Tensors, Tensors, torch.Tensor]:
    """(A, m, c) with sum_t F_t (w - a_t)^2 = A (w - m)^2 + c for all w: A = sum_t F_t, m the Fisher-weighted
    mean of the anchors a_t, c what is left at m. One quadratic per step, however many tasks are remembered."""
    latest = memories[-1][1]  # m is measured from here, so one task gives m = a_1 and c = 0 exactly
    total = {n: sum(f[n] for f, _ in memories) for n in latest}
    centre = {}
    for n, a_last in latest.items():
        shift = sum(f[n] * (a[n] - a_last) for f, a in memories)  # zero wherever every F_t is zero
        centre[n] = a_last + shift / total[n].clamp_min(torch.finfo(total[n].dtype).tiny)
    rest = sum((f[n] * (a[n] - centre[n]).pow(2)).sum() for f, a in memories for n in latest)
    return total, centre, rest


@register
class EWC(Pull):
    """Elastic weight consolidation (Kirkpatrick et al. 2017): one Fisher-weighted pull per old task,
    ewc_lambda / 2 * sum_t sum_i F_t,i (w_i - a_t,i)^2, computed as one merged quadratic (the same value).

    `normalise_fisher` divides each Fisher by its mean, so that ewc_lambda reads like an L2 strength (how
    lesson 09 sets it for a language model)."""

    name = "ewc"
    hparams = (EWC_LAMBDA, FISHER_SAMPLES, FISHER)

    def __init__(self, normalise_fisher: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.normalise_fisher = bool(normalise_fisher)
        self.memories: list[tuple[Tensors, Tensors]] = []  # (Fisher, anchor) per finished task
        self._merged: tuple[Tensors, Tensors, torch.Tensor] | None = None  # the same sum as one quadratic

    def after_task(self, model: nn.Module, task: Task) -> None:
        fisher = diagonal_fisher(model, task, self.fisher_samples, self.fisher, normalise=self.normalise_fisher)
        self.memories.append((fisher, snapshot(model)))
        self._merged = merge_quadratics(self.memories)

    def pull(self):
        if self._merged is None:
            return None
        total, centre, rest = self._merged
        return centre, total, self.ewc_lambda, rest


@register
class OnlineEWC(Pull):
    """Online EWC (Schwarz et al. 2018): one running Fisher, F <- gamma * F + F_new, and the latest weights."""

    name = "online-ewc"
    hparams = (EWC_LAMBDA,
               HParam("gamma", float, 1.0, low=0.0, high=1.0,
                      help="share of the old Fisher kept at each new task (0: the latest only)"),
               FISHER_SAMPLES, FISHER)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.running_fisher: Tensors | None = None  # (`self.fisher` is the kind: empirical or true)
        self.anchor: Tensors | None = None

    def after_task(self, model: nn.Module, task: Task) -> None:
        new = diagonal_fisher(model, task, self.fisher_samples, self.fisher)
        old = self.running_fisher
        self.running_fisher = new if old is None else {name: self.gamma * old[name] + f for name, f in new.items()}
        self.anchor = snapshot(model)

    def pull(self):
        """ewc_lambda / 2 * sum_i F_i (w_i - anchor_i)^2 with the running Fisher and the latest anchor."""
        return None if self.anchor is None else (self.anchor, self.running_fisher, self.ewc_lambda, 0.0)


@register
class SI(Pull):
    """Synaptic intelligence (Zenke et al. 2017): importance from each weight's share of the loss decrease."""

    name = "si"
    hparams = (HParam("si_c", float, 100.0, low=0.0, help="strength of the pull towards the old weights"),
               HParam("xi", float, 0.1, low=0.0, low_open=True, help="damping of omega for weights that barely moved",
                      why="it keeps omega finite for weights that did not move"))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.omega: Tensors | None = None  # accumulated importance, one tensor per parameter
        self.anchor: Tensors | None = None  # the weights at the end of the previous task
        self.start: Tensors = {}  # the weights at the start of this task
        self.prev: Tensors = {}  # the weights before the current step
        self.path: Tensors = {}  # running sum of -grad * delta over this task's steps
        self.grads: Tensors = {}  # the gradient of the current step

    def before_task(self, model: nn.Module, task: Task) -> None:
        self.start, self.prev = snapshot(model), snapshot(model)
        self.path = {name: torch.zeros_like(w) for name, w in self.start.items()}

    @torch.no_grad()
    def before_step(self, model: nn.Module) -> None:
        """Keep this step's gradient of the task loss alone: the whole gradient minus the penalty's."""
        if not self.prev:  # used without before_task: start measuring here
            self.before_task(model, None)
        self.grads = {}
        for name, p in trainable(model).items():
            if p.grad is not None and name in self.prev:
                anchored = self.anchor is not None and name in self.anchor
                pull = 2 * self.si_c * self.omega[name] * (p - self.anchor[name]) if anchored else 0.0
                self.grads[name] = p.grad - pull  # same shape as p

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for name, p in trainable(model).items():
            if name in self.prev:
                if name in self.grads:
                    self.path[name] -= self.grads[name] * (p - self.prev[name])  # first-order loss decrease
                self.prev[name].copy_(p)

    def after_task(self, model: nn.Module, task: Task) -> None:
        if not self.start:  # no step was taken: nothing moved, nothing new is important
            self.before_task(model, task)
        end = snapshot(model)
        new = {name: si_importance(self.path[name], self.start[name], end[name], self.xi) for name in self.path}
        self.omega = new if self.omega is None else {name: self.omega.get(name, 0.0) + o for name, o in new.items()}
        self.anchor, self.start, self.prev = end, {}, {}

    def pull(self):
        """si_c * sum_i omega_i (w_i - anchor_i)^2, the anchor being the weights at the end of the last task."""
        return None if self.anchor is None else (self.anchor, self.omega, 2 * self.si_c, 0.0)
