"""The cures of lesson 09 on a tiny random Llama: replay mixing, L2 to the start, EWC, LoRA, self-generated replay.

The real effects (how much each cure saves on SmolLM2) are measured by the lessons and the sweep, not here.
"""
from __future__ import annotations

import math

import pytest
import torch

from cfcourse.lm import cures
from cfcourse.lm import finetune as ft
from cfcourse.lm.model import DEFAULT_MODEL
from cfcourse.lm.tasks import TextTask
from cfcourse.strategies.regularization import EWC, L2, diagonal_fisher
from cfcourse.strategies.rehearsal import MixedReplay


def _tiny(vocab=61, layers=4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=160,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def tiny():
    return _tiny()


def _blocks(n=8, length=16, offset=3):
    return (torch.arange(n * length).reshape(n, length) % 7) + offset


# --- replay mixing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps,batch,ratio", [(100, 4, 0.25), (60, 2, 0.25), (70, 4, 0.3), (33, 3, 0.5),
                                               (10, 8, 0.0), (7, 1, 0.9)])
def test_replay_schedule_gives_the_requested_ratio(steps, batch, ratio):
    counts = cures.replay_schedule(steps, batch, ratio)
    assert len(counts) == steps and all(0 <= c <= batch for c in counts)
    assert sum(counts) == math.floor(steps * batch * ratio + 1e-9)
    assert abs(sum(counts) / (steps * batch) - ratio) <= 1 / (steps * batch)
    # spread out, not bunched: every prefix is within one block of its share
    running = 0
    for s, c in enumerate(counts, 1):
        running += c
        assert abs(running - s * batch * ratio) < 1 + 1e-9


def test_replay_ratio_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"replay ratio must be in \[0, 1\)"):
        cures.replay_schedule(10, 2, 1.0)
    with pytest.raises(ValueError, match="replay_ratio is the share"):
        ft.FinetuneConfig(replay_ratio=-0.1)


def test_mixed_batches_draw_old_blocks_at_the_ratio_over_a_real_run(tiny, monkeypatch):
    new, old = _blocks(8, 16, offset=3), _blocks(8, 16, offset=20)  # old tokens are 20..26, new 3..9
    seen = []
    real = MixedReplay.transform_batch

    def spy(self, x, y, ids):
        batch = real(self, x, y, ids)
        seen.append(batch[0])
        return batch
    monkeypatch.setattr(MixedReplay, "transform_batch", spy)
    cfg = ft.FinetuneConfig(steps=20, batch_size=4, lr=1e-2, trainable_layers=1, replay_ratio=0.25)
    result = ft.finetune(tiny, new, cfg, old_blocks=old)
    rows = torch.cat(seen)
    is_old = (rows >= 20).all(1)
    assert ((rows < 20).all(1) | is_old).all()  # every block is wholly new or wholly old
    assert int(is_old.sum()) == result["replayed"] == 20  # 25% of 80 blocks
    assert all(len(b) == 4 and int((b >= 20).all(1).sum()) == 1 for b in seen)  # one in each batch of 4


def test_cures_that_need_old_text_say_so(tiny):
    with pytest.raises(ValueError, match="need old_blocks"):
        ft.finetune(tiny, _blocks(), ft.FinetuneConfig(steps=1, batch_size=2, replay_ratio=0.5))
    with pytest.raises(ValueError, match="need old_blocks"):
        ft.finetune(tiny, _blocks(), ft.FinetuneConfig(steps=1, batch_size=2, ewc=1.0))
    with pytest.raises(ValueError, match="same block length"):
        ft.finetune(tiny, _blocks(), ft.FinetuneConfig(steps=1, batch_size=2, replay_ratio=0.5),
                    old_blocks=_blocks(length=8))


# --- L2 to the start and EWC ---------------------------------------------------------------------------------

def _pulled(tiny, kind: str, strength: float):
    """The top two layers trainable and an L2 or EWC pull anchored at them, as finetune builds it."""
    params = ft.freeze_all_but_top(tiny, 2)
    pull = L2(l2_lambda=strength) if kind == "l2" else EWC(normalise_fisher=True, ewc_lambda=strength,
                                                          fisher_samples=3)
    pull.after_task(tiny, TextTask("old", _blocks(3, offset=20)))
    return params, pull


