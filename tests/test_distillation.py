"""Distillation and isolation: the LwF loss, its frozen teacher, and forgetting on real split MNIST; see lesson 06."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cfcourse import cli, config, data, train
from cfcourse.models import MLP, MultiHeadMLP, forward
from cfcourse.strategies import STRATEGIES, make_strategy
from cfcourse.strategies.distillation import LwF, distillation_loss, frozen_copy, head_logits, seen_distillation_loss
from cfcourse.strategies.isolation import Freeze, freeze_body, output_layer_names

TRAIN, TEST = 2000, 500  # of all MNIST digits: about 430 training digits per split-MNIST task
LR, EPOCHS = 0.1, 5  # enough for naive fine-tuning to wreck task 1 on some seeds, even with its own head


@pytest.fixture(scope="module")
def task_il():
    return data.split_mnist(2, "task", train_size=TRAIN, test_size=TEST)


@pytest.fixture(scope="module")
def class_il():
    return data.split_mnist(2, "class", train_size=TRAIN, test_size=TEST)


def _model(tasks, seed: int = 0) -> nn.Module:
    config.set_seed(seed)
    scenario = tasks[0].meta["scenario"]
    if scenario == "task":
        return MultiHeadMLP(hidden=(64,), n_heads=len(tasks), head_size=2)
    return MLP(hidden=(64,), out_features=10 if scenario == "class" else 2)


def _train(model, tasks, t, strategy, epochs=EPOCHS, seed=0, lr=LR):
    gen = torch.Generator().manual_seed(seed)
    train.train_task(model, tasks, t, train.sgd(lr)(model.parameters()), strategy, epochs, generator=gen,
                     progress=False)


def _batch(task, n=64):
    return data.to_float(task.train_x[:n])


# --- distillation_loss ----------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 5.0])
def test_distillation_loss_is_exactly_zero_when_nothing_changed(temperature):
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0)) * 3
    assert distillation_loss(logits, logits.clone(), temperature).item() == 0.0
    heads = torch.randn(16, 3, 2)  # (batch, heads, head_size): any leading shape
    assert distillation_loss(heads, heads.clone(), temperature).item() == 0.0


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 5.0])
def test_distillation_loss_is_positive_when_outputs_differ(temperature):
    gen = torch.Generator().manual_seed(1)
    old, new = torch.randn(16, 10, generator=gen), torch.randn(16, 10, generator=gen)
    assert distillation_loss(new, old, temperature).item() > 0


def test_distillation_loss_matches_the_formula_by_hand():
    # T = 1, old softmax (3/4, 1/4), new softmax (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    new, old = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    assert distillation_loss(new, old, 1.0).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    # Any T: T^2 * mean over samples of sum_c p_old log(p_old / p_new), with p = softmax(logits / T)
    gen = torch.Generator().manual_seed(2)
    new, old, T = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen), 3.0
    p, q = torch.softmax(old / T, 1), torch.softmax(new / T, 1)
    want = T ** 2 * (p * (p / q).log()).sum(1).mean()
    assert distillation_loss(new, old, T).item() == pytest.approx(want.item(), rel=1e-5)


def test_distillation_loss_has_the_gradient_of_hintons_soft_cross_entropy():
    """KL and cross-entropy with soft targets differ by a constant (the old outputs' entropy): same gradient."""
    gen = torch.Generator().manual_seed(3)
    old, T = torch.randn(6, 5, generator=gen), 2.0
    new_kl = torch.randn(6, 5, generator=gen).requires_grad_()
    new_ce = new_kl.detach().clone().requires_grad_()
    distillation_loss(new_kl, old, T).backward()
    soft_ce = -(torch.softmax(old / T, 1) * F.log_softmax(new_ce / T, 1)).sum(1).mean() * T ** 2
    soft_ce.backward()
    assert torch.allclose(new_kl.grad, new_ce.grad, atol=1e-6)


def test_gradient_flows_only_into_the_new_logits():
    gen = torch.Generator().manual_seed(4)
    new = torch.randn(8, 10, generator=gen).requires_grad_()
    old = torch.randn(8, 10, generator=gen).requires_grad_()
    distillation_loss(new, old, 2.0).backward()
    assert old.grad is None
    assert new.grad is not None and new.grad.abs().sum() > 0


def test_distillation_loss_refuses_bad_input():
    with pytest.raises(ValueError, match=r"same shape, got \(4, 10\) and \(4, 2\)"):
        distillation_loss(torch.zeros(4, 10), torch.zeros(4, 2), 2.0)
    with pytest.raises(ValueError, match=r"temperature must be a positive finite number \(try 2.0\), got 0"):
        distillation_loss(torch.zeros(4, 10), torch.zeros(4, 10), 0)


# --- the LwF strategy -----------------------------------------------------------------------------

def test_lwf_and_freeze_are_registered():
    assert STRATEGIES["lwf"] is LwF and STRATEGIES["freeze"] is Freeze
    assert repr(make_strategy("lwf")) == "LwF(lwf_alpha=1.0, temperature=2.0, outputs='all')"
    assert repr(make_strategy("freeze")) == "Freeze(freeze_after=1)"


def test_lwf_has_no_penalty_before_the_first_task_ends(task_il):
    model, lwf = _model(task_il), LwF()
    assert lwf.penalty(model, _batch(task_il[0]), 0) == 0.0


@pytest.mark.parametrize("scenario", ["task", "class", "domain"])
def test_lwf_penalty_is_zero_right_after_a_task_and_positive_once_the_model_moved(scenario):
    tasks = data.split_mnist(2, scenario, train_size=TRAIN, test_size=TEST)
    model, lwf = _model(tasks), LwF()
    _train(model, tasks, 0, lwf, epochs=1)  # ends with lwf.after_task: the old model is this model
    x = _batch(tasks[1])
    assert lwf.penalty(model, x, 1).item() == 0.0
    _train(model, tasks, 1, LwF(lwf_alpha=0.0), epochs=1)  # move the model without distillation
    assert lwf.penalty(model, x, 1).item() > 1e-4


def test_old_model_is_a_frozen_copy_that_training_never_changes(task_il):
    model, lwf = _model(task_il), LwF()
    _train(model, task_il, 0, lwf, epochs=1)
    old = lwf.old_model
    assert old is not model and not old.training
    assert all(not p.requires_grad for p in old.parameters())
    before = {k: v.clone() for k, v in old.state_dict().items()}
    _train(model, task_il, 1, lwf, epochs=2)
    assert lwf.old_model is not old  # a new copy after task 2 ...
    assert not old.training and all(p.grad is None for p in old.parameters())
    assert all(torch.equal(before[k], v) for k, v in old.state_dict().items())  # ... the old one never moved
    assert not any(torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("body"))
    assert not old._forward_hooks and not old.body._forward_hooks  # the copy carries no hook of the strategy
    assert not model._forward_hooks and not model.body._forward_hooks  # and the hook is gone after the task


def test_frozen_copy_leaves_the_original_trainable():
    model = MLP(hidden=(8,))
    model.train()
    old = frozen_copy(model)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), old.parameters()))


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_lwf_reuses_the_training_forward_pass_with_the_same_value_and_gradient(scenario):
    tasks = data.split_mnist(2, scenario, train_size=TRAIN, test_size=TEST)
    model, lwf = _model(tasks), LwF(temperature=3.0)
    _train(model, tasks, 0, lwf, epochs=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the model has moved away from the old one
    lwf.before_task(model, tasks[1])
    x = _batch(tasks[1])

    def penalty_and_grad(x_in, call_forward_first):
        model.zero_grad()
        if call_forward_first:
            forward(model, x_in, 1)  # as the training step does, just before the penalty
        pen = lwf.penalty(model, x_in, 1)
        pen.backward()
        return pen.item(), [p.grad.clone() for p in model.parameters()]

    reused, grads_reused = penalty_and_grad(x, True)
    fresh, grads_fresh = penalty_and_grad(x.clone(), False)
    assert reused > 0 and reused == pytest.approx(fresh, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_reused, grads_fresh))
    lwf.after_task(model, tasks[1])


