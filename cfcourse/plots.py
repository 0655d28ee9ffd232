"""Figures: the accuracy matrix, accuracy curves through training, digit grids; see lessons 01-02."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .metrics import AccuracyMatrix


def plot_acc_matrix(acc: AccuracyMatrix, ax=None, title: str = "Accuracy matrix R[i][j]"):
    """Heatmap of R: row i = after training task i, column j = accuracy on task j."""
    ax = ax or plt.subplots(figsize=(1.1 * acc.n_tasks + 2.5, 1.0 * acc.n_tasks + 1.5))[1]
    R = np.ma.masked_invalid(acc.R * 100)
    im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    for i in range(acc.n_tasks):
        for j in range(acc.n_tasks):
            if not np.isnan(acc.R[i, j]):
                v = acc.R[i, j] * 100
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="white" if v < 60 else "black")
    ticks = range(acc.n_tasks)
    ax.set_xticks(ticks, [f"{j + 1}" for j in ticks])
    ax.set_yticks(ticks, [f"{i + 1}" for i in ticks])
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="accuracy (%)")
    return ax


def save_acc_matrix(acc: AccuracyMatrix, path: str, title: str = "Accuracy matrix R[i][j]") -> None:
    """Write the heatmap of `acc` to a PNG file."""
    ax = plot_acc_matrix(acc, title=title)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


def plot_curves(curves, names: list[str] | None = None, ax=None, title: str = "Accuracy on each task during training"):
    """Per-task test accuracy against training step, with a dashed line where each new task begins."""
    if not curves.steps:
        raise ValueError("no accuracy points were recorded: train with eval_every=k to record curves")
    ax = ax or plt.subplots(figsize=(9, 4), layout="constrained")[1]
    accs = curves.as_array() * 100  # (points, tasks)
    for j in range(accs.shape[1]):
        ax.plot(curves.steps, accs[:, j], label=names[j] if names else f"task {j + 1}")
    for b in curves.boundaries[1:]:
        ax.axvline(b, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training step (batches)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    return ax


def plot_digits(images: torch.Tensor, labels=None, ncols: int = 8, title: str | None = None, axes=None):
    """A grid of digits from uint8 images, (N, 784) or (N, 28, 28), with their labels above."""
    images = images.reshape(-1, 28, 28)
    n = len(images)
    if axes is None:
        nrows = max(1, -(-n // ncols))
        fig, axes = plt.subplots(nrows, ncols, figsize=(1.1 * ncols, 1.25 * nrows))
    axes = np.atleast_1d(axes).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k].numpy(), cmap="gray_r", vmin=0, vmax=255)
            if labels is not None:
                ax.set_title(str(int(labels[k])), fontsize=9)
    if title:
        axes[0].figure.suptitle(title)
        axes[0].figure.tight_layout()
    return axes


def plot_permutation(image: torch.Tensor, perm: torch.Tensor, label=None, task_id: int = 0, axes=None):
    """One digit as drawn, next to the same digit under task `task_id`'s pixel permutation; see lesson 02."""
    flat = image.reshape(-1)
    if flat.numel() != 784 or tuple(perm.shape) != (784,):
        raise ValueError(f"expected a 784-pixel image and a permutation of 784 pixels, got {tuple(image.shape)} "
                         f"and {tuple(perm.shape)}")
    new_figure = axes is None
    if new_figure:
        axes = plt.subplots(1, 2, figsize=(6, 3.3))[1]
    identity = bool(torch.equal(perm, torch.arange(784)))
    shown = "the same pixels, unmoved" if identity else "the same pixels, moved"
    for ax, img, name in zip(axes, (flat, flat[perm]), ("original digit", f"task {task_id + 1}: {shown}")):
        ax.imshow(img.reshape(28, 28).numpy(), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    digit = f"a {int(label)}" if label is not None else "a digit"
    how = "as drawn (identity permutation)" if identity else "with its 784 pixels moved to fixed new places"
    axes[0].figure.suptitle(f"Task {task_id + 1} shows {digit} {how}", fontsize=11)
    if new_figure:
        axes[0].figure.tight_layout()
    return axes


def plot_task_digits(tasks, n_digits: int = 6, start: int = 0):
    """The same test digits (columns) as each task shows them (rows); see lesson 02."""
    fig, axes = plt.subplots(len(tasks), n_digits, figsize=(1.2 * n_digits + 1.2, 1.25 * len(tasks) + 0.6),
                             squeeze=False)
    for r, task in enumerate(tasks):
        for c in range(n_digits):
            ax = axes[r, c]
            ax.imshow(task.test_x[start + c].reshape(28, 28).numpy(), cmap="gray_r", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"label {int(task.test_y[start + c])}", fontsize=9)
        axes[r, 0].set_ylabel(f"task {task.task_id + 1}", rotation=0, ha="right", va="center")
    fig.suptitle("The same digits as each task shows them")
    return axes


def plot_stability_gap(runs: dict, task: int = 0, stage: int = 1, before: int = 50, after: int = 300, ax=None,
                       title: str | None = None):
    """Accuracy on `task` around the moment training on `stage` begins, one line per run; see lesson 02."""
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    lowest = 100.0
    for name, curves in runs.items():
        if len(curves.boundaries) <= stage:
            raise ValueError(f"run {name!r} has no stage {stage + 1}: it trained {len(curves.boundaries)} tasks")
        x = np.asarray(curves.steps) - curves.boundaries[stage]
        y = curves.as_array()[:, task] * 100
        keep = (x >= -before) & (x <= after)
        ax.plot(x[keep], y[keep], marker=".", label=name)
        lowest = min(lowest, float(y[keep].min()) if keep.any() else lowest)
    ax.axvline(0, color="grey", linestyle="--", linewidth=0.8)
    ax.text(0, 99, f" task {stage + 1} begins", color="grey", fontsize="small", va="top")
    ax.set_xlabel(f"training steps since task {stage + 1} began (batches)")
    ax.set_ylabel(f"test accuracy on task {task + 1} (%)")
    ax.set_ylim(max(0.0, 10 * np.floor(lowest / 10 - 1)), 100)  # zoom in on the dip, with 10 points of room
    ax.set_title(title or f"Task {task + 1} while the model trains on task {stage + 1}")
    ax.legend(loc="lower right", fontsize="small")
    return ax
