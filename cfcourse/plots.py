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


def plot_softened_outputs(image: torch.Tensor, logits: torch.Tensor, temperatures=(1.0, 2.0, 4.0), axes=None,
                          title: str | None = None):
    """One digit and the model's softmax(logits / T) at each temperature T, as bars; see lesson 06."""
    logits = logits.detach().reshape(-1).float()  # (classes,)
    if axes is None:
        fig, axes = plt.subplots(1, len(temperatures) + 1, figsize=(3.0 * len(temperatures) + 2.2, 2.8),
                                 gridspec_kw={"width_ratios": [0.7] + [1.0] * len(temperatures)}, layout="constrained")
    axes[0].imshow(image.reshape(28, 28).numpy(), cmap="gray_r", vmin=0, vmax=255)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title("the digit")
    for ax, T in zip(axes[1:], temperatures):
        p = torch.softmax(logits / T, 0).numpy() * 100
        ax.bar(range(len(p)), p, color="tab:blue")
        ax.set_xticks(range(len(p)))
        ax.set_ylim(0, 100)
        ax.set_xlabel("class")
        ax.set_title(f"T = {T:g}")
    axes[1].set_ylabel("softmax(logits / T) (%)")
    axes[0].figure.suptitle(title or "The same outputs, softened by the temperature T")
    return axes


def plot_stability_plasticity(values, old_acc, new_acc, current: int | None = None, xlabel: str = "hyperparameter",
                              ax=None, title: str = "Stability against plasticity"):
    """Old tasks' final accuracy and new tasks' accuracy just after training, against a swept value; see lesson 06."""
    ax = ax or plt.subplots(figsize=(6, 4), layout="constrained")[1]
    x = np.arange(len(values))  # evenly spaced, labelled with the values (sweeps are often 0, 0.25, ..., 4)
    ax.plot(x, np.asarray(old_acc) * 100, marker="o", label="old tasks at the end (stability)")
    ax.plot(x, np.asarray(new_acc) * 100, marker="s", label="each task just after training it (plasticity)")
    if current is not None:
        ax.axvline(current, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, [f"{v:g}" for v in values])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize="small")
    return ax


def plot_final_accuracies(runs: dict, ax=None, title: str = "Accuracy on each task after the last one"):
    """Grouped bars: each run's accuracy on every task after its last stage, its average in the legend; see 03-04."""
    if not runs:
        raise ValueError("runs is empty: pass a dict {name: AccuracyMatrix}")
    sizes = {acc.n_tasks for acc in runs.values()}
    if len(sizes) != 1:
        raise ValueError(f"every run needs the same number of tasks, got {sorted(sizes)}")
    n_tasks, width = sizes.pop(), 0.8 / len(runs)
    ax = ax or plt.subplots(figsize=(max(7.0, 0.35 * n_tasks * len(runs) + 4), 4), layout="constrained")[1]
    x = np.arange(n_tasks)
    for k, (name, acc) in enumerate(runs.items()):
        final = acc.R[acc.stage] * 100  # (tasks,): the last complete row
        ax.bar(x - 0.4 + width * (k + 0.5), final, width, label=f"{name} (average {acc.avg_acc:.0%})")
    names = next(iter(runs.values())).names
    ax.set_xticks(x, [f"task {j + 1}" + ("" if n == f"task {j + 1}" else f"\n{n}") for j, n in enumerate(names)])
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("test accuracy after the last task (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    return ax


def plot_predicted_labels(predicted, true=None, n_classes: int = 10, ax=None,
                          title: str = "Which labels the model predicts"):
    """Bars: how many test digits get each predicted label; black ticks: how many truly have it; see lesson 03."""
    predicted = torch.as_tensor(predicted).reshape(-1).long().cpu()
    if len(predicted) and (predicted.min() < 0 or predicted.max() >= n_classes):
        raise ValueError(f"predicted labels must lie in 0..{n_classes - 1}, got {int(predicted.min())}.."
                         f"{int(predicted.max())}")
    ax = ax or plt.subplots(figsize=(7, 3.5), layout="constrained")[1]
    counts = torch.bincount(predicted, minlength=n_classes).numpy()
    ax.bar(range(n_classes), counts, color="tab:orange", label="predicted")
    if true is not None:
        true_counts = torch.bincount(torch.as_tensor(true).reshape(-1).long().cpu(), minlength=n_classes).numpy()
        ax.scatter(range(n_classes), true_counts[:n_classes], color="black", marker="_", s=500, zorder=3,
                   label="true")
    ax.set_xticks(range(n_classes))
    ax.set_xlabel("label (digit)")
    ax.set_ylabel("test digits")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_fisher_image(importance: torch.Tensor, ax=None, title: str = "Fisher importance of each input pixel"):
    """A first layer's Fisher, (hidden, 784) summed over hidden units or (784,), as a 28 x 28 image; see lesson 04."""
    imp = importance.detach().float().cpu()
    if imp.ndim == 2:
        imp = imp.sum(0)  # (784,): the importance of every weight that reads this pixel
    if imp.numel() != 784:
        raise ValueError(f"expected the Fisher of a first layer on 784 pixels, (hidden, 784) or (784,), "
                         f"got shape {tuple(importance.shape)}")
    ax = ax or plt.subplots(figsize=(4.6, 4), layout="constrained")[1]
    im = ax.imshow(imp.reshape(28, 28).numpy(), cmap="magma")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="Fisher, summed over hidden units")
    return ax


