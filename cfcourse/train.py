"""One training loop and one evaluation loop over tensors in memory; see lesson 02.

Data stays as tensors in memory (the lessons' images as uint8, turned into floats a batch at a time); each
step takes a batch by index. No per-sample Python runs in the loop. The loop calls the strategy protocol of
cfcourse.strategies, as language-model fine-tuning (lm/finetune.py) does.
"""
from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import config
from .data import Task, to_inputs
from .metrics import AccuracyMatrix
from .models import forward, model_device
from .strategies import Strategy, compose

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def on_course_threads(fn):
    """Run `fn` inside config.threads(): an enclosing block's thread count, else CFCOURSE_THREADS or 1 (small
    networks gain little from more, and on a busy machine extra threads spin); torch's setting is put back after."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with config.threads():
            return fn(*args, **kwargs)
    return wrapper


@on_course_threads
@torch.no_grad()
def evaluate(model: nn.Module, task: Task, batch_size: int = 2000, limit: int | None = None) -> float:
    """Accuracy of `model` on the test set of `task` (its first `limit` samples if given)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training, dev = model.training, model_device(model)
    model.eval()
    x_all, y_all = task.test_x[:limit], task.test_y[:limit]
    correct = 0
    for i in range(0, len(y_all), batch_size):
        x = to_inputs(x_all[i:i + batch_size].to(dev))
        logits = forward(model, x, task.task_id)  # (batch, classes)
        correct += (logits.argmax(1) == y_all[i:i + batch_size].to(dev)).sum().item()
    model.train(was_training)
    return correct / max(len(y_all), 1)


def evaluate_all(model: nn.Module, tasks: list[Task], limit: int | None = None) -> list[float]:
    """Accuracy on every task, in order."""
    return [evaluate(model, task, limit=limit) for task in tasks]


@dataclass
class Curves:
    """Per-task accuracy measured every few steps during training (for the stability gap)."""

    steps: list[int] = field(default_factory=list)
    accs: list[list[float]] = field(default_factory=list)  # (points, tasks)
    boundaries: list[int] = field(default_factory=list)  # step at which each task's training began
    total_steps: int = 0  # training steps taken so far, over all tasks

    def as_array(self) -> np.ndarray:
        return np.asarray(self.accs, dtype=float)


def _show_progress(progress: bool) -> bool:
    """Progress bars unless turned off here or by TQDM_DISABLE (as in CI)."""
    return progress and os.environ.get("TQDM_DISABLE", "").strip().lower() not in {"1", "true", "yes"}


