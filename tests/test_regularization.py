"""L2, EWC, online EWC and SI on real MNIST: their penalties, the Fisher, SI's omega, and less forgetting."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cfcourse import config, data, train
from cfcourse.cli import main
from cfcourse.models import MLP, MultiHeadMLP
from cfcourse.strategies import STRATEGIES, make_strategy
from cfcourse.strategies.regularization import SI, OnlineEWC, diagonal_fisher, quadratic_penalty, snapshot

REGULARISERS = ("l2", "ewc", "online-ewc", "si")
FIRST = "body.0.weight"  # the first layer's weights, (hidden, 784): one column per pixel


@pytest.fixture(scope="module")
def perm():
    return data.permuted_mnist(2, train_size=2000, test_size=500)


def _model(seed: int = 0, hidden=(64,)) -> MLP:
    config.set_seed(seed)
    return MLP(hidden=hidden)


def _train(model: nn.Module, tasks, t: int, strategy=None, epochs: int = 1, lr: float = 0.05) -> nn.Module:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    train.train_task(model, tasks, t, optimizer, strategy, epochs=epochs, generator=torch.Generator().manual_seed(t),
                     progress=False)
    return model


def _after_task_0(name: str, perm, **hparams):
    """A model trained on task 0 with strategy `name`, which has then remembered that task."""
    strategy = make_strategy(name, **hparams)
    return _train(_model(), perm, 0, strategy), strategy


def _set_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])


def _batch(tasks) -> torch.Tensor:
    return data.to_float(tasks[0].train_x[:8])  # (8, 784): any batch; these penalties do not look at it


def _always_zero_pixels(task: data.Task) -> torch.Tensor:
    return task.train_x.amax(0) == 0  # (784,) True where no training image has ink


def _centre() -> torch.Tensor:
    mask = torch.zeros(28, 28, dtype=torch.bool)
    mask[9:19, 9:19] = True
    return mask.flatten()


# --- every penalty: zero at the anchor, growing with the distance from it ------------------------------------

def test_the_four_are_registered_with_their_hyperparameters():
    expected = {"l2": ["l2_lambda"], "ewc": ["ewc_lambda", "fisher_samples", "fisher"],
                "online-ewc": ["ewc_lambda", "gamma", "fisher_samples", "fisher"], "si": ["si_c", "xi"]}
    for name, hparams in expected.items():
        assert [h.name for h in STRATEGIES[name].hparams] == hparams
        assert STRATEGIES[name].__doc__ and STRATEGIES[name].name == name


@pytest.mark.parametrize("name", REGULARISERS)
def test_no_penalty_before_the_first_task_ends(name, perm):
    assert make_strategy(name).penalty(_model(), _batch(perm), 0) == 0.0


@pytest.mark.parametrize("name", REGULARISERS)
def test_penalty_is_zero_at_the_anchor_and_grows_quadratically_with_distance(name, perm):
    model, strategy = _after_task_0(name, perm)
    anchor = snapshot(model)
    at_anchor = strategy.penalty(model, _batch(perm), 0)
    assert float(at_anchor.detach()) == 0.0
    model.zero_grad(set_to_none=True)
    at_anchor.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # no pull at the anchor itself

    gen = torch.Generator().manual_seed(1)
    direction = {n: torch.randn(w.shape, generator=gen) for n, w in anchor.items()}
    values = []
    for step in (0.001, 0.01, 0.1, 0.5, 1.0):
        _set_weights(model, {n: w + step * direction[n] for n, w in anchor.items()})
        values.append(float(strategy.penalty(model, _batch(perm), 0).detach()))
    assert values[0] > 0 and all(a < b for a, b in zip(values, values[1:])), values
    assert values[-1] / values[-2] == pytest.approx(4.0, rel=1e-3)  # quadratic: twice as far, four times the pull


def test_quadratic_penalty_counts_only_anchored_trainable_weights():
    model = _model(hidden=(8,))
    anchor = snapshot(model)
    with torch.no_grad():
        model.head.bias.add_(2.0)  # 10 weights, each 2 away from the anchor
    assert float(quadratic_penalty(model, anchor).detach()) == pytest.approx(40.0)
    importance = {n: torch.full_like(w, 0.5) for n, w in anchor.items()}
    assert float(quadratic_penalty(model, anchor, importance).detach()) == pytest.approx(20.0)
    model.head.bias.requires_grad_(False)  # frozen since the anchor was taken: no longer pulled
    assert float(quadratic_penalty(model, anchor).detach()) == 0.0


def test_l2_penalty_is_half_lambda_times_squared_distance(perm):
    model, strategy = _after_task_0("l2", perm, l2_lambda=3.0)
    with torch.no_grad():
        model.head.bias.add_(1.0)
    assert float(strategy.penalty(model, _batch(perm), 0).detach()) == pytest.approx(3.0 / 2 * 10)


# --- the diagonal Fisher ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(perm):
    return _train(_model(), perm, 0)


@pytest.mark.parametrize("kind", ["empirical", "true"])
def test_fisher_is_non_negative_with_the_parameters_shapes(trained, perm, kind):
    fisher = diagonal_fisher(trained, perm[0], n_samples=300, kind=kind)
    assert list(fisher) == [n for n, _ in trained.named_parameters()]
    for name, p in trained.named_parameters():
        assert fisher[name].shape == p.shape and fisher[name].dtype == p.dtype
        assert (fisher[name] >= 0).all() and torch.isfinite(fisher[name]).all()
    assert sum(float(f.sum()) for f in fisher.values()) > 0


@pytest.mark.parametrize("kind", ["empirical", "true"])
def test_fisher_is_zero_on_blank_border_pixels_and_large_in_the_centre(trained, perm, kind):
    per_pixel = diagonal_fisher(trained, perm[0], n_samples=500, kind=kind)[FIRST].sum(0)  # (784,)
    blank = _always_zero_pixels(perm[0])
    assert blank.sum() > 50  # MNIST has many pixels that no digit ever touches
    assert (per_pixel[blank] == 0).all()  # a weight that never sees input gets no gradient at all
    centre = per_pixel[_centre()]
    assert (centre > 0).float().mean() > 0.95 and centre.mean() > 3 * per_pixel[~_centre()].mean()


def test_fisher_follows_the_permutation(trained, perm):
    """On a permuted task the important inputs move with the pixels: the image un-permutes to task 0's."""
    f0 = diagonal_fisher(trained, perm[0], n_samples=500)[FIRST].sum(0)  # (784,)
    f1 = diagonal_fisher(trained, perm[1], n_samples=500)[FIRST].sum(0)
    assert (f1[_always_zero_pixels(perm[1])] == 0).all()
    unpermuted = torch.empty_like(f1)
    unpermuted[perm[1].meta["perm"]] = f1  # pixel j of task 1 shows pixel perm[j] of the digit
    assert torch.corrcoef(torch.stack([f0, unpermuted]))[0, 1] > 0.5
    assert torch.corrcoef(torch.stack([f0, f1]))[0, 1] < 0.3


