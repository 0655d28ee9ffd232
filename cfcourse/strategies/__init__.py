"""Continual-learning strategies: small objects with the same hooks, usable on any torch.nn.Module.

One protocol serves both training loops, the classifier runner (train.py) and language-model fine-tuning
(lm/finetune.py). A strategy can wrap the model before training and unwrap it after (`setup`, `teardown`:
LoRA), change what is trained on (`training_set`), take places in each batch and fill them (`new_samples`,
`transform_batch`: replay), change the loss of the batch's own labels (`task_loss`), add a loss term
(`penalty`) or add its gradient in place (`add_penalty_grad`, for models too large to keep autograd copies),
edit gradients before the optimiser steps (`before_step`), follow each step (`after_step`), and remember
things before and after each task (`before_task`, `after_task`).

A run takes a list of strategies (`Compose`, or `make_strategies("replay+ewc")`): penalties add up and
every strategy sees every task and step; two strategies that both rewrite the same thing (the batch, the
training set, the task loss, the gradient, the model) are refused, since one would undo the other.
Lesson 02 uses `naive` and `joint`; the submodules hold regularisation (L2, EWC, online EWC, SI), rehearsal
(replay, mixed replay, GEM, A-GEM), distillation (LwF) and isolation (Freeze, task adapters, LoRA). Each
strategy declares its hyperparameters as `HParam`s, which are checked when it is built and become options
of `python -m cfcourse run`.
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
    grad_in_place = False  # True: add_penalty_grad adds the penalty's gradient, and penalty() gives 0

    def __init__(self, **kwargs):
        known = {h.name: h for h in self.hparams}
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            valid = ", ".join(known) or "none"
            raise ValueError(f"{self.name} does not take {', '.join(unknown)}; its hyperparameters: {valid}")
        for h in self.hparams:
            setattr(self, h.name, h.check(self.name, kwargs.get(h.name, h.default)))

    def setup(self, model: nn.Module) -> nn.Module:
        """Called once before the first task; returns the module to train (LoRA wraps the model here)."""
        return model

    def teardown(self, model: nn.Module) -> nn.Module:
        """Called once after the last task with what setup returned; returns the plain model."""
        return model

    def training_set(self, tasks: list[Task], t: int):
        """Data to train on at stage t: (x uint8 (N, 784), y (N,), per-sample task ids (N,) or None)."""
        return tasks[t].train_x, tasks[t].train_y, None

    def before_task(self, model: nn.Module, task: Task) -> None:
        """Called once before training on `task`."""

    def new_samples(self, step: int, batch_size: int) -> int:
        """How many new samples step `step` draws; a strategy that fills places of the batch asks for fewer."""
        return batch_size

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, task_ids):
        """Change a batch before the forward pass (replay adds remembered samples here)."""
        return x, y, task_ids

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of the batch's own labels: cross-entropy over every output (the labels trick narrows it)."""
        return F.cross_entropy(logits, y)

    def penalty(self, model: nn.Module, x: torch.Tensor, task_ids) -> torch.Tensor | float:
        """Extra loss term added to the task loss on batch `x` (EWC, L2, SI and LwF live here)."""
        return 0.0

    def add_penalty_grad(self, model: nn.Module) -> None:
        """Called after backward: with grad_in_place, add the penalty's gradient to each .grad in place."""

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

    def setup(self, model: nn.Module) -> nn.Module:
        """Called once before the first task; returns the module to train (LoRA wraps the model here)."""
        return model

    def teardown(self, model: nn.Module) -> nn.Module:
        """Called once after the last task with what setup returned; returns the plain model."""
        return model

    def training_set(self, tasks: list[Task], t: int):
        seen = tasks[: t + 1]
        x = torch.cat([task.train_x for task in seen])
        y = torch.cat([task.train_y for task in seen])
        ids = torch.cat([torch.full((len(task.train_y),), task.task_id) for task in seen])
        return x, y, ids


# Hooks that rewrite something, so that two strategies overriding one of them would undo each other.
EXCLUSIVE = {"setup": "wrap the model", "training_set": "choose the training set",
             "transform_batch": "rewrite the batch", "task_loss": "replace the task loss",
             "before_step": "rewrite the gradient before the step"}


