"""Lessons 03 and 04: their exercise checks against the package, the known mistakes, and the new plots."""
from __future__ import annotations


import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cfcourse import plots  # noqa: E402
from cfcourse.data import Task, split_mnist, to_float  # noqa: E402
from cfcourse.exercises import check, lesson03, lesson04  # noqa: E402
from cfcourse.metrics import AccuracyMatrix  # noqa: E402
from cfcourse.models import MLP  # noqa: E402
from cfcourse.strategies import make_strategy  # noqa: E402
from cfcourse.strategies.regularization import diagonal_fisher, quadratic_penalty, snapshot  # noqa: E402

EXERCISES = {"predict_within_task": "03_three_scenarios.ipynb", "fisher_diagonal": "04_regularisation.ipynb",
             "ewc_penalty": "04_regularisation.ipynb"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def stub(*args):
    raise NotImplementedError("Exercise: not written yet")


def small_model(seed: int = 0, hidden=(16,)) -> MLP:
    torch.manual_seed(seed)
    return MLP(hidden=hidden)


@pytest.fixture(scope="module")
def digits_task(course_data) -> Task:
    """Task 2 of real split MNIST (digits 2 and 3), 400 training digits."""
    task = split_mnist(2, "class", train_size=2_000, test_size=500)[1]
    return Task(task.name, 0, task.train_x[:400], task.train_y[:400], task.test_x, task.test_y, task.classes)


# --- every exercise: the reference passes, the stub and every known mistake fail --------------------

@pytest.mark.parametrize("name", EXERCISES)
def test_reference_passes_and_stub_is_not_done(name):
    exercise = getattr(check, name)
    assert exercise.verify(exercise.reference).ok
    verdict = exercise.verify(stub)
    assert not verdict.ok and verdict.not_done


NAMED = {"predict_within_task": lesson03.MISTAKES, "fisher_diagonal": lesson04.FISHER_MISTAKES,
         "ewc_penalty": lesson04.PENALTY_MISTAKES}


@pytest.mark.parametrize("name", EXERCISES)
def test_every_known_mistake_is_caught_and_explained(name):
    exercise = getattr(check, name)
    assert len(exercise.wrong_answers) >= 3
    for wrong, _ in NAMED[name]:
        verdict = exercise.verify(wrong)
        assert not verdict.ok and not verdict.not_done, wrong.__name__
        assert "looks like" in verdict.message or "plain number" in verdict.message, (wrong.__name__, verdict.message)


@pytest.mark.parametrize("name", EXERCISES)
def test_a_wrong_answer_goes_on_with_the_reference(name, capsys):
    exercise = getattr(check, name)
    assert exercise(exercise.wrong_answers[0]) is exercise.reference
    assert "Hint" in capsys.readouterr().out


# --- lesson 03: the prediction within a task ---------------------------------------------------------

def test_predict_within_task_agrees_with_masking_to_minus_infinity():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=gen) * 5 - 3
    for classes in ((0, 1), (8, 9), (2, 5, 7)):
        mask = torch.ones(10, dtype=torch.bool)
        mask[list(classes)] = False
        want = logits.masked_fill(mask, float("-inf")).argmax(1)
        assert torch.equal(lesson03.predict_within_task(logits, classes), want)


def test_predict_within_task_hand_made():
    logits = torch.tensor([[9.0, 0.0, -2.0, -1.0], [0.0, 9.0, -1.0, -3.0]])
    assert lesson03.predict_within_task(logits, (2, 3)).tolist() == [3, 2]
    assert lesson03.predict_within_task(logits, (0, 1)).tolist() == [0, 1]


def test_zeroing_the_other_logits_is_named():
    verdict = check.predict_within_task.verify(lesson03.MISTAKES[2][0])
    assert "-infinity" in verdict.message


# --- lesson 04: the Fisher and the EWC penalty are the package's --------------------------------------

def test_fisher_reference_is_the_package_diagonal_fisher(digits_task):
    model, n = small_model(1), 50
    yours = lesson04.fisher_diagonal(model, to_float(digits_task.train_x[:n]), digits_task.train_y[:n])
    first = Task("first", 0, digits_task.train_x[:n], digits_task.train_y[:n], digits_task.test_x,
                 digits_task.test_y, digits_task.classes)
    package = diagonal_fisher(model, first, n_samples=n)  # every one of the n digits, in its own order
    assert set(yours) == set(package) == {name for name, _ in model.named_parameters()}
    for name in yours:
        torch.testing.assert_close(yours[name], package[name])


