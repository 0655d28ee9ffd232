"""ipywidgets builders. Each callback is a plain function that tests call directly; see lessons 01-02."""
from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt


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
