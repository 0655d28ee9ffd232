"""Training and evaluation loops on real permuted MNIST: learning, forgetting, curves, reproducibility, bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cfcourse import config, data, train
from cfcourse.models import MLP, MultiHeadMLP
from cfcourse.strategies import Joint, Naive, Strategy

TRAIN, TEST, BATCH = 3000, 1000, 128
STEPS = math.ceil(TRAIN / BATCH)  # 24 steps per task and epoch
LR = 0.1


@pytest.fixture(scope="module")
def tasks():
    return data.permuted_mnist(2, seed=0, train_size=TRAIN, test_size=TEST)


def _model(seed: int = 0, hidden=(100,)) -> nn.Module:
    config.set_seed(seed)
    return MLP(hidden=hidden)


def _run(tasks, strategy=None, seed=0, **kwargs):
    return train.run_tasks(_model(seed), tasks, strategy, train.sgd(LR, 0.9), seed=seed, progress=False, **kwargs)


@pytest.fixture(scope="module")
def naive_run(tasks):
    return _run(tasks, Naive())


# --- evaluate -------------------------------------------------------------------------------------

def test_evaluate_is_a_fraction_matching_a_manual_count(tasks):
    model = _model()
    model.train()
    acc = train.evaluate(model, tasks[0], batch_size=300)  # batches that do not divide the test set
    with torch.no_grad():
        want = (model(data.to_float(tasks[0].test_x)).argmax(1) == tasks[0].test_y).float().mean().item()
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert acc == pytest.approx(want, abs=1e-6)  # want is a float32 mean
    assert acc < 0.3  # untrained: near chance
    assert model.training, "evaluate must restore training mode"


def test_evaluate_limit_uses_the_first_samples(tasks):
    model = _model()
    acc = train.evaluate(model, tasks[0], limit=100)
    with torch.no_grad():
        want = (model(data.to_float(tasks[0].test_x[:100])).argmax(1) == tasks[0].test_y[:100]).sum().item() / 100
    assert acc == pytest.approx(want)
    assert train.evaluate_all(model, tasks, limit=100)[0] == pytest.approx(want)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        train.evaluate(model, tasks[0], batch_size=0)


# --- learning and forgetting ----------------------------------------------------------------------

def test_training_learns_a_real_task(naive_run):
    R = naive_run.acc_matrix.R
    baseline = naive_run.acc_matrix.baseline
    assert baseline[0] < 0.3  # untrained model: about chance (10%)
    assert R[0, 0] > 0.7, f"one epoch on 3000 real digits should reach well above chance, got {R[0, 0]:.1%}"
    assert R[1, 1] > 0.7


def test_naive_forgets_task_1(naive_run):
    R = naive_run.acc_matrix.R
    assert R[1, 0] < R[0, 0] - 0.1, f"task 1 went from {R[0, 0]:.1%} to {R[1, 0]:.1%}: expected forgetting"
    assert naive_run.acc_matrix.bwt < -0.1
    assert R[0, 1] < 0.3  # training on task 1 does not teach the permuted task 2


def test_joint_keeps_task_1_better_than_naive(tasks, naive_run):
    joint = _run(tasks, Joint())
    assert joint.acc_matrix.R[1, 0] > naive_run.acc_matrix.R[1, 0] + 0.05
    assert joint.acc_matrix.R[1, 1] > 0.7


def test_same_seed_gives_identical_results(tasks, naive_run):
    again = _run(tasks, Naive())
    assert np.array_equal(again.acc_matrix.R, naive_run.acc_matrix.R)  # bitwise equal
    assert np.array_equal(again.acc_matrix.baseline, naive_run.acc_matrix.baseline)


def test_another_seed_gives_other_results(tasks, naive_run):
    other = _run(tasks, Naive(), seed=1)
    assert not np.array_equal(other.acc_matrix.R, naive_run.acc_matrix.R)


def test_run_result_to_dict(naive_run):
    d = json.loads(json.dumps(naive_run.to_dict(), allow_nan=False))
    assert d["acc_matrix"] == [[round(v, 6) for v in row] for row in naive_run.acc_matrix.R.tolist()]
    assert d["wall_s"] > 0 and d["wall_s"] == round(naive_run.wall_s, 3)
    assert len(d["forgetting"]) == 1


def test_on_stage_is_called_after_each_task(tasks):
    seen = []
    _run(tasks[:2], on_stage=lambda t, acc: seen.append((t, acc.stage, acc.R[t].copy())))
    assert [(t, stage) for t, stage, _ in seen] == [(0, 0), (1, 1)]
    assert not np.isnan(seen[1][2]).any()


def test_multihead_joint_uses_per_sample_task_ids():
    split = data.split_mnist(2, "task", seed=0, train_size=2000, test_size=500)
    config.set_seed(0)
    model = MultiHeadMLP(hidden=(64,), n_heads=2, head_size=2)
    result = train.run_tasks(model, split, Joint(), train.sgd(0.05, 0.9), epochs=5, progress=False)
    R = result.acc_matrix.R
    assert R[1, 0] > 0.9 and R[1, 1] > 0.75  # 0 vs 1 and 2 vs 3 (chance 50%), each on its own head


# --- curves ---------------------------------------------------------------------------------------

def test_curves_record_every_eval_every_steps(tasks):
    result = _run(tasks, eval_every=6, curve_size=200)
    curves = result.curves
    assert curves.steps == [6, 12, 18, 24, 30, 36, 42, 48]
    assert curves.as_array().shape == (8, 2)
    assert curves.boundaries == [0, STEPS]
    acc = curves.as_array()
    assert np.all((acc * 200) == np.round(acc * 200))  # measured on curve_size=200 test digits
    assert acc[3, 0] > 0.6 and acc[-1, 0] < acc[3, 0]  # the drop of task 1 while task 2 trains


def test_train_task_records_into_given_curves(tasks):
    model = _model()
    curves = train.Curves()
    out = train.train_task(model, tasks, 0, torch.optim.SGD(model.parameters(), lr=LR), eval_every=12,
                           curve_size=100, curves=curves, progress=False)
    assert out is curves
    assert curves.steps == [12, 24] and curves.boundaries == [0]


@pytest.mark.parametrize("eval_every", [5, None])
def test_curve_boundaries_count_every_training_step(tasks, eval_every):
    """Each boundary is the step at which that task's training began: task 2 begins after task 1's 24 steps.

    Known bug (reported): train_task takes the start step from the last *recorded* point, so with
    eval_every=5 task 2 is said to start at step 20 (its points land at 25, 30, ... instead of 29, 34, ...),
    and with eval_every=None every boundary is 0.
    """
    curves = _run(tasks, eval_every=eval_every, curve_size=100).curves
    assert curves.boundaries == [0, STEPS]
    if eval_every:
        assert curves.steps == [5, 10, 15, 20, STEPS + 5, STEPS + 10, STEPS + 15, STEPS + 20]


# --- strategy hooks are all called ----------------------------------------------------------------

class Recorder(Strategy):
    """Records each hook call; freezes the model by zeroing gradients before each step."""

    def __init__(self):
        self.calls = []

    def before_task(self, model, task):
        self.calls.append(("before_task", task.task_id))

    def transform_batch(self, x, y, task_ids):
        self.calls.append(("transform_batch", len(y)))
        return x, y, task_ids

    def penalty(self, model, x, task_ids):
        self.calls.append(("penalty", len(x)))
        return torch.tensor(0.0)

    def before_step(self, model):
        self.calls.append(("before_step",))
        for p in model.parameters():
            p.grad.zero_()

    def after_step(self, model):
        self.calls.append(("after_step",))

    def after_task(self, model, task):
        self.calls.append(("after_task", task.task_id))


def test_every_hook_is_called_in_order(tasks):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    rec = Recorder()
    train.train_task(model, tasks, 1, torch.optim.SGD(model.parameters(), lr=LR), rec, progress=False)
    names = [c[0] for c in rec.calls]
    assert rec.calls[0] == ("before_task", 1) and rec.calls[-1] == ("after_task", 1)
    for hook in ("transform_batch", "penalty", "before_step", "after_step"):
        assert names.count(hook) == STEPS, hook
    assert rec.calls[1:5] == [("transform_batch", BATCH), ("penalty", BATCH), ("before_step",), ("after_step",)]
    assert ("transform_batch", TRAIN - (STEPS - 1) * BATCH) in rec.calls  # the last, smaller batch
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q), "before_step zeroed the gradients, so nothing may change"


def test_penalty_is_added_to_the_loss(tasks):
    class Huge(Strategy):
        def penalty(self, model, x, task_ids):  # pull every weight to zero, hard
            return 100.0 * sum((p ** 2).sum() for p in model.parameters())

    model = _model()
    train.train_task(model, tasks, 0, torch.optim.SGD(model.parameters(), lr=0.001), Huge(), progress=False)
    assert max(p.abs().max().item() for p in model.parameters()) < 0.05


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs must be a positive integer, got 0"),
    (dict(epochs=1.5), "epochs"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(batch_size=-128), "batch_size"),
    (dict(eval_every=0), "eval_every must be a positive integer or None, got 0"),
])
def test_bad_training_arguments(tasks, kwargs, match):
    model = _model()
    with pytest.raises(ValueError, match=match):
        train.run_tasks(model, tasks, progress=False, **kwargs)
    with pytest.raises(ValueError, match=match):
        train.train_task(model, tasks, 0, torch.optim.SGD(model.parameters(), lr=LR), progress=False, **kwargs)


def test_empty_task_list():
    with pytest.raises(ValueError, match="tasks is empty"):
        train.run_tasks(_model(), [], progress=False)


def test_sgd_factory_builds_a_fresh_optimiser_each_time():
    make = train.sgd(lr=0.03, momentum=0.5)
    model = _model()
    a, b = make(model.parameters()), make(model.parameters())
    assert a is not b and isinstance(a, torch.optim.SGD)
    assert a.param_groups[0]["lr"] == 0.03 and a.param_groups[0]["momentum"] == 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_joint_trains_on_cuda(tasks):
    """Known bug (reported): train_task indexes the CPU task-id tensor with a CUDA index tensor."""
    config.set_seed(0)
    model = MLP(hidden=(32,)).cuda()
    train.run_tasks(model, tasks, Joint(), progress=False)


def test_naive_trains_the_head_of_the_task_it_evaluates():
    """A task keeps its task_id wherever it sits in the list (a subset, or another order).

    Known bug (reported): train_task passes the list position `t` as the task id when the strategy gives no
    per-sample ids, while evaluate uses `task.task_id`; on split[1:] head 0 is trained and head 1 evaluated.
    """
    split = data.split_mnist(2, "task", seed=0, train_size=2000, test_size=500)
    config.set_seed(0)
    model = MultiHeadMLP(hidden=(64,), n_heads=2, head_size=2)
    seen_ids = []

    class Spy(Naive):
        def transform_batch(self, x, y, task_ids):
            seen_ids.append(int(task_ids) if not torch.is_tensor(task_ids) else task_ids.unique().tolist())
            return x, y, task_ids

    result = train.run_tasks(model, split[1:], Spy(), train.sgd(0.05, 0.9), progress=False)
    assert set(seen_ids) == {1}, "the batches of the task with task_id 1 must go through head 1"
    assert result.acc_matrix.R[0, 0] > 0.75  # 2 vs 3 learned (chance is 50%)
