"""Figures (matplotlib, Agg) and the slider widget, whose callbacks are plain functions tests can call."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cfcourse import plots, widgets  # noqa: E402
from cfcourse.metrics import AccuracyMatrix  # noqa: E402
from cfcourse.train import Curves  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _partial_matrix():
    m = AccuracyMatrix(3)
    m.record_row(0, [0.97, 0.1, 0.12])
    m.record_row(1, [0.54, 0.96, 0.11])
    return m


def test_save_acc_matrix_writes_a_png_and_closes_the_figure(tmp_path):
    path = tmp_path / "acc.png"
    open_before = plt.get_fignums()
    plots.save_acc_matrix(_partial_matrix(), str(path), title="permuted MNIST")
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC and len(raw) > 5000
    assert plt.get_fignums() == open_before, "save_acc_matrix must close its figure"


def test_plot_acc_matrix_labels_every_filled_cell():
    ax = plots.plot_acc_matrix(_partial_matrix(), title="R")
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["97", "10", "12", "54", "96", "11"]  # row 3 is not filled yet: no labels there
    assert ax.get_title() == "R" and ax.get_xlabel() and ax.get_ylabel()


def test_plot_curves_returns_axes_with_one_line_per_task():
    curves = Curves(steps=[10, 20, 30, 40], accs=[[0.5, 0.1], [0.9, 0.1], [0.7, 0.6], [0.5, 0.9]],
                    boundaries=[0, 20])
    ax = plots.plot_curves(curves, names=["A", "B"])
    lines = ax.get_lines()
    data_lines = [l for l in lines if l.get_label() in ("A", "B")]
    assert len(data_lines) == 2
    np.testing.assert_allclose(data_lines[0].get_ydata(), [50, 90, 70, 50])  # percent
    np.testing.assert_allclose(data_lines[1].get_xdata(), [10, 20, 30, 40])
    assert len(lines) == 3  # one dashed line at the start of task B
    assert ax.get_ylim() == (0, 100) and "step" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]


def test_plot_digits_shows_real_digits_with_labels(mnist):
    axes = plots.plot_digits(mnist.train_images[:6], mnist.train_labels[:6], ncols=4, title="first digits")
    assert len(axes) == 8  # 2 rows of 4
    assert [ax.get_title() for ax in axes[:6]] == ["5", "0", "4", "1", "9", "2"]
    assert len(axes[0].images) == 1 and len(axes[7].images) == 0
    np.testing.assert_array_equal(axes[0].images[0].get_array(), mnist.train_images[0].numpy())
    assert axes[0].figure._suptitle.get_text() == "first digits"


def test_plot_digits_accepts_flat_images_and_given_axes(mnist):
    fig, given = plt.subplots(1, 3)
    axes = plots.plot_digits(mnist.test_images[:3].reshape(3, 784), axes=given)
    assert list(axes) == list(given) and all(len(ax.images) == 1 for ax in axes)


# --- widgets --------------------------------------------------------------------------------------

def _figure(title: str):
    fig, ax = plt.subplots()
    ax.set_title(title)
    return fig


@pytest.fixture
def shown(monkeypatch):
    """Capture what show_figure displays (the title of each figure), instead of rendering it."""
    import IPython.display

    titles = []
    monkeypatch.setattr(IPython.display, "display", lambda fig: titles.append(fig.axes[0].get_title()))
    return titles


def test_scrubber_draws_and_the_slider_redraws(shown):
    calls = []

    def draw(i):
        calls.append(i)
        return _figure(f"step {i}")

    box = widgets.scrubber(5, draw, description="step", step_labels=lambda i: f"after {i * 10} batches")
    slider, label = box.children[0].children
    assert (slider.min, slider.max, slider.value) == (0, 4, 0)
    assert calls == [0] and shown == ["step 0"]
    assert label.value == "after 0 batches"

    slider.value = 3
    assert calls == [0, 3] and shown == ["step 0", "step 3"]
    assert label.value == "after 30 batches"
    assert plt.get_fignums() == [], "each drawn figure is closed after it is shown"


def test_scrubber_start_is_clamped_and_bad_size_refused(shown):
    calls = []
    widgets.scrubber(3, lambda i: (calls.append(i), _figure(str(i)))[1], start=10)
    assert calls == [2]
    with pytest.raises(ValueError, match="n_steps must be >= 1, got 0"):
        widgets.scrubber(0, lambda i: _figure(""))


def test_show_figure_displays_then_closes(shown):
    fig = _figure("hello")
    widgets.show_figure(fig)
    assert shown == ["hello"] and not plt.fignum_exists(fig.number)
