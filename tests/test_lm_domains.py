"""Text domains and probes: real texts, fixed splits, held-out never in train; probes files checked for shape.

The language-model tests use the user's cache read-only: the small text assets are copied into a session
folder, and the converted model folder (540 MB) is linked there, never copied (see make_lm_data_dir in conftest.py).
"""
from __future__ import annotations

import json

import pytest
import torch

from cfcourse.lm import domains, probes
from cfcourse.lm import model as lm_model

@pytest.fixture(autouse=True)
def _use_lm_data(lm_data, monkeypatch):
    monkeypatch.setenv("CFCOURSE_DATA", str(lm_data))
    monkeypatch.setenv("CFCOURSE_RUNS", str(lm_data / "lm-runs"))  # this module's own runs and caches
    domains._documents.cache_clear()
    yield
    domains._documents.cache_clear()


@pytest.fixture(scope="module")
def tokenizer(lm_data):
    from transformers import AutoTokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFCOURSE_DATA", str(lm_data))
        folder = lm_model.ensure_default_model(verify=False)  # the weights are checked in test_lm_model.py
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


TEXT_DOMAINS = [d for d in domains.DOMAINS if d not in domains.GENERATED]


@pytest.mark.parametrize("domain", TEXT_DOMAINS)
def test_domains_are_non_empty_and_held_out_is_disjoint_from_train(domain):
    train, held = domains.documents(domain, "train"), domains.documents(domain, "heldout")
    assert train and held
    assert all(d.text.strip() for d in train + held)
    assert sum(len(d.text) for d in held) > 5000, "enough held-out text for 16 blocks of 128 tokens or more"
    assert not {d.name for d in train} & {d.name for d in held}
    train_text = "\n".join(d.text for d in train)
    assert all(d.text not in train_text for d in held), "no held-out document appears inside the train text"


@pytest.mark.parametrize("domain", TEXT_DOMAINS)
def test_domains_are_deterministic(domain):
    first = domains.documents(domain, "heldout")
    domains._documents.cache_clear()
    assert domains.documents(domain, "heldout") == first


def test_domain_sources_and_splits_are_documented():
    assert set(domains.DOMAIN_INFO) == set(domains.DOMAINS)
    for info in domains.DOMAIN_INFO.values():
        assert info.source and info.licence and info.heldout_rule
    legal_held = [d.name for d in domains.documents("legal", "heldout")]
    assert legal_held[:2] == ["apache", "mpl"] and all(n.startswith("law-") for n in legal_held[2:])
    assert len(legal_held) > 200, "the held-out law scenarios are there too"
    assert domains.documents("medical", "heldout")[0].name.startswith("pmid:")
    assert [d.name for d in domains.documents("literature", "heldout")] == ["macbeth"]
    legal = "".join(d.text for d in domains.documents("legal", "train"))
    assert "{{" not in legal and "GNU GENERAL PUBLIC LICENSE" in legal


def test_unknown_domain_or_split_is_refused():
    with pytest.raises(ValueError, match="unknown domain 'news'; choose one of medical, legal, code"):
        domains.documents("news")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        domains.documents("code", "test")
    with pytest.raises(ValueError, match="use own_answers"):
        domains.documents("own-answers")


def test_medical_questions_split_evenly_and_disjoint():
    every = domains.medical_questions()
    train, held = domains.medical_questions("train"), domains.medical_questions("heldout")
    assert len(every) >= 30 and len(train) + len(held) == len(every) and not set(train) & set(held)
    docs = domains.own_answers(None, None, "heldout", answers=["an answer"] * len(held))
    assert docs[0].text == f"Question: {held[0]}\nAnswer: an answer\n"
    with pytest.raises(ValueError, match="answers for"):
        domains.own_answers(None, None, "heldout", answers=["x"])


def test_blocks_are_fixed_non_overlapping_slices():
    ids = torch.arange(1000)
    b = domains.blocks(ids, block_len=100, n_blocks=4)
    assert b.shape == (4, 100) and torch.equal(b[:, 0], torch.tensor([0, 200, 400, 600]))
    assert len(set(b.flatten().tolist())) == 400
    assert domains.blocks(ids, 100).shape == (10, 100)
    with pytest.raises(ValueError, match="asked for 11 blocks of 100 tokens, but the text has 1000 tokens"):
        domains.blocks(ids, 100, 11)


def test_domain_blocks_with_the_real_tokenizer(tokenizer):
    legal = domains.domain_blocks("legal", tokenizer, "heldout", n_blocks=4, block_len=64)
    assert legal.shape == (4, 64) and legal.dtype == torch.long
    assert torch.equal(legal, domains.domain_blocks("legal", tokenizer, "heldout", n_blocks=4, block_len=64))
    text = tokenizer.decode(legal[0])
    assert "Apache" in text or "License" in text
    medical = domains.domain_blocks("medical", tokenizer, "heldout", n_blocks=4, block_len=64)
    assert medical.shape == (4, 64)


# --- probes -----------------------------------------------------------------------------------------------------

def test_course_probes_cover_every_domain():
    got = probes.load_probes()
    assert {p.domain for p in got} >= (set(domains.DOMAINS) - set(domains.GENERATED)) | {"general"}
    assert all(p.answer.strip() and p.prompt.strip() for p in got)
    assert any(p.prompt == "The capital of France is" and p.answer == " Paris" for p in got)


@pytest.mark.parametrize("data, message", [
    ([1, 2], "no non-empty 'domains' object"),
    ({"domains": {}}, "no non-empty 'domains' object"),
    ({"domains": {"legal": {"prompt": "a", "answer": "b"}}}, r"domains.legal must be a non-empty list"),
    ({"domains": {"legal": [{"prompt": "a"}]}}, r"domains.legal\[0\] needs a non-empty string 'answer'"),
    ({"domains": {"legal": [{"prompt": "a", "answer": 3}]}}, r"domains.legal\[0\] needs a non-empty string"),
    ({"domains": {"legal": [["a", "b"]]}}, r"domains.legal\[0\] must be an object with keys 'prompt' and 'answer'"),
    ({"domains": {"legal": [{"prompt": "a", "answer": "b", "extra": 1}]}}, "must be an object with keys"),
])
def test_probes_of_the_wrong_shape_are_refused_clearly(tmp_path, data, message):
    path = tmp_path / "probes.json"
    path.write_text(json.dumps(data))
    with pytest.raises(probes.ProbesError, match=message):
        probes.load_probes(path)


def test_probes_file_that_is_not_json_or_missing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(probes.ProbesError, match="is not valid JSON"):
        probes.load_probes(bad)
    with pytest.raises(probes.ProbesError, match="cannot read probes file"):
        probes.load_probes(tmp_path / "missing.json")
