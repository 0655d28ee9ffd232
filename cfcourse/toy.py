"""Forgetting in two dimensions: two point tasks, a tiny MLP, and pictures of what it forgets; see lesson 01.

Task A tells left from right; task B tells top from bottom, higher up the
plane. One small network could solve both, yet training on B alone moves
the shared weights out of A's valley of low loss. Weights are recorded at
every step so that losses, boundaries and the path through weight space can
be drawn afterwards for any step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import LogNorm
from torch import nn
from torch.func import functional_call, vmap

from .models import MLP

# Cluster centres (x, y) of class 0 and class 1 for each task.
CENTRES_A = ((-1.5, 0.0), (1.5, 0.0))  # left vs right
CENTRES_B = ((0.0, 4.5), (0.0, 1.5))  # top vs bottom, above task A
CLASS_COLOURS = ("tab:blue", "tab:red")
StepFn = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], float]


@dataclass
class PointTask:
    """A 2-D classification task: points x (N, 2) float and labels y (N,) in {0, 1}."""

    name: str
    x: torch.Tensor
    y: torch.Tensor


def make_blobs(centres, n_per_class: int, spread: float,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clouds of `n_per_class` points around each centre; the cloud's index is its label."""
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    centre = torch.tensor(centres, dtype=torch.float32).repeat_interleave(n_per_class, dim=0)  # (N, 2)
    x = centre + spread * torch.randn(len(centre), 2, generator=generator)
    y = torch.arange(len(centres)).repeat_interleave(n_per_class)
    return x, y


def make_tasks(n_per_class: int = 100, spread: float = 0.5, seed: int = 0) -> tuple[PointTask, PointTask]:
    """Task A (left vs right) and task B (top vs bottom, above A), drawn from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    task_a = PointTask("task A", *make_blobs(CENTRES_A, n_per_class, spread, gen))
    task_b = PointTask("task B", *make_blobs(CENTRES_B, n_per_class, spread, gen))
    return task_a, task_b


def join(*tasks: PointTask) -> PointTask:
    """All the points of several tasks as one task (for training on everything at once)."""
    return PointTask(" + ".join(t.name for t in tasks), torch.cat([t.x for t in tasks]),
                     torch.cat([t.y for t in tasks]))


def make_model(hidden: int = 16, seed: int | None = None) -> MLP:
    """The tiny network of lesson 01: 2 inputs -> `hidden` ReLU units -> 2 classes (82 weights when hidden=16)."""
    if seed is None:
        return MLP(2, (hidden,), 2)
    with torch.random.fork_rng():  # a seeded model without disturbing the global random state
        torch.manual_seed(seed)
        return MLP(2, (hidden,), 2)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One gradient step on the batch (x, y); returns the loss before the step. The lesson 01 exercise."""
    logits = model(x)  # (batch, 2)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def flat_params(model: nn.Module) -> torch.Tensor:
    """All weights of `model` as one detached vector (P,)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut a flat weight vector back into the model's named parameter shapes."""
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