def test_l2_penalty_is_zero_at_the_start_and_grows_with_distance(tiny):
    params, pull = _pulled(tiny, "l2", 3.0)
    start = [p.detach().clone() for p in params]
    assert pull.penalty(tiny, None, None).item() == 0.0
    values = []
    for step in (0.01, 0.02, 0.04):
        with torch.no_grad():
            for p, p0 in zip(params, start):
                p.copy_(p0 + step)
        values.append(pull.penalty(tiny, None, None).item())
    n = sum(p.numel() for p in params)
    assert values[0] == pytest.approx(0.5 * 3.0 * n * 0.01 ** 2, rel=1e-3)
    assert values[1] == pytest.approx(4 * values[0], rel=1e-3) and values[2] == pytest.approx(16 * values[0], rel=1e-3)
    assert values[2] == pytest.approx(cures.l2_penalty(params, start, 3.0).item(), rel=1e-6)  # lesson 09's own


@pytest.mark.parametrize("kind", ["l2", "ewc"])
def test_the_in_place_gradient_equals_autograd_through_the_penalty(tiny, kind):
    params, pull = _pulled(tiny, kind, 0.7)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    pull.penalty(tiny, None, None).backward()
    want = [p.grad.clone() for p in params]
    pull.grad_in_place = True
    assert pull.penalty(tiny, None, None) == 0.0  # in place, the loss carries no penalty ...
    for p in params:
        p.grad = torch.ones_like(p)  # ... and add_penalty_grad adds to what backward of the loss left there
    pull.add_penalty_grad(tiny)
    assert all(torch.allclose(p.grad - 1, w, atol=1e-6) for p, w in zip(params, want))
    for p in params:
        p.grad = None
    pull.add_penalty_grad(tiny)
    assert all(torch.allclose(p.grad, w, atol=1e-6) for p, w in zip(params, want))


def test_l2_pull_keeps_weights_nearer_the_start(tiny):
    state = {k: v.clone() for k, v in tiny.state_dict().items()}

    def drift(l2):
        tiny.load_state_dict(state)
        ft.finetune(tiny, _blocks(), ft.FinetuneConfig(steps=15, batch_size=2, lr=1e-2, trainable_layers=2, l2=l2))
        return sum(float((v - state[k]).pow(2).sum()) for k, v in tiny.state_dict().items())
    assert drift(50.0) < 0.5 * drift(0.0)


def test_ewc_fisher_is_non_negative_normalised_and_weights_the_pull(tiny):
    params = ft.freeze_all_but_top(tiny, 2)
    fisher = diagonal_fisher(tiny, TextTask("old", _blocks(4)), n_samples=4, normalise=True)
    assert list(fisher) == [n for n, p in tiny.named_parameters() if p.requires_grad]
    assert all((f >= 0).all() for f in fisher.values())
    mean = sum(float(f.sum()) for f in fisher.values()) / sum(f.numel() for f in fisher.values())
    assert mean == pytest.approx(1.0, rel=1e-5)
    _, pull = _pulled(tiny, "ewc", 2.0)
    assert pull.penalty(tiny, None, None).item() == 0.0
    first = next(iter(pull.memories[0][0].values()))
    with torch.no_grad():
        params[0].add_(0.1)
    assert pull.penalty(tiny, None, None).item() == pytest.approx(0.5 * 2.0 * float(first.sum()) * 0.01, rel=1e-4)
    with pytest.raises(ValueError, match="true Fisher needs labels"):
        diagonal_fisher(tiny, TextTask("old", _blocks(4)), n_samples=4, kind="true")


def test_the_lm_fisher_is_the_mean_squared_gradient_of_each_blocks_loss(tiny):
    ft.freeze_all_but_top(tiny, 1)
    task = TextTask("old", _blocks(3))
    fisher = diagonal_fisher(tiny, task, n_samples=3)
    params = [p for p in tiny.parameters() if p.requires_grad]
    want = [torch.zeros_like(p) for p in params]
    for i in range(3):
        for w, g in zip(want, torch.autograd.grad(task.sample_loss(tiny, i), params)):
            w += g ** 2 / 3
    assert all(torch.allclose(f, w, rtol=1e-5, atol=1e-12) for f, w in zip(fisher.values(), want))


def test_fine_tuning_with_ewc_runs_and_moves_less(tiny):
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    old = _blocks(4, 16, offset=20)

    def drift(ewc):
        tiny.load_state_dict(state)
        cfg = ft.FinetuneConfig(steps=10, batch_size=2, lr=1e-2, trainable_layers=2, ewc=ewc, fisher_blocks=4)
        ft.finetune(tiny, _blocks(), cfg, old_blocks=old)
        return sum(float((v - state[k]).pow(2).sum()) for k, v in tiny.state_dict().items())
    assert drift(100.0) < drift(0.0)