def test_fisher_matches_a_per_sample_loop(trained, perm):
    """The vmapped squared gradients equal the textbook loop over samples, one backward each."""
    small = data.Task("six digits", 0, perm[0].train_x[:6], perm[0].train_y[:6], perm[0].test_x, perm[0].test_y,
                      tuple(range(10)))
    fisher = diagonal_fisher(trained, small, n_samples=6, batch_size=4)
    expected = {n: torch.zeros_like(p) for n, p in trained.named_parameters()}
    for x, y in zip(data.to_float(small.train_x), small.train_y):
        trained.zero_grad()
        torch.log_softmax(trained(x[None]), 1)[0, y].backward()
        for n, p in trained.named_parameters():
            expected[n] += p.grad.pow(2) / 6
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-9)


def test_true_fisher_is_reproducible_and_close_to_the_empirical_one(trained, perm):
    true_a = diagonal_fisher(trained, perm[0], n_samples=500, kind="true")
    true_b = diagonal_fisher(trained, perm[0], n_samples=500, kind="true")
    empirical = diagonal_fisher(trained, perm[0], n_samples=500, kind="empirical")
    assert all(torch.equal(true_a[n], true_b[n]) for n in true_a)
    a, b = true_a[FIRST].sum(0), empirical[FIRST].sum(0)
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.8  # the same pixels matter under both


