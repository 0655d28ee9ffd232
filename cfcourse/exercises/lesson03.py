"""Exercise of lesson 03: predict a digit when the task is known, by an argmax over only that task's classes.

This is what task-incremental learning grants a model and class-incremental learning does not: knowing the
task, a ten-way output only has to choose between the task's two digits. The check runs the learner's function
on logits with known answers and names the common mistake a wrong answer looks like.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from . import Exercise, Verdict, check, close, which_mistake


def predict_within_task(logits: torch.Tensor, classes) -> torch.Tensor:
    """The predicted label when the task is known: the argmax over the task's `classes` only; see lesson 03."""
    classes = torch.as_tensor(classes, device=logits.device)  # (k,) the task's labels
    return classes[logits[:, classes].argmax(1)]  # (batch,) labels, each one of `classes`


def _cases() -> list[tuple[torch.Tensor, tuple[int, ...]]]:
    """Logits (batch, 10) with the task's classes; several where the task's logits are all negative."""
    gen = torch.Generator().manual_seed(3)
    hand_made = torch.tensor([[0.1, 2.0, -1.0, 0.5, 3.0, 0.0, -2.0, 1.0, 4.0, -0.5],
                              [5.0, -1.0, -3.0, -0.2, 0.0, 1.0, 2.0, -4.0, -1.5, -0.7],
                              [-9.0, -8.0, -2.0, -2.5, -1.0, -0.5, -3.0, -6.0, -4.0, -7.0]])
    negative = -torch.rand(6, 10, generator=gen) * 4 - 0.1  # every logit below 0
    mixed = torch.randn(40, 10, generator=gen) * 3
    return [(hand_made, (2, 3)), (hand_made, (8, 9)), (negative, (0, 1)), (negative, (4, 5)),
            (mixed, (6, 7)), (mixed, (0, 1)), (mixed[:1], (8, 9)), (mixed, (1, 4, 7))]


def _named(name: str, fn: Callable) -> Callable:
    """Give a wrong answer a readable name, for test reports."""
    fn.__name__ = fn.__qualname__ = name
    return fn


def _zero_others(logits: torch.Tensor, classes) -> torch.Tensor:
    masked = torch.zeros_like(logits)
    masked[:, list(classes)] = logits[:, list(classes)]
    return masked.argmax(1)


def _mask_the_task(logits: torch.Tensor, classes) -> torch.Tensor:
    in_task = torch.zeros(logits.shape[1], dtype=torch.bool)
    in_task[list(classes)] = True
    return logits.masked_fill(in_task, float("-inf")).argmax(1)


MISTAKES = [
    (_named("ignored_the_task", lambda logits, classes: logits.argmax(1)),
     "it looks like an argmax over all ten outputs, which is the class-incremental prediction; when the task is "
     "known, compare only the logits of the task's classes"),
    (_named("position_not_label", lambda logits, classes: logits[:, list(classes)].argmax(1)),
     "it looks like you returned the position within the task (0 or 1) rather than the label; map the position "
     "back with classes[position]"),
    (_named("zeroed_the_other_logits", _zero_others),
     "it looks like you set the other classes' logits to 0; when all of the task's logits are negative, 0 still "
     "wins, so mask them to -infinity instead (or index only the task's columns)"),
    (_named("argmin_not_argmax", lambda logits, classes: torch.as_tensor(classes)[logits[:, list(classes)].argmin(1)]),
     "it looks like you picked the task's class with the smallest logit; the prediction is the largest, argmax"),
    (_named("first_class_plus_position", lambda logits, classes: classes[0] + logits[:, list(classes)].argmax(1)),
     "it looks like you added the position to the first class; that only works when the task's classes are "
     "consecutive. Map the position back with classes[position]"),
    (_named("masked_the_task_itself", _mask_the_task),
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


def _verify(fn: Callable) -> Verdict:
    for logits, classes in _cases():
        want = predict_within_task(logits, classes)
        given = logits.clone()
        got = fn(given, classes)
        if close(got, want):
            if not torch.equal(given, logits):
                return Verdict(False, IN_PLACE)
            continue
        if got is None:
            return Verdict(False, "predict_within_task returned None: did you forget the `return`?")
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return Verdict(False, f"for logits of shape {tuple(logits.shape)} it should return one label per row, "
                                  f"a tensor of shape {tuple(want.shape)}; got {shape}")
        shown = (f"for logits of shape {tuple(logits.shape)} and classes {classes} it returned "
                 f"{got[:6].tolist()}..., expected {want[:6].tolist()}...")
        why = which_mistake(fn, got, (logits, classes), MISTAKES, _cases())
        return Verdict(False, f"{shown}: {why}" if why else shown)
    return Verdict(True, "all cases match")


check.register(Exercise(
    name="predict_within_task",
    reference=predict_within_task,
    hint="turn classes into a tensor c = torch.tensor(classes); logits[:, c] keeps the task's columns, "
         ".argmax(1) picks a position in each row, and c[position] turns it back into a label",
    verify_fn=_verify,
    wrong_answers=[mistake for mistake, _ in MISTAKES] + [masked_the_callers_logits, argmax_over_the_batch,
                                                          selected_rows_not_columns],
))
