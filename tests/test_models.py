"""MLP and multi-head MLP: shapes, head selection, and refusal of bad sizes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cfcourse import models


def test_mlp_default_is_784_400_400_10():
    model = models.MLP()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 400), (400, 400), (400, 10)]
    assert sum(p.numel() for p in model.parameters()) == 784 * 400 + 400 + 400 * 400 + 400 + 400 * 10 + 10
    assert model(torch.rand(7, 784)).shape == (7, 10)
    assert models.MLP.multi_head is False


@pytest.mark.parametrize("hidden, out", [((), 10), ((32,), 2), ((16, 8, 4), 3)])
def test_mlp_any_hidden_sizes(hidden, out):
    model = models.MLP(hidden=hidden, out_features=out)
    assert model(torch.rand(5, 784)).shape == (5, out)
    n_relu = sum(isinstance(m, nn.ReLU) for m in model.modules())
    assert n_relu == len(hidden)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden=(0,)), "every hidden size must be a positive integer"),
    (dict(hidden=(400, -1)), "hidden size"),
    (dict(hidden=(4.5,)), "hidden size"),
    (dict(out_features=0), "out_features must be a positive integer, got 0"),
    (dict(in_features=-784), "in_features"),
])
def test_mlp_refuses_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.MLP(**kwargs)


def _all_heads(model, x):
    return model.heads(model.body(x)).view(len(x), model.n_heads, model.head_size)  # (batch, heads, size)


def test_multihead_int_task_id_picks_that_head():
    torch.manual_seed(0)
    model = models.MultiHeadMLP(hidden=(32,), n_heads=4, head_size=3)
    x = torch.rand(6, 784)
    full = _all_heads(model, x)
    for t in range(4):
        out = model(x, t)
        assert out.shape == (6, 3)
        assert torch.allclose(out, full[:, t])
    assert not torch.allclose(model(x, 0), model(x, 1))  # different heads give different answers


def test_multihead_per_sample_task_ids():
    torch.manual_seed(0)
    model = models.MultiHeadMLP(hidden=(16,), n_heads=5, head_size=2)
    x = torch.rand(8, 784)
    ids = torch.tensor([0, 4, 1, 1, 3, 2, 0, 4])
    out = model(x, ids)
    full = _all_heads(model, x)
    assert out.shape == (8, 2)
    for i, t in enumerate(ids.tolist()):
        assert torch.allclose(out[i], full[i, t])
        assert torch.allclose(out[i], model(x[i:i + 1], t)[0], atol=1e-6)


def test_multihead_refuses_bad_task_id_and_sizes():
    model = models.MultiHeadMLP(hidden=(8,), n_heads=2)
    with pytest.raises(ValueError, match=r"task_id must be in 0..1, got 2"):
        model(torch.rand(1, 784), 2)
    with pytest.raises(ValueError, match="n_heads must be a positive integer"):
        models.MultiHeadMLP(n_heads=0)
    with pytest.raises(ValueError, match="n_heads"):
        models.MultiHeadMLP(n_heads="5")
    with pytest.raises(ValueError, match="hidden size"):
        models.MultiHeadMLP(hidden=(0,))
    with pytest.raises(ValueError, match="positive integer"):
        models.MultiHeadMLP(head_size=0)


def test_forward_passes_task_id_only_to_multihead_models():
    x = torch.rand(3, 784)
    mlp = models.MLP(hidden=(8,))
    assert torch.equal(models.forward(mlp, x, 3), mlp(x))  # the task id is ignored
    mh = models.MultiHeadMLP(hidden=(8,), n_heads=4)
    assert torch.equal(models.forward(mh, x, 3), mh(x, 3))
    plain = nn.Sequential(nn.Linear(784, 5))  # any torch.nn.Module works
    assert models.forward(plain, x, 0).shape == (3, 5)


def test_for_scenario_builds_the_head_each_scenario_needs():
    from cfcourse import data
    from cfcourse.models import for_scenario

    split = {s: data.split_mnist(5, s, train_size=500, test_size=100) for s in ("task", "domain", "class")}
    permuted = data.permuted_mnist(3, train_size=500, test_size=100, scenario="class")
    task_il = for_scenario("task", split["task"], (16,))
    assert isinstance(task_il, models.MultiHeadMLP) and (task_il.n_heads, task_il.head_size) == (5, 2)
    assert for_scenario("domain", split["domain"], (16,)).head.out_features == 2
    assert for_scenario("class", split["class"], (16,)).head.out_features == 10
    assert for_scenario("class", permuted, (16,)).head.out_features == 30
    with pytest.raises(ValueError, match="unknown scenario 'online'; choose one of task, domain, class"):
        for_scenario("online", permuted)