def test_fisher_of_a_multi_head_model_uses_only_the_tasks_head():
    tasks = data.split_mnist(2, "task", train_size=1000, test_size=100)
    config.set_seed(0)
    model = MultiHeadMLP(hidden=(32,), n_heads=2, head_size=2)
    fisher = diagonal_fisher(model, tasks[1], n_samples=200)
    rows = fisher["heads.weight"].sum(1)  # (heads * head_size,): head 0 is rows 0-1, head 1 rows 2-3
    assert (rows[:2] == 0).all() and (rows[2:] > 0).all()
    assert (fisher["heads.bias"][:2] == 0).all() and (fisher["heads.bias"][2:] > 0).all()


def test_fisher_runs_in_eval_mode_and_leaves_batch_norm_and_modes_alone(perm):
    """Any nn.Module: batch norm statistics never move, dropout is off, every module keeps its own mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    model(data.to_float(perm[0].train_x[:256]))  # train mode: running statistics away from their start
    model[3].eval()  # one submodule deliberately in another mode than the rest
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    first = diagonal_fisher(model, perm[0], n_samples=200)
    second = diagonal_fisher(model, perm[0], n_samples=200)
    assert model.training and model[1].training and not model[3].training
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert all(torch.equal(first[n], second[n]) for n in first)  # no dropout noise: eval mode
    assert set(first) == {n for n, _ in model.named_parameters()}  # batch-norm weights yes, its buffers no
    assert float(first["1.weight"].sum()) > 0


def test_fisher_skips_frozen_parameters(trained, perm):
    trained.body[0].requires_grad_(False)
    try:
        fisher = diagonal_fisher(trained, perm[0], n_samples=50)
    finally:
        trained.body[0].requires_grad_(True)
    assert set(fisher) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_samples=0), "n_samples must be a positive integer, got 0"),
    (dict(kind="exact"), "unknown Fisher kind 'exact'; choose one of empirical, true"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
])
def test_fisher_refuses_bad_arguments(trained, perm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        diagonal_fisher(trained, perm[0], **kwargs)


# --- EWC and online EWC: what they remember -------------------------------------------------------------------

def test_ewc_keeps_one_fisher_and_anchor_per_task(perm):
    model, ewc = _after_task_0("ewc", perm, fisher_samples=200)
    anchor_0 = snapshot(model)
    _train(model, perm, 1, ewc)
    assert len(ewc.memories) == 2
    (f0, a0), (f1, a1) = ewc.memories
    assert all(torch.equal(a0[n], anchor_0[n]) for n in a0)
    assert all(torch.equal(a1[n], w) for n, w in snapshot(model).items())
    assert (f1[FIRST].sum(0)[_always_zero_pixels(perm[1])] == 0).all()  # task 1's Fisher is about task 1's pixels


@pytest.mark.parametrize("gamma", [1.0, 0.5, 0.0])
def test_online_ewc_running_fisher_is_gamma_times_the_old_plus_the_new(perm, gamma):
    model = _model()
    online = OnlineEWC(gamma=gamma, fisher_samples=200)
    online.after_task(_train(model, perm, 0), perm[0])
    f0 = diagonal_fisher(model, perm[0], 200)
    online.after_task(_train(model, perm, 1), perm[1])
    f1 = diagonal_fisher(model, perm[1], 200)
    for n in f0:
        torch.testing.assert_close(online.running_fisher[n], gamma * f0[n] + f1[n])
    assert all(torch.equal(online.anchor[n], w) for n, w in snapshot(model).items())  # only the latest weights


# --- SI: the path integral ------------------------------------------------------------------------------------

def test_si_omega_matches_the_path_integral_by_hand():
    """One weight w, loss (w - 1)^2, plain SGD: path = sum of lr * grad^2, omega = path / (delta^2 + xi)."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    si, lr, xi = SI(xi=0.1), 0.1, 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    si.before_task(model, None)
    path, w = 0.0, 0.0
    for _ in range(5):
        optimizer.zero_grad()
        (model.weight - 1).pow(2).sum().backward()
        si.before_step(model)
        optimizer.step()
        si.after_step(model)
        g = 2 * (w - 1)
        path += -g * (-lr * g)
        w -= lr * g
    si.after_task(model, None)
    assert float(si.omega["weight"]) == pytest.approx(path / (w ** 2 + xi), rel=1e-5)
    assert float(si.anchor["weight"]) == pytest.approx(w, rel=1e-6)


