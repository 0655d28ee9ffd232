"""Strategies run together: a list of strategies (Compose) is the sum of its parts, and combinations that
would undo each other are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cfcourse import data, set_seed
from cfcourse.data import Task
from cfcourse.models import for_scenario
from cfcourse.strategies import Compose, Naive, compose, make_strategies, split_names
from cfcourse.strategies.regularization import EWC
from cfcourse.strategies.rehearsal import Replay
from cfcourse.train import run_tasks, sgd, train_task


def _hand_made_tasks() -> list[Task]:
    """Two tiny tasks of 4-pixel images: enough to fill a memory and estimate a Fisher."""
    g = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(2):
        x = torch.randint(0, 256, (40, 4), generator=g, dtype=torch.uint8)
        y = torch.randint(0, 3, (40,), generator=g)
        tasks.append(Task(f"t{t}", t, x, y, x[:10], y[:10], (0, 1, 2)))
    return tasks


def _after_first_task(strategy, model, tasks):
    strategy.before_task(model, tasks[0])
    strategy.after_task(model, tasks[0])
    strategy.before_task(model, tasks[1])
    return strategy


def test_replay_with_ewc_is_the_sum_of_its_parts_on_a_hand_made_case():
    torch.manual_seed(0)
    model, tasks = nn.Linear(4, 3), _hand_made_tasks()
    both = _after_first_task(Compose([Replay(torch.Generator().manual_seed(5), buffer_size=8),
                                      EWC(ewc_lambda=3.0, fisher_samples=20)]), model, tasks)
    replay = _after_first_task(Replay(torch.Generator().manual_seed(5), buffer_size=8), model, tasks)
    ewc = _after_first_task(EWC(ewc_lambda=3.0, fisher_samples=20), model, tasks)
    with torch.no_grad():
        model.weight.add_(0.1)  # away from the anchor, so that the pull is not zero
    x, y = tasks[1].train_x[:6].float() / 255, tasks[1].train_y[:6]
    xb, yb, ids = both.transform_batch(x, y, 1)
    xr, yr, ids_r = replay.transform_batch(x, y, 1)
    assert len(yb) == 12 and torch.equal(xb, xr) and torch.equal(yb, yr) and torch.equal(ids, ids_r)
    pull = ewc.penalty(model, xb, ids)
    assert pull.item() > 0 and both.penalty(model, xb, ids).item() == pytest.approx(pull.item(), rel=1e-6)
    loss = both.task_loss(model(xb), yb) + both.penalty(model, xb, ids)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    parts = [torch.autograd.grad(F.cross_entropy(model(xr), yr), list(model.parameters())),
             torch.autograd.grad(ewc.penalty(model, xr, ids_r), list(model.parameters()))]
    for g, a, b in zip(grads, *parts):
        torch.testing.assert_close(g, a + b)


def test_every_strategy_of_a_list_sees_every_task_and_step():
    calls = []

    class Spy(Naive):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def before_task(self, model, task):
            calls.append((self.tag, "before", task.name))

        def after_step(self, model):
            calls.append((self.tag, "step"))

        def after_task(self, model, task):
            calls.append((self.tag, "after", task.name))

    torch.manual_seed(0)
    model, tasks = nn.Linear(4, 3), _hand_made_tasks()
    train_task(model, tasks, 0, torch.optim.SGD(model.parameters(), lr=0.1), [Spy("a"), Spy("b")], batch_size=20,
               progress=False)
    assert calls == [("a", "before", "t0"), ("b", "before", "t0"), ("a", "step"), ("b", "step"),
                     ("a", "step"), ("b", "step"), ("a", "after", "t0"), ("b", "after", "t0")]


@pytest.mark.parametrize("names, reason", [
    ("replay+mixed-replay", "both rewrite the batch"),
    ("lwf+labels-trick", "both replace the task loss"),
    ("si+agem", "both rewrite the gradient before the step"),
])
def test_strategies_that_would_undo_each_other_are_refused_with_the_reason(names, reason):
    first, second = names.split("+")
    with pytest.raises(ValueError, match=rf"{first} and {second} cannot run together: {reason}"):
        make_strategies(names)


def test_names_and_hyperparameters_go_to_the_strategies_that_take_them():
    both = make_strategies("replay+ewc", buffer_size=50, ewc_lambda=7.0)
    assert [s.name for s in both.strategies] == ["replay", "ewc"]
    assert both.strategies[0].buffer_size == 50 and both.strategies[1].ewc_lambda == 7.0
    assert split_names(["replay", "ewc"]) == split_names("replay+ewc") == ["replay", "ewc"]
    assert isinstance(make_strategies(["ewc"]), EWC) and isinstance(compose([]), Naive)
    with pytest.raises(ValueError, match="replay\\+ewc does not take si_c"):
        make_strategies("replay+ewc", si_c=1.0)
    with pytest.raises(ValueError, match="ewc is named twice"):
        make_strategies("ewc+replay+ewc")
    with pytest.raises(ValueError, match="unknown strategy 'ewc2'"):
        make_strategies("replay+ewc2")
    with pytest.raises(ValueError, match="join several with"):
        make_strategies("replay+")
    with pytest.raises(TypeError, match="make_strategies"):
        compose("replay")


def test_replay_with_ewc_is_as_good_as_replay_alone_on_class_incremental_split_mnist():
    """In class-incremental learning EWC adds little to replay (van de Ven et al. 2022); together they must
    not be worse than replay alone beyond seed noise. Over seeds 0-4 (split MNIST, 6,000 training digits,
    one epoch, one hidden layer of 200, buffer 500, ewc_lambda 10) replay+EWC minus replay was -0.001 to
    -0.029 per seed, replay alone 0.45 to 0.54 and naive fine-tuning 0.18 to 0.26; the margin, 0.05, is
    about twice the largest paired difference."""
    finals = {"replay": [], "replay+ewc": []}
    for seed in range(3):
        tasks = data.split_mnist(5, "class", seed=seed, train_size=6000, test_size=2000)
        for names in finals:
            set_seed(seed)
            model = for_scenario("class", tasks, (200,))
            hparams = dict(buffer_size=500, **(dict(ewc_lambda=10.0, fisher_samples=200) if "ewc" in names else {}))
            result = run_tasks(model, tasks, make_strategies(names, **hparams), sgd(0.01), seed=seed, progress=False)
            finals[names].append(result.acc_matrix.avg_acc)
    assert np.mean(finals["replay+ewc"]) >= np.mean(finals["replay"]) - 0.05, finals
    assert min(finals["replay+ewc"]) > 0.35, finals  # far above naive fine-tuning (about 0.2): replay still works


def test_mixed_replay_keeps_the_batch_size_and_replays_the_exact_share():
    from cfcourse.strategies.rehearsal import MixedReplay

    class Recorder(nn.Linear):
        def forward(self, x):
            sizes.append(len(x))
            return super().forward(x)

    torch.manual_seed(0)
    model, tasks, sizes = Recorder(4, 3), _hand_made_tasks(), []
    replay = MixedReplay(buffer_size=10, replay_ratio=0.25)
    seen = []
    real = replay.transform_batch
    replay.transform_batch = lambda x, y, ids: seen.append(real(x, y, ids)) or seen[-1]
    for t in range(2):
        train_task(model, tasks, t, torch.optim.SGD(model.parameters(), lr=0.1), replay, batch_size=8,
                   progress=False)
    first, second = seen[:5], seen[5:]  # 40 samples a task: 5 batches of 8 new ones while the memory is empty
    assert [len(y) for _, y, _ in first] == [8] * 5
    replayed = [int((ids == 0).sum()) for _, _, ids in second]  # task 0's samples, from memory
    new = [len(y) - r for (_, y, _), r in zip(second, replayed)]
    assert replayed == [2] * 7  # a quarter of each batch of 8 ...
    assert new == [6] * 6 + [4]  # ... so 6 new samples a step, and the epoch's last step takes what is left
