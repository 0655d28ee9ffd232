"""Lesson 06's parts: the distillation-loss exercise against the package, its known mistakes, and its figures."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cfcourse import plots, widgets  # noqa: E402
from cfcourse.exercises import check, lesson06  # noqa: E402
from cfcourse.metrics import AccuracyMatrix  # noqa: E402
from cfcourse.strategies.distillation import distillation_loss  # noqa: E402

EX = check.distillation_loss


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- the exercise ---------------------------------------------------------------------------------

def test_the_reference_is_the_package_function():
    assert EX.reference is distillation_loss
    assert EX.verify(distillation_loss).ok


def test_a_learners_own_right_answer_passes():
    def mine(new_logits, old_logits, temperature):
        log_p_new = F.log_softmax(new_logits / temperature, dim=-1)
        log_p_old = F.log_softmax(old_logits / temperature, dim=-1)
        return temperature ** 2 * (log_p_old.exp() * (log_p_old - log_p_new)).sum(-1).mean()
    assert EX.verify(mine).ok
    hinton_minus_entropy = lambda n, o, T: T ** 2 * (  # noqa: E731 - cross-entropy minus the old entropy: KL
        -(F.softmax(o / T, 1) * F.log_softmax(n / T, 1)).sum(1) + (F.softmax(o / T, 1) * F.log_softmax(o / T, 1)).sum(1)
    ).mean()
    assert EX.verify(hinton_minus_entropy).ok


def test_cases_with_known_answers():
    cases = lesson06._cases()
    what, new, old, T = cases[0]
    assert torch.equal(new, old) and distillation_loss(new, old, T).item() == 0.0
    what, new, old, T = cases[1]
    assert distillation_loss(new, old, T).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert "0.1308" in what
    assert {T for _, _, _, T in cases} >= {0.5, 1.0, 2.0, 4.0}  # T = 1 alone would hide the temperature mistakes


@pytest.mark.parametrize("mistake, words", [
    ("no_t_squared", "T² factor is missing"),
    ("kl_wrong_direction", "wrong way"),
    ("no_temperature", "temperature is not used"),
    ("temperature_not_squared", "multiplied by T, not by T²"),
    ("soft_cross_entropy", "not 0 when nothing has changed"),
    ("summed_over_samples", "mean over the batch"),
    ("softmax_over_the_batch", "dim=0"),
])
def test_each_known_mistake_is_caught_and_named(mistake, words):
    fn = next(f for f, _ in lesson06.MISTAKES if f.__name__ == mistake)
    verdict = EX.verify(fn)
    assert not verdict.ok and words in verdict.message, verdict.message
    assert fn in EX.wrong_answers


def test_the_brief_mistakes_are_among_the_wrong_answers():
    names = {f.__name__ for f in EX.wrong_answers}
    assert {"no_t_squared", "kl_wrong_direction", "no_temperature"} <= names


def test_a_loss_without_gradient_is_refused():
    verdict = EX.verify(lambda n, o, T: distillation_loss(n, o, T).item())
    assert not verdict.ok and "no gradient" in verdict.message
    verdict = EX.verify(lambda n, o, T: distillation_loss(n.detach(), o, T))
    assert not verdict.ok and "no gradient" in verdict.message


def test_unrelated_wrong_answers_and_missing_returns_get_clear_messages():
    verdict = EX.verify(lambda n, o, T: None)
    assert not verdict.ok and "forget the `return`" in verdict.message
    verdict = EX.verify(lambda n, o, T: (n - o).pow(2).mean())
    assert not verdict.ok and "expected" in verdict.message
    verdict = EX.verify(lambda n, o, T: n[99])
    assert not verdict.ok and "IndexError" in verdict.message


def test_stub_goes_on_with_the_package_function(capsys):
    def stub(new_logits, old_logits, temperature):
        raise NotImplementedError("Exercise: write the distillation loss")
    assert EX(stub) is distillation_loss
    assert "not done yet" in capsys.readouterr().out


# --- figures and the sweep viewer -----------------------------------------------------------------

def _matrices(n: int = 3) -> list[AccuracyMatrix]:
    """Hand-made accuracy matrices of a sweep: old tasks kept better, new ones learned worse, along it."""
    out = []
    for k in range(n):
        keep, learn = 0.5 + 0.2 * k, 0.99 - 0.1 * k
        out.append(AccuracyMatrix.from_array([[learn, 0.5, 0.5], [keep, learn, 0.5], [keep, keep, learn]]))
    return out


def test_plot_softened_outputs_draws_one_panel_per_temperature():
    axes = plots.plot_softened_outputs(torch.zeros(784, dtype=torch.uint8), torch.tensor([4.0, 1.0, 0.0]), (1, 3))
    assert len(axes) == 3 and axes[2].get_title() == "T = 3"
    heights = [b.get_height() for b in axes[1].patches]
    assert heights == pytest.approx((torch.softmax(torch.tensor([4.0, 1.0, 0.0]), 0) * 100).tolist(), rel=1e-5)
    flatter = [b.get_height() for b in axes[2].patches]
    assert max(flatter) < max(heights)  # a higher temperature softens the outputs


def test_plot_stability_plasticity_marks_the_current_value():
    ax = plots.plot_stability_plasticity([0, 1, 4], [0.5, 0.7, 0.9], [0.99, 0.9, 0.8], current=1, xlabel="alpha")
    assert len(ax.lines) == 3 and ax.get_xlabel() == "alpha"
    assert list(ax.lines[0].get_ydata()) == pytest.approx([50, 70, 90])


def test_sweep_figure_is_the_viewers_plain_callback():
    fig = widgets.sweep_figure([0, 1, 4], _matrices(), 2, "lwf_alpha")
    left, right = fig.axes[:2]  # (the colorbar comes after them)
    assert left.get_title() == "lwf_alpha = 4" and right.get_xlabel() == "lwf_alpha"
    old = right.lines[0].get_ydata()
    assert old == pytest.approx([50, 70, 90])  # R[-1, :-1].mean() of each run, in %
    assert right.lines[1].get_ydata() == pytest.approx([99, 89, 79])  # the diagonal's mean


def test_sweep_figure_refuses_bad_input():
    with pytest.raises(ValueError, match="one accuracy matrix per swept value, got 2 values and 3 matrices"):
        widgets.sweep_figure([0, 1], _matrices(), 0)
    with pytest.raises(ValueError, match=r"index must be in 0..2, got 3"):
        widgets.sweep_figure([0, 1, 4], _matrices(), 3)


def test_sweep_viewer_builds_a_slider():
    box = widgets.sweep_viewer(np.array([0.0, 1.0, 4.0]), _matrices(), "lwf_alpha")
    slider, label = box.children[0].children
    assert (slider.min, slider.max, slider.description) == (0, 2, "lwf_alpha")
    assert label.value == "lwf_alpha = 0"
    slider.value = 2
    assert label.value == "lwf_alpha = 4"
