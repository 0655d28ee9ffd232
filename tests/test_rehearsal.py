"""Rehearsal: reservoir sampling is uniform, buffers keep their size and balance, replay mixes as asked,
GEM's quadratic programme is solved exactly, GEM and A-GEM never step against the memory, and all of them keep
old tasks on real MNIST where naive forgets."""
from __future__ import annotations

import json
import random

import pytest
import torch

from cfcourse import config, data
from cfcourse.cli import main
from cfcourse.models import MLP, MultiHeadMLP
from cfcourse.strategies import make_strategy
from cfcourse.strategies.rehearsal import (AGEM, GEM, ClassBalancedBuffer, Replay, ReservoirBuffer,
                                           TaskBalancedBuffer, balanced_quota, flat_grad, make_buffer,
                                           nonnegative_qp, project_gem, project_gradient, replay_count,
                                           reservoir_update)
from cfcourse.train import run_tasks, sgd


def _id_images(ids: torch.Tensor) -> torch.Tensor:
    """Stand-in images (n, 2) uint8 that spell out each sample's id, so a held sample can be traced back."""
    return torch.stack([ids % 256, ids // 256], 1).to(torch.uint8)


def _ids_of(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0].long() + 256 * x[:, 1].long()


# ---------------------------------------------------------------------------------------------------------
# Reservoir sampling is uniform
# ---------------------------------------------------------------------------------------------------------


def _check_uniform(counts: torch.Tensor, repeats: int, size: int) -> None:
    """Inclusion counts per stream position (n,) after `repeats` runs must match size/n everywhere.

    Each count is Binomial(repeats, p) with p = size/n. Checked three ways: a chi-square over all positions,
    the mean over blocks of consecutive positions (catches a bias towards early or late items), and the
    worst single position.
    """
    n = len(counts)
    p = size / n
    assert counts.sum().item() == repeats * size  # the buffer is full after every run
    expected, var = repeats * p, repeats * p * (1 - p)
    chi2 = ((counts.double() - expected) ** 2 / var).sum().item()
    df = n - 1
    assert chi2 < df + 5 * (2 * df) ** 0.5, f"chi-square {chi2:.0f} for {df} degrees of freedom: not uniform"
    block = counts.double().view(10, -1).mean(1) / repeats  # (10,) inclusion frequency per tenth of the stream
    sd_block = (var / (n // 10)) ** 0.5 / repeats
    assert (block - p).abs().max().item() < 5 * sd_block, f"inclusion by position {block.tolist()}, expected {p}"
    assert ((counts.double() - expected).abs().max().item()) < 5 * var ** 0.5


def _reservoir_counts(update, n: int, size: int, repeats: int, preallocated: bool) -> torch.Tensor:
    rng = random.Random(0)
    counts = torch.zeros(n, dtype=torch.long)
    for _ in range(repeats):
        buffer = [None] * size if preallocated else []
        for seen, item in enumerate(range(n), start=1):
            if preallocated:
                update(buffer, item, seen, rng)
            else:
                update(buffer, item, seen, rng, size=size)
        counts[torch.tensor(buffer)] += 1
    return counts


@pytest.mark.parametrize("preallocated", [True, False])
def test_reservoir_update_keeps_every_item_with_probability_size_over_n(preallocated):
    n, size, repeats = 500, 50, 2000
    _check_uniform(_reservoir_counts(reservoir_update, n, size, repeats, preallocated), repeats, size)


def test_the_uniformity_check_catches_a_classic_mistake():
    def replace_a_random_slot_always(buffer, item, seen, rng):  # new items win too often
        if seen <= len(buffer):
            buffer[seen - 1] = item
        else:
            buffer[rng.randrange(len(buffer))] = item
    counts = _reservoir_counts(replace_a_random_slot_always, 500, 50, 200, True)
    with pytest.raises(AssertionError):
        _check_uniform(counts, 200, 50)


def test_reservoir_update_is_documented_for_lesson_05():
    assert reservoir_update.__doc__.startswith("Reservoir sampling; see lesson 05.")


@pytest.mark.parametrize("n, size, batch, repeats", [(1000, 100, 1000, 2000), (1000, 100, 64, 300),
                                                     (140, 14, 7, 300)])
def test_reservoir_buffer_is_uniform_over_the_stream(n, size, batch, repeats):
    gen = torch.Generator().manual_seed(0)
    ids = torch.arange(n)
    counts = torch.zeros(n, dtype=torch.long)
    for _ in range(repeats):
        buffer = ReservoirBuffer(size, gen)
        for i in range(0, n, batch):  # batches cross the end of the filling phase; items collide in slots
            buffer.add(_id_images(ids[i:i + batch]), ids[i:i + batch], 0)
        counts[_ids_of(buffer.contents()[0])] += 1
    _check_uniform(counts, repeats, size)


def test_reservoir_buffer_keeps_each_sample_whole():
    """Image, label and task id of a held sample stay together (the same item in every slot)."""
    gen = torch.Generator().manual_seed(1)
    buffer = ReservoirBuffer(50, gen)
    for t in range(4):
        ids = torch.arange(t * 300, (t + 1) * 300)
        buffer.add(_id_images(ids), ids, t)
    x, y, task_ids = buffer.contents()
    assert torch.equal(_ids_of(x), y)
    assert torch.equal(task_ids, y // 300)
    assert len(set(y.tolist())) == 50  # no sample held twice


# ---------------------------------------------------------------------------------------------------------
# Buffers never exceed their size; size 0 keeps nothing; negative sizes are refused
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reservoir", "class-balanced"])
@pytest.mark.parametrize("size", [0, 3, 100, 500])
def test_buffer_never_exceeds_its_size(kind, size):
    tasks = data.split_mnist(5, "class", train_size=2000, test_size=100)
    buffer = make_buffer(kind, size, torch.Generator().manual_seed(0))
    offered = 0
    for task in tasks:
        for i in range(0, len(task.train_y), 128):  # batches larger than a tiny buffer
            buffer.add(task.train_x[i:i + 128], task.train_y[i:i + 128], task.task_id)
            offered += len(task.train_y[i:i + 128])
            assert len(buffer) == min(size, offered)
        x, y, task_ids = buffer.contents()
        assert x.shape == (len(buffer), 784) and x.dtype == torch.uint8 and len(y) == len(task_ids) == len(buffer)
    assert buffer.seen == offered
    if size:
        assert buffer.sample(size * 2)[0].shape == (size * 2, 784)


@pytest.mark.parametrize("kind", ["reservoir", "class-balanced"])
def test_size_zero_holds_nothing_and_refuses_to_sample(kind):
    buffer = make_buffer(kind, 0)
    task = data.split_mnist(1, train_size=500, test_size=10)[0]
    buffer.add(task.train_x, task.train_y, 0)
    assert len(buffer) == 0 and buffer.contents()[0].numel() == 0
    with pytest.raises(ValueError, match="the buffer is empty"):
        buffer.sample(4)


@pytest.mark.parametrize("cls", [ReservoirBuffer, ClassBalancedBuffer])
def test_negative_size_is_refused_clearly(cls):
    with pytest.raises(ValueError, match=r"^buffer_size must be >= 0, got -5$"):
        cls(-5)
    with pytest.raises(ValueError, match=r"buffer_size must be an integer >= 0, got 2.5"):
        cls(2.5)


@pytest.mark.parametrize("name", ["replay", "agem"])
def test_strategies_refuse_a_negative_buffer_size(name):
    with pytest.raises(ValueError, match=rf"{name}: buffer_size must be >= 0 \(default 1100\), got -5$"):
        make_strategy(name, buffer_size=-5)


def test_buffer_refuses_samples_of_another_shape():
    buffer = ReservoirBuffer(10)
    buffer.add(torch.zeros(4, 784, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"samples must look like those already held: torch.uint8 \(784,\)"):
        buffer.add(torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="same number of samples, got 4 and 3"):
        buffer.add(torch.zeros(4, 784, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), 0)


def test_replay_with_an_empty_buffer_is_naive():
    tasks = data.permuted_mnist(2, train_size=1000, test_size=200)
    results = []
    for name, hparams in (("naive", {}), ("replay", {"buffer_size": 0})):
        config.set_seed(0)
        model = MLP(hidden=(32,))
        result = run_tasks(model, tasks, make_strategy(name, **hparams), epochs=2, progress=False)
        results.append((result.acc_matrix.to_dict()["acc_matrix"], [p.detach().clone() for p in model.parameters()]))
    (acc_naive, w_naive), (acc_replay, w_replay) = results
    assert acc_naive == acc_replay
    assert all(torch.equal(a, b) for a, b in zip(w_naive, w_replay))


# ---------------------------------------------------------------------------------------------------------
# Class-balanced memory
# ---------------------------------------------------------------------------------------------------------


def test_balanced_quota_shares_equally_and_passes_on_what_a_small_class_cannot_use():
    assert balanced_quota(torch.tensor([100, 100, 100]), 10).tolist() == [3, 3, 4]
    assert balanced_quota(torch.tensor([500, 5]), 100).tolist() == [95, 5]
    assert balanced_quota(torch.tensor([2, 3]), 100).tolist() == [2, 3]
    assert balanced_quota(torch.tensor([7, 9, 8]), 0).tolist() == [0, 0, 0]


@pytest.mark.parametrize("size", [100, 105])
def test_class_balanced_buffer_holds_an_equal_share_of_each_digit_after_each_task(size):
    tasks = data.split_mnist(5, "class", train_size=3000, test_size=100)
    buffer = ClassBalancedBuffer(size, torch.Generator().manual_seed(0))
    for t, task in enumerate(tasks):
        buffer.add(task.train_x, task.train_y, task.task_id)
        counts = torch.bincount(buffer.contents()[1], minlength=10)[: 2 * (t + 1)]  # every digit seen so far
        assert len(buffer) == size
        assert counts.max() - counts.min() <= 1, f"after task {t}: {counts.tolist()}"
        assert torch.equal(buffer.contents()[2], buffer.contents()[1] // 2)  # task id travels with each digit


def test_class_balanced_buffer_treats_a_label_of_each_task_as_its_own_class():
    """In permuted MNIST every task has digits 0-9: memory is shared equally by task and digit."""
    tasks = data.permuted_mnist(3, train_size=2000, test_size=100)
    buffer = ClassBalancedBuffer(300, torch.Generator().manual_seed(0))
    for task in tasks:
        buffer.add(task.train_x, task.train_y, task.task_id)
    _, y, task_ids = buffer.contents()
    counts = torch.bincount(task_ids * 10 + y, minlength=30)
    assert counts.tolist() == [10] * 30


def test_class_balanced_buffer_keeps_a_uniform_sample_of_each_class():
    """A class offered in several batches and shrunk when a new class arrives is still a uniform sample of it."""
    n, size, repeats = 400, 40, 500
    gen = torch.Generator().manual_seed(0)
    ids = torch.arange(n)
    counts = torch.zeros(n, dtype=torch.long)
    for _ in range(repeats):
        buffer = ClassBalancedBuffer(2 * size, gen)
        for i in range(0, n, 100):  # class 0 in four batches: it fills all 80 slots
            buffer.add(_id_images(ids[i:i + 100]), torch.zeros(100, dtype=torch.long), 0)
        buffer.add(_id_images(ids[:40]), torch.ones(40, dtype=torch.long), 0)  # class 1 arrives: class 0 keeps 40
        x, y, _ = buffer.contents()
        assert (y == 0).sum() == size
        counts[_ids_of(x[y == 0])] += 1
    _check_uniform(counts, repeats, size)


# ---------------------------------------------------------------------------------------------------------
# Replay mixes remembered samples into each batch
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("batch", [128, 37])
def test_replay_gives_the_requested_ratio_and_the_original_labels_and_task_ids(ratio, batch):
    tasks = data.permuted_mnist(2, train_size=1000, test_size=100)
    replay = make_strategy("replay", buffer_size=300, replay_ratio=ratio)
    model = MLP(hidden=(16,))
    replay.before_task(model, tasks[0])
    replay.after_task(model, tasks[0])
    replay.before_task(model, tasks[1])
    new_x, new_y = data.to_float(tasks[1].train_x[:batch]), tasks[1].train_y[:batch]
    x, y, task_ids = replay.transform_batch(new_x, new_y, 1)
    n_replay = len(y) - batch
    assert n_replay == replay_count(batch, ratio)
    assert abs(n_replay / len(y) - ratio) <= 0.5 / len(y)  # exact up to rounding to whole samples
    assert x.shape == (len(y), 784) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[:batch], new_x) and torch.equal(y[:batch], new_y)
    if ratio == 0:
        assert task_ids == 1
        return
    assert task_ids.tolist() == [1] * batch + [0] * n_replay
    # every replayed sample is a real task-0 training image, with the label it was stored with
    label_of = {bytes(img.tolist()): int(lab) for img, lab in zip(tasks[0].train_x, tasks[0].train_y)}
    replayed = (x[batch:] * 255).round().to(torch.uint8)
    assert [label_of[bytes(img.tolist())] for img in replayed] == y[batch:].tolist()


def test_replay_keeps_per_sample_task_ids_and_routes_each_to_its_own_head():
    tasks = data.split_mnist(3, "task", train_size=3000, test_size=100)
    replay = make_strategy("replay", buffer_size=200)
    model = MultiHeadMLP(hidden=(16,), n_heads=3)
    for task in tasks[:2]:
        replay.before_task(model, task)
        replay.after_task(model, task)
    ids_in = torch.full((64,), 2)
    x, y, task_ids = replay.transform_batch(data.to_float(tasks[2].train_x[:64]), tasks[2].train_y[:64], ids_in)
    assert len(y) == 128 and set(task_ids[64:].tolist()) == {0, 1}
    assert task_ids.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    source = {bytes(img.tolist()): (task.task_id, int(lab)) for task in tasks[:2]
              for img, lab in zip(task.train_x, task.train_y)}  # image -> (its task, its label)
    replayed = (x[64:] * 255).round().to(torch.uint8)
    assert [source[bytes(img.tolist())] for img in replayed] == list(zip(task_ids[64:].tolist(), y[64:].tolist()))
    logits = model(x, task_ids)  # (128, 2), each sample through its own task's head
    heads = model.heads(model.body(x)).view(128, 3, 2)
    assert torch.equal(logits, heads[torch.arange(128), task_ids])


def test_replay_ratio_must_be_below_one():
    with pytest.raises(ValueError, match=r"replay: replay_ratio must be in \[0.0, 1.0\) \(default 0.5\), got 1.0"):
        make_strategy("replay", replay_ratio=1.0)
    with pytest.raises(ValueError, match=r"replay: replay_ratio must be in \[0.0, 1.0\) \(default 0.5\), got -0.1"):
        make_strategy("replay", replay_ratio=-0.1)
    with pytest.raises(ValueError, match="replay: buffer must be one of reservoir, class-balanced"):
        make_strategy("replay", buffer="fifo")


def _run(name: str, tasks, hparams: dict, model_fn, epochs: int, lr: float):
    """The accuracy matrix of one seeded run (same initial weights for every strategy)."""
    config.set_seed(0)
    result = run_tasks(model_fn(), tasks, make_strategy(name, **hparams), sgd(lr), epochs=epochs, progress=False)
    return result.acc_matrix


@pytest.fixture(scope="module")
def permuted_runs() -> dict:
    """Naive, replay, A-GEM and GEM (memory 500) on 2-task permuted MNIST, trained long enough to forget."""
    tasks = data.permuted_mnist(2, train_size=2000, test_size=500)
    run = dict(tasks=tasks, model_fn=lambda: MLP(hidden=(64,)), epochs=20, lr=0.1)
    return {name: _run(name, hparams=hparams, **run)
            for name, hparams in (("naive", {}), ("replay", {"buffer_size": 500}), ("agem", {"buffer_size": 500}),
                                  ("gem", {"buffer_size": 500}))}


def test_replay_keeps_permuted_mnist_task_1_where_naive_forgets_it(permuted_runs):
    naive, replay = permuted_runs["naive"], permuted_runs["replay"]
    assert naive.R[0][0] > 0.85 and replay.R[0][0] == naive.R[0][0]  # task 1 learnt: the same run until task 2
    assert naive.forgetting[0] > 0.15, f"naive forgot only {naive.forgetting[0]:.1%}: nothing to prevent"
    assert replay.forgetting[0] < 0.05
    assert replay.R[1][0] > naive.R[1][0] + 0.15
    assert replay.R[1][1] > 0.85  # and task 2 is still learnt


def test_replay_keeps_class_incremental_split_mnist_task_1_where_naive_drops_to_zero():
    tasks = data.split_mnist(2, "class", train_size=2000, test_size=500)
    run = dict(tasks=tasks, model_fn=lambda: MLP(hidden=(64,)), epochs=5, lr=0.05)
    naive = _run("naive", hparams={}, **run)
    assert naive.R[0][0] > 0.95 and naive.R[1][0] < 0.05  # digits 0/1 now always called 2 or 3
    for buffer in ("reservoir", "class-balanced"):
        replay = _run("replay", hparams={"buffer_size": 500, "buffer": buffer}, **run)
        assert replay.R[1][0] > 0.8, f"{buffer}: task 1 at {replay.R[1][0]:.1%}"
        assert replay.R[1][1] > 0.7 and replay.avg_acc > naive.avg_acc + 0.3


# ---------------------------------------------------------------------------------------------------------
# A-GEM
# ---------------------------------------------------------------------------------------------------------


def test_projected_gradient_never_points_against_the_reference():
    gen = torch.Generator().manual_seed(0)
    n_projected = 0
    for _ in range(500):  # random sizes, directions and scales
        dim = int(torch.randint(2, 2000, (1,), generator=gen))
        g = torch.randn(dim, generator=gen) * float(torch.rand(1, generator=gen) * 10)
        g_ref = torch.randn(dim, generator=gen) * float(torch.rand(1, generator=gen) * 10)
        out = project_gradient(g, g_ref)
        tol = 1e-5 * g.norm() * g_ref.norm()
        assert torch.dot(out, g_ref) >= -tol
        if torch.dot(g, g_ref) >= 0:
            assert out is g  # agreeing gradients pass untouched
            continue
        n_projected += 1
        assert torch.dot(out, g_ref).abs() <= tol  # on the boundary: orthogonal to g_ref
        removed = g - out  # only the component along g_ref is removed
        assert torch.allclose(removed, torch.dot(removed, g_ref) / torch.dot(g_ref, g_ref) * g_ref, atol=1e-4)
        assert out.norm() <= g.norm() * (1 + 1e-6)
    assert 150 < n_projected < 350  # about half of random pairs disagree


def test_project_gradient_textbook_cases():
    g_ref = torch.tensor([1.0, 0.0])
    assert torch.equal(project_gradient(torch.tensor([-1.0, 2.0]), g_ref), torch.tensor([0.0, 2.0]))
    assert torch.equal(project_gradient(torch.tensor([1.0, 2.0]), g_ref), torch.tensor([1.0, 2.0]))
    assert torch.equal(project_gradient(torch.tensor([1.0, 2.0]), torch.zeros(2)), torch.tensor([1.0, 2.0]))


class SpyAGEM(AGEM):
    """A-GEM that records, at every step, the gradient before and after before_step and the reference one."""

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.batches: list[tuple] = []

    def reference_gradient(self, model, params):
        self._g_ref = super().reference_gradient(model, params)
        return self._g_ref

    def before_step(self, model):
        params = [p for p in model.parameters() if p.requires_grad]
        g_before = flat_grad(params).clone()
        self._g_ref = None
        super().before_step(model)
        if self._g_ref is not None:
            self.records.append((g_before, flat_grad(params).clone(), self._g_ref))


def test_agem_steps_never_point_against_the_memory_gradient_in_real_training():
    tasks = data.permuted_mnist(2, train_size=2000, test_size=200)
    config.set_seed(0)
    agem = SpyAGEM(buffer_size=300, agem_batch=128)
    run_tasks(MLP(hidden=(64,)), tasks, agem, sgd(0.1), epochs=3, progress=False)
    assert len(agem.records) == agem.steps == 3 * 16  # every step of task 2, none of task 1 (memory empty)
    projected = 0
    for g_before, g_after, g_ref in agem.records:
        tol = 1e-5 * g_before.norm() * g_ref.norm()
        assert torch.dot(g_after, g_ref) >= -tol
        if torch.dot(g_before, g_ref) < 0:
            projected += 1
            assert torch.allclose(g_after, project_gradient(g_before, g_ref))
        else:
            assert torch.equal(g_after, g_before)
    assert projected == agem.projections > 0  # the test saw real conflicts, not only agreeing steps


def _spy_on_heads(strategy):
    """Train a three-headed MLP on two split-MNIST tasks with `strategy`; returns (model, task 3, calls), where
    `calls` collects the task ids of every forward pass (clear it before the part you check)."""
    tasks = data.split_mnist(3, "task", train_size=3000, test_size=100)
    calls = []

    class SpyHeads(MultiHeadMLP):
        def forward(self, x, task_id):
            calls.append(task_id)
            return super().forward(x, task_id)

    model = SpyHeads(hidden=(16,), n_heads=3)
    run_tasks(model, tasks[:2], strategy, epochs=1, progress=False)
    return model, tasks[2], calls


def test_agem_evaluates_memory_samples_with_their_own_task_ids():
    config.set_seed(0)
    agem = make_strategy("agem", buffer_size=200, agem_batch=50)
    model, _, calls = _spy_on_heads(agem)
    sampled = []
    sample = agem.memory.sample
    agem.memory.sample = lambda n, gen=None: sampled.append(sample(n, gen)) or sampled[-1]
    calls.clear()
    agem.reference_gradient(model, list(model.parameters()))
    assert len(calls) == 1 and isinstance(calls[0], torch.Tensor) and len(calls[0]) == 50
    assert torch.equal(calls[0], sampled[0][2]) and set(calls[0].tolist()) == {0, 1}


def test_agem_forgets_less_than_naive_on_permuted_mnist(permuted_runs):
    naive, agem = permuted_runs["naive"], permuted_runs["agem"]
    assert agem.R[0][0] == naive.R[0][0]  # A-GEM does nothing while memory is empty
    assert agem.forgetting[0] < naive.forgetting[0] / 2
    assert agem.R[1][1] > naive.R[1][1] - 0.02  # at almost no cost to the new task


def test_agem_with_an_empty_memory_changes_nothing():
    agem = make_strategy("agem", buffer_size=0)
    model = MLP(hidden=(8,))
    model(torch.rand(4, 784)).sum().backward()
    before = flat_grad(list(model.parameters())).clone()
    agem.before_step(model)
    assert torch.equal(flat_grad(list(model.parameters())), before) and agem.steps == 0


# ---------------------------------------------------------------------------------------------------------
# GEM
# ---------------------------------------------------------------------------------------------------------


def _brute_force_qp(P: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """min 1/2 u'Pu + c'u over u >= 0 by trying every set of coordinates allowed above zero (KKT on each)."""
    t = len(c)
    for mask in range(2 ** t):
        free = [j for j in range(t) if mask >> j & 1]
        u = torch.zeros(t, dtype=P.dtype)
        if free:
            u[free] = torch.linalg.solve(P[free][:, free], -c[free])
        if (u >= -1e-10).all() and (P @ u + c >= -1e-9).all():  # feasible, and no coordinate wants to rise
            return u
    raise AssertionError("no KKT point: P is not positive definite")


def _random_case(gen: torch.Generator, t: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task gradients G (t, n) and a new gradient g (n,), often against several of them at once."""
    G = torch.randn(t, n, generator=gen, dtype=torch.float64) * torch.rand(t, 1, generator=gen, dtype=torch.float64)
    g = torch.randn(n, generator=gen, dtype=torch.float64) - G.sum(0) * float(torch.rand(1, generator=gen))
    return G, g


def test_the_gem_dual_is_solved_exactly_against_every_active_set():
    gen = torch.Generator().manual_seed(0)
    active = {j: 0 for j in range(5)}
    for _ in range(3000):
        t, n = int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(4, 30, (1,), generator=gen))
        G, g = _random_case(gen, t, n)
        P = G @ G.T + 1e-3 * torch.eye(t, dtype=torch.float64)
        c = G @ g + float(torch.rand(1, generator=gen)) * P.sum(1)  # a margin shifts the linear term
        u = nonnegative_qp(P, c)
        assert torch.allclose(u, _brute_force_qp(P, c), atol=1e-8, rtol=1e-6)
        active[int((u > 0).sum())] += 1
    assert all(active[k] > 50 for k in range(4))  # solutions with 0, 1, 2 and 3 tasks constrained were all seen


def test_the_gem_projection_is_the_closest_step_that_raises_no_earlier_loss():
    gen = torch.Generator().manual_seed(1)
    for _ in range(500):
        t, n = int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(5, 40, (1,), generator=gen))
        G, g = _random_case(gen, t, n)
        z = project_gem(g, G, margin=0.0, eps=0.0)
        if (G @ g >= 0).all():
            assert z is g  # nothing to correct
            continue
        assert (G @ z >= -1e-9).all()  # feasible: every earlier task's loss rises by at most o(step)
        v = torch.linalg.lstsq(G.T, z - g).solution  # z - g = G'v with v >= 0 ...
        assert torch.allclose(G.T @ v, z - g, atol=1e-8) and (v >= -1e-8).all()
        assert (v * (G @ z)).abs().max() < 1e-8  # ... pushing only along constraints that hold with equality
        for _ in range(20):  # and no feasible point nearby is closer to g
            w = z + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
            assert not (G @ w >= 0).all() or (w - g).norm() >= (z - g).norm() - 1e-9


def test_gem_with_one_earlier_task_and_no_margin_is_a_gem_projection():
    g, g_ref = torch.tensor([-1.0, 2.0]), torch.tensor([1.0, 0.0])
    assert torch.allclose(project_gem(g, g_ref[None], margin=0.0, eps=0.0), project_gradient(g, g_ref))
    assert torch.allclose(project_gem(g, g_ref[None], margin=0.5, eps=0.0), torch.tensor([0.0, 2.0]))  # v = 1
    g_weak = torch.tensor([-0.2, 2.0])  # a slight conflict: v would be 0.2, the margin raises it to 0.5
    assert torch.allclose(project_gem(g_weak, g_ref[None], margin=0.5, eps=0.0), torch.tensor([0.3, 2.0]))
    g_ok = torch.tensor([1.0, 2.0])
    assert project_gem(g_ok, g_ref[None], margin=0.5) is g_ok  # a margin applies only when a constraint breaks


def test_the_gem_solvers_refuse_bad_shapes_and_values():
    with pytest.raises(ValueError, match=r"P must be square \(t, t\) and c of shape \(t,\)"):
        nonnegative_qp(torch.eye(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"G must be \(tasks, n\) and g \(n,\), got \(2, 3\) and \(4,\)"):
        project_gem(torch.zeros(4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="margin and eps must be >= 0"):
        project_gem(torch.zeros(3), torch.zeros(2, 3), margin=-1.0)
    with pytest.raises(ValueError, match="gem: gem_batch must be >= 1"):
        make_strategy("gem", gem_batch=0)
    with pytest.raises(ValueError, match="gem: margin must be >= 0.0"):
        make_strategy("gem", margin=-0.1)


def test_the_task_balanced_memory_gives_every_task_an_equal_uniform_share():
    memory = TaskBalancedBuffer(1100, torch.Generator().manual_seed(0))
    sizes = [6000, 500, 3000, 4000, 2000]  # uneven tasks, one with fewer digits than its share at first
    for t, n in enumerate(sizes):
        ids = torch.arange(sum(sizes[:t]), sum(sizes[:t + 1]))
        memory.add(_id_images(ids), torch.arange(n) % 2, t)
        held = torch.bincount(memory.contents()[2], minlength=t + 1)
        assert len(memory) == min(1100, sum(sizes[:t + 1])) and held.sum() == len(memory)
        # 1100 // (t + 1) each (+-1), less for a task that has fewer to give (500 at t = 1: the first gets 600)
        assert held.tolist() == balanced_quota(torch.tensor(sizes[: t + 1]), 1100).tolist()
        assert t != 4 or held.tolist() == [220] * 5
    first = _ids_of(memory.contents()[0][memory.contents()[2] == 0])
    assert first.float().mean().sub(3000).abs() < 350  # task 1's 220 are spread over its 6,000, not its first


class SpyGEM(GEM):
    """GEM that records, at every step, the gradient before and after before_step and the task gradients."""

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def task_gradients(self, model, params):
        self._G = super().task_gradients(model, params)
        return self._G

    def before_step(self, model):
        params = [p for p in model.parameters() if p.requires_grad]
        g_before, self._G = flat_grad(params).clone(), None
        super().before_step(model)
        if self._G is not None:
            self.records.append((g_before, flat_grad(params).clone(), self._G))


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_gem_steps_raise_no_earlier_tasks_memory_loss_in_real_training(margin):
    tasks = data.split_mnist(3, "task", train_size=3000, test_size=100)
    config.set_seed(0)
    gem = SpyGEM(buffer_size=300, gem_batch=50, margin=margin)
    run_tasks(MultiHeadMLP(hidden=(64,), n_heads=3), tasks, gem, sgd(0.1), epochs=2, progress=False)
    steps = sum(2 * -(-len(task.train_y) // 128) for task in tasks[1:])  # every step of tasks 2 and 3, none of 1
    assert len(gem.records) == gem.steps == steps
    assert {len(G) for _, _, G in gem.records} == {1, 2}  # one constraint per earlier task
    projected = pushed = 0
    for g_before, g_after, G in gem.records:
        dots = G @ g_after
        if (G @ g_before >= 0).all():
            assert torch.equal(g_after, g_before)
            continue
        projected += 1
        # eps = 1e-3 in the dual lets a constraint slip by at most eps * v_k; v_k stays of order 1 here
        assert (dots >= -1e-2 * (1 + margin)).all(), dots
        pushed += bool((dots > 1e-3).all())  # every earlier task's loss falls, not only stays
    assert projected == gem.projections > 0
    # the margin adds at least margin * g_k for every task, so a slight conflict ends well inside the constraints
    assert pushed > projected / 4 if margin > 0 else pushed < projected / 4


def test_gem_takes_each_tasks_gradient_through_its_own_head_on_its_own_samples():
    config.set_seed(0)
    gem = make_strategy("gem", buffer_size=200, gem_batch=40)
    model, third, calls = _spy_on_heads(gem)
    gem.before_task(model, third)  # memory now holds tasks 1 and 2, 100 each
    calls.clear()
    G = gem.task_gradients(model, list(model.parameters()))
    assert G.shape == (2, sum(p.numel() for p in model.parameters()))
    assert [c.tolist() for c in calls] == [[0] * 40, [1] * 40]


def test_gem_forgets_less_than_naive_on_permuted_mnist(permuted_runs):
    naive, gem = permuted_runs["naive"], permuted_runs["gem"]
    assert gem.R[0][0] == naive.R[0][0]  # GEM does nothing while memory is empty
    assert gem.forgetting[0] < naive.forgetting[0] / 2
    assert gem.R[1][1] > naive.R[1][1] - 0.03


def test_gem_with_an_empty_memory_changes_nothing():
    gem = make_strategy("gem", buffer_size=0)
    model = MLP(hidden=(8,))
    gem.before_task(model, data.split_mnist(1, "class", train_size=100, test_size=10)[0])
    model(torch.rand(4, 784)).sum().backward()
    before = flat_grad(list(model.parameters())).clone()
    gem.before_step(model)
    assert torch.equal(flat_grad(list(model.parameters())), before) and gem.steps == 0


def test_gem_can_also_replay_its_memory_as_hsu_et_al_did():
    gem = make_strategy("gem", buffer_size=100, replay_ratio=0.5)
    task = data.split_mnist(1, "class", train_size=500, test_size=10)[0]
    gem.after_task(MLP(hidden=(8,)), task)
    x, y, ids = gem.transform_batch(torch.rand(16, 784), torch.zeros(16, dtype=torch.long), 1)
    assert len(x) == len(y) == 32 and ids.tolist() == [1] * 16 + [0] * 16
    x, *_ = make_strategy("gem", buffer_size=100).transform_batch(torch.rand(16, 784), torch.zeros(16), 1)
    assert len(x) == 16  # GEM as published trains on the new batch only


# ---------------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------------

RUN = ["run", "split-mnist", "--scenario", "class", "--tasks", "2", "--train-size", "2000", "--test-size", "500"]


def test_cli_runs_replay(capsys):
    assert main([*RUN, "--strategy", "replay", "--buffer-size", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "replay"
    assert out["hparams"] == {"buffer_size": 200, "buffer": "reservoir", "replay_ratio": 0.5}
    assert out["acc_matrix"][1][0] > 0.3  # naive is at 0% here


def test_cli_runs_agem_with_a_class_balanced_memory(capsys):
    argv = [*RUN, "--strategy", "agem", "--buffer", "class-balanced", "--agem-batch", "64", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["hparams"] == {"buffer_size": 1100, "buffer": "class-balanced",
                                                               "agem_batch": 64}


def test_cli_refuses_a_negative_buffer_size(capsys):
    assert main([*RUN, "--strategy", "replay", "--buffer-size", "-5"]) == 2
    assert "replay: buffer_size must be >= 0 (default 1100), got -5" in capsys.readouterr().err


def test_cli_refuses_buffer_size_for_a_strategy_without_memory(capsys):
    with pytest.raises(SystemExit) as info:  # a usage error: exit 2 with the usage line
        main([*RUN, "--strategy", "naive", "--buffer-size", "200"])
    assert info.value.code == 2
    assert "--buffer-size applies to agem, gem, mixed-replay, replay, not to --strategy naive" in capsys.readouterr().err


def test_cli_runs_gem(capsys):
    argv = [*RUN, "--strategy", "gem", "--buffer-size", "300", "--gem-batch", "32", "--margin", "0", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hparams"] == {"buffer_size": 300, "gem_batch": 32, "margin": 0.0, "replay_ratio": 0.0}
    assert out["acc_matrix"][1][0] > 0.3  # naive is at 0% here


def test_strategies_are_registered_and_repr():
    assert isinstance(make_strategy("replay"), Replay) and isinstance(make_strategy("agem"), AGEM)
    assert isinstance(make_strategy("gem"), GEM)
    assert repr(make_strategy("replay")) == "Replay(buffer_size=1100, buffer='reservoir', replay_ratio=0.5)"
