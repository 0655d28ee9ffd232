"""The labels trick: train only the current task's output units; see lesson 03.

In class-incremental learning, cross-entropy over all outputs pushes down the outputs of every class absent from
the batch, so the old classes lose to the newest at every step. Taking the cross-entropy over the current task's
classes only (Zeng et al. 2019; van de Ven et al. 2022 call it the labels trick) leaves the old outputs alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Task
from . import Strategy, register


def current_task_loss(logits: torch.Tensor, y: torch.Tensor, classes) -> torch.Tensor:
    """Cross-entropy over the outputs of `classes` only: logits (batch, outputs), y (batch,) labels in `classes`."""
    c = torch.as_tensor(classes, device=logits.device)  # (k,) the task's labels
    hit = y[:, None] == c  # (batch, k)
    if not bool(hit.any(1).all()):
        raise ValueError(f"labels {sorted(set(y.tolist()) - set(c.tolist()))} are not among the task's classes "
                         f"{tuple(c.tolist())}: the labels trick needs class-incremental labels (the digits)")
    position = hit.int().argmax(1)  # (batch,) where each label sits among the task's classes
    return F.cross_entropy(logits[:, c], position)


@register
class LabelsTrick(Strategy):
    """Sequential fine-tuning whose loss reaches only the current task's output units; see lesson 03."""

    name = "labels-trick"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.classes: tuple[int, ...] = ()

    def before_task(self, model: nn.Module, task: Task) -> None:
        self.classes = tuple(task.classes)

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.classes:
            raise RuntimeError("labels-trick: no current task yet; train through run_tasks or train_task")
        return current_task_loss(logits, y, self.classes)
