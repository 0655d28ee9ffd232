"""Learning without Forgetting; see lesson 06.

LwF (Li & Hoiem 2017) keeps no old data: it keeps a frozen copy of the model
as it was after the last task and asks the current model to give the same
(softened) answers on the *new* inputs, for the old tasks' outputs.
Parameter isolation (`freeze`, task adapters) lives in isolation.py.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Task
from ..models import MultiHeadMLP, forward
from . import HParam, Strategy, register
from .labels_trick import current_task_loss


def distillation_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """T^2 * KL(softmax(old/T) || softmax(new/T)), averaged over samples; zero when new == old; see lesson 06.

    KL rather than Hinton's cross-entropy with soft targets: the two differ by the
    entropy of the old outputs, a constant, so their gradients are identical, but
    KL is exactly 0 when nothing has changed. The T^2 factor keeps the gradient's
    size roughly independent of T. Gradient flows into `new_logits` only.
    """
    if new_logits.shape != old_logits.shape:
        raise ValueError(f"new_logits and old_logits must have the same shape, got {tuple(new_logits.shape)} "
                         f"and {tuple(old_logits.shape)}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number (try 2.0), got {temperature!r}")
    classes = new_logits.shape[-1]
    log_p_new = F.log_softmax(new_logits.reshape(-1, classes) / temperature, dim=1)  # (samples, classes)
    log_p_old = F.log_softmax(old_logits.detach().reshape(-1, classes) / temperature, dim=1)
    kl = F.kl_div(log_p_new, log_p_old, reduction="batchmean", log_target=True)  # sum p_old (log p_old - log p_new)
    return kl * temperature ** 2


def seen_distillation_loss(new_logits: torch.Tensor, old_logits: torch.Tensor, old_positions: list[int],
                           temperature: float = 2.0) -> torch.Tensor:
    """T^2 * KL(p_old || p_new) with p_new the softmax over every class seen so far (b, seen) and p_old the old
    model's softmax over the old classes (b, old), which sit at `old_positions` among the seen ones: the new
    classes get zero probability in the target, so distillation also keeps them from taking over the old
    classes' answers (van de Ven & Tolias's LwF in class-IL); see lesson 06."""
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number (try 2.0), got {temperature!r}")
    if old_logits.shape != (len(new_logits), len(old_positions)):
        raise ValueError(f"old_logits must be (batch, {len(old_positions)}), one column per old position, got "
                         f"{tuple(old_logits.shape)}")
    log_q = F.log_softmax(new_logits / temperature, dim=1)[:, old_positions]  # (b, old) the new model's, of all seen
    log_p = F.log_softmax(old_logits.detach() / temperature, dim=1)  # (b, old)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean() * temperature ** 2


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in eval mode with gradients off: the teacher LwF distils from; see lesson 06."""
    old = copy.deepcopy(model).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    return old


def head_logits(model: nn.Module, x: torch.Tensor, heads: list[int],
                features: torch.Tensor | None = None) -> torch.Tensor:
    """Outputs of a multi-head model on `x` for each of `heads`: (batch, len(heads), head_size); see lesson 06."""
    if isinstance(model, MultiHeadMLP):  # one pass through the body serves every head
        features = model.body(x) if features is None else features  # (batch, hidden)
        return model.heads(features).view(len(x), model.n_heads, model.head_size)[:, heads]
    # Any other multi-head module: one call on the batch repeated once per head, with per-sample head ids.
    ids = torch.tensor(heads, device=x.device).repeat_interleave(len(x))  # (heads * batch,)
    out = forward(model, x.repeat(len(heads), *[1] * (x.dim() - 1)), ids)  # (heads * batch, size)
    return out.view(len(heads), len(x), -1).transpose(0, 1)


class _LastForward:
    """Remembers a module's last input and output, so LwF can reuse the training step's forward pass."""

    def __init__(self, module: nn.Module):
        self.x = self.out = None
        self.handle = module.register_forward_hook(self._remember)

    def _remember(self, module: nn.Module, inputs: tuple, output) -> None:
        self.x, self.out = (inputs[0] if inputs else None), output

    def take(self, x: torch.Tensor) -> torch.Tensor | None:
        """The output for this very tensor `x` if it was the last input (and kept its graph), else None."""
        out, self.x, self.out = (self.out if self.x is x else None), None, None
        if not isinstance(out, torch.Tensor) or (torch.is_grad_enabled() and out.grad_fn is None):
            return None
        return out