def test_si_omega_is_non_negative_and_larger_for_weights_that_moved_and_mattered(perm):
    model = _model()
    start = snapshot(model)
    si = SI()
    _train(model, perm, 0, si)
    omega = si.omega
    assert all((o >= 0).all() for o in omega.values())
    per_pixel = omega[FIRST].sum(0)  # (784,)
    assert (per_pixel[_always_zero_pixels(perm[0])] == 0).all()  # never saw input: never moved, no importance
    assert per_pixel[_centre()].mean() > 3 * per_pixel[~_centre()].mean()
    moved = (model.body[0].weight - start[FIRST]).abs().detach()
    top = omega[FIRST] > omega[FIRST].quantile(0.9)
    assert moved[top].mean() > 2 * moved[~top].mean()


def test_si_measures_the_path_of_the_task_loss_alone(perm):
    """The penalty's own gradient, 2 c omega (w - anchor), is taken out before the path integral sees it."""
    model, si = _after_task_0("si", perm, si_c=5.0)
    si.before_task(model, perm[1])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    model.zero_grad(set_to_none=True)
    si.penalty(model, _batch(perm), 1).backward()  # a step whose task loss is flat: all gradient is penalty
    assert any(p.grad.abs().max() > 1e-3 for p in model.parameters())
    si.before_step(model)
    assert all(g.abs().max() < 1e-5 for g in si.grads.values())


def test_si_penalty_is_zero_at_the_start_of_the_next_task(perm):
    model, si = _after_task_0("si", perm)
    si.before_task(model, perm[1])
    assert float(si.penalty(model, _batch(perm), 1).detach()) == 0.0
    assert all(torch.equal(si.anchor[n], w) for n, w in si.start.items())


# --- less forgetting than naive ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def forgetting_tasks():
    return data.permuted_mnist(2, train_size=3000, test_size=500)


def _first_task_after_second(tasks, strategy) -> tuple[float, float]:
    config.set_seed(0)
    model = MLP(hidden=(64,))
    result = train.run_tasks(model, tasks, strategy, train.sgd(0.05, 0.9), epochs=2, progress=False)
    R = result.acc_matrix.to_dict()["acc_matrix"]
    return R[1][0], R[1][1]


@pytest.fixture(scope="module")
def naive_after(forgetting_tasks):
    return _first_task_after_second(forgetting_tasks, None)


@pytest.mark.parametrize("name, hparams", [
    ("l2", dict(l2_lambda=0.2)),
    ("ewc", dict(ewc_lambda=100.0)),
    ("ewc", dict(ewc_lambda=100.0, fisher="true")),
    ("online-ewc", dict(ewc_lambda=100.0)),
    ("si", dict(si_c=100.0)),
])
def test_each_strategy_forgets_less_than_naive(forgetting_tasks, naive_after, name, hparams):
    first, second = _first_task_after_second(forgetting_tasks, make_strategy(name, **hparams))
    naive_first, _ = naive_after
    assert naive_first < 0.86  # naive really forgets here (it knew task 1 at about 90%)
    assert first > naive_first + 0.03, f"{name}: task 1 at {first:.1%} vs naive {naive_first:.1%}"
    assert second > 0.75, f"{name}: task 2 only reached {second:.1%}"  # and still learns the new task


