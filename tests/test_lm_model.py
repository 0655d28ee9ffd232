"""Loading language models: the course model offline, any folder or hub id, weights checked, never the network."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from cfcourse.lm import domains, measures, probes
from cfcourse.lm import model as lm_model
from cfcourse.lm.model import ModelError, load_model


@pytest.fixture(autouse=True)
def _use_lm_data(lm_data, monkeypatch):
    monkeypatch.setenv("CFCOURSE_DATA", str(lm_data))
    monkeypatch.setenv("CFCOURSE_RUNS", str(lm_data / "lm-runs"))  # this module's own runs and caches
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: the hub library must not try either
    domains._documents.cache_clear()


@pytest.fixture(scope="module")
def course_lm(lm_data):
    """The course model, loaded once for this module (converted in the session folder if the cache had only GGUF)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFCOURSE_DATA", str(lm_data))
        model, tokenizer = load_model(device="cpu")
    return model, tokenizer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, course_lm) -> Path:
    """A tiny random Llama saved with the course tokenizer and a manifest: a stand-in model that loads in a blink."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = course_lm
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lm_model.write_manifest(folder, {"made_by": "tests"})
    return folder


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


# --- the course model -------------------------------------------------------------------------------------------

def test_course_model_loads_offline_and_knows_paris(course_lm):
    model, tokenizer = course_lm
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    scores = probes.score_probes(model, tokenizer, [probes.Probe("general", "The capital of France is", " Paris")])
    assert scores[0]["top1"] and scores[0]["p_answer"] > 0.5  # 0.77 for these weights


def test_course_model_folder_is_verified_and_pinned(lm_data):
    folder = lm_model.ensure_default_model()
    manifest = lm_model.verify_manifest(folder)
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert manifest["files"]["model.safetensors"]["sha256"] == lm_model.CONVERTED_WEIGHTS_SHA256


def test_perplexity_of_held_out_text_is_sensible(course_lm):
    model, tokenizer = course_lm
    legal = domains.domain_blocks("legal", tokenizer, "heldout", n_blocks=2, block_len=64)
    ppl = measures.perplexity(model, legal, batch_size=2, chunk_size=16)
    assert 2 < ppl < 200  # a real model on real licence text; uniform guessing would give 49,152
    assert ppl == pytest.approx(measures.perplexity(model, legal, batch_size=1, chunk_size=64), rel=1e-4)


def test_generation_is_deterministic_and_side_by_side(course_lm):
    model, tokenizer = course_lm
    prompts = ["What does the heart do?"]
    first = measures.generate(model, tokenizer, prompts, max_new_tokens=8)
    assert first == measures.generate(model, tokenizer, prompts, max_new_tokens=8) and first[0]
    plain = measures.generate(model, tokenizer, ["The capital of France is"], max_new_tokens=3, chat=False)
    assert "Paris" in plain[0]
    table = measures.side_by_side(prompts, {"before": first, "after": first})
    assert table.count("\n") == 2


def test_probe_summary(course_lm):
    model, tokenizer = course_lm
    chosen = [p for p in probes.load_probes() if p.domain in ("general", "legal")][:4]
    scores = probes.score_probes(model, tokenizer, chosen)
    summary = probes.summarise(scores)
    assert set(summary) <= {"general", "legal"} and all(0 <= s["top1"] <= 1 for s in summary.values())
    assert all(s["logprob"] <= 0 and math.isclose(s["p_answer"], math.exp(s["logprob"])) for s in scores)


# --- integrity: a changed weights file is refused ------------------------------------------------------------------

def test_tampered_weights_file_is_refused(tiny_folder, tmp_path):
    model, _ = load_model(tiny_folder, device="cpu")  # the untouched copy loads
    assert model.config.hidden_size == 8
    copy = _copy(tiny_folder, tmp_path / "tampered")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the sha256 recorded"):
        load_model(copy, device="cpu")


def test_a_file_changed_after_a_good_load_is_hashed_again_and_refused(tiny_folder, tmp_path):
    copy = _copy(tiny_folder, tmp_path / "later")
    load_model(copy, device="cpu")  # verified and remembered: the next load of the same file skips the hash
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size; the modification time changes
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the sha256 recorded"):
        load_model(copy, device="cpu")


def test_unlisted_or_missing_files_are_refused(tiny_folder, tmp_path):
    extra = _copy(tiny_folder, tmp_path / "extra")
    (extra / "pytorch_model.bin").write_bytes(b"not listed")
    with pytest.raises(ModelError, match=r"weight files not in its manifest \(pytorch_model.bin\)"):
        load_model(extra, device="cpu")
    missing = _copy(tiny_folder, tmp_path / "missing")
    (missing / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json is missing"):
        load_model(missing, device="cpu")


def test_tampered_course_model_is_refused_with_advice(lm_data, tmp_path, monkeypatch):
    """The course model's own check, on a folder of links to the real files plus one changed small file."""
    real = lm_model.ensure_default_model(verify=False)
    data = tmp_path / "data"
    fake = data / lm_model.DEFAULT_MODEL
    fake.mkdir(parents=True)
    for f in real.iterdir():
        (fake / f.name).symlink_to(f.resolve())
    (fake / "config.json").unlink()
    (fake / "config.json").write_text((real / "config.json").read_text().replace('"num_hidden_layers": 30',
                                                                                   '"num_hidden_layers": 29'))
    monkeypatch.setenv("CFCOURSE_DATA", str(data))
    with pytest.raises(ModelError, match=r"config.json does not match.*python -m cfcourse fetch"):
        load_model(device="cpu")


