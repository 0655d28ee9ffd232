"""Models for the MNIST lessons: an MLP with any hidden sizes, and its multi-head twin; see lesson 02."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check_sizes(in_features: int, hidden: Sequence[int], out: int) -> None:
    for label, n in (("in_features", in_features), ("out_features", out)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{label} must be a positive integer, got {n!r}")
    if not isinstance(hidden, (list, tuple)):
        raise ValueError(f"hidden must be a list or tuple of layer sizes, e.g. (400, 400), got {hidden!r}")
    for h in hidden:
        if not isinstance(h, int) or h < 1:
            raise ValueError(f"every hidden size must be a positive integer, got {list(hidden)}")


def _trunk(in_features: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU()]
        in_features = h
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Fully connected ReLU network: 784 -> hidden... -> out_features (one shared head)."""

    multi_head = False

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (400, 400), out_features: int = 10):
        super().__init__()
        _check_sizes(in_features, hidden, out_features)
        self.body = _trunk(in_features, hidden)
        self.head = nn.Linear(hidden[-1] if hidden else in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (batch, out_features)


class MultiHeadMLP(nn.Module):
    """MLP with a shared body and one output head per task; the task id picks the head."""

    multi_head = True

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (400, 400), n_heads: int = 5,
                 head_size: int = 2):
        super().__init__()
        _check_sizes(in_features, hidden, head_size)
        if not isinstance(n_heads, int) or n_heads < 1:
            raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
        self.n_heads, self.head_size = n_heads, head_size
        self.body = _trunk(in_features, hidden)
        self.heads = nn.Linear(hidden[-1] if hidden else in_features, n_heads * head_size)

    def forward(self, x: torch.Tensor, task_id: int | torch.Tensor) -> torch.Tensor:
        out = self.heads(self.body(x)).view(len(x), self.n_heads, self.head_size)  # (batch, heads, size)
        if isinstance(task_id, int):
            if not 0 <= task_id < self.n_heads:
                raise ValueError(f"task_id must be in 0..{self.n_heads - 1}, got {task_id}")
            return out[:, task_id]
        return out[torch.arange(len(x)), task_id]  # one head per sample


def for_scenario(scenario: str, tasks: list, hidden: Sequence[int] = (400, 400)) -> nn.Module:
    """The network for `tasks` in `scenario`; see lesson 03. task: one head per task, as wide as a task's
    classes; domain: one head of that width shared by all tasks; class: one head for every task's classes."""
    per_task = len(tasks[0].classes)  # split MNIST: 2 digits; permuted and rotated MNIST: 10
    if scenario == "task":
        return MultiHeadMLP(hidden=hidden, n_heads=len(tasks), head_size=per_task)
    if scenario == "domain":
        return MLP(hidden=hidden, out_features=per_task)
    if scenario == "class":
        return MLP(hidden=hidden, out_features=max(max(t.classes) for t in tasks) + 1)
    raise ValueError(f"unknown scenario {scenario!r}; choose one of task, domain, class")


def model_device(model: nn.Module) -> torch.device:
    """Where `model`'s weights are (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def forward(model: nn.Module, x: torch.Tensor, task_id: int | torch.Tensor) -> torch.Tensor:
    """Call any model: multi-head models get the task id, others only the inputs."""
    return model(x, task_id) if getattr(model, "multi_head", False) else model(x)