def test_fisher_reference_is_the_mean_of_squared_per_sample_gradients(digits_task):
    model, n = small_model(2, hidden=(8, 8)), 7
    x, y = to_float(digits_task.train_x[:n]), digits_task.train_y[:n]
    want = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for i in range(n):
        grads = torch.autograd.grad(-F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        for name, g in zip(want, grads):
            want[name] += g ** 2 / n
    got = lesson04.fisher_diagonal(model, x, y)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-9)
        assert (got[name] >= 0).all()


def test_fisher_reference_refuses_inputs_that_are_not_digits():
    model = small_model()
    with pytest.raises(ValueError, match="to_float"):
        lesson04.fisher_diagonal(model, torch.rand(3, 784), torch.tensor([0, 1, 2]))


def test_fisher_check_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check.fisher_diagonal.verify(lesson04.fisher_diagonal)
    check.ewc_penalty.verify(lesson04.ewc_penalty)
    assert torch.equal(torch.rand(3), expected)


def test_ewc_penalty_reference_is_what_the_ewc_strategy_adds(digits_task):
    model = small_model(3)
    strategy = make_strategy("ewc", ewc_lambda=70.0, fisher_samples=100)
    strategy.after_task(model, digits_task)
    fisher, anchor = strategy.memories[0]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    want = strategy.penalty(model, None, None)
    got = lesson04.ewc_penalty(model, anchor, fisher, 70.0)
    torch.testing.assert_close(got, want)
    assert got.item() > 0 and got.requires_grad


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_distance():
    model = small_model(4)
    anchor = snapshot(model)
    fisher = {name: torch.rand_like(p) for name, p in anchor.items()}
    assert lesson04.ewc_penalty(model, anchor, fisher, 10.0).item() == 0.0
    direction = {name: torch.randn_like(p) for name, p in anchor.items()}
    values = []
    for step in (0.01, 0.1, 1.0):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(anchor[name] + step * direction[name])
        values.append(lesson04.ewc_penalty(model, anchor, fisher, 10.0).item())
        assert values[-1] == pytest.approx(5.0 * quadratic_penalty(model, anchor, fisher).item())
    assert 0 < values[0] < values[1] < values[2]
    assert values[2] / values[1] == pytest.approx(100.0, rel=1e-3)  # quadratic in the distance


def test_a_detached_penalty_is_refused_although_its_value_is_right():
    verdict = check.ewc_penalty.verify(lambda m, a, f, lam: lesson04.ewc_penalty(m, a, f, lam).detach())
    assert not verdict.ok and "the value is right" in verdict.message and "cut off from the weights" in verdict.message
    verdict = check.ewc_penalty.verify(lambda m, a, f, lam: lesson04.ewc_penalty(m, a, f, lam).item())
    assert not verdict.ok and "plain number" in verdict.message


def test_a_learner_loop_fisher_passes():
    def fisher_diagonal(model, x, y):
        fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
        for i in range(len(y)):
            model.zero_grad()
            (-F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])).backward()
            for name, p in model.named_parameters():
                fisher[name] += p.grad ** 2
        return {name: f / len(y) for name, f in fisher.items()}
    assert check.fisher_diagonal.verify(fisher_diagonal).ok


def test_fisher_answers_of_the_wrong_form_get_clear_messages():
    assert "dict" in check.fisher_diagonal.verify(lambda m, x, y: torch.zeros(3)).message
    assert "forget the `return`" in check.fisher_diagonal.verify(lambda m, x, y: None).message
    verdict = check.fisher_diagonal.verify(lambda m, x, y: {"w": torch.zeros(1)})
    assert "parameter names" in verdict.message


# --- the new plots ---------------------------------------------------------------------------------

def matrix(R) -> AccuracyMatrix:
    acc = AccuracyMatrix.from_array(np.asarray(R, dtype=float))
    acc.names = [f"digits {2 * j}/{2 * j + 1}" for j in range(acc.n_tasks)]
    return acc


def test_plot_final_accuracies_draws_one_bar_per_run_and_task():
    runs = {"task-IL": matrix([[0.9, 0.1], [0.8, 0.95]]), "class-IL": matrix([[0.99, 0.0], [0.0, 0.98]])}
    ax = plots.plot_final_accuracies(runs, title="final")
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == sorted([80.0, 95.0, 0.0, 98.0])
    assert ax.get_title() == "final"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["task 1\ndigits 0/1", "task 2\ndigits 2/3"]
    assert "task-IL (average 88%)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_final_accuracies_refuses_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plots.plot_final_accuracies({})
    with pytest.raises(ValueError, match="same number of tasks"):
        plots.plot_final_accuracies({"a": matrix([[0.5]]), "b": matrix([[0.5, 0.1], [0.4, 0.6]])})


