"""Strategies: the shared hooks, naive and joint training sets, and building a strategy by name."""
from __future__ import annotations

import re

import pytest
import torch

from cfcourse import data, strategies
from cfcourse.models import MLP


def _task(task_id: int, n: int, fill: int) -> data.Task:
    x = torch.full((n, 784), fill, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return data.Task(f"t{task_id}", task_id, x, y, x[:2], y[:2], tuple(range(10)))


@pytest.fixture
def tasks():
    return [_task(0, 4, 10), _task(1, 3, 20), _task(2, 5, 30)]


def test_base_hooks_change_nothing(tasks):
    s = strategies.Strategy()
    model = MLP(hidden=(4,))
    x, y, ids = torch.rand(2, 784), torch.tensor([1, 2]), 0
    assert s.transform_batch(x, y, ids) == (x, y, ids)
    assert s.penalty(model, x, ids) == 0.0
    assert s.before_task(model, tasks[0]) is None and s.after_task(model, tasks[0]) is None
    assert s.before_step(model) is None and s.after_step(model) is None


def test_hparams_are_checked_by_name_type_and_range():
    class Toy(strategies.Strategy):
        name = "toy"
        hparams = (strategies.HParam("strength", float, 1.0, low=0.0, help="how strong"),
                   strategies.HParam("mode", str, "a", choices=("a", "b")))
    assert Toy().strength == 1.0 and Toy(strength="2.5").strength == 2.5
    assert repr(Toy(mode="b")) == "Toy(strength=1.0, mode='b')"
    with pytest.raises(ValueError, match=r"toy: strength must be >= 0.0 \(default 1.0\), got -1.0"):
        Toy(strength=-1)
    with pytest.raises(ValueError, match=r"toy: strength must be a float, got 'x'"):
        Toy(strength="x")
    with pytest.raises(ValueError, match=r"toy: mode must be one of a, b"):
        Toy(mode="c")
    with pytest.raises(ValueError, match=r"toy does not take size; its hyperparameters: strength, mode"):
        Toy(size=3)


@pytest.mark.parametrize("hparam, inside, outside, text", [
    (strategies.HParam("r", float, 0.5, low=0.0, high=1.0, high_open=True), [0.0, 0.999], [1.0, -0.1], "in [0.0, 1.0)"),
    (strategies.HParam("t", float, 2.0, low=0.0, low_open=True), [1e-9, 50.0], [0.0, -2.0], "> 0.0"),
    (strategies.HParam("g", float, 0.5, low=0.0, high=1.0, low_open=True), [1.0, 0.01], [0.0, 1.01], "in (0.0, 1.0]"),
    (strategies.HParam("c", float, 0.5, high=1.0, high_open=True), [-5.0, 0.9], [1.0, 2.0], "< 1.0"),
    (strategies.HParam("n", int, 1, low=1), [1, 7], [0, -1], ">= 1"),
])
def test_bounds_open_or_closed_are_enforced_and_described(hparam, inside, outside, text):
    for value in inside:
        assert hparam.check("toy", value) == value
    for value in outside:
        with pytest.raises(ValueError, match=rf"^toy: {hparam.name} must be {re.escape(text)} \(default "):
            hparam.check("toy", value)


def test_open_bound_reason_is_shown():
    h = strategies.HParam("xi", float, 0.1, low=0.0, low_open=True, why="it keeps omega finite")
    with pytest.raises(ValueError, match=r"^toy: xi must be > 0.0 \(it keeps omega finite; default 0.1\), got 0.0$"):
        h.check("toy", 0)


@pytest.mark.parametrize("name", sorted(strategies.STRATEGIES))
def test_every_float_hyperparameter_refuses_nan_and_infinity(name):
    for h in strategies.STRATEGIES[name].hparams:
        if h.type is float:
            for bad in ("nan", "inf", "-inf", float("nan")):
                with pytest.raises(ValueError, match=rf"^{name}: {h.name} must be a finite number, got "):
                    strategies.make_strategy(name, **{h.name: bad})
        if h.type is int:
            with pytest.raises(ValueError, match=rf"^{name}: {h.name} must be an int, got inf$"):
                strategies.make_strategy(name, **{h.name: float("inf")})


@pytest.mark.parametrize("t", [0, 1, 2])
def test_naive_trains_on_the_current_task_only(tasks, t):
    x, y, ids = strategies.Naive().training_set(tasks, t)
    assert x is tasks[t].train_x and y is tasks[t].train_y and ids is None


def test_joint_concatenates_all_seen_tasks_with_per_sample_ids(tasks):
    joint = strategies.Joint()
    x, y, ids = joint.training_set(tasks, 0)
    assert torch.equal(x, tasks[0].train_x) and torch.equal(ids, torch.zeros(4, dtype=torch.long))
    x, y, ids = joint.training_set(tasks, 2)
    assert x.shape == (12, 784) and x.dtype == torch.uint8
    assert torch.equal(x, torch.cat([t.train_x for t in tasks]))
    assert torch.equal(y, torch.cat([t.train_y for t in tasks]))
    assert ids.tolist() == [0] * 4 + [1] * 3 + [2] * 5
    assert ids.dtype == torch.int64
    assert x[ids == 1].unique().tolist() == [20]  # each id sits next to its own task's samples


def test_joint_on_real_split_mnist_keeps_task_ids():
    split = data.split_mnist(3, "task", train_size=1500, test_size=300)
    x, y, ids = strategies.Joint().training_set(split, 1)
    assert len(y) == len(split[0].train_y) + len(split[1].train_y)
    assert set(y.tolist()) == {0, 1}
    assert ids.bincount().tolist() == [len(split[0].train_y), len(split[1].train_y)]


def test_make_strategy_by_name():
    assert isinstance(strategies.make_strategy("naive"), strategies.Naive)
    assert isinstance(strategies.make_strategy("joint"), strategies.Joint)
    for name, cls in strategies.STRATEGIES.items():
        assert cls.name == name and issubclass(cls, strategies.Strategy)


def test_make_strategy_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown strategy 'ewc2'; choose one of .*joint.*naive"):
        strategies.make_strategy("ewc2")


def test_repr():
    assert repr(strategies.Naive()) == "Naive()" and repr(strategies.Joint()) == "Joint()"