def plot_lambda_sweep(values, matrices: list, naive: AccuracyMatrix | None = None, name: str = "λ", axes=None,
                      title: str | None = None):
    """ACC and learning accuracy (left) and BWT (right) against a penalty strength, naive dashed; see lesson 04."""
    if len(values) != len(matrices) or len(values) == 0:
        raise ValueError(f"need one accuracy matrix per value, got {len(values)} values and {len(matrices)} "
                         "matrices")
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")[1]
    x = np.arange(len(values))  # evenly spaced, labelled with the values (a sweep is usually 1, 10, 100, ...)
    curves = {"ACC (all tasks at the end)": [m.avg_acc for m in matrices],
              "learning accuracy (each task just after training it)": [np.diag(m.R).mean() for m in matrices]}
    for (label, ys), marker in zip(curves.items(), "os"):
        line, = axes[0].plot(x, np.asarray(ys) * 100, marker=marker, label=label)
        if naive is not None:
            ref = naive.avg_acc if label.startswith("ACC") else np.diag(naive.R).mean()
            axes[0].axhline(ref * 100, color=line.get_color(), linestyle="--", linewidth=0.8,
                            label=f"naive: {label.split(' (')[0]}")
    axes[1].plot(x, np.asarray([m.bwt for m in matrices]) * 100, marker="o", color="tab:red", label="BWT")
    if naive is not None:
        axes[1].axhline(naive.bwt * 100, color="tab:red", linestyle="--", linewidth=0.8, label="naive: BWT")
    axes[1].axhline(0, color="grey", linewidth=0.6)
    for ax, ylabel in zip(axes, ("test accuracy (%)", "backward transfer (points)")):
        ax.set_xticks(x, [f"{v:g}" for v in values])
        ax.set_xlabel(name)
        ax.set_ylabel(ylabel)
        ax.legend(loc="best", fontsize="small")
    axes[0].figure.suptitle(title or f"The stability-plasticity trade-off: a sweep over {name}")
    return axes