@register
class LwF(Strategy):
    """Learning without Forgetting: match the previous model's softened outputs on the new data; see lesson 06.

    Multi-head model: distil every previous task's head (averaged over heads).
    Single head: distil the classes seen before when targets are class labels
    (class-IL, permuted MNIST), else all outputs (domain-IL, targets 0/1 in
    every task). Instead of storing the old outputs before the task, as the
    paper does, the frozen old model is run on each batch: the same targets.
    The current model's outputs are taken from the training step's own forward
    pass (a forward hook), so LwF costs one extra forward pass of the old model.

    `outputs="seen"` (class labels on a single head) makes the classes seen so far the model's outputs in both
    losses, as van de Ven & Tolias's LwF does with its "active classes": the new task's cross-entropy covers
    them only (the outputs of classes still to come are neither trained nor pushed down), and the distillation
    compares the softmax over all of them with the old model's answer, which gives the new classes nothing
    (`seen_distillation_loss`).
    """

    name = "lwf"
    hparams = (HParam("lwf_alpha", float, 1.0, low=0.0, help="weight of the distillation loss"),
               HParam("temperature", float, 2.0, low=0.0, low_open=True,
                      help="softmax temperature (> 0) of the distillation loss"),
               HParam("outputs", str, "all", choices=("all", "seen"),
                      help="class-IL: the outputs the new task's cross-entropy covers: all, or the classes seen so "
                           "far"))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.old_model: nn.Module | None = None
        self.old_heads: list[int] = []  # task ids seen so far (multi-head models)
        self._old_classes: set[int] = set()  # classes seen so far (single head)
        self._all_outputs = False  # a task whose targets are not its classes: distil every output
        self._last: _LastForward | None = None
        self.seen_classes: list[int] | None = None  # outputs="seen": the cross-entropy's outputs this task

    @staticmethod
    def _labels_are_classes(task: Task) -> bool:
        """Targets that name classes (class-IL, permuted MNIST), not positions within a task (domain-IL)."""
        return set(task.train_y.unique().tolist()) <= set(task.classes)

    @property
    def old_classes(self) -> list[int] | None:
        """Output columns distilled on a single-head model; None means all of them."""
        return None if self._all_outputs or not self._old_classes else sorted(self._old_classes)

    def _stop_watching(self) -> None:
        if self._last is not None:
            self._last.handle.remove()
            self._last = None

    def before_task(self, model: nn.Module, task: Task) -> None:
        self._stop_watching()
        single_head_classes = not getattr(model, "multi_head", False) and self._labels_are_classes(task)
        self.seen_classes = (sorted(self._old_classes | set(task.classes))
                             if self.outputs == "seen" and single_head_classes else None)
        if self.old_model is not None:  # watch the training forward pass (the body's, for a MultiHeadMLP)
            self._last = _LastForward(model.body if isinstance(model, MultiHeadMLP) else model)

    def after_task(self, model: nn.Module, task: Task) -> None:
        self._stop_watching()  # first, or the copy would carry the hook too
        self.old_model = frozen_copy(model)
        if task.task_id not in self.old_heads:
            self.old_heads.append(task.task_id)
        if self._labels_are_classes(task):
            self._old_classes |= set(task.classes)
        else:  # domain-IL: targets are 0/1 within every task, so all outputs belong to old tasks
            self._all_outputs = True

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over every output, or with outputs="seen" over the classes seen so far only."""
        if self.seen_classes is None or len(self.seen_classes) == logits.shape[1]:
            return F.cross_entropy(logits, y)
        return current_task_loss(logits, y, self.seen_classes)

    def penalty(self, model: nn.Module, x: torch.Tensor, task_ids) -> torch.Tensor | float:
        if self.old_model is None or self.lwf_alpha == 0:
            return 0.0
        seen = self._last.take(x) if self._last is not None else None  # this step's forward output, if any
        if getattr(model, "multi_head", False):
            new = head_logits(model, x, self.old_heads, seen if isinstance(model, MultiHeadMLP) else None)
            with torch.no_grad():
                old = head_logits(self.old_model, x, self.old_heads)  # (batch, old heads, head_size)
        else:
            new = seen if seen is not None else model(x)  # (batch, classes)
            with torch.no_grad():
                old = self.old_model(x)
            cols = self.old_classes
            if cols is not None and self.seen_classes is not None:
                positions = [self.seen_classes.index(c) for c in cols]
                return self.lwf_alpha * seen_distillation_loss(new[:, self.seen_classes], old[:, cols], positions,
                                                               self.temperature)
            if cols is not None and len(cols) < new.shape[1]:
                new, old = new[:, cols], old[:, cols]  # (batch, old classes)
        return self.lwf_alpha * distillation_loss(new, old, self.temperature)