def test_lwf_distils_previous_heads_only(task_il):
    tasks = data.split_mnist(3, "task", train_size=TRAIN, test_size=TEST)
    model, lwf = _model(tasks), LwF()
    _train(model, tasks, 0, lwf, epochs=1)
    assert lwf.old_heads == [0]
    x = _batch(tasks[1])
    with torch.no_grad():
        model.heads.weight[2:].add_(1.0)  # heads 1 and 2 (rows 2..5) belong to tasks not yet distilled
    assert lwf.penalty(model, x, 1).item() == 0.0
    with torch.no_grad():
        model.heads.weight[:2].add_(0.1 * torch.randn(2, 64))  # head 0: task 1's answers change
    assert lwf.penalty(model, x, 1).item() > 0
    assert head_logits(model, x, [0, 2]).shape == (64, 2, 2)


def test_head_logits_of_any_multi_head_module_match_the_fast_path():
    class Generic(nn.Module):  # a multi-head module that is not a MultiHeadMLP
        multi_head = True

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, task_id):
            return self.inner(x, task_id)

    config.set_seed(0)
    inner = MultiHeadMLP(hidden=(16,), n_heads=3)
    x = torch.rand(7, 784)
    assert torch.allclose(head_logits(Generic(inner), x, [2, 0]), head_logits(inner, x, [2, 0]), atol=1e-6)


