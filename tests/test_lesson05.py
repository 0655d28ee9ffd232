"""Lesson 05's parts: the reservoir-sampling check (the package's reference passes, known mistakes are caught)
and the plots the lesson adds, called as plain functions."""
from __future__ import annotations

import random

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cfcourse import plots  # noqa: E402
from cfcourse.exercises import check, lesson05  # noqa: E402
from cfcourse.strategies.rehearsal import project_gradient, reservoir_update  # noqa: E402



@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _other_correct_reservoir(buffer, item, seen, rng, size):
    """Right, but with other random draws than the reference: a coin for size/seen, then a slot."""
    if len(buffer) < size:
        buffer.append(item)
    elif rng.random() < size / seen:
        buffer[rng.randrange(size)] = item


# --- the exercise: reference, correct answers, known mistakes --------------------------------------------

def test_the_reference_is_the_package_function():
    assert check.reservoir_update.reference is reservoir_update


def test_the_reference_passes_the_check():
    verdict = check.reservoir_update.verify(reservoir_update)
    assert verdict.ok, verdict.message
    assert "expected 10%" in verdict.message


def test_a_correct_answer_with_other_random_draws_passes():
    """The check tests what reservoir sampling promises, not the reference's exact draws."""
    verdict = check.reservoir_update.verify(_other_correct_reservoir)
    assert verdict.ok, verdict.message


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_correct_answers_look_uniform_from_other_seeds_too(seed):
    """An honest reservoir does not fail the statistics by bad luck (5 standard deviations of room)."""
    for fn in (reservoir_update, _other_correct_reservoir):
        counts = lesson05.inclusion_counts(fn, seed=seed)
        assert lesson05.uniformity_problem(counts, lesson05.RUNS, lesson05.SIZE) is None
        short = lesson05.inclusion_counts(fn, lesson05.SHORT_STREAM, lesson05.SHORT_SIZE, lesson05.SHORT_RUNS, seed)
        assert lesson05.off_by_one_problem(short, lesson05.SHORT_RUNS, lesson05.SHORT_SIZE) is None


def test_the_short_stream_sees_a_draw_off_by_one_where_the_long_one_cannot():
    """randrange(seen + 1) holds the items that filled the buffer with probability (size+1)/(n+1), not size/n."""
    long = lesson05.inclusion_counts(lesson05.draw_one_too_many)
    assert lesson05.uniformity_problem(long, lesson05.RUNS, lesson05.SIZE) is None  # 200 items: about 2 sd away
    short = lesson05.inclusion_counts(lesson05.draw_one_too_many, lesson05.SHORT_STREAM, lesson05.SHORT_SIZE,
                                      lesson05.SHORT_RUNS)
    first = sum(short[:lesson05.SHORT_SIZE]) / (lesson05.SHORT_RUNS * lesson05.SHORT_SIZE)
    assert first == pytest.approx((lesson05.SHORT_SIZE + 1) / (lesson05.SHORT_STREAM + 1), abs=0.01)
    assert "too often" in lesson05.off_by_one_problem(short, lesson05.SHORT_RUNS, lesson05.SHORT_SIZE)


def test_the_check_is_repeatable_and_counts_full_buffers():
    counts = lesson05.inclusion_counts(reservoir_update)
    assert counts == lesson05.inclusion_counts(reservoir_update)  # one seeded Random behind every run
    assert sum(counts) == lesson05.RUNS * lesson05.SIZE and len(counts) == lesson05.STREAM


def test_every_known_mistake_is_registered():
    assert check.reservoir_update.wrong_answers == lesson05.WRONG_ANSWERS
    assert len(lesson05.WRONG_ANSWERS) >= 6


@pytest.mark.parametrize("wrong", lesson05.WRONG_ANSWERS, ids=lambda f: f.__name__)
def test_known_mistakes_are_caught(wrong):
    verdict = check.reservoir_update.verify(wrong)
    assert not verdict.ok and not verdict.not_done, f"{wrong.__name__} passed: {verdict.message}"