@torch.no_grad()
def logits_at(model: nn.Module, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits (S, N, 2) of `model` with each of the S weight vectors in `params` (S, P), all at once."""
    params = params.reshape(-1, params.shape[-1])
    return vmap(lambda flat: functional_call(model, _unflatten(model, flat), (x,)))(params)


@torch.no_grad()
def losses_at(model: nn.Module, params: torch.Tensor, task: PointTask) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy loss (S,) and accuracy (S,) on `task` for each weight vector in `params` (S, P)."""
    logits = logits_at(model, params, task.x)  # (S, N, 2)
    y = task.y.expand(len(logits), -1)  # (S, N)
    loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
    return loss, (logits.argmax(-1) == y).float().mean(1)


def evaluate(model: nn.Module, task: PointTask) -> tuple[float, float]:
    """Loss and accuracy of `model` (its current weights) on `task`."""
    loss, acc = losses_at(model, flat_params(model)[None], task)
    return loss.item(), acc.item()


def fit(model: nn.Module, task: PointTask, steps: int, lr: float, step_fn: StepFn = train_step) -> torch.Tensor:
    """Full-batch SGD on `task` for `steps` steps; returns the weights after each step (steps, P)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    snapshots = []
    for _ in range(steps):
        step_fn(model, optimizer, task.x, task.y)
        snapshots.append(flat_params(model))
    return torch.stack(snapshots)


@dataclass
class Record:
    """Task A then task B: the weights at every step (snapshot 0 is the start) and both tasks' loss there."""

    model: nn.Module  # the network, holding the weights after task B
    task_a: PointTask
    task_b: PointTask
    params: torch.Tensor  # (S, P) weights; S = steps on A + steps on B + 1
    loss_a: torch.Tensor  # (S,) loss on task A at each snapshot
    loss_b: torch.Tensor  # (S,)
    acc_a: torch.Tensor  # (S,) accuracy on task A at each snapshot
    acc_b: torch.Tensor  # (S,)
    b_start: int  # the snapshot at the end of task A, where training on B begins

    @property
    def n_snapshots(self) -> int:
        """How many weight snapshots were recorded (start + every step)."""
        return len(self.params)

    def index(self, i: int) -> int:
        """Snapshot `i` as a non-negative index (-1 is the last); IndexError when out of range."""
        if not -self.n_snapshots <= i < self.n_snapshots:
            raise IndexError(f"snapshot must be in 0..{self.n_snapshots - 1} (or negative from the end), got {i}")
        return i % self.n_snapshots


def train_sequence(model: nn.Module, task_a: PointTask, task_b: PointTask, steps: int = 300, lr: float = 0.2,
                   step_fn: StepFn = train_step) -> Record:
    """Train on task A, then on task B, `steps` full-batch SGD steps each, recording every step."""
    start = flat_params(model)[None]
    path_a = fit(model, task_a, steps, lr, step_fn)
    path_b = fit(model, task_b, steps, lr, step_fn)
    params = torch.cat([start, path_a, path_b])  # (2 * steps + 1, P)
    loss_a, acc_a = losses_at(model, params, task_a)
    loss_b, acc_b = losses_at(model, params, task_b)
    return Record(model, task_a, task_b, params, loss_a, loss_b, acc_a, acc_b, b_start=steps)


def step_label(record: Record, i: int) -> str:
    """Which task snapshot `i` is training on, and for how many steps so far."""
    i = record.index(i)
    if i == 0:
        return "start (untrained)"
    if i <= record.b_start:
        return f"training on A, step {i}"
    return f"training on B, step {i - record.b_start}"


def _plane_limits(*tasks: PointTask, margin: float = 1.5) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y limits that show every point of `tasks` with a margin around them."""
    pts = torch.cat([t.x for t in tasks])
    lo, hi = pts.min(0).values - margin, pts.max(0).values + margin
    return (lo[0].item(), hi[0].item()), (lo[1].item(), hi[1].item())


def class_probability(model: nn.Module, params: torch.Tensor, xlim: tuple[float, float], ylim: tuple[float, float],
                      n: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(class 1) on an n x n grid of the plane for weights `params` (P,): (xs, ys, prob (n, n))."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)  # (n*n, 2)
    prob = logits_at(model, params[None], grid)[0].softmax(-1)[:, 1]
    return xs, ys, prob.reshape(n, n).numpy()


def plot_points(ax: plt.Axes, task: PointTask, marker: str = "o", alpha: float = 0.9) -> None:
    """Scatter a task's points, coloured by class (blue = 0, red = 1)."""
    for c, colour in enumerate(CLASS_COLOURS):
        pts = task.x[task.y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, c=colour, marker=marker, alpha=alpha, edgecolors="k",
                   linewidths=0.3, label=f"{task.name}, class {c}")


def plot_decision(model: nn.Module, params: torch.Tensor | None = None, tasks: tuple[PointTask, ...] = (),
                  ax: plt.Axes | None = None, title: str = "Decision boundary") -> plt.Axes:
    """The boundary of `model` (with weights `params` if given), shaded by P(class 1), over the tasks' points."""
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    params = flat_params(model) if params is None else params
    xlim, ylim = _plane_limits(*tasks) if tasks else ((-4.0, 4.0), (-4.0, 4.0))
    xs, ys, prob = class_probability(model, params, xlim, ylim)
    ax.contourf(xs, ys, prob, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.35)
    ax.contour(xs, ys, prob, levels=[0.5], colors="k", linewidths=1.5)
    for task, marker in zip(tasks, "o^sD"):
        plot_points(ax, task, marker, alpha=0.9 if marker == "o" else 0.5)
    if tasks:
        ax.legend(loc="upper left", fontsize="x-small", ncols=2, handletextpad=0.1, columnspacing=0.5)
    ax.set(xlim=xlim, ylim=ylim, xlabel="x1", ylabel="x2", aspect="equal", title=title)
    return ax


def plot_boundary(record: Record, i: int, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """The decision boundary at snapshot `i` of `record`, with A's points (o) and B's (^)."""
    i = record.index(i)
    title = title or f"{step_label(record, i)}: A {record.acc_a[i]:.0%} right"
    return plot_decision(record.model, record.params[i], (record.task_a, record.task_b), ax, title)


def plot_losses(record: Record, i: int | None = None, ax: plt.Axes | None = None, log: bool = False) -> plt.Axes:
    """Loss on A and on B at every step (faded after snapshot `i` if given); a dashed line where B begins."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    steps = np.arange(record.n_snapshots)
    now = record.n_snapshots - 1 if i is None else record.index(i)
    for loss, colour, name in ((record.loss_a, "tab:green", "A"), (record.loss_b, "tab:purple", "B")):
        ax.plot(steps[:now + 1], loss[:now + 1], color=colour, label=f"loss on task {name}")
        ax.plot(steps[now:], loss[now:], color=colour, alpha=0.2)
        if i is not None:
            ax.plot(now, loss[now], "o", color=colour, markeredgecolor="k", zorder=3)
    ax.axvline(record.b_start, color="grey", linestyle="--", linewidth=0.8)
    ax.text(record.b_start, 0.98, " training on B begins", transform=ax.get_xaxis_transform(), va="top",
            fontsize="small", color="grey")
    ax.set(xlabel="training step (full batch)", ylabel="cross-entropy loss", title="Loss on each task during training")
    if log:
        ax.set_yscale("log")
    ax.legend(loc="center left", fontsize="small")
    return ax


@dataclass
class Landscape:
    """Loss A and loss B on a grid in the plane of weight space through start, after-A and after-B weights."""

    alphas: np.ndarray  # (n,) coordinate along the start -> after-A direction
    betas: np.ndarray  # (n,) coordinate along the second, orthogonal direction (towards after-B)
    loss_a: np.ndarray  # (n, n) indexed [beta, alpha]
    loss_b: np.ndarray  # (n, n)
    path: np.ndarray  # (S, 2) every snapshot projected onto the plane


def _plane_basis(record: Record) -> tuple[torch.Tensor, torch.Tensor]:
    """Origin (P,) and orthonormal directions (2, P) of the plane through start, after A and after B."""
    start, after_a, after_b = record.params[0], record.params[record.b_start], record.params[-1]
    e1 = after_a - start
    e1 = e1 / e1.norm()
    to_b = after_b - start
    v = to_b - (to_b @ e1) * e1
    if v.norm() <= 1e-5 * to_b.norm():
        raise ValueError("the start, after-A and after-B weights lie on one line: there is no plane to draw")
    return start, torch.stack([e1, v / v.norm()])


def loss_landscape(record: Record, n: int = 41, margin: float = 0.25) -> Landscape:
    """Losses of both tasks on an n x n grid spanning the training path, with the path projected onto it."""
    origin, basis = _plane_basis(record)
    path = (record.params - origin) @ basis.T  # (S, 2)
    lo, hi = path.min(0).values, path.max(0).values
    pad = margin * (hi - lo)
    alphas = torch.linspace(lo[0] - pad[0], hi[0] + pad[0], n)
    betas = torch.linspace(lo[1] - pad[1], hi[1] + pad[1], n)
    ga, gb = torch.meshgrid(alphas, betas, indexing="xy")  # (n, n) each, indexed [beta, alpha]
    grid = origin + ga.reshape(-1, 1) * basis[0] + gb.reshape(-1, 1) * basis[1]  # (n*n, P)
    loss_a = losses_at(record.model, grid, record.task_a)[0].reshape(n, n)
    loss_b = losses_at(record.model, grid, record.task_b)[0].reshape(n, n)
    return Landscape(alphas.numpy(), betas.numpy(), loss_a.numpy(), loss_b.numpy(), path.numpy())


def _draw_path(ax: plt.Axes, land: Landscape, b_start: int, upto: int | None = None) -> None:
    """The training path on the plane: A's steps in green, B's in purple, and the three marked points."""
    end = land.path.shape[0] if upto is None else upto + 1
    ax.plot(*land.path[:min(end, b_start + 1)].T, color="tab:green", linewidth=2, label="training on A")
    if end > b_start + 1:
        ax.plot(*land.path[b_start:end].T, color="tab:purple", linewidth=2, label="training on B")
    for k, name, marker in ((0, "start", "s"), (b_start, "after A", "o"), (-1, "after B", "^")):
        ax.plot(*land.path[k], marker, color="k", markersize=7)
        ax.annotate(name, land.path[k], textcoords="offset points", xytext=(6, 6), fontsize="small")
    if upto is not None:
        ax.plot(*land.path[upto], "*", color="gold", markeredgecolor="k", markersize=16, label="now")


def plot_landscape_panel(land: Landscape, b_start: int, which: str = "A", ax: plt.Axes | None = None,
                         upto: int | None = None) -> plt.Axes:
    """Contours of loss `which` (A or B) over the weight plane (log colour scale), with the training path."""
    if which not in ("A", "B"):
        raise ValueError(f"which must be 'A' or 'B', got {which!r}")
    ax = ax or plt.subplots(figsize=(5.5, 4.5))[1]
    loss = np.clip(land.loss_a if which == "A" else land.loss_b, 1e-3, 1e2)
    levels = np.geomspace(loss.min(), loss.max(), 16)
    cs = ax.contourf(land.alphas, land.betas, loss, levels=levels, norm=LogNorm(), cmap="viridis")
    ax.figure.colorbar(cs, ax=ax, label=f"loss on task {which} (log scale)", format="%.2g")
    _draw_path(ax, land, b_start, upto)
    ax.set(xlabel="direction 1: start -> after A", ylabel="direction 2 (towards after B)",
           title=f"Loss on task {which} in a slice of weight space")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_landscape(land: Landscape, b_start: int) -> plt.Figure:
    """Two panels side by side: loss A and loss B over the same weight plane, with the same path."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    plot_landscape_panel(land, b_start, "A", axes[0])
    plot_landscape_panel(land, b_start, "B", axes[1])
    fig.tight_layout()
    return fig


def draw_step(record: Record, i: int, landscape: Landscape | None = None) -> plt.Figure:
    """The figure the lesson 01 slider shows for snapshot `i`: boundary, losses so far and (optionally) landscape."""
    i = record.index(i)
    ncols = 2 if landscape is None else 3
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.8))
    plot_boundary(record, i, axes[0], title="Decision boundary")
    plot_losses(record, i, axes[1])
    if landscape is not None:
        plot_landscape_panel(landscape, record.b_start, "A", axes[2], upto=i)
    fig.suptitle(f"{step_label(record, i)}: task A loss {record.loss_a[i]:.2f}, accuracy {record.acc_a[i]:.0%}; "
                 f"task B loss {record.loss_b[i]:.2f}, accuracy {record.acc_b[i]:.0%}")
    fig.tight_layout()
    return fig
