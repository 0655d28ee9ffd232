"""Continual-learning strategies: small objects with the same hooks, usable on any torch.nn.Module.

A strategy can change what is trained on (`training_set`), add to each
batch (`transform_batch`), change the loss of the batch's own labels
(`task_loss`), add a loss term (`penalty`), edit gradients
before the optimiser steps (`before_step`), follow each step (`after_step`),
and remember things before and after each task (`before_task`, `after_task`).
Lesson 02 uses `naive` and `joint`; the submodules hold regularisation
(L2, EWC, online EWC, SI), rehearsal (replay, A-GEM) and distillation (LwF).
Each strategy declares its hyperparameters as `HParam`s, which are checked
when it is built and become options of `python -m cfcourse run`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Task


@dataclass(frozen=True)
class HParam:
    """One hyperparameter of a strategy: its name, type, default and the range it must lie in.

    Bounds are inclusive unless `low_open`/`high_open` is set; a float must also be finite. `why`, when
    given, is shown with a range error (e.g. why a bound is open).
    """

    name: str
    type: type
    default: object
    low: float | None = None
    high: float | None = None
    help: str = ""
    choices: tuple = ()
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def check(self, strategy: str, value):
        """`value` converted to this type, or a ValueError that says what is allowed."""
        try:
            value = self.type(value)
        except (TypeError, ValueError, OverflowError):
            article = "an" if self.type.__name__[0] in "aeiou" else "a"
            raise ValueError(f"{strategy}: {self.name} must be {article} {self.type.__name__}, "
                             f"got {value!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{strategy}: {self.name} must be a finite number, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{strategy}: {self.name} must be one of {', '.join(map(str, self.choices))}, "
                             f"got {value!r}")
        if not self.in_range(value):
            notes = "; ".join(filter(None, [self.why, f"default {self.default}"]))
            raise ValueError(f"{strategy}: {self.name} must be {self.range_text()} ({notes}), got {value!r}")
        return value

    def in_range(self, value) -> bool:
        """Whether `value` lies within the bounds, open or closed."""
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def range_text(self) -> str:
        """The allowed range in words: ">= 0.0", "> 0.0", "in [0.0, 1.0)"."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


class Strategy:
    """The hooks every strategy has; the base class changes nothing (that is naive fine-tuning)."""

    name = "base"
    hparams: tuple[HParam, ...] = ()

    def __init__(self, **kwargs):
        known = {h.name: h for h in self.hparams}
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            valid = ", ".join(known) or "none"
            raise ValueError(f"{self.name} does not take {', '.join(unknown)}; its hyperparameters: {valid}")
        for h in self.hparams:
            setattr(self, h.name, h.check(self.name, kwargs.get(h.name, h.default)))

    def training_set(self, tasks: list[Task], t: int):
        """Data to train on at stage t: (x uint8 (N, 784), y (N,), per-sample task ids (N,) or None)."""
        return tasks[t].train_x, tasks[t].train_y, None

    def before_task(self, model: nn.Module, task: Task) -> None:
        """Called once before training on `task`."""

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, task_ids):
        """Change a batch before the forward pass (replay adds remembered samples here)."""
        return x, y, task_ids

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of the batch's own labels: cross-entropy over every output (the labels trick narrows it)."""
        return F.cross_entropy(logits, y)

    def penalty(self, model: nn.Module, x: torch.Tensor, task_ids) -> torch.Tensor | float:
        """Extra loss term added to the task loss on batch `x` (EWC, L2, SI and LwF live here)."""
        return 0.0

    def before_step(self, model: nn.Module) -> None:
        """Called after backward, before the optimiser step (gradient projection lives here)."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimiser step (SI measures each weight's path here)."""

    def after_task(self, model: nn.Module, task: Task) -> None:
        """Called once after training on `task`."""

    def __repr__(self) -> str:
        args = ", ".join(f"{h.name}={getattr(self, h.name)!r}" for h in self.hparams)
        return f"{type(self).__name__}({args})"


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


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its name (to make_strategy and the runner)."""
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, **hparams) -> Strategy:
    """Build a strategy by name, refusing unknown names with the valid ones listed."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](**hparams)



def _register_modules() -> None:
    """Import every submodule here; each registers its strategies."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_register_modules()
