"""Lesson 02's parts: its exercise checks, the permutation viewer's callback and the new plots."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cfcourse import plots, widgets  # noqa: E402
from cfcourse.data import Task, make_permutations  # noqa: E402
from cfcourse.exercises import check  # noqa: E402
from cfcourse.exercises import lesson02  # noqa: E402
from cfcourse.metrics import AccuracyMatrix  # noqa: E402
from cfcourse.train import Curves  # noqa: E402

EXERCISES = ["backward_transfer", "forgetting_per_task"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _stub(R):
    raise NotImplementedError("Exercise: not written yet")


# --- the exercises ---------------------------------------------------------------------------------

def test_wrong_answers_get_their_own_explanation():
    include_last, no_diagonal = lesson02.BWT_MISTAKES[0][0], lesson02.BWT_MISTAKES[1][0]
    assert "T-1 earlier tasks" in check.backward_transfer.verify(include_last).message
    assert "diagonal" in check.backward_transfer.verify(no_diagonal).message
    assert "one number" in check.backward_transfer.verify(lambda R: R[-1, :-1] - np.diag(R)[:-1]).message
    assert "one number per earlier task" in check.forgetting_per_task.verify(lambda R: 0.1).message


def test_learner_error_is_a_verdict_not_a_crash():
    verdict = check.backward_transfer.verify(lambda R: R[10, 10])
    assert not verdict.ok and "IndexError" in verdict.message


def test_missing_return_and_non_numbers_get_clear_messages():
    verdict = check.backward_transfer.verify(lambda R: None)
    assert not verdict.ok and "forget the `return`" in verdict.message
    verdict = check.forgetting_per_task.verify(lambda R: "forgetting")
    assert not verdict.ok and "returned 'forgetting'" in verdict.message


def test_correct_answer_is_returned(capsys):
    def mine(R):
        return float((R[-1, :-1] - np.diag(R)[:-1]).mean())
    assert check.backward_transfer(mine) is mine
    assert "Correct" in capsys.readouterr().out


def test_references_agree_with_accuracy_matrix():
    for R in lesson02._matrices():
        acc = AccuracyMatrix.from_array(R)
        assert lesson02.backward_transfer(R) == pytest.approx(acc.bwt)
        np.testing.assert_allclose(lesson02.forgetting_per_task(R), acc.forgetting)


def test_hand_made_values():
    R = np.array([[0.95, 0.12, 0.09], [0.70, 0.96, 0.11], [0.55, 0.80, 0.97]])
    assert lesson02.backward_transfer(R) == pytest.approx(((0.55 - 0.95) + (0.80 - 0.96)) / 2)
    np.testing.assert_allclose(lesson02.forgetting_per_task(R), [0.95 - 0.55, 0.96 - 0.80])


# --- the permutation viewer ------------------------------------------------------------------------

def _tiny_tasks(n_tasks: int = 3, n: int = 4) -> list[Task]:
    """Permuted tasks over random uint8 'digits', so no MNIST is needed."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 784), dtype=torch.uint8, generator=gen)
    y = torch.arange(n) % 10
    return [Task(f"permutation {t}", t, x[:, p], y, x[:, p], y, tuple(range(10)), {"perm": p})
            for t, p in enumerate(make_permutations(n_tasks, seed=0))]


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_permutation_figure_is_a_figure_that_changes_with_its_inputs():
    tasks = _tiny_tasks()
    fig = widgets.permutation_figure(tasks, 1, 0)
    assert isinstance(fig, matplotlib.figure.Figure)
    base = _pixels(fig)
    assert not np.array_equal(base, _pixels(widgets.permutation_figure(tasks, 2, 0)))  # another task
    assert not np.array_equal(base, _pixels(widgets.permutation_figure(tasks, 1, 1)))  # another digit
    assert np.array_equal(base, _pixels(widgets.permutation_figure(tasks, 1, 0)))  # same inputs, same picture


def test_permutation_figure_shows_the_original_and_the_task_view():
    tasks = _tiny_tasks()
    fig = widgets.permutation_figure(tasks, 2, 3)
    left, right = (ax.images[0].get_array() for ax in fig.axes[:2])
    np.testing.assert_array_equal(np.asarray(left).ravel(), tasks[0].test_x[3].numpy())  # task 1 = identity
    np.testing.assert_array_equal(np.asarray(right).ravel(), tasks[2].test_x[3].numpy())
    assert "task 3" in fig.axes[1].get_title()
    assert "unmoved" in widgets.permutation_figure(tasks, 0, 3).axes[1].get_title()  # task 1: the identity


def test_permutation_figure_refuses_bad_indices():
    tasks = _tiny_tasks()
    with pytest.raises(ValueError, match="task_id"):
        widgets.permutation_figure(tasks, 3, 0)
    with pytest.raises(ValueError, match="index"):
        widgets.permutation_figure(tasks, 0, 4)


def test_permutation_viewer_builds():
    ipywidgets = pytest.importorskip("ipywidgets")
    view = widgets.permutation_viewer(_tiny_tasks(), n_digits=3)
    assert isinstance(view, ipywidgets.VBox)
    sliders = view.children[0].children
    assert (sliders[0].min, sliders[0].max, sliders[1].max) == (1, 3, 2)
    sliders[1].value = 2  # redraws through the plain callback without error


def test_permutation_viewer_refuses_unpermuted_tasks():
    task = _tiny_tasks(1)[0]
    task.meta = {}
    with pytest.raises(ValueError, match="permuted"):
        widgets.permutation_viewer([task])


# --- the new plots ---------------------------------------------------------------------------------

def test_plot_permutation_titles_and_checks_shapes():
    perm = make_permutations(2, seed=1)[1]
    axes = plots.plot_permutation(torch.arange(784) % 256, perm, label=7, task_id=1)
    assert "a 7" in axes[0].figure._suptitle.get_text()
    with pytest.raises(ValueError, match="784"):
        plots.plot_permutation(torch.zeros(100), perm)


def test_plot_task_digits_has_a_row_per_task():
    tasks = _tiny_tasks(3)
    axes = plots.plot_task_digits(tasks, n_digits=4)
    assert axes.shape == (3, 4)
    assert [axes[r, 0].get_ylabel() for r in range(3)] == ["task 1", "task 2", "task 3"]


def _curves() -> Curves:
    c = Curves(steps=list(range(10, 210, 10)), boundaries=[0, 100])
    c.accs = [[0.9, 0.1] if s <= 100 else [0.9 - (s - 100) / 250, 0.8] for s in c.steps]
    return c


def test_plot_stability_gap_aligns_runs_at_the_task_boundary():
    ax = plots.plot_stability_gap({"naive": _curves()}, task=0, stage=1, before=30, after=50)
    x, y = ax.lines[0].get_data()
    np.testing.assert_array_equal(x, [-30, -20, -10, 0, 10, 20, 30, 40, 50])
    assert y[0] == pytest.approx(90) and y[-1] == pytest.approx(70)
    assert ax.get_xlabel().startswith("training steps since task 2") and ax.get_title()
    assert ax.get_ylim() == (60.0, 100.0)  # zoomed in on the dip (lowest 70%), with room below


def test_plot_stability_gap_needs_the_stage():
    with pytest.raises(ValueError, match="stage 3"):
        plots.plot_stability_gap({"naive": _curves()}, stage=2)
