"""Perplexity, its chunked computation and the perplexity matrix (no pretrained model needed)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cfcourse.lm import measures
from cfcourse.lm.measures import PerplexityMatrix


def test_perplexity_of_uniform_distribution_is_vocabulary_size():
    logits = torch.zeros(3, 5, 7)  # every token equally likely among 7
    targets = torch.randint(0, 7, (3, 5))
    assert measures.perplexity_from_logits(logits, targets) == pytest.approx(7.0)


def test_perplexity_of_hand_made_distribution_equals_formula():
    probs = torch.tensor([[0.5, 0.25, 0.25, 0.0],
                          [0.1, 0.6, 0.2, 0.1],
                          [0.25, 0.25, 0.25, 0.25]])
    targets = torch.tensor([0, 2, 3])  # probabilities 0.5, 0.2, 0.25 of the tokens that came
    expected = math.exp(-(math.log(0.5) + math.log(0.2) + math.log(0.25)) / 3)
    logits = probs.clamp_min(1e-12).log()
    assert measures.perplexity_from_logits(logits, targets) == pytest.approx(expected, rel=1e-6)


def test_padding_targets_are_not_scored():
    logits = torch.zeros(1, 4, 10)
    targets = torch.tensor([[1, 2, measures.IGNORE, measures.IGNORE]])
    assert measures.perplexity_from_logits(logits, targets) == pytest.approx(10.0)
    _, count = measures.nll_from_hidden(torch.zeros(1, 4, 3), torch.nn.Linear(3, 10), targets)
    assert count == 2


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_chunked_loss_equals_unchunked(chunk_size):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 9, 8, generator=gen)
    head = torch.nn.Linear(8, 50, bias=False)
    targets = torch.randint(0, 50, (2, 9), generator=gen)
    full = F.cross_entropy(head(hidden).flatten(0, 1), targets.flatten(), reduction="sum")
    with torch.no_grad():
        total, count = measures.nll_from_hidden(hidden, head, targets, chunk_size)
    assert count == 18
    assert total.item() == pytest.approx(full.item(), rel=1e-5)


def test_chunked_loss_gives_the_same_gradients():
    """With gradients on, each chunk's logits are recomputed in backward; the gradients must not change."""
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 6, 4, generator=gen, requires_grad=True)
    head = torch.nn.Linear(4, 20)
    targets = torch.randint(0, 20, (2, 6), generator=gen)
    F.cross_entropy(head(hidden).flatten(0, 1), targets.flatten(), reduction="sum").backward()
    want_h, want_w = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    total, _ = measures.nll_from_hidden(hidden, head, targets, chunk_size=4)
    total.backward()
    assert torch.allclose(hidden.grad, want_h, atol=1e-6) and torch.allclose(head.weight.grad, want_w, atol=1e-6)


def test_bad_chunk_size_and_block_shape_are_refused():
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        measures.nll_from_hidden(torch.zeros(1, 2, 3), torch.nn.Linear(3, 4), torch.zeros(1, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"blocks must have shape \(n_blocks, block_len >= 2\)"):
        measures.perplexity(torch.nn.Linear(1, 1), torch.zeros(5, dtype=torch.long))


@pytest.fixture(scope="module")
def tiny_llama():
    """A 2-layer Llama with random weights: enough to compare the chunked loss with the model's own logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_lm_loss_and_perplexity_match_the_models_own_logits(tiny_llama):
    ids = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids).logits  # (3, 12, 97): small here, so the unchunked way is fine
        total, count = measures.lm_loss(tiny_llama, ids, chunk_size=5)
    want = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
    assert count == 3 * 11 and total.item() == pytest.approx(want.item(), rel=1e-5)
    ppl = measures.perplexity(tiny_llama, ids, batch_size=2, chunk_size=4)
    assert ppl == pytest.approx(measures.perplexity_from_logits(logits[:, :-1], ids[:, 1:]), rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_block_nll_is_the_loss_of_each_block_whatever_the_batch(tiny_llama, batch_size):
    ids = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids).logits  # (3, 12, 97)
    want = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none").sum(1)  # (3,)
    nll, tokens = measures.block_nll(tiny_llama, ids, batch_size=batch_size, chunk_size=5, progress="test")
    assert nll.shape == tokens.shape == (3,) and tokens.tolist() == [11, 11, 11]
    assert nll == pytest.approx(want.numpy(), rel=1e-5)
    assert measures.perplexity(tiny_llama, ids, batch_size) == pytest.approx(math.exp(nll.sum() / 33), rel=1e-6)


# --- the perplexity matrix --------------------------------------------------------------------------------------

def _matrix():
    m = PerplexityMatrix(["legal", "code", "docs"], ["pretrained", "legal", "code"])
    m.record_row(0, [30.0, 15.0, 20.0])
    m.record_row("legal", {"legal": 20.0, "code": 21.0, "docs": 26.0})
    m.record_row(2, [25.0, 10.0, 30.0])
    return m


def test_perplexity_matrix_measures_match_their_formulas():
    m = _matrix()
    assert m.stage == 2 and m.trained_at("legal") == 1 and m.trained_at("docs") is None
    assert m.change() == pytest.approx({"legal": 25 / 30 - 1, "code": 10 / 15 - 1, "docs": 30 / 20 - 1})
    assert m.change("legal")["code"] == pytest.approx(21 / 15 - 1)
    assert m.forgetting == pytest.approx({"legal": 25 / 20 - 1, "code": 10 / 15 - 1, "docs": 30 / 20 - 1})
    assert m.bwt == pytest.approx(math.log(20 / 25))  # only legal was trained before the last stage
    assert m.fwt == pytest.approx(math.log(15 / 21))  # code before its own stage vs pretrained: legal hurt it
    assert m.avg_log_ppl == pytest.approx((math.log(25) + math.log(10) + math.log(30)) / 3)
    d = m.to_dict()
    assert d["ppl_matrix"][1] == [20.0, 21.0, 26.0] and d["bwt"] == pytest.approx(math.log(0.8), abs=1e-6)
    assert "legal" in repr(m) and "21.00" in repr(m)


def test_perplexity_matrix_refuses_bad_input():
    m = PerplexityMatrix(["a", "b"], ["pretrained", "a"])
    with pytest.raises(ValueError, match="no complete row yet"):
        m.change()
    with pytest.raises(ValueError, match="at least 1"):
        m.record_row(0, [0.5, 3.0])
    with pytest.raises(ValueError, match="expected 2 perplexities"):
        m.record_row(0, [3.0])
    with pytest.raises(ValueError, match=r"missing perplexities for \['b'\]"):
        m.record_row(0, {"a": 3.0})
    with pytest.raises(IndexError):
        m.record_row(5, [2.0, 2.0])
    with pytest.raises(ValueError, match="unique"):
        PerplexityMatrix(["a", "a"], ["pretrained"])
    m.record_row(0, [2.0, 3.0])
    assert math.isnan(m.bwt) and all(math.isnan(v) for v in m.forgetting.values())


def test_side_by_side_table():
    table = measures.side_by_side(["What is | x?", "Second"], {"before": ["A long\nanswer", "b"], "after": ["c", "d"]},
                                  width=8)
    lines = table.splitlines()
    assert lines[0] == "| prompt | before | after |" and len(lines) == 4
    assert "What is \\| x?" in lines[2] or "What is…" in lines[2]
    assert "A long …" in lines[2] or "A long a…" in lines[2]
    with pytest.raises(ValueError, match="has 1 texts for 2 prompts"):
        measures.side_by_side(["a", "b"], {"before": ["x"]})