def _overrides(strategy: Strategy, hook: str) -> bool:
    return getattr(type(strategy), hook) is not getattr(Strategy, hook)


class Compose(Strategy):
    """Several strategies as one: every hook runs each strategy's in order, and the penalties add up.

    Strategies that both rewrite the same thing (see EXCLUSIVE) are refused with the reason; replay with EWC,
    or LoRA with an L2 pull, combine.
    """

    name = "compose"

    def __init__(self, strategies):
        super().__init__()
        self.strategies = [s for s in strategies]
        if not self.strategies:
            raise ValueError("Compose needs at least one strategy, e.g. [make_strategy('naive')]")
        for s in self.strategies:
            if not isinstance(s, Strategy):
                raise TypeError(f"a strategy must be a cfcourse Strategy, got {type(s).__name__}")
        for hook, does in EXCLUSIVE.items():
            users = [s.name for s in self.strategies if _overrides(s, hook)]
            if len(users) > 1:
                raise ValueError(f"{' and '.join(users)} cannot run together: both {does}, so one would undo "
                                 f"the other; choose one of them")

    def _one(self, hook: str) -> Strategy:
        """The strategy that overrides `hook` (at most one does), else the first."""
        return next((s for s in self.strategies if _overrides(s, hook)), self.strategies[0])

    def setup(self, model):
        return self._one("setup").setup(model)

    def teardown(self, model):
        return self._one("setup").teardown(model)

    def training_set(self, tasks, t):
        return self._one("training_set").training_set(tasks, t)

    def before_task(self, model, task):
        for s in self.strategies:
            s.before_task(model, task)

    def new_samples(self, step, batch_size):
        return self._one("transform_batch").new_samples(step, batch_size)

    def transform_batch(self, x, y, task_ids):
        return self._one("transform_batch").transform_batch(x, y, task_ids)

    def task_loss(self, logits, y):
        return self._one("task_loss").task_loss(logits, y)

    def penalty(self, model, x, task_ids):
        total = 0.0
        for s in self.strategies:
            total = total + s.penalty(model, x, task_ids)
        return total

    def add_penalty_grad(self, model):
        for s in self.strategies:
            s.add_penalty_grad(model)

    def before_step(self, model):
        for s in self.strategies:
            s.before_step(model)

    def after_step(self, model):
        for s in self.strategies:
            s.after_step(model)

    def after_task(self, model, task):
        for s in self.strategies:
            s.after_task(model, task)

    def __repr__(self) -> str:
        return f"Compose({self.strategies!r})"


def compose(strategy) -> Strategy:
    """One strategy from None or an empty list (naive), a strategy, or a list of them (Compose); what the
    runners call."""
    if strategy is None:
        return Naive()
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str):
        raise TypeError(f"pass strategy objects, not the name {strategy!r}: make_strategies({strategy!r})")
    strategies = list(strategy)
    if not strategies:
        return Naive()
    return strategies[0] if len(strategies) == 1 else Compose(strategies)


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


def split_names(names) -> list[str]:
    """Strategy names from 'replay+ewc' or ['replay', 'ewc'] (or both forms mixed), each known and named once."""
    parts = [part.strip() for name in ([names] if isinstance(names, str) else names) for part in name.split("+")]
    if not parts or not all(parts):
        raise ValueError(f"name one strategy or join several with '+', e.g. 'replay+ewc'; got {names!r}")
    for part in parts:
        if part not in STRATEGIES:
            raise ValueError(f"unknown strategy {part!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise ValueError(f"strategy {', '.join(twice)} is named twice; name each once")
    return parts


def make_strategies(names, **hparams) -> Strategy:
    """Build one strategy or several composed ('replay+ewc'); each takes the hyperparameters it declares, and
    a hyperparameter that no named strategy declares is refused."""
    parts = split_names(names)
    known = {h.name for part in parts for h in STRATEGIES[part].hparams}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise ValueError(f"{'+'.join(parts)} does not take {', '.join(unknown)}; its hyperparameters: "
                         f"{', '.join(sorted(known)) or 'none'}")
    built = [STRATEGIES[part](**{h.name: hparams[h.name] for h in STRATEGIES[part].hparams if h.name in hparams})
             for part in parts]
    return compose(built)



def _register_modules() -> None:
    """Import every submodule here; each registers its strategies."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_register_modules()