def test_lwf_class_il_distils_old_classes_only(class_il):
    model, lwf = _model(class_il), LwF()
    _train(model, class_il, 0, lwf, epochs=1)
    assert lwf.old_classes == [0, 1]
    x = _batch(class_il[1])
    with torch.no_grad():
        model.head.bias[2:].add_(3.0)  # new classes may grow without any penalty
    assert lwf.penalty(model, x, 1).item() == 0.0
    with torch.no_grad():
        model.head.bias[0].add_(1.0)  # an old class's answer changes
    assert lwf.penalty(model, x, 1).item() > 0
    _train(model, class_il, 1, lwf, epochs=1)
    assert lwf.old_classes == [0, 1, 2, 3]


def test_lwf_can_train_the_new_task_over_the_classes_seen_so_far_only(class_il):
    model, lwf = _model(class_il), LwF(outputs="seen")
    lwf.before_task(model, class_il[0])
    assert lwf.seen_classes == [0, 1]
    x, y = _batch(class_il[0]), class_il[0].train_y[:64]
    logits = model(x).detach().requires_grad_()
    loss = lwf.task_loss(logits, y)
    assert loss.item() == pytest.approx(F.cross_entropy(logits[:, :2], y).item(), rel=1e-6)
    loss.backward()
    assert logits.grad[:, 2:].abs().max() == 0  # the classes still to come are neither trained nor pushed down
    _train(model, class_il, 0, lwf, epochs=1)
    lwf.before_task(model, class_il[1])
    assert lwf.seen_classes == [0, 1, 2, 3]
    assert LwF().task_loss(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item())  # default: all
    with pytest.raises(ValueError, match="lwf: outputs must be one of all, seen"):
        LwF(outputs="old")


def test_seen_distillation_is_soft_cross_entropy_with_zero_targets_for_the_new_classes():
    gen = torch.Generator().manual_seed(3)
    new = torch.randn(6, 4, generator=gen, requires_grad=True)  # seen classes 0..3, of which 0 and 2 are old
    old, T = torch.randn(6, 2, generator=gen), 2.0
    loss = seen_distillation_loss(new, old, [0, 2], T)
    target = torch.zeros(6, 4)
    target[:, [0, 2]] = torch.softmax(old / T, 1)  # van de Ven & Tolias: the old answer, zeros appended
    soft_ce = -(target * F.log_softmax(new / T, 1)).sum(1).mean() * T ** 2
    entropy = -(target[:, [0, 2]] * target[:, [0, 2]].log()).sum(1).mean() * T ** 2
    assert loss.item() == pytest.approx((soft_ce - entropy).item(), rel=1e-5)  # KL = soft CE - entropy
    g_kl, = torch.autograd.grad(loss, new)
    g_ce, = torch.autograd.grad(soft_ce, new)
    assert torch.allclose(g_kl, g_ce, atol=1e-6)
    same = torch.cat([old[:, :1], torch.full((6, 1), -1e4), old[:, 1:], torch.full((6, 1), -1e4)], 1)
    assert seen_distillation_loss(same, old, [0, 2], T).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"old_logits must be \(batch, 2\)"):
        seen_distillation_loss(new, old[:, :1], [0, 2])