def plot_acc_vs_memory(sizes, accs, naive: float | None = None, joint: float | None = None, others: dict | None = None,
                       ax=None, title: str = "Final average accuracy against memory"):
    """Final average accuracy against replay buffer size (log axis), naive and joint as lines; see lesson 05.

    `accs`, `naive` and `joint` are fractions; `others` maps a name to (sizes, accs) drawn as extra markers. A buffer
    of size 0 has no place on a log axis: it is naive fine-tuning, drawn as the `naive` line.
    """
    sizes, accs = np.asarray(sizes, dtype=float), np.asarray(accs, dtype=float)
    if sizes.shape != accs.shape or sizes.ndim != 1 or len(sizes) == 0:
        raise ValueError(f"need one accuracy per buffer size, got {sizes.size} sizes and {accs.size} accuracies")
    if (sizes < 0).any():
        raise ValueError(f"buffer sizes must be >= 0, got {sizes.min():g}")
    ax = ax or plt.subplots(figsize=(8, 4.5), layout="constrained")[1]
    keep = sizes > 0
    ax.plot(sizes[keep], accs[keep] * 100, marker="o", label="replay (reservoir buffer)")
    for s, a in zip(sizes[keep], accs[keep]):
        ax.annotate(f"{a:.0%}", (s, a * 100), textcoords="offset points", xytext=(0, 7), ha="center",
                    fontsize="small")
    for (name, (xs, ys)), marker in zip((others or {}).items(), "sD^vP*"):
        ax.scatter(xs, np.asarray(ys, dtype=float) * 100, marker=marker, s=60, zorder=3, label=name)
    for value, name, color in ((joint, "joint training, all data", "tab:green"),
                               (naive, "naive fine-tuning, no memory", "tab:red")):
        if value is not None:
            ax.axhline(value * 100, color=color, linestyle="--", linewidth=1, label=f"{name}: {value:.0%}")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes[keep], [f"{s:,.0f}" for s in sizes[keep]])
    ax.set_xlabel("replay buffer size (samples kept, log scale)")
    ax.set_ylabel("final average accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_class_histograms(counts: dict, ax=None, title: str = "Samples of each class in memory",
                          xlabel: str = "class (digit)"):
    """Grouped bars: how many samples of each class every buffer holds, {name: counts per class}; see lesson 05."""
    if not counts:
        raise ValueError("counts is empty: pass {buffer name: samples per class}")
    arrays = {name: np.asarray(c, dtype=float).reshape(-1) for name, c in counts.items()}
    n_classes = max(len(a) for a in arrays.values())
    ax = ax or plt.subplots(figsize=(max(7.0, 0.25 * n_classes * len(arrays) + 3), 3.8), layout="constrained")[1]
    width = 0.8 / len(arrays)
    x = np.arange(n_classes)
    for k, (name, a) in enumerate(arrays.items()):
        ax.bar(x[: len(a)] - 0.4 + width * (k + 0.5), a, width, label=f"{name} ({a.sum():.0f} in all)")
    totals = {a.sum() for a in arrays.values()}
    if len(totals) == 1:
        ax.axhline(totals.pop() / n_classes, color="black", linestyle=":", linewidth=1, label="an equal share")
    ax.set_xticks(x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples held")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return ax


def plot_gradient_projection(g, g_ref, g_proj, ax=None, title: str = "A-GEM's projection in two dimensions"):
    """Arrows g (new batch), g_ref (memory) and the projected g, the directions that raise the memory loss shaded;
    see lesson 05."""
    g, g_ref, g_proj = (torch.as_tensor(v, dtype=torch.float64).reshape(-1).numpy() for v in (g, g_ref, g_proj))
    if not g.shape == g_ref.shape == g_proj.shape == (2,):
        raise ValueError(f"need three 2-D vectors, got shapes {g.shape}, {g_ref.shape} and {g_proj.shape}")
    if not np.linalg.norm(g_ref) > 0:
        raise ValueError("g_ref is zero: it defines no direction to protect")
    ax = ax or plt.subplots(figsize=(5.2, 5.2), layout="constrained")[1]
    span = 1.25 * max(np.linalg.norm(v) for v in (g, g_ref, g_proj))
    u = g_ref / np.linalg.norm(g_ref)  # along g_ref
    w = np.array([-u[1], u[0]])  # along the boundary, perpendicular to g_ref
    big = 4 * span
    ax.fill(*np.array([big * w, big * w - big * u, -big * w - big * u, -big * w]).T, color="tab:red", alpha=0.08,
            label="g · g_ref < 0: the step would raise the loss on memory")
    ax.plot(*np.array([-big * w, big * w]).T, color="grey", linewidth=0.8)
    ax.plot(*np.array([g, g_proj]).T, color="grey", linestyle=":", linewidth=1.2)  # the component removed
    arrows = ((g_ref, "g_ref: gradient on memory", "tab:green", 2), (g_proj, "projected g: what A-GEM uses",
                                                                       "tab:blue", 4),
              (g, "g: gradient on the new batch", "tab:red", 1.5))  # g drawn last: visible when it is kept as it is
    for v, name, color, width in arrows:
        ax.annotate("", v, (0, 0), arrowprops=dict(arrowstyle="-|>", color=color, linewidth=width, shrinkA=0,
                                                   shrinkB=0))
        ax.plot([], [], color=color, linewidth=width, label=name)  # a legend entry for the arrow
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.set_xlabel("weight 1 (gradient component)")
    ax.set_ylabel("weight 2 (gradient component)")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize="x-small")
    return ax
