"""Task adapters: a frozen base and one low-rank adapter per task give exactly zero forgetting; see lesson 06."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cfcourse import cli, config, data, train
from cfcourse.models import MLP, MultiHeadMLP, forward
from cfcourse.strategies import STRATEGIES, make_strategy
from cfcourse.strategies.isolation import (ADAPTERS, LowRankAdapter, TaskAdapters, adaptable_linears,
                                           adapter_parameter_count)

TRAIN, TEST = 3000, 600  # of all MNIST digits: about 600 training digits per split-MNIST task
HIDDEN = (64, 32)
LR = 0.05


@pytest.fixture(scope="module")
def tasks():
    return data.split_mnist(3, "task", train_size=TRAIN, test_size=TEST)


def _model(n_heads: int = 3, hidden=HIDDEN, seed: int = 0) -> MultiHeadMLP:
    config.set_seed(seed)
    return MultiHeadMLP(hidden=hidden, n_heads=n_heads, head_size=2)


def _base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that is not an adapter, cloned."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if f".{ADAPTERS}." not in k}


def _run(tasks, strategy, model=None, on_stage=None, epochs: int = 4):
    model = model or _model(len(tasks))
    result = train.run_tasks(model, tasks, strategy, train.sgd(LR), epochs, seed=0, progress=False,
                             on_stage=on_stage)
    return model, result.acc_matrix


@pytest.fixture(scope="module")
def adapted(tasks):
    """One adapters run over three real split-MNIST tasks, with snapshots taken after each task."""
    snaps = []
    strategy = TaskAdapters(rank=4)

    def snapshot(t, acc):
        snaps.append({"base": _base_weights(model), "accs": [train.evaluate(model, task) for task in tasks],
                      "adapters": {k: v.detach().clone() for k, v in model.named_parameters()
                                   if f".{ADAPTERS}." in k and ".next." not in k}})
    model = _model(len(tasks))
    model, acc = _run(tasks, strategy, model, on_stage=snapshot)
    return model, strategy, acc, snaps


# --- the science: nothing old moves ---------------------------------------------------------------

def test_base_weights_are_bitwise_unchanged_after_the_first_task(adapted):
    model, strategy, acc, snaps = adapted
    after_task1 = snaps[0]["base"]
    for later in snaps[1:]:
        for name, w in after_task1.items():
            if name.startswith("heads."):
                continue  # the shared output layer also holds the later tasks' own heads
            assert torch.equal(w, later["base"][name]), f"{name} changed after task 1"
    heads_now = model.heads.weight.detach()
    assert torch.equal(heads_now[:2], after_task1["heads.weight"][:2])  # task 1's head: rows 0-1
    assert torch.equal(model.heads.bias.detach()[:2], after_task1["heads.bias"][:2])
    assert not torch.equal(heads_now[2:4], after_task1["heads.weight"][2:4])  # task 2's head learned
    assert all(not p.requires_grad for name, p in model.named_parameters() if name.startswith("body.")
               and f".{ADAPTERS}." not in name)


def test_old_tasks_accuracy_is_unchanged_to_the_digit(adapted, tasks):
    model, strategy, acc, snaps = adapted
    R = acc.R
    for j in range(len(tasks)):
        for i in range(j + 1, len(tasks)):
            assert R[i, j] == R[j, j], f"task {j + 1}: {R[j, j]} after its training, {R[i, j]} after task {i + 1}"
    assert acc.bwt == 0.0 and acc.forgetting == [0.0, 0.0]
    for j in range(len(tasks)):  # the correct counts themselves, not only the rounded matrix
        assert snaps[-1]["accs"][j] == snaps[j]["accs"][j]
    assert [train.evaluate(model, task) for task in tasks] == snaps[-1]["accs"]  # and still, after the run


def test_earlier_adapters_are_bitwise_unchanged_by_later_tasks(adapted):
    model, strategy, acc, snaps = adapted
    task2 = snaps[1]["adapters"]
    assert task2 and all(".1." in k for k in task2)  # task 2 (id 1) has its adapter after its training
    for name, w in task2.items():
        assert torch.equal(w, snaps[2]["adapters"][name])
    assert strategy.tasks == [1, 2] and strategy.base_task == 0


def test_each_later_task_is_learned_through_its_adapter(adapted, tasks):
    model, strategy, acc, snaps = adapted
    for t in (1, 2):
        assert acc.R[t, t] > 0.9, f"task {t + 1} reached only {acc.R[t, t]:.1%}"
        for layer in strategy.layers:
            assert strategy.adapter(layer, t).B.abs().sum() > 0  # B started at zero and learned


def test_adapters_learn_new_tasks_better_than_a_frozen_body():
    tasks = data.split_mnist(3, "task", train_size=4 * TRAIN, test_size=TEST)  # more steps: a head alone is slow
    _, frozen = _run(tasks, make_strategy("freeze"))
    _, adapters = _run(tasks, make_strategy("adapters", rank=4))
    new_frozen, new_adapters = frozen.R.diagonal()[1:].mean(), adapters.R.diagonal()[1:].mean()
    assert new_adapters > 0.9 and new_adapters > new_frozen + 0.1, (new_adapters, new_frozen)
    for acc in (frozen, adapters):  # both keep the old tasks exactly
        assert (acc.R[2, :2] == acc.R.diagonal()[:2]).all() and acc.R[1, 0] == acc.R[0, 0]


# --- adapters in detail ---------------------------------------------------------------------------

def test_adapter_parameter_count_is_rank_times_in_plus_out(adapted):
    model, strategy, acc, snaps = adapted
    r, (h1, h2) = 4, HIDDEN
    want = r * (784 + h1) + r * (h1 + h2)
    assert adapter_parameter_count(strategy.layers, r) == want
    for t in (1, 2):
        assert sum(p.numel() for p in strategy.adapter_parameters(t)) == want
        assert strategy.param_counts[t] == want + 2 * (h2 + 1)  # plus the task's own head (2 outputs)
        assert f"task {t + 1}: trains {want + 2 * (h2 + 1):,} parameters (rank-4 adapters on 2 layers" \
               in strategy.describe(t)
    total = sum(p.numel() for p in MultiHeadMLP(hidden=HIDDEN, n_heads=3).parameters())
    assert strategy.base_parameter_count() == total == strategy.param_counts[0]
    assert adapter_parameter_count([nn.Linear(784, 400), nn.Linear(400, 400)], 8) == 8 * 1984


def test_a_new_adapter_starts_as_the_identity_and_its_weight_change_has_rank_r():
    torch.manual_seed(0)
    layer = LowRankAdapter(20, 12, rank=3, alpha=6.0)
    x = torch.randn(5, 20)
    assert torch.equal(layer(x), torch.zeros(5, 12))  # B = 0: no change at the start
    assert layer.scale == pytest.approx(6.0 / 3 ** 0.5)
    with torch.no_grad():
        layer.B.normal_()
    assert torch.allclose(layer(x), x @ layer.delta_weight().T, atol=1e-5)
    assert layer.delta_weight().shape == (12, 20) and torch.linalg.matrix_rank(layer.delta_weight()) == 3


def test_verbose_prints_each_tasks_parameter_count(tasks, capsys):
    _run(tasks[:2], TaskAdapters(rank=2, verbose=True), _model(2), epochs=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("task 1: trains") and "(the whole model), 100.0% of the model's" in out[0]
    want = 2 * (784 + 64) + 2 * (64 + 32) + 2 * 33
    assert out[1].startswith(f"task 2: trains {want:,} parameters (rank-2 adapters on 2 layers + its head)")


def test_per_sample_task_ids_pick_each_samples_adapter(adapted, tasks):
    model, strategy, acc, snaps = adapted
    x = data.to_float(torch.cat([task.test_x[:4] for task in tasks]))  # (12, 784)
    ids = torch.arange(3).repeat_interleave(4)
    with torch.no_grad():
        mixed = forward(model, x, ids)
        one_by_one = torch.cat([forward(model, x[ids == t], t) for t in range(3)])
        by_keyword = model(x, task_id=ids)
    assert torch.allclose(mixed, one_by_one, atol=1e-6) and torch.equal(mixed, by_keyword)


def test_a_part_of_the_model_called_without_a_task_id_is_an_error_not_a_guess(adapted, tasks):
    model, strategy, acc, snaps = adapted
    x = data.to_float(tasks[1].test_x[:4])
    with torch.no_grad():
        model(x, 1)  # the whole model: its task id picks the adapter ...
        with pytest.raises(RuntimeError, match=r"called without a task id.* as model\(x, task_id\)"):
            model.body(x)  # ... and is not reused by a later call of its body alone


def test_adaptable_linears_skip_the_output_layer_of_any_module():
    assert list(adaptable_linears(MultiHeadMLP(hidden=(8, 8)))) == ["body.0", "body.2"]
    assert list(adaptable_linears(MLP(hidden=(8,)))) == ["body.0"]
    seq = nn.Sequential(nn.Linear(784, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 10)))
    assert list(adaptable_linears(seq)) == ["0", "2.0"]


class TwoHeads(nn.Module):
    """A multi-head module that is not a MultiHeadMLP: a plain body and one Linear head per task."""

    multi_head = True

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.ModuleList([nn.Linear(32, 2), nn.Linear(32, 2)])

    def forward(self, x, task_id):
        return self.head[int(task_id)](self.body(x))


def test_works_on_any_multi_head_module(tasks):
    config.set_seed(0)
    model = TwoHeads()
    model, acc = _run(tasks[:2], TaskAdapters(rank=2), model)
    assert list(adaptable_linears(model)) == ["body.0", "body.2"]
    assert acc.R[1, 0] == acc.R[0, 0] and acc.R[1, 1] > 0.9


def test_remove_gives_back_the_base_model(adapted, tasks):
    config.set_seed(0)
    model, strategy = _model(2), TaskAdapters(rank=2)
    _run(tasks[:2], strategy, model, epochs=1)
    x = data.to_float(tasks[1].test_x[:8])
    with torch.no_grad():
        adapted_out = model(x, 1)
        strategy.remove()
        base_out = model(x, 1)
    assert not torch.allclose(adapted_out, base_out)
    assert not hasattr(model.body[0], ADAPTERS) and not model._forward_pre_hooks and not model.body[0]._forward_hooks


# --- refusals and guards --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"rank": 0}, r"adapters: rank must be >= 1 \(default 8\), got 0"),
    ({"rank": -3}, r"adapters: rank must be >= 1 \(default 8\), got -3"),
    ({"rank": "two"}, r"adapters: rank must be an int, got 'two'"),
    ({"adapter_alpha": 0}, r"adapters: adapter_alpha must be > 0.0 \(default 12.0\), got 0.0"),
    ({"adapter_alpha": "nan"}, r"adapters: adapter_alpha must be a finite number, got nan"),
    ({"alpha": 1}, r"adapters does not take alpha; its hyperparameters: rank, adapter_alpha"),
])
def test_hparams_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_strategy("adapters", **kwargs)


def test_registered_and_built_by_name():
    assert STRATEGIES["adapters"] is TaskAdapters
    s = make_strategy("adapters", rank="4")
    assert isinstance(s, TaskAdapters) and s.rank == 4 and repr(s) == "TaskAdapters(rank=4, adapter_alpha=12.0)"


def test_rank_above_a_layers_size_is_refused(tasks):
    with pytest.raises(ValueError, match=r"rank must be at most min\(in, out\) = 32 of layer body.2 \(64 -> 32\), "
                                         r"got 40"):
        _run(tasks, TaskAdapters(rank=40))


def test_a_single_head_model_is_refused_with_what_to_do():
    tasks = data.split_mnist(2, "domain", train_size=TRAIN, test_size=TEST)
    want = r"called without a task id .*MultiHeadMLP \(task-incremental learning, --scenario task\)"
    with pytest.raises(ValueError, match=want):
        _run(tasks, TaskAdapters(), MLP(hidden=HIDDEN, out_features=2))


def test_a_model_without_hidden_layers_is_refused(tasks):
    with pytest.raises(ValueError, match="no nn.Linear layer outside its output layer"):
        _run(tasks, TaskAdapters(rank=1), MultiHeadMLP(hidden=(), n_heads=3))


def test_one_strategy_serves_one_model_and_each_task_once(tasks):
    strategy = TaskAdapters(rank=2)
    model = _model(3)
    _run(tasks[:1], strategy, model, epochs=1)
    with pytest.raises(ValueError, match="another model"):
        strategy.before_task(_model(3), tasks[1])
    with pytest.raises(ValueError, match="task 1 was trained already"):
        strategy.before_task(model, tasks[0])


def test_an_optimiser_made_too_early_is_an_error_not_a_silent_no_op(tasks):
    model, strategy = _model(2), TaskAdapters(rank=2)
    early = train.sgd(LR)(model.parameters())  # made before the adapters exist
    train.train_task(model, tasks, 0, early, strategy, progress=False)
    with pytest.raises(RuntimeError, match="optimiser does not hold this task's adapter"):
        train.train_task(model, tasks, 1, early, strategy, progress=False)


def test_divergence_stops_before_it_reaches_the_old_tasks(tasks):
    model, strategy = _model(2), TaskAdapters(rank=2, adapter_alpha=1e30)
    train.train_task(model, tasks, 0, train.sgd(LR)(model.parameters()), strategy, progress=False)
    heads = model.heads.weight.detach().clone()
    acc = train.evaluate(model, tasks[0])
    with pytest.raises(RuntimeError, match=r"diverged on task 2 .* lower the learning rate or adapter_alpha"):
        train.train_task(model, tasks, 1, train.sgd(LR)(model.parameters()), strategy, progress=False)
    assert torch.equal(model.heads.weight[:2], heads[:2]) and train.evaluate(model, tasks[0]) == acc


# --- the runner -----------------------------------------------------------------------------------

RUN = ["run", "split-mnist", "--tasks", "3", "--train-size", str(TRAIN), "--test-size", str(TEST),
       "--hidden", "64", "--lr", "0.05", "--epochs", "4"]


def test_runner_runs_adapters_with_zero_forgetting(capsys):
    assert cli.main(RUN + ["--scenario", "task", "--strategy", "adapters", "--rank", "4", "--adapter-alpha", "12",
                           "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "adapters" and out["hparams"] == {"rank": 4, "adapter_alpha": 12.0}
    R = out["acc_matrix"]
    assert R[1][0] == R[2][0] == R[0][0] and R[2][1] == R[1][1]
    assert out["bwt"] == 0.0 and min(R[t][t] for t in range(3)) > 0.9


def test_runner_refuses_adapters_without_task_ids_and_bad_ranks(capsys):
    assert cli.main(RUN + ["--scenario", "domain", "--strategy", "adapters"]) == 2
    assert "MultiHeadMLP" in capsys.readouterr().err
    assert cli.main(RUN + ["--scenario", "task", "--strategy", "adapters", "--rank", "0"]) == 2
    assert "adapters: rank must be >= 1" in capsys.readouterr().err
    assert cli.main(RUN + ["--scenario", "task", "--strategy", "adapters", "--rank", "100"]) == 2
    assert "rank must be at most min(in, out) = 64" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # a usage error: exit 2 with the usage line
        cli.main(RUN + ["--scenario", "task", "--strategy", "naive", "--rank", "4"])
    assert info.value.code == 2 and "--rank applies to adapters, not to --strategy naive" in capsys.readouterr().err