def test_lwf_with_seen_outputs_also_keeps_new_classes_from_taking_old_answers(class_il):
    for outputs, grows in (("all", False), ("seen", True)):
        model, lwf = _model(class_il), LwF(outputs=outputs)
        _train(model, class_il, 0, lwf, epochs=1)
        lwf.before_task(model, class_il[1])
        x = _batch(class_il[1])
        before = lwf.penalty(model, x.clone(), 1).item()  # a fresh tensor: not the hook's last forward pass
        with torch.no_grad():
            model.head.bias[2:4].add_(3.0)  # the new classes grow on the new digits
        assert (lwf.penalty(model, x.clone(), 1).item() > before + 0.5) == grows, outputs


def test_lwf_seen_outputs_leave_domain_and_task_il_as_they_were(task_il):
    tasks = data.split_mnist(2, "domain", train_size=TRAIN, test_size=TEST)
    for scenario_tasks in (tasks, task_il):
        model, lwf = _model(scenario_tasks), LwF(outputs="seen")
        _train(model, scenario_tasks, 0, lwf, epochs=1)
        lwf.before_task(model, scenario_tasks[1])
        assert lwf.seen_classes is None  # targets are positions in a task or a head, not classes


def test_lwf_domain_il_distils_all_outputs():
    tasks = data.split_mnist(2, "domain", train_size=TRAIN, test_size=TEST)
    model, lwf = _model(tasks), LwF()
    for t in range(2):
        _train(model, tasks, t, lwf, epochs=1)
    assert lwf.old_classes is None  # targets are 0/1 in every task, not the digits


def _first_task_accuracy(tasks, strategy_name, seed):
    model = _model(tasks, seed)
    result = train.run_tasks(model, tasks, make_strategy(strategy_name), train.sgd(LR), EPOCHS, seed=seed,
                             progress=False)
    return result.acc_matrix.R[-1]  # accuracy on every task after the last one


def test_lwf_reduces_forgetting_in_task_il_split_mnist(task_il):
    seeds = range(4)
    naive = [_first_task_accuracy(task_il, "naive", s)[0] for s in seeds]
    lwf = [_first_task_accuracy(task_il, "lwf", s)[0] for s in seeds]
    mean_naive, mean_lwf = sum(naive) / len(naive), sum(lwf) / len(lwf)
    assert mean_naive < 0.9, f"naive should forget task 1 here, kept {naive}"
    assert min(lwf) > 0.9 and mean_lwf > mean_naive + 0.1, f"lwf {lwf} vs naive {naive}"


def test_lwf_runs_in_class_il(class_il):
    final = _first_task_accuracy(class_il, "lwf", 0)
    assert all(0.0 <= a <= 1.0 for a in final)
    assert final[1] > 0.8  # the new task is learned; task 1 is forgotten, as in the published table


# --- parameter isolation: freeze ------------------------------------------------------------------

def test_output_layer_and_freeze_body_on_the_course_models_and_any_module():
    assert output_layer_names(MLP(hidden=(8,))) == ["head.weight", "head.bias"]
    assert output_layer_names(MultiHeadMLP(hidden=(8,))) == ["heads.weight", "heads.bias"]
    seq = nn.Sequential(nn.Linear(784, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 10)))
    assert output_layer_names(seq) == ["2.1.weight", "2.1.bias"]
    assert freeze_body(seq) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    assert [n for n, p in seq.named_parameters() if p.requires_grad] == ["2.1.weight", "2.1.bias"]
    with pytest.raises(ValueError, match="no parameters"):
        output_layer_names(nn.ReLU())