def check_model(model) -> None:
    """Refuse what cannot be trained, saying why: not a torch module, or a module with no weights."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ValueError(f"model ({type(model).__name__}) has no parameters: there is nothing to train")


@torch.no_grad()
def _check_labels(model: nn.Module, task: Task, x: torch.Tensor, top: int) -> None:
    """Refuse labels the model has no output for, before the loss fails with a cryptic message."""
    was_training = model.training
    model.eval()
    outputs = forward(model, to_inputs(x), task.task_id).shape[-1]
    model.train(was_training)
    if top >= outputs:
        raise ValueError(f"task {task.name!r} has labels up to {top}, but the model gives {outputs} outputs; give "
                         f"the model at least {top + 1} outputs or relabel the classes 0..{outputs - 1}")


def _check_train_args(epochs: int, batch_size: int, eval_every: int | None) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be a positive integer or None, got {eval_every!r}")


@on_course_threads
def train_task(model: nn.Module, tasks: list[Task], t: int, optimizer: torch.optim.Optimizer,
               strategy: Strategy | list[Strategy] | None = None, epochs: int = 1, batch_size: int = 128,
               generator: torch.Generator | None = None, eval_every: int | None = None,
               curve_size: int = 1000, curves: Curves | None = None, progress: bool = True) -> Curves:
    """Train `model` on stage `t` of `tasks` with `strategy` (one, or a list that runs together); record per-task
    accuracy every `eval_every` steps."""
    _check_train_args(epochs, batch_size, eval_every)
    strategy = compose(strategy)
    curves = curves if curves is not None else Curves()
    dev = model_device(model)
    x_all, y_all, ids_all = strategy.training_set(tasks, t)
    if len(y_all) == 0:
        raise ValueError(f"task {tasks[t].name!r} has no training samples")
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    ids_all = ids_all.to(dev) if ids_all is not None else None
    _check_labels(model, tasks[t], x_all[:1], int(y_all.max()))
    n = len(y_all)
    steps_per_epoch = math.ceil(n / batch_size)
    step0 = curves.total_steps
    curves.boundaries.append(step0)
    strategy.before_task(model, tasks[t])
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"training {tasks[t].name}", disable=not _show_progress(progress),
               leave=False)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(dev)
        i = 0
        while i < n:
            take = strategy.new_samples(step, batch_size)  # batch_size, or fewer when replay fills places
            idx, i = order[i:i + take], i + take
            task_ids = tasks[t].task_id if ids_all is None else ids_all[idx]
            x, y, task_ids = strategy.transform_batch(to_inputs(x_all[idx]), y_all[idx], task_ids)
            loss = strategy.task_loss(forward(model, x, task_ids), y) + strategy.penalty(model, x, task_ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            strategy.add_penalty_grad(model)
            strategy.before_step(model)
            optimizer.step()
            strategy.after_step(model)
            step += 1
            bar.update(1)
            if eval_every and step % eval_every == 0:
                curves.steps.append(step0 + step)
                curves.accs.append(evaluate_all(model, tasks, limit=curve_size))
    bar.close()
    curves.total_steps += step
    strategy.after_task(model, tasks[t])
    return curves


@dataclass
class RunResult:
    """What a run of a task sequence produced: the accuracy matrix, curves and wall time."""

    acc_matrix: AccuracyMatrix
    curves: Curves
    wall_s: float

    def to_dict(self) -> dict:
        return {**self.acc_matrix.to_dict(), "wall_s": round(self.wall_s, 3)}


def sgd(lr: float = 0.01, momentum: float = 0.9) -> OptimizerFactory:
    """Factory for plain SGD with momentum, a fresh optimiser for each task."""
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


def adam(lr: float = 1e-3) -> OptimizerFactory:
    """Factory for Adam, a fresh optimiser for each task (the setup of Hsu et al. 2018; see lesson 07)."""
    return lambda params: torch.optim.Adam(params, lr=lr)


@on_course_threads
def run_tasks(model: nn.Module, tasks: list[Task], strategy: Strategy | list[Strategy] | None = None,
              optimizer: OptimizerFactory | None = None, epochs: int = 1, batch_size: int = 128,
              seed: int = 0, eval_every: int | None = None, curve_size: int = 1000,
              progress: bool = True, on_stage: Callable[[int, AccuracyMatrix], None] | None = None) -> RunResult:
    """Train on `tasks` in order with `strategy` (one, or a list that runs together, e.g. [Replay(), EWC()]),
    filling the accuracy matrix after each task; see lesson 02."""
    if not tasks:
        raise ValueError("tasks is empty: build at least one task, e.g. cfcourse.data.permuted_mnist(2)")
    _check_train_args(epochs, batch_size, eval_every)
    check_model(model)
    strategy = compose(strategy)
    make_opt = optimizer or sgd()
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    acc = AccuracyMatrix(len(tasks), [task.name for task in tasks])
    acc.set_baseline(evaluate_all(model, tasks))
    curves = Curves()
    trained = strategy.setup(model)
    for t in range(len(tasks)):
        train_task(trained, tasks, t, make_opt(trained.parameters()), strategy, epochs, batch_size, gen,
                   eval_every, curve_size, curves, progress)
        acc.record_row(t, evaluate_all(trained, tasks))
        if on_stage is not None:
            on_stage(t, acc)
    strategy.teardown(trained)
    return RunResult(acc, curves, time.perf_counter() - start)
