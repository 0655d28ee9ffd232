"""ipywidgets builders. Each callback is a plain function that tests call directly; see lessons 01-02."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import matplotlib.pyplot as plt
import torch


def show_figure(fig) -> None:
    """Display a matplotlib figure inside an ipywidgets Output, then free it."""
    from IPython.display import display
    display(fig)
    plt.close(fig)


def scrubber(n_steps: int, draw: Callable[[int], "plt.Figure"], description: str = "step", start: int = 0,
             step_labels: Callable[[int], str] | None = None):
    """A slider over 0..n_steps-1 that redraws `draw(i)` (which returns a figure) below it."""
    import ipywidgets as w

    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    slider = w.IntSlider(value=min(max(start, 0), n_steps - 1), min=0, max=n_steps - 1, step=1,
                         description=description, continuous_update=False,
                         layout=w.Layout(width="600px"))
    label = w.Label()
    out = w.Output()

    def redraw(change=None) -> None:
        i = slider.value
        label.value = step_labels(i) if step_labels else ""
        with out:
            out.clear_output(wait=True)
            show_figure(draw(i))

    slider.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([slider, label]), out])


def _original(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Undo a pixel permutation: a task shows original[perm], this gives back original."""
    out = torch.empty_like(x)
    out[perm] = x
    return out


def _test_digits_only(task, n: int):
    """A copy of `task` holding only its first `n` test digits and its permutation (no training data)."""
    empty = torch.empty(0, task.train_x.shape[1], dtype=task.train_x.dtype)
    return replace(task, train_x=empty, train_y=task.train_y[:0].clone(), test_x=task.test_x[:n].clone(),
                   test_y=task.test_y[:n].clone(), meta={"perm": task.meta["perm"].clone()})


def permutation_figure(tasks: list, task_id: int, index: int) -> "plt.Figure":
    """Test digit `index` as drawn and as task `task_id` shows it (the viewer's callback); see lesson 02."""
    from .plots import plot_permutation

    if not 0 <= task_id < len(tasks):
        raise ValueError(f"task_id must be in 0..{len(tasks) - 1}, got {task_id}")
    task = tasks[task_id]
    if not 0 <= index < len(task.test_y):
        raise ValueError(f"index must be in 0..{len(task.test_y) - 1}, got {index}")
    perm = task.meta["perm"]
    image = _original(task.test_x[index], perm)
    return plot_permutation(image, perm, int(task.test_y[index]), task_id)[0].figure


def permutation_viewer(tasks: list, n_digits: int = 100):
    """Sliders over tasks and test digits showing each digit before and after the task's permutation."""
    import ipywidgets as w

    if not tasks or "perm" not in tasks[0].meta:
        raise ValueError("permutation_viewer needs permuted tasks, e.g. cfcourse.data.permuted_mnist(5)")
    if n_digits < 1:
        raise ValueError(f"n_digits must be >= 1, got {n_digits}")
    tasks = [_test_digits_only(task, n_digits) for task in tasks]  # the widget must not keep the training sets alive
    task_slider = w.IntSlider(value=min(2, len(tasks)), min=1, max=len(tasks), description="task",
                              continuous_update=False)
    digit_slider = w.IntSlider(value=0, min=0, max=len(tasks[0].test_y) - 1,
                               description="test digit", continuous_update=False)
    out = w.Output()

    def redraw(change=None) -> None:
        with out:
            out.clear_output(wait=True)
            show_figure(permutation_figure(tasks, task_slider.value - 1, digit_slider.value))

    task_slider.observe(redraw, names="value")
    digit_slider.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([task_slider, digit_slider]), out])


def sweep_figure(values, matrices: list, index: int, name: str = "value") -> "plt.Figure":
    """Run `index`'s accuracy matrix beside the whole sweep's trade-off (the slider's callback); see lesson 06."""
    from .plots import plot_acc_matrix, plot_stability_plasticity

    if len(values) != len(matrices) or len(values) == 0:
        raise ValueError(f"need one accuracy matrix per swept value, got {len(values)} values and "
                         f"{len(matrices)} matrices")
    if not 0 <= index < len(values):
        raise ValueError(f"index must be in 0..{len(values) - 1}, got {index}")
    old = [float(m.R[-1, :-1].mean()) for m in matrices]  # the earlier tasks, after the last one
    new = [float(m.R.diagonal().mean()) for m in matrices]  # each task right after its own training
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    plot_acc_matrix(matrices[index], ax=axes[0], title=f"{name} = {values[index]:g}")
    plot_stability_plasticity(values, old, new, current=index, xlabel=name, ax=axes[1],
                              title=f"Every run of the sweep over {name}")
    return fig


def sweep_viewer(values, matrices: list, name: str = "value"):
    """A slider over a precomputed sweep: each position shows that run's accuracy matrix; see lesson 06."""
    plt.close(sweep_figure(values, matrices, 0, name))  # refuse bad input before building any widget
    return scrubber(len(values), lambda i: sweep_figure(values, matrices, i, name), description=name,
                    step_labels=lambda i: f"{name} = {values[i]:g}")