# --- hyperparameters and the runner -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, hparams, message", [
    ("l2", dict(l2_lambda=-1), r"l2: l2_lambda must be >= 0.0 \(default 0.03\), got -1.0"),
    ("ewc", dict(ewc_lambda=-1), r"ewc: ewc_lambda must be >= 0.0 \(default [0-9.]+\), got -1.0"),
    ("online-ewc", dict(gamma=1.5), r"online-ewc: gamma must be in \[0.0, 1.0\] \(default [0-9.]+\), got 1.5"),
    ("ewc", dict(fisher="exact"), r"ewc: fisher must be one of empirical, true, got 'exact'"),
    ("online-ewc", dict(fisher_samples=0), r"online-ewc: fisher_samples must be >= 1 \(default \d+\), got 0"),
    ("si", dict(si_c=-0.5), r"si: si_c must be >= 0.0 \(default [0-9.]+\), got -0.5"),
    ("si", dict(xi=0), r"si: xi must be > 0.0 \(it keeps omega finite for weights that did not move; default 0.1\), got 0.0"),
    ("l2", dict(ewc_lambda=1), r"l2 does not take ewc_lambda; its hyperparameters: l2_lambda"),
])
def test_bad_hyperparameters_are_refused_clearly(name, hparams, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(name, **hparams)


def test_runner_takes_ewc_lambda(capsys):
    code = main(["run", "permuted-mnist", "--tasks", "2", "--train-size", "1000", "--test-size", "200",
                 "--hidden", "64", "--strategy", "ewc", "--ewc-lambda", "50", "--fisher", "true", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["strategy"] == "ewc"
    assert out["hparams"] == {"ewc_lambda": 50.0, "fisher_samples": 1000, "fisher": "true"}
    assert len(out["acc_matrix"]) == 2


def test_runner_refuses_ewc_lambda_for_naive(capsys):
    with pytest.raises(SystemExit) as info:  # a usage error: exit 2 with the usage line
        main(["run", "permuted-mnist", "--tasks", "2", "--strategy", "naive", "--ewc-lambda", "50"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("usage: ")
    assert "error: --ewc-lambda applies to ewc, online-ewc, not to --strategy naive" in err


def test_runner_reports_a_bad_gamma(capsys):
    code = main(["run", "permuted-mnist", "--tasks", "2", "--train-size", "100", "--test-size", "50",
                 "--strategy", "online-ewc", "--gamma", "1.5", "--json"])
    assert code == 2 and "online-ewc: gamma must be in [0.0, 1.0] (default" in capsys.readouterr().err


def test_runner_refuses_an_unknown_fisher_kind(capsys):
    with pytest.raises(SystemExit):
        main(["run", "permuted-mnist", "--strategy", "ewc", "--fisher", "exact"])
    assert "invalid choice: 'exact'" in capsys.readouterr().err


def test_ewc_penalty_is_the_sum_over_tasks_of_each_fisher_weighted_pull(perm):
    """EWC merges its per-task quadratics into one for speed; value and gradient are the textbook sum."""
    model, ewc = _after_task_0("ewc", perm, fisher_samples=200, ewc_lambda=10.0)
    _train(model, perm, 1, ewc)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    merged = ewc.penalty(model, _batch(perm), 1)
    textbook = 10.0 / 2 * sum(quadratic_penalty(model, anchor, fisher) for fisher, anchor in ewc.memories)
    assert float(merged.detach()) == pytest.approx(float(textbook.detach()), rel=1e-4)
    got = torch.autograd.grad(merged, list(model.parameters()))
    want = torch.autograd.grad(textbook, list(model.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
