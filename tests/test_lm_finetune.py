"""The memory-lean fine-tuning core, on a tiny random Llama (the real run is measured, not unit-tested)."""
from __future__ import annotations

import pytest
import torch

from cfcourse.lm import finetune as ft


@pytest.fixture
def tiny():
    from lm_parallel_worker import tiny as tiny_llama  # the same tiny random Llama the data-parallel test trains

    return tiny_llama()


def _blocks(n=8, length=16):
    # a repeating pattern the model can learn quickly
    return (torch.arange(n * length).reshape(n, length) % 7) + 3


def test_only_the_top_layers_train_and_the_tied_head_stays(tiny):
    start = {k: v.clone() for k, v in tiny.state_dict().items()}
    cfg = ft.FinetuneConfig(steps=15, batch_size=2, lr=1e-2, trainable_layers=2, chunk_size=5)
    result = ft.finetune(tiny, _blocks(), cfg)
    assert len(result["losses"]) == 15 and result["losses"][-1] < result["losses"][0]
    assert not tiny.training and not any(getattr(m, "gradient_checkpointing", False) for m in tiny.modules())
    changed = {k for k, v in tiny.state_dict().items() if not torch.equal(v, start[k])}
    assert changed and all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in changed)
    assert torch.equal(tiny.model.embed_tokens.weight, start["model.embed_tokens.weight"])


def test_runs_are_reproducible(tiny):
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    cfg = ft.FinetuneConfig(steps=3, batch_size=2, lr=1e-2, trainable_layers=1)
    first = ft.finetune(tiny, _blocks(), cfg)["losses"]
    tiny.load_state_dict(state)
    assert ft.finetune(tiny, _blocks(), cfg)["losses"] == first


def test_bad_settings_are_refused(tiny):
    with pytest.raises(ValueError, match="steps must be at least 1"):
        ft.FinetuneConfig(steps=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        ft.FinetuneConfig(lr=-1)
    with pytest.raises(ValueError, match=r"trainable_layers must be in 1..4, got 5"):
        ft.freeze_all_but_top(tiny, 5)
    with pytest.raises(ValueError, match="train_blocks must be"):
        ft.finetune(tiny, _blocks(n=1)[0], ft.FinetuneConfig(batch_size=2, trainable_layers=1))
