"""Exercises of lesson 03: predict a digit when the task is known, by an argmax over only that task's classes;
and the labels trick's loss, a cross-entropy over only the current task's output units.

The first is what task-incremental learning grants a model and class-incremental learning does not: knowing the
task, a ten-way output only has to choose between the task's two digits. The second is a fix for class-IL's bias
towards the last task; its reference is the package's `current_task_loss`, which the `labels-trick` strategy
trains with. The checks run the learner's function on cases with known answers and name the common mistake a
wrong answer looks like.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..strategies.labels_trick import current_task_loss
from . import Comparison, Exercise, check, close, named


def predict_within_task(logits: torch.Tensor, classes) -> torch.Tensor:
    """The predicted label when the task is known: the argmax over the task's `classes` only; see lesson 03."""
    classes = torch.as_tensor(classes, device=logits.device)  # (k,) the task's labels
    return classes[logits[:, classes].argmax(1)]  # (batch,) labels, each one of `classes`


def _cases() -> list[tuple[str, tuple[torch.Tensor, tuple[int, ...]]]]:
    """Logits (batch, 10) with the task's classes; several where the task's logits are all negative."""
    gen = torch.Generator().manual_seed(3)
    hand_made = torch.tensor([[0.1, 2.0, -1.0, 0.5, 3.0, 0.0, -2.0, 1.0, 4.0, -0.5],
                              [5.0, -1.0, -3.0, -0.2, 0.0, 1.0, 2.0, -4.0, -1.5, -0.7],
                              [-9.0, -8.0, -2.0, -2.5, -1.0, -0.5, -3.0, -6.0, -4.0, -7.0]])
    negative = -torch.rand(6, 10, generator=gen) * 4 - 0.1  # every logit below 0
    mixed = torch.randn(40, 10, generator=gen) * 3
    cases = [(hand_made, (2, 3)), (hand_made, (8, 9)), (negative, (0, 1)), (negative, (4, 5)),
             (mixed, (6, 7)), (mixed, (0, 1)), (mixed[:1], (8, 9)), (mixed, (1, 4, 7))]
    return [(f"logits of shape {tuple(logits.shape)} and classes {classes}", (logits, classes))
            for logits, classes in cases]


def _zero_others(logits: torch.Tensor, classes) -> torch.Tensor:
    masked = torch.zeros_like(logits)
    masked[:, list(classes)] = logits[:, list(classes)]
    return masked.argmax(1)


def _mask_the_task(logits: torch.Tensor, classes) -> torch.Tensor:
    in_task = torch.zeros(logits.shape[1], dtype=torch.bool)
    in_task[list(classes)] = True
    return logits.masked_fill(in_task, float("-inf")).argmax(1)


MISTAKES = [
    (named("ignored_the_task", lambda logits, classes: logits.argmax(1)),
     "it looks like an argmax over all ten outputs, which is the class-incremental prediction; when the task is "
     "known, compare only the logits of the task's classes"),
    (named("position_not_label", lambda logits, classes: logits[:, list(classes)].argmax(1)),
     "it looks like you returned the position within the task (0 or 1) rather than the label; map the position "
     "back with classes[position]"),
    (named("zeroed_the_other_logits", _zero_others),
     "it looks like you set the other classes' logits to 0; when all of the task's logits are negative, 0 still "
     "wins, so mask them to -infinity instead (or index only the task's columns)"),
    (named("argmin_not_argmax", lambda logits, classes: torch.as_tensor(classes)[logits[:, list(classes)].argmin(1)]),
     "it looks like you picked the task's class with the smallest logit; the prediction is the largest, argmax"),
    (named("first_class_plus_position", lambda logits, classes: classes[0] + logits[:, list(classes)].argmax(1)),
     "it looks like you added the position to the first class; that only works when the task's classes are "
     "consecutive. Map the position back with classes[position]"),
    (named("masked_the_task_itself", _mask_the_task),
     "it looks like the mask is the wrong way round: it hides the task's own classes and keeps the others; mask "
     "every class that is NOT in `classes`"),
]