# --- LoRA ----------------------------------------------------------------------------------------------------

def test_lora_trains_adapters_and_leaves_the_base_weights_unchanged(tiny):
    base = {k: v.clone() for k, v in tiny.state_dict().items()}
    wrapped = cures.add_lora(tiny, rank=2, targets=("q_proj", "v_proj"))
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    opt = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    before_lora = {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
    for _ in range(10):
        out = wrapped(input_ids=_blocks(2), labels=_blocks(2))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    for name, p in wrapped.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base[key]), f"{key} changed"
    assert any(not torch.equal(p, before_lora[n]) for n, p in wrapped.named_parameters() if n in before_lora)
    with torch.no_grad():
        logits = wrapped(input_ids=_blocks(2)).logits
        merged = cures.merge_lora(wrapped)
        assert merged is tiny
        assert torch.allclose(merged(input_ids=_blocks(2)).logits, logits, atol=1e-5)


def test_finetune_with_lora_merges_and_returns_a_plain_model(tiny):
    base = {k: v.clone() for k, v in tiny.state_dict().items()}
    cfg = ft.FinetuneConfig(steps=12, batch_size=2, lr=1e-2, lora_rank=4, trainable_layers=2)
    result = ft.finetune(tiny, _blocks(), cfg)
    model = result["model"]
    assert model is tiny and set(model.state_dict()) == set(base)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and all(k.endswith(tuple(f"{t}.weight" for t in cfg.lora_targets)) for k in changed)
    assert all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in changed)  # adapters in the top 2
    assert result["losses"][-1] < result["losses"][0]


def test_lora_options_are_checked(tiny):
    with pytest.raises(ValueError, match=r"LoRA targets \['qkv'\] are not Linear modules"):
        cures.add_lora(tiny, 2, targets=("qkv",))
    with pytest.raises(ValueError, match=r"top_layers must be in 1..4, got 9"):
        cures.add_lora(tiny, 2, top_layers=9)
    with pytest.raises(ValueError, match="lora_rank must be >= 0"):
        ft.FinetuneConfig(lora_rank=-1)


# --- self-generated replay -----------------------------------------------------------------------------------

def test_self_generated_blocks_are_the_models_own_seeded_samples(lm_data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_data / DEFAULT_MODEL)
    model = _tiny(vocab=len(tok), layers=2)
    a = cures.self_generated_blocks(model, tok, n_blocks=5, block_len=24, seed=1, batch_size=2)
    b = cures.self_generated_blocks(model, tok, n_blocks=5, block_len=24, seed=1, batch_size=2)
    c = cures.self_generated_blocks(model, tok, n_blocks=5, block_len=24, seed=2, batch_size=2)
    assert a.shape == (5, 24) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, 0] == tok.eos_token_id).all() and a.max() < len(tok)
    with pytest.raises(ValueError, match="need n_blocks >= 1"):
        cures.self_generated_blocks(model, tok, n_blocks=0)


# --- the trade-off -------------------------------------------------------------------------------------------

def test_tradeoff_point_is_gain_and_geometric_mean_rise():
    before = {"legal": 30.0, "code": 10.0, "docs": 20.0}
    after = {"legal": 21.0, "code": 12.0, "docs": 30.0}
    p = cures.tradeoff_point(before, after, "legal")
    assert p["gain"] == pytest.approx(0.3)
    assert p["rise"] == pytest.approx(math.sqrt(1.2 * 1.5) - 1)
    assert p["old_rise"] == pytest.approx({"code": 0.2, "docs": 0.5})
    with pytest.raises(ValueError, match="must be measured before and after"):
        cures.tradeoff_point(before, after, "medical")


def test_config_labels_and_bad_values():
    assert ft.FinetuneConfig(lr=5e-4, replay_ratio=0.25, l2=1.0).label() == "lr 5e-04, replay 25%, L2 1"
    assert ft.FinetuneConfig(lr=1e-3, lora_rank=8).label() == "lr 1e-03, LoRA r8"
    for bad in (dict(l2=-1.0), dict(ewc=float("nan")), dict(lr=float("inf"))):
        with pytest.raises(ValueError, match="must be a finite number"):
            ft.FinetuneConfig(**bad)