@pytest.mark.parametrize("wrong, says", [
    (lesson05.always_replace_a_random_slot, "the newest items are held far too often"),
    (lesson05.keep_the_first_n, "the oldest items are held far too often"),
    (lesson05.keep_with_probability_one_over_seen, "probability size/seen"),
    (lesson05.always_replace_the_last_slot, "the oldest items are held far too often"),
    (lesson05.replace_the_oldest, "not always the oldest"),
    (lesson05.no_size_bound, "must never hold more than `size`"),
    (lesson05.returns_a_new_list, "change `buffer` itself"),
    (lesson05.draw_one_too_many, "it looks like your draw is off by one"),
    (lesson05.randint_includes_its_end, "rng.randint(0, seen) includes seen itself"),
    (lesson05.draw_one_too_few, "rng.randrange(seen - 1) draws from one number too few"),
    (lesson05.last_slot_never_replaced, "the oldest items are held far too often"),
    (lesson05.fills_by_seen_off_by_one, "every item offered is kept"),
    (lesson05.fills_one_too_many, "must never hold more than `size`"),
    (lesson05.uses_the_module_random, "draw every random number from `rng`"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_each_mistake_gets_a_message_that_names_it(wrong, says):
    assert says in check.reservoir_update.verify(wrong).message


def test_the_messages_give_the_frequencies_seen():
    message = check.reservoir_update.verify(lesson05.keep_the_first_n).message
    assert "first tenth of the stream: each item held in 100.0% of 1000 runs" in message
    assert "last tenth: 0.0%" in message


def test_dropping_items_while_filling_and_holding_duplicates_are_caught():
    def skips_odd(buffer, item, seen, rng, size):
        if item % 2 == 0:
            reservoir_update(buffer, item, seen, rng, size)

    def keeps_one_item_twice(buffer, item, seen, rng, size):
        reservoir_update(buffer, item, seen, rng, size)
        if seen == size:
            buffer[0] = buffer[1]

    assert "every item offered is kept" in check.reservoir_update.verify(skips_odd).message
    assert "an item twice" in check.reservoir_update.verify(keeps_one_item_twice).message


def test_the_stub_and_a_crash_are_verdicts():
    def stub(buffer, item, seen, rng, size):
        raise NotImplementedError("Exercise: write reservoir sampling")

    assert check.reservoir_update.verify(stub).not_done
    verdict = check.reservoir_update.verify(lambda buffer, item, seen, rng, size: buffer[seen])
    assert not verdict.ok and "IndexError" in verdict.message


def test_a_wrong_answer_gives_way_to_the_reference_and_a_right_one_is_kept(capsys):
    assert check.reservoir_update(lesson05.keep_the_first_n) is reservoir_update
    assert "Continuing with the reference solution" in capsys.readouterr().out
    assert check.reservoir_update(_other_correct_reservoir) is _other_correct_reservoir
    assert "Correct: reservoir_update passes every check." in capsys.readouterr().out


def test_the_check_leaves_the_global_random_state_alone():
    random.seed(5)
    expected = random.random()
    random.seed(5)
    check.reservoir_update.verify(reservoir_update)
    assert random.random() == expected


# --- the plots ---------------------------------------------------------------------------------------------

def test_plot_acc_vs_memory_draws_the_sweep_and_the_two_bounds():
    ax = plots.plot_acc_vs_memory([0, 50, 200, 1100], [0.19, 0.61, 0.80, 0.885], naive=0.193, joint=0.97,
                                  others={"A-GEM": ([1100], [0.65])})
    sweep = ax.lines[0]
    np.testing.assert_allclose(sweep.get_xdata(), [50, 200, 1100])  # size 0 is the naive line, not a point
    np.testing.assert_allclose(sweep.get_ydata(), [61, 80, 88.5])
    levels = sorted(line.get_ydata()[0] for line in ax.lines[1:])
    np.testing.assert_allclose(levels, [19.3, 97.0])
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("naive" in t and "19%" in t for t in labels) and any("joint" in t and "97%" in t for t in labels)
    assert "A-GEM" in labels
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[1100, 65]])


def test_plot_acc_vs_memory_draws_on_a_given_axis_without_bounds():
    fig, ax = plt.subplots()
    assert plots.plot_acc_vs_memory([20, 5000], [0.4, 0.9], ax=ax) is ax
    assert len(ax.lines) == 1 and ax.get_title()


@pytest.mark.parametrize("sizes, accs, message", [
    ([50, 200], [0.6], "one accuracy per buffer size"),
    ([], [], "one accuracy per buffer size"),
    ([-5, 200], [0.6, 0.8], "buffer sizes must be >= 0"),
])
def test_plot_acc_vs_memory_refuses_bad_input(sizes, accs, message):
    with pytest.raises(ValueError, match=message):
        plots.plot_acc_vs_memory(sizes, accs)


def test_plot_class_histograms_draws_one_bar_per_class_and_buffer():
    counts = {"reservoir": torch.tensor([6, 5, 5, 6, 4, 4, 2, 6, 4, 8]), "class-balanced": [5] * 10}
    ax = plots.plot_class_histograms(counts)
    assert len(ax.patches) == 20
    heights = [p.get_height() for p in ax.patches]
    assert heights[:10] == [6, 5, 5, 6, 4, 4, 2, 6, 4, 8] and heights[10:] == [5] * 10
    assert ax.lines[0].get_ydata()[0] == 5  # the equal share, drawn when the buffers hold as many samples
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "reservoir (50 in all)" in labels and "an equal share" in labels


def test_plot_class_histograms_without_a_common_total_draws_no_equal_share():
    ax = plots.plot_class_histograms({"a": [1, 2], "b": [3, 3]}, xlabel="task")
    assert not ax.lines and ax.get_xlabel() == "task"
    with pytest.raises(ValueError, match="counts is empty"):
        plots.plot_class_histograms({})


def test_plot_gradient_projection_draws_the_three_arrows():
    g_ref, g = torch.tensor([1.0, 0.4]), torch.tensor([-0.9, 0.8])
    g_proj = project_gradient(g, g_ref)
    ax = plots.plot_gradient_projection(g, g_ref, g_proj)
    tips = [np.asarray(a.xy, dtype=float) for a in ax.texts]  # each arrow: an annotation from the origin to its tip
    assert len(tips) == 3
    for v in (g, g_ref, g_proj):
        assert any(np.allclose(tip, v.numpy(), atol=1e-6) for tip in tips)
    assert ax.get_aspect() == 1.0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("g_ref" in t for t in labels) and any("projected" in t for t in labels)


def test_plot_gradient_projection_refuses_bad_input():
    with pytest.raises(ValueError, match="2-D vectors"):
        plots.plot_gradient_projection(torch.zeros(3), torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="g_ref is zero"):
        plots.plot_gradient_projection([1.0, 0.0], [0.0, 0.0], [1.0, 0.0])