IN_PLACE = ("the labels are right, but your function changed the logits it was given (the caller's tensor now holds "
            "other values); leave them as they are: index the task's columns, logits[:, classes], or mask with "
            "logits.masked_fill(mask, float('-inf')), which returns a new tensor")


def masked_the_callers_logits(logits: torch.Tensor, classes) -> torch.Tensor:
    """The right labels, but the other classes' logits are set to -inf in the caller's own tensor (in place)."""
    others = [c for c in range(logits.shape[1]) if c not in classes]
    logits[:, others] = float("-inf")
    return logits.argmax(1)


def argmax_over_the_batch(logits: torch.Tensor, classes) -> torch.Tensor:
    """argmax along dim 0, the batch, instead of dim 1, the classes."""
    c = torch.as_tensor(classes)
    return c[logits[:, c].argmax(0)]


def selected_rows_not_columns(logits: torch.Tensor, classes) -> torch.Tensor:
    """logits[classes] picks rows (samples), not the task's columns (classes)."""
    c = torch.as_tensor(classes)
    return c[logits[c].argmax(1)]


def _one_label_per_row(what: str, got, want: torch.Tensor) -> str | None:
    """Asks for one label per row when the answer has another shape."""
    if isinstance(got, torch.Tensor) and got.shape == want.shape:
        return None
    shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
    return f"for {what} it should return one label per row, a tensor of shape {tuple(want.shape)}; got {shape}"


def _labels_shown(what: str, got: torch.Tensor, want: torch.Tensor) -> str:
    return f"for {what} it returned {got[:6].tolist()}..., expected {want[:6].tolist()}..."


check.register(Exercise(
    name="predict_within_task",
    reference=predict_within_task,
    hint="compare only the task's columns of the logits; the argmax then gives a position among the task's classes, "
         "which still has to become a label",
    verify_fn=Comparison("predict_within_task", predict_within_task, _cases, MISTAKES, form=_one_label_per_row,
                         shown=_labels_shown, unchanged={0: "logits"}, in_place=IN_PLACE),
    wrong_answers=[mistake for mistake, _ in MISTAKES] + [masked_the_callers_logits, argmax_over_the_batch,
                                                          selected_rows_not_columns],
))


# --- exercise 2: the labels trick's loss ---------------------------------------------------------------------

def _value_and_grad(fn: Callable) -> Callable:
    """fn's loss and its gradient with respect to the logits (zeros when the loss does not reach them)."""
    def run(logits: torch.Tensor, y: torch.Tensor, classes) -> tuple[float, torch.Tensor] | None:
        logits = logits.clone().requires_grad_(True)
        loss = fn(logits, y, classes)
        if loss is None:
            return None
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            return loss
        grad = (torch.autograd.grad(loss, logits)[0] if loss.requires_grad else torch.zeros_like(logits))
        return float(loss.detach()), grad
    return run


def _same_loss(a, b) -> bool:
    if not (isinstance(a, tuple) and isinstance(b, tuple)):
        return False
    return abs(a[0] - b[0]) <= 1e-5 * max(1.0, abs(b[0])) and close(a[1], b[1], 1e-5)


def _shown(what, got, want) -> str:
    if not isinstance(got, tuple):
        return f"on {what}, your current_task_loss returned {got!r}, expected a loss: a tensor with one number"
    if abs(got[0] - want[0]) > 1e-5 * max(1.0, abs(want[0])):
        return f"on {what}, your current_task_loss returned {got[0]:.4f}, expected {want[0]:.4f}"
    return (f"on {what}, your loss has the right value ({got[0]:.4f}) but the wrong gradient with respect to the "
            "logits")