def test_freeze_keeps_the_body_fixed_and_task_il_task_1_exactly(task_il):
    model, freeze = _model(task_il), Freeze()
    _train(model, task_il, 0, freeze)
    assert freeze.frozen == ["body.0.weight", "body.0.bias"]
    acc_before = train.evaluate(model, task_il[0])
    body = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("body")}
    heads = model.heads.weight.clone()
    _train(model, task_il, 1, freeze, epochs=20, lr=0.01)  # a head alone needs a smaller step, and more of them
    assert all(torch.equal(body[k], v) for k, v in model.state_dict().items() if k.startswith("body"))
    assert not torch.equal(heads[2:], model.heads.weight[2:])  # task 2's head learned
    assert torch.equal(heads[:2], model.heads.weight[:2])  # task 1's head untouched (its own parameters)
    assert train.evaluate(model, task_il[0]) == acc_before
    assert train.evaluate(model, task_il[1]) > 0.7  # learned (chance is 0.5), on features made for 0/1


def test_freeze_after_waits_for_that_many_tasks(task_il):
    model, freeze = _model(task_il), Freeze(freeze_after=2)
    _train(model, task_il, 0, freeze, epochs=1)
    assert freeze.frozen == [] and all(p.requires_grad for p in model.parameters())
    body = model.body[0].weight.clone()
    _train(model, task_il, 1, freeze, epochs=1)
    assert not torch.equal(body, model.body[0].weight)  # still learning during task 2
    assert freeze.frozen == ["body.0.weight", "body.0.bias"]


# --- hyperparameters and the runner ---------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"lwf_alpha": -1}, r"lwf: lwf_alpha must be >= 0.0 \(default 1.0\), got -1.0"),
    ({"temperature": 0}, r"lwf: temperature must be > 0.0 \(default 2.0\), got 0.0"),
    ({"temperature": -2}, r"lwf: temperature must be > 0.0 \(default 2.0\), got -2.0"),
    ({"temperature": "nan"}, r"lwf: temperature must be a finite number, got nan"),
    ({"lwf_alpha": "inf"}, r"lwf: lwf_alpha must be a finite number, got inf"),
    ({"alpha": 1}, r"lwf does not take alpha; its hyperparameters: lwf_alpha, temperature"),
])
def test_lwf_hparams_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_strategy("lwf", **kwargs)


def test_freeze_hparams_are_checked():
    assert make_strategy("freeze", freeze_after="3").freeze_after == 3
    with pytest.raises(ValueError, match=r"freeze: freeze_after must be >= 1 \(default 1\), got 0"):
        make_strategy("freeze", freeze_after=0)
    with pytest.raises(ValueError, match=r"freeze: freeze_after must be an int, got '1.5'"):
        make_strategy("freeze", freeze_after="1.5")


RUN = ["run", "split-mnist", "--scenario", "task", "--tasks", "2", "--train-size", str(TRAIN),
       "--test-size", str(TEST), "--hidden", "64"]


def test_runner_runs_lwf_with_its_options(capsys):
    assert cli.main(RUN + ["--strategy", "lwf", "--lwf-alpha", "1", "--temperature", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "lwf" and out["scenario"] == "task"
    assert out["hparams"] == {"lwf_alpha": 1.0, "temperature": 3.0, "outputs": "all"}
    assert len(out["acc_matrix"]) == 2 and out["acc_matrix"][1][1] > 0.6


def test_runner_runs_freeze(capsys):
    assert cli.main(RUN + ["--strategy", "freeze", "--freeze-after", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hparams"] == {"freeze_after": 1}
    assert out["acc_matrix"][1][0] == out["acc_matrix"][0][0]  # task 1 kept exactly


def test_runner_refuses_lwf_options_for_other_strategies_and_bad_values(capsys):
    with pytest.raises(SystemExit) as info:  # a usage error: exit 2 with the usage line
        cli.main(RUN + ["--strategy", "naive", "--lwf-alpha", "1"])
    assert info.value.code == 2 and "--lwf-alpha applies to lwf, not to --strategy naive" in capsys.readouterr().err
    assert cli.main(RUN + ["--strategy", "lwf", "--temperature", "0"]) == 2
    assert "lwf: temperature must be > 0.0" in capsys.readouterr().err
