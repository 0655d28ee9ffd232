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
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    accs = curves.as_array() * 100  # (points, tasks)
    for j in range(accs.shape[1]):
        ax.plot(curves.steps, accs[:, j], label=names[j] if names else f"task {j + 1}")
    for b in curves.boundaries[1:]:
        ax.axvline(b, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training step (batches)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize="small")
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
    return axes
