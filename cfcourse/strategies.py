"""Continual-learning strategies: small objects with the same hooks, usable on any torch.nn.Module.

A strategy can change what is trained on (`training_set`), add to each
batch (`transform_batch`), add a loss term (`penalty`), edit gradients
before the optimiser steps (`before_step`), and remember things before and
after each task (`before_task`, `after_task`). Lesson 02 uses `naive` and
`joint`; later lessons add regularisation, rehearsal and distillation.
"""
from __future__ import annotations

import torch
from torch import nn

from .data import Task


class Strategy:
    """The hooks every strategy has; the base class changes nothing (that is naive fine-tuning)."""

    name = "base"

    def training_set(self, tasks: list[Task], t: int):
        """Data to train on at stage t: (x uint8 (N, 784), y (N,), per-sample task ids (N,) or None)."""
        return tasks[t].train_x, tasks[t].train_y, None

    def before_task(self, model: nn.Module, task: Task) -> None:
        """Called once before training on `task`."""

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, task_ids):
        """Change a batch before the forward pass (replay adds remembered samples here)."""
        return x, y, task_ids

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        """Extra loss term added to the task loss (EWC, L2 and SI live here)."""
        return 0.0

    def before_step(self, model: nn.Module) -> None:
        """Called after backward, before the optimiser step (gradient projection lives here)."""

    def after_task(self, model: nn.Module, task: Task) -> None:
        """Called once after training on `task`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Naive(Strategy):
    """Sequential fine-tuning: train on each task in turn and nothing else; the lower bound."""

    name = "naive"


class Joint(Strategy):
    """Train at each stage on all tasks seen so far, mixed together; the upper bound."""

    name = "joint"

    def training_set(self, tasks: list[Task], t: int):
        seen = tasks[: t + 1]
        x = torch.cat([task.train_x for task in seen])
        y = torch.cat([task.train_y for task in seen])
        ids = torch.cat([torch.full((len(task.train_y),), task.task_id) for task in seen])
        return x, y, ids


STRATEGIES: dict[str, type[Strategy]] = {"naive": Naive, "joint": Joint}


def make_strategy(name: str, **hparams) -> Strategy:
    """Build a strategy by name, refusing unknown names with the valid ones listed."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](**hparams)