def _loss_cases() -> list[tuple[str, tuple]]:
    gen = torch.Generator().manual_seed(5)
    mixed = torch.randn(8, 10, generator=gen) * 2  # (8, 10)
    negative = -torch.rand(6, 10, generator=gen) * 4 - 0.1  # every logit below 0
    return [("a batch of 2s and 3s, classes (2, 3)", (mixed, torch.tensor([2, 3, 3, 2, 2, 3, 3, 3]), (2, 3))),
            ("a batch of 1s and 7s, classes (7, 1) in that order", (mixed, torch.tensor([1, 7, 7, 1, 1, 7, 1, 7]),
                                                                    (7, 1))),
            ("negative logits, classes (8, 9)", (negative, torch.tensor([8, 9, 9, 9, 8, 8]), (8, 9))),
            ("three classes (0, 4, 9)", (mixed, torch.tensor([0, 4, 9, 9, 4, 0, 0, 9]), (0, 4, 9)))]


def _positions(y, classes):
    return (y[:, None] == torch.as_tensor(classes)).int().argmax(1)


def _zero_others_loss(logits, y, classes):
    keep = torch.zeros(logits.shape[1], dtype=torch.bool)
    keep[list(classes)] = True
    return F.cross_entropy(logits * keep, y)


LOSS_MISTAKES = [
    (named("every_output", lambda logits, y, classes: F.cross_entropy(logits, y)),
     "it looks like the cross-entropy over all ten outputs, which pushes down every old class's output at every "
     "step; take only the columns of the current task's classes"),
    (named("other_logits_set_to_zero", _zero_others_loss),
     "it looks like the other classes' logits were set to 0 and kept in the softmax; they must leave it altogether "
     "(keep only the task's columns)"),
    (named("summed_not_averaged",
            lambda logits, y, classes: F.cross_entropy(logits[:, list(classes)], _positions(y, classes),
                                                       reduction="sum")),
     "it looks like the losses of the batch were added up; the cross-entropy is averaged over the batch"),
    (named("detached_logits",
            lambda logits, y, classes: F.cross_entropy(logits.detach()[:, list(classes)], _positions(y, classes))),
     "it looks like the logits were detached: the value is right but no gradient reaches the network"),
    (named("sign_flipped",
            lambda logits, y, classes: -F.cross_entropy(logits[:, list(classes)], _positions(y, classes))),
     "it looks like the sign is flipped: minimising it would make the right digits less likely"),
    (named("softmax_before_cross_entropy",
            lambda logits, y, classes: F.cross_entropy(logits[:, list(classes)].softmax(1), _positions(y, classes))),
     "it looks like a softmax before F.cross_entropy, which applies its own: pass the logits themselves"),
    (named("binary_cross_entropy_per_unit",
            lambda logits, y, classes: F.binary_cross_entropy_with_logits(
                logits[:, list(classes)], F.one_hot(_positions(y, classes), len(classes)).float())),
     "it looks like a binary cross-entropy per output unit; the labels trick keeps the softmax cross-entropy, only "
     "over the task's classes"),
    (named("only_the_true_logit",
            lambda logits, y, classes: -logits.gather(1, y[:, None]).mean()),
     "it looks like only the right digit's logit was raised, with no softmax: the other digit of the task is never "
     "pushed down, and the loss has no lower bound"),
]


def labels_not_turned_into_positions(logits, y, classes):
    """The task's columns kept, but the labels (2, 3) used as positions among them (0, 1)."""
    return F.cross_entropy(logits[:, list(classes)], y)


def first_class_subtracted(logits, y, classes):
    """y - classes[0] as the position: right for (2, 3), wrong when the classes are not in a row."""
    return F.cross_entropy(logits[:, list(classes)], y - classes[0])


check.register(Exercise(
    name="current_task_loss",
    reference=current_task_loss,
    hint="the softmax should compete only among the current task's outputs, and each label then needs its place "
         "among those outputs as the target",
    verify_fn=Comparison("current_task_loss", current_task_loss, _loss_cases, LOSS_MISTAKES,
                         same=_same_loss, shown=_shown, wrap=_value_and_grad),
    wrong_answers=[mistake for mistake, _ in LOSS_MISTAKES] + [labels_not_turned_into_positions,
                                                               first_class_subtracted],
))