# --- any folder or hub id -----------------------------------------------------------------------------------------

def test_online_hub_id_goes_through_the_snapshot_download(tiny_folder, monkeypatch):
    """With network allowed by config, a hub id is fetched as a snapshot; a local folder stands in for it."""
    calls = []

    def fake_snapshot(repo_id, local_only):
        calls.append((repo_id, local_only))
        return tiny_folder
    monkeypatch.setattr(lm_model, "_download_snapshot", fake_snapshot)
    monkeypatch.delenv("CFCOURSE_OFFLINE", raising=False)
    model, tokenizer = load_model("some-org/tiny-llama", device="cpu")
    assert calls == [("some-org/tiny-llama", False)] and model.config.hidden_size == 8
    assert tokenizer.pad_token is not None
    monkeypatch.setenv("CFCOURSE_OFFLINE", "1")
    load_model("some-org/tiny-llama", device="cpu")
    assert calls[-1] == ("some-org/tiny-llama", True), "offline, only the local Hugging Face cache is used"


def test_hub_id_not_cached_offline_fails_clearly_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    with pytest.raises(ModelError, match="not in the Hugging Face cache and CFCOURSE_OFFLINE is set"):
        load_model("nobody/no-such-model", device="cpu")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "has no config.json"),
    (lambda p: p.write_text("x"), "is a file, not a model folder"),
])
def test_a_path_that_is_not_a_model_is_refused(tmp_path, make, message):
    path = tmp_path / "thing"
    make(path)
    with pytest.raises(ModelError, match=message):
        load_model(path, device="cpu")


def test_name_that_is_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(ModelError, match="neither an existing model folder nor a hub id"):
        load_model(str(tmp_path / "no" / "such" / "folder"), device="cpu")


def test_pickled_weights_only_are_refused(tiny_folder, tmp_path):
    folder = _copy(tiny_folder, tmp_path / "pickled")
    (folder / lm_model.MANIFEST).unlink()
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="loads weights only from safetensors"):
        load_model(folder, device="cpu")


def test_folder_without_manifest_loads(tiny_folder, tmp_path):
    folder = _copy(tiny_folder, tmp_path / "plain")
    (folder / lm_model.MANIFEST).unlink()
    model, _ = load_model(folder, device="cpu")  # an engineer's own save_pretrained folder
    assert model.config.num_hidden_layers == 1
