"""The 2-D experiment of lesson 01: tasks, tiny model, recorded training, landscape slice and figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cfcourse import toy, widgets  # noqa: E402

STEPS = 100  # per task: enough for the effect, small enough for a fast test


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tasks():
    return toy.make_tasks(n_per_class=30, seed=0)


@pytest.fixture(scope="module")
def record(tasks):
    return toy.train_sequence(toy.make_model(seed=0), *tasks, steps=STEPS, lr=0.2)


@pytest.fixture(scope="module")
def landscape(record):
    return toy.loss_landscape(record, n=11)


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


# --- data and model ---------------------------------------------------------------------------------------------

def test_make_blobs_shapes_labels_and_centres():
    x, y = toy.make_blobs(((0.0, 0.0), (10.0, -10.0)), 500, 0.5, torch.Generator().manual_seed(0))
    assert x.shape == (1000, 2) and x.dtype == torch.float32 and y.tolist() == [0] * 500 + [1] * 500
    np.testing.assert_allclose(x[y == 1].mean(0), [10.0, -10.0], atol=0.1)
    assert 0.4 < x[y == 0].std(0).mean() < 0.6


def test_make_blobs_refuses_a_bad_count():
    with pytest.raises(ValueError, match="n_per_class"):
        toy.make_blobs(toy.CENTRES_A, 0, 0.5, torch.Generator())


def test_make_tasks_is_seeded_and_places_the_clouds():
    a1, b1 = toy.make_tasks(n_per_class=50, seed=3)
    a2, b2 = toy.make_tasks(n_per_class=50, seed=3)
    a3, _ = toy.make_tasks(n_per_class=50, seed=4)
    assert torch.equal(a1.x, a2.x) and torch.equal(b1.x, b2.x) and not torch.equal(a1.x, a3.x)
    for task, centres in ((a1, toy.CENTRES_A), (b1, toy.CENTRES_B)):
        assert torch.bincount(task.y).tolist() == [50, 50]
        for c, centre in enumerate(centres):
            np.testing.assert_allclose(task.x[task.y == c].mean(0), centre, atol=0.25)


def test_join_concatenates_points_and_labels(tasks):
    both = toy.join(*tasks)
    assert torch.equal(both.x, torch.cat([tasks[0].x, tasks[1].x])) and len(both.y) == 120
    assert both.name == "task A + task B"


def test_make_model_is_tiny_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    m1, m2 = toy.make_model(seed=7), toy.make_model(seed=7)
    assert torch.rand(1) == expected_next, "a seeded model must not consume the global random stream"
    assert torch.equal(toy.flat_params(m1), toy.flat_params(m2))
    assert sum(p.numel() for p in m1.parameters()) == 82
    assert m1(torch.zeros(5, 2)).shape == (5, 2)


def test_flat_params_is_a_detached_copy_in_parameter_order():
    model = toy.make_model(seed=0)
    flat = toy.flat_params(model)
    assert flat.shape == (82,) and not flat.requires_grad
    assert torch.equal(flat[:32], model.body[0].weight.detach().reshape(-1))
    assert torch.equal(flat[-2:], model.head.bias.detach())


# --- training ---------------------------------------------------------------------------------------------------

def test_train_step_returns_the_loss_before_the_step_and_moves_the_weights(tasks):
    model = toy.make_model(seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    before = F.cross_entropy(model(tasks[0].x), tasks[0].y).item()
    weights = toy.flat_params(model)
    got = toy.train_step(model, opt, tasks[0].x, tasks[0].y)
    assert isinstance(got, float) and got == pytest.approx(before)
    assert not torch.equal(weights, toy.flat_params(model))
    losses = [toy.train_step(model, opt, tasks[0].x, tasks[0].y) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_fit_records_every_step_with_the_given_step_function(tasks):
    model, calls = toy.make_model(seed=0), []

    def counting_step(*args):
        calls.append(1)
        return toy.train_step(*args)

    path = toy.fit(model, tasks[0], steps=7, lr=0.1, step_fn=counting_step)
    assert path.shape == (7, 82) and len(calls) == 7
    assert torch.equal(path[-1], toy.flat_params(model))
    with pytest.raises(ValueError, match="steps"):
        toy.fit(model, tasks[0], steps=0, lr=0.1)


def test_logits_at_matches_the_model_for_each_weight_vector(tasks):
    model = toy.make_model(seed=0)
    other = toy.make_model(seed=1)
    params = torch.stack([toy.flat_params(model), toy.flat_params(other)])
    logits = toy.logits_at(model, params, tasks[0].x)
    assert logits.shape == (2, 60, 2)
    with torch.no_grad():
        torch.testing.assert_close(logits[0], model(tasks[0].x))
        torch.testing.assert_close(logits[1], other(tasks[0].x))


def test_losses_at_and_evaluate_agree_with_cross_entropy(tasks):
    model = toy.make_model(seed=0)
    with torch.no_grad():
        out = model(tasks[1].x)
    want_loss = F.cross_entropy(out, tasks[1].y).item()
    want_acc = (out.argmax(1) == tasks[1].y).float().mean().item()
    loss, acc = toy.losses_at(model, toy.flat_params(model)[None], tasks[1])
    assert loss.shape == (1,) and loss.item() == pytest.approx(want_loss, rel=1e-5)
    assert acc.item() == pytest.approx(want_acc)
    assert toy.evaluate(model, tasks[1]) == (pytest.approx(want_loss, rel=1e-5), pytest.approx(want_acc))


def test_train_sequence_records_every_snapshot(record, tasks):
    s = 2 * STEPS + 1
    assert record.n_snapshots == s and record.params.shape == (s, 82) and record.b_start == STEPS
    for series in (record.loss_a, record.loss_b, record.acc_a, record.acc_b):
        assert series.shape == (s,)
    torch.testing.assert_close(record.params[0], toy.flat_params(toy.make_model(seed=0)))
    assert torch.equal(record.params[-1], toy.flat_params(record.model))
    assert record.loss_a[0] == pytest.approx(toy.losses_at(record.model, record.params[:1], tasks[0])[0].item())


def test_task_a_loss_really_rises_while_training_b(record):
    a_end, b_end = record.b_start, record.n_snapshots - 1
    assert record.acc_a[a_end] >= 0.95, "task A was learned"
    assert record.loss_a[b_end] > 10 * record.loss_a[a_end], "A's loss rises by a clear factor during B"
    assert record.acc_a[b_end] <= record.acc_a[a_end] - 0.2, "A's accuracy drops during B"
    assert record.loss_b[b_end] < 0.2 * record.loss_b[a_end] and record.acc_b[b_end] >= 0.95, "B is learned"
    during_b = record.loss_a[a_end:]
    assert (during_b[1:] >= during_b[:-1] - 1e-3).float().mean() > 0.9, "A's loss climbs step by step"


def test_record_index_and_step_label(record):
    assert record.index(-1) == record.n_snapshots - 1 and record.index(3) == 3
    with pytest.raises(IndexError, match="snapshot"):
        record.index(record.n_snapshots)
    assert toy.step_label(record, 0) == "start (untrained)"
    assert toy.step_label(record, 5) == "training on A, step 5"
    assert toy.step_label(record, record.b_start + 2) == "training on B, step 2"


# --- pictures ---------------------------------------------------------------------------------------------------

def test_class_probability_sees_task_a_after_a(record):
    xs, ys, prob = toy.class_probability(record.model, record.params[record.b_start], (-3, 3), (-1, 1), n=21)
    assert xs.shape == (21,) and ys.shape == (21,) and prob.shape == (21, 21)
    assert 0 <= prob.min() and prob.max() <= 1
    assert prob[10, 2] < 0.1 and prob[10, -3] > 0.9, "after A: left is class 0, right is class 1"


def test_plot_points_draws_each_class_with_a_label(tasks):
    fig, ax = plt.subplots()
    toy.plot_points(ax, tasks[0], marker="o")
    assert [c.get_label() for c in ax.collections] == ["task A, class 0", "task A, class 1"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 60


def test_plot_decision_and_plot_boundary_are_titled_and_labelled(record, tasks):
    ax = toy.plot_decision(record.model, tasks=tasks, title="both")
    assert ax.get_title() == "both" and ax.get_xlabel() == "x1" and ax.get_ylabel() == "x2"
    assert ax.get_legend() is not None
    ax = toy.plot_boundary(record, record.b_start)
    assert ax.get_title() == f"training on A, step {STEPS}: A 100% right"


def test_plot_losses_draws_both_curves_and_the_start_of_b(record):
    ax = toy.plot_losses(record)
    lines = {l.get_label(): l for l in ax.get_lines()}
    np.testing.assert_allclose(lines["loss on task A"].get_ydata(), record.loss_a.numpy())
    np.testing.assert_allclose(lines["loss on task B"].get_ydata(), record.loss_b.numpy())
    assert any(list(l.get_xdata()) == [STEPS, STEPS] for l in ax.get_lines()), "a line where B begins"
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    ax = toy.plot_losses(record, i=STEPS + 10, log=True)
    assert ax.get_yscale() == "log"
    solid = next(l for l in ax.get_lines() if l.get_label() == "loss on task A")
    assert len(solid.get_xdata()) == STEPS + 11, "solid up to the chosen step, faded after it"


def test_loss_landscape_puts_the_three_weights_in_its_plane(record, landscape):
    assert landscape.loss_a.shape == (11, 11) and landscape.loss_b.shape == (11, 11)
    assert landscape.path.shape == (record.n_snapshots, 2)
    np.testing.assert_allclose(landscape.path[0], [0, 0], atol=1e-5)
    dist_a = (record.params[record.b_start] - record.params[0]).norm().item()
    np.testing.assert_allclose(landscape.path[record.b_start], [dist_a, 0], atol=1e-4)
    dist_b = (record.params[-1] - record.params[0]).norm().item()
    assert np.linalg.norm(landscape.path[-1]) == pytest.approx(dist_b, rel=1e-4), "after-B lies in the plane"
    assert landscape.alphas.min() < 0 < dist_a < landscape.alphas.max()


def test_loss_landscape_values_are_the_losses_of_those_weights(record, landscape):
    origin, basis = toy._plane_basis(record)
    torch.testing.assert_close(basis @ basis.T, torch.eye(2), atol=1e-5, rtol=0)
    j, k = 3, 7  # grid point (alpha index k, beta index j)
    theta = origin + float(landscape.alphas[k]) * basis[0] + float(landscape.betas[j]) * basis[1]
    want_a = toy.losses_at(record.model, theta[None], record.task_a)[0].item()
    want_b = toy.losses_at(record.model, theta[None], record.task_b)[0].item()
    assert landscape.loss_a[j, k] == pytest.approx(want_a, rel=1e-4)
    assert landscape.loss_b[j, k] == pytest.approx(want_b, rel=1e-4)


def test_loss_landscape_needs_a_plane(record):
    flat = record.params.clone()
    flat[-1] = flat[0] + 2 * (flat[record.b_start] - flat[0])  # after-B on the line through start and after-A
    line = toy.Record(record.model, record.task_a, record.task_b, flat, record.loss_a, record.loss_b,
                      record.acc_a, record.acc_b, record.b_start)
    with pytest.raises(ValueError, match="one line"):
        toy.loss_landscape(line, n=5)


def test_plot_landscape_shows_both_losses_with_the_path(record, landscape):
    fig = toy.plot_landscape(landscape, record.b_start)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["Loss on task A in a slice of weight space",
                                                 "Loss on task B in a slice of weight space"]
    labels = [l.get_label() for l in panels[0].get_lines()]
    assert "training on A" in labels and "training on B" in labels
    assert len(fig.axes) == 4, "two panels, each with its colour bar"
    with pytest.raises(ValueError, match="which"):
        toy.plot_landscape_panel(landscape, record.b_start, which="C")


def test_draw_step_returns_a_figure_whose_content_follows_the_step(record, landscape):
    early, late = toy.draw_step(record, record.b_start), toy.draw_step(record, record.n_snapshots - 1)
    assert isinstance(early, plt.Figure)
    assert early._suptitle.get_text().startswith(f"training on A, step {STEPS}: task A loss")
    assert late._suptitle.get_text().startswith(f"training on B, step {STEPS}: task A loss")
    assert not np.array_equal(_pixels(early), _pixels(late))
    assert len(toy.draw_step(record, 0).axes) == 2
    assert len(toy.draw_step(record, 5, landscape).axes) == 4  # boundary, losses, landscape and its colour bar
    with pytest.raises(IndexError):
        toy.draw_step(record, record.n_snapshots)


def test_the_slider_callback_is_a_plain_function(record, landscape):
    def draw(i):
        return toy.draw_step(record, i, landscape)

    box = widgets.scrubber(record.n_snapshots, draw, start=record.b_start,
                           step_labels=lambda i: toy.step_label(record, i))
    slider = box.children[0].children[0]
    assert slider.max == record.n_snapshots - 1 and slider.value == record.b_start
    a, b = draw(record.b_start + 1), draw(record.b_start + 60)
    assert not np.array_equal(_pixels(a), _pixels(b))
    assert a._suptitle.get_text() != b._suptitle.get_text()