def test_plot_predicted_labels_counts_each_label():
    predicted = torch.tensor([8, 9, 9, 8, 8, 1])
    ax = plots.plot_predicted_labels(predicted, true=torch.arange(6), title="after task 5")
    assert [p.get_height() for p in ax.patches] == [0, 1, 0, 0, 0, 0, 0, 0, 3, 2]
    assert ax.get_title() == "after task 5" and ax.get_xlabel() == "label (digit)"
    with pytest.raises(ValueError, match="0..9"):
        plots.plot_predicted_labels(torch.tensor([10]))


def test_plot_fisher_image_sums_over_hidden_units():
    fisher = torch.zeros(5, 784)
    fisher[:, 28 * 14 + 14] = 1.0  # every hidden unit reads the centre pixel
    ax = plots.plot_fisher_image(fisher, title="task 1")
    image = ax.get_images()[0].get_array()
    assert image.shape == (28, 28) and image[14, 14] == 5.0 and image.sum() == 5.0
    assert ax.get_title() == "task 1"
    assert plots.plot_fisher_image(fisher.sum(0)).get_images()[0].get_array()[14, 14] == 5.0
    with pytest.raises(ValueError, match="784"):
        plots.plot_fisher_image(torch.zeros(5, 100))


def test_plot_lambda_sweep_shows_acc_learning_and_bwt():
    sweep = [matrix([[0.9, 0.1], [0.6, 0.95]]), matrix([[0.9, 0.1], [0.85, 0.8]])]
    naive = matrix([[0.9, 0.1], [0.5, 0.97]])
    axes = plots.plot_lambda_sweep([1, 100], sweep, naive=naive, name="λ")
    acc_line, learning_line = axes[0].get_lines()[0], axes[0].get_lines()[2]
    np.testing.assert_allclose(acc_line.get_ydata(), [77.5, 82.5])
    np.testing.assert_allclose(learning_line.get_ydata(), [92.5, 85.0])
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), [-30.0, -5.0])
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["1", "100"]
    assert "λ" in axes[0].figure.get_suptitle()
    with pytest.raises(ValueError, match="one accuracy matrix per value"):
        plots.plot_lambda_sweep([1, 2], sweep[:1])


def test_current_task_loss_is_cross_entropy_with_the_other_outputs_masked_out():
    from cfcourse.strategies.labels_trick import current_task_loss
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(16, 10, generator=gen) * 3).requires_grad_(True)
    y = torch.tensor([7, 1] * 8)
    loss = current_task_loss(logits, y, (7, 1))
    masked = logits.masked_fill(~torch.isin(torch.arange(10), torch.tensor([1, 7])), float("-inf"))
    want = F.cross_entropy(masked, y)
    assert torch.allclose(loss, want)
    g, g_want = torch.autograd.grad(loss, logits)[0], torch.autograd.grad(want, logits)[0]
    assert torch.allclose(g, g_want) and g[:, [0, 2, 3, 4, 5, 6, 8, 9]].abs().max() == 0  # old outputs untouched
    with pytest.raises(ValueError, match=r"labels \[0\] are not among the task's classes \(2, 3\)"):
        current_task_loss(logits[:3], torch.tensor([2, 0, 3]), (2, 3))


def test_labels_trick_leaves_the_old_output_units_alone_in_class_il():
    from cfcourse.train import run_tasks, sgd
    tasks = split_mnist(2, "class", train_size=600, test_size=200)
    torch.manual_seed(0)
    model = MLP(hidden=(16,), out_features=10)
    run_tasks(model, tasks[:1], make_strategy("labels-trick"), sgd(0.05), 1, 64, progress=False)
    before = model.head.weight.detach().clone()
    run_tasks(model, tasks, make_strategy("labels-trick"), sgd(0.05), 1, 64, progress=False)  # tasks 1 and 2 again
    assert make_strategy("labels-trick").classes == ()
    untouched = [d for d in range(10) if d not in (0, 1, 2, 3)]
    assert torch.equal(model.head.weight[untouched], before[untouched])  # digits never trained keep their weights


def test_labels_trick_checks_its_exercise_against_the_package():
    from cfcourse.strategies.labels_trick import current_task_loss
    assert check.current_task_loss.reference is current_task_loss
