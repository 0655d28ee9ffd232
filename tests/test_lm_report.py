"""The forgetting report on tiny stand-in models: its files, its numbers, and its refusals before any weights load."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cfcourse.cli import main
from cfcourse.lm import domains, measures, probes
from cfcourse.lm import model as lm_model
from cfcourse.lm.model import load_model
from cfcourse.lm.report import GENERAL_PROMPTS, ReportError, change_interval, forgetting_report, verdict

N_BLOCKS, BLOCK_LEN = 2, 32  # small and fast; the real defaults are 16 blocks of 128 tokens


@pytest.fixture(autouse=True)
def _use_lm_data(lm_data, monkeypatch):
    monkeypatch.setenv("CFCOURSE_DATA", str(lm_data))
    monkeypatch.setenv("CFCOURSE_RUNS", str(lm_data / "lm-runs"))  # this module's own runs and caches
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CFCOURSE_THREADS", "1")  # tiny models: a second thread only spins on a busy machine
    domains._documents.cache_clear()


@pytest.fixture(scope="module")
def course_tokenizer(lm_data):
    """Only the course model's tokenizer (its weights are never loaded here)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(lm_data / lm_model.DEFAULT_MODEL, local_files_only=True)


def _save_tiny(folder: Path, tokenizer, seed: int, noise: float = 0.0) -> Path:
    """A random 2-layer Llama with hidden size 32 and the course tokenizer; `noise` perturbs it into a 'tuned' one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, course_tokenizer) -> tuple[Path, Path]:
    """(base, tuned): the base folder carries a cfcourse manifest, the tuned one is plain save_pretrained output."""
    base = _save_tiny(tmp_path_factory.mktemp("tiny-base"), course_tokenizer, seed=0)
    lm_model.write_manifest(base, {"made_by": "tests"})
    tuned = _save_tiny(tmp_path_factory.mktemp("tiny-tuned"), course_tokenizer, seed=1, noise=0.05)
    return base, tuned


@pytest.fixture(scope="module")
def report(tiny_pair, tmp_path_factory, lm_data) -> tuple[dict, Path]:
    """One report on every domain, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("report") / "rep"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFCOURSE_DATA", str(lm_data))
        mp.setenv("CFCOURSE_THREADS", "1")
        domains._documents.cache_clear()
        result = forgetting_report(*tiny_pair, out=out, n_blocks=N_BLOCKS, block_len=BLOCK_LEN, max_new_tokens=8)
    return result, out


@pytest.fixture
def no_weights(monkeypatch):
    """Make any attempt to load model weights fail the test: refusals must come before that."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the input was refused")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


# --- the files and their numbers ----------------------------------------------------------------------------------

def test_report_writes_three_files_with_every_number(report):
    result, out = report
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "report.png"]
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert {"base", "tuned", "settings", "domains", "probes", "generations", "seconds"} <= set(saved)
    assert set(saved["base"]) == {"given", "resolved"}
    assert (saved["settings"]["n_blocks"], saved["settings"]["block_len"]) == (N_BLOCKS, BLOCK_LEN)
    assert list(saved["domains"]) == list(domains.DOMAINS)
    for row in saved["domains"].values():
        assert {"ppl_base", "ppl_tuned", "change", "interval", "verdict", "blocks", "nll_base", "nll_tuned"} <= set(row)
        assert row["blocks"] == len(row["nll_base"]) == len(row["block_tokens"]) == N_BLOCKS
    rule = saved["settings"]["verdict"]
    assert (rule["practical_change"], rule["confidence"], rule["resamples"]) == (0.02, 0.95, 2000)
    assert (saved["settings"]["dtype"], saved["settings"]["device"]) == ("float32", "cpu")
    assert saved["seconds"]["total"] > 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_summary_has_table_verdicts_and_the_rule(report):
    result, out = report
    text = (out / "report.md").read_text()
    assert "| domain | base ppl | tuned ppl | change | 95% interval | verdict |" in text
    for d, row in result["domains"].items():
        assert f"- {d}: perplexity " in text and f"— {row['verdict']}" in text
        low, high = (f"{v:+.1%}".replace("-", "−") for v in row["interval"])
        assert f"| {low} to {high} | {row['verdict']} |" in text
    assert "above +2% *forgotten*; below −2% *learned*; within ±2% *kept*" in text
    assert "across +2% or −2% *unclear*" in text and "2,000 resamples" in text
    assert "| probe domain |" in text and "| prompt | base | tuned |" in text


def test_perplexities_match_perplexity_computed_directly(report, tiny_pair):
    result, _ = report
    own = [domains.Document(str(i), t) for i, t in enumerate(result["own_answers_text"])]
    for role, folder in zip(("base", "tuned"), tiny_pair):
        model, tokenizer = load_model(folder, device="cpu")
        for d, row in result["domains"].items():
            docs = own if d == "own-answers" else None
            blocks = domains.domain_blocks(d, tokenizer, "heldout", N_BLOCKS, BLOCK_LEN, docs=docs)
            assert row[f"ppl_{role}"] == pytest.approx(measures.perplexity(model, blocks, batch_size=1), rel=1e-5)
    for row in result["domains"].values():
        assert row["change"] == pytest.approx(row["ppl_tuned"] / row["ppl_base"] - 1)
        assert row["verdict"] == verdict(*row["interval"])


def test_own_answers_text_answers_every_held_out_question(report):
    result, _ = report
    questions = domains.medical_questions("heldout")
    assert len(result["own_answers_text"]) == len(questions)
    assert all(t.startswith(f"Question: {q}\nAnswer:") for t, q in zip(result["own_answers_text"], questions))


def test_verdict_reads_where_the_whole_interval_lies():
    cases = {(0.021, 0.5): "forgotten", (-0.5, -0.021): "learned", (-0.02, 0.02): "kept", (0.0, 0.0): "kept",
             (0.019, 0.5): "unclear", (-0.5, -0.019): "unclear", (-0.05, 0.01): "unclear", (-0.3, 0.4): "unclear",
             (None, None): "unclear"}
    assert {k: verdict(*k) for k in cases} == cases


def _blocks_nll(per_token_change: list[float], tokens: int = 100, base: float = 3.0):
    """Hand-made per-block sums: base NLL `base` nats per token, the tuned model `change` nats per token more."""
    nll_base = [base * tokens] * len(per_token_change)
    return nll_base, [b + c * tokens for b, c in zip(nll_base, per_token_change)], [tokens] * len(per_token_change)


@pytest.mark.parametrize("per_token, expected", [
    ([0.30, 0.28, 0.33, 0.31, 0.29, 0.30, 0.32, 0.27], "forgotten"),  # about +35%, every block agrees
    ([-0.25, -0.22, -0.27, -0.24, -0.26, -0.23], "learned"),  # about −22%
    ([0.004, -0.003, 0.002, 0.001, -0.002, 0.003], "kept"),  # within ±0.5%: too small to matter
    ([0.40, -0.30, 0.35, -0.25, 0.45, -0.35], "unclear"),  # +5% on average, but the blocks disagree
    ([0.03, 0.01, 0.04, 0.00, 0.02, 0.05], "unclear"),  # surely worse, yet maybe by less than 2%
])
def test_paired_bootstrap_verdicts_on_hand_made_blocks(per_token, expected):
    nll_base, nll_tuned, tokens = _blocks_nll(per_token)
    change, low, high = change_interval(nll_base, nll_tuned, tokens)
    assert change == pytest.approx(math.expm1(sum(per_token) / len(per_token)))
    assert low <= change <= high and verdict(low, high) == expected
    assert change_interval(nll_base, nll_tuned, tokens) == (change, low, high)  # a fixed seed: repeatable


def test_same_blocks_twice_give_an_interval_of_exactly_zero():
    nll = [310.5, 287.25, 402.0, 299.75]
    assert change_interval(nll, nll, [100, 100, 120, 90]) == (0.0, 0.0, 0.0)
    assert verdict(0.0, 0.0) == "kept"


def test_two_blocks_span_their_own_changes_and_one_block_has_no_interval():
    """Resampling 2 blocks gives (a, a), (a, b) or (b, b): the 95% interval runs from block a's change to b's."""
    nll_base, nll_tuned, tokens = _blocks_nll([-0.1, 0.3])
    change, low, high = change_interval(nll_base, nll_tuned, tokens)
    assert (change, low, high) == pytest.approx((math.expm1(0.1), math.expm1(-0.1), math.expm1(0.3)))
    assert change_interval(*_blocks_nll([0.5])) == pytest.approx((math.expm1(0.5), None, None))
    assert verdict(None, None) == "unclear"
    with pytest.raises(ValueError, match="one NLL per block"):
        change_interval([1.0, 2.0], [1.0], [10, 10])


def test_probes_per_item_and_summary(report):
    result, _ = report
    course = probes.load_probes()
    items, summary = result["probes"]["items"], result["probes"]["summary"]
    assert [(i["domain"], i["prompt"]) for i in items] == [(p.domain, p.prompt) for p in course]
    for i in items:
        assert i["change"] == pytest.approx(i["logprob_tuned"] - i["logprob_base"])
        assert i["worse"] == (i["change"] < -0.1)
    assert list(summary) == list(dict.fromkeys(p.domain for p in course))
    for d, s in summary.items():
        mine = [i for i in items if i["domain"] == d]
        assert s["n"] == len(mine) and s["worse"] == sum(i["worse"] for i in mine)
        assert s["mean_logprob_base"] == pytest.approx(sum(i["logprob_base"] for i in mine) / len(mine))


def test_generations_default_prompts_side_by_side(report):
    result, _ = report
    prompts = [g["prompt"] for g in result["generations"]]
    assert prompts == domains.medical_questions("heldout")[:2] + list(GENERAL_PROMPTS)
    assert all(isinstance(g["base"], str) and isinstance(g["tuned"], str) for g in result["generations"])


def test_same_model_twice_changes_nothing(tiny_pair, tmp_path):
    base, _ = tiny_pair
    result = forgetting_report(base, base, domains=["legal", "code"], out=tmp_path / "r", n_blocks=3,
                               block_len=BLOCK_LEN, prompts=["Hello"], max_new_tokens=4)
    for r in result["domains"].values():
        assert r["nll_tuned"] == r["nll_base"] and r["change"] == 0.0 and r["interval"] == [0.0, 0.0]
        assert r["verdict"] == "kept"
    assert not any(i["worse"] for i in result["probes"]["items"])
    assert result["generations"][0]["base"] == result["generations"][0]["tuned"]


# --- refusals, before any weights load ----------------------------------------------------------------------------

def test_not_a_model_is_refused(tiny_pair, tmp_path, no_weights):
    base, _ = tiny_pair
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "weights.gguf"
    a_file.write_bytes(b"x")
    for tuned, expected in [(empty, "no config.json"), (a_file, "is a file, not a model folder"),
                            ("not-a-model", "neither an existing model folder nor a hub id")]:
        with pytest.raises(ReportError, match=expected) as info:
            forgetting_report(base, tuned, out=tmp_path / "out")
        assert str(info.value).startswith("tuned model: ")
    assert not (tmp_path / "out").exists()


def test_folder_without_tokenizer_is_refused(tiny_pair, tmp_path, no_weights):
    import shutil

    base, _ = tiny_pair
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(base / name, bare / name)
    with pytest.raises(ReportError, match="no usable tokenizer.*tokenizer.save_pretrained"):
        forgetting_report(base, bare, out=tmp_path / "out")


def test_different_tokenizers_are_refused(tiny_pair, course_tokenizer, tmp_path, no_weights):
    from transformers import AutoTokenizer

    base, _ = tiny_pair
    other_tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    other_tok.add_tokens(["<my-new-token>"])
    other = _save_tiny(tmp_path / "other", other_tok, seed=2)
    with pytest.raises(ReportError, match="tokenizers differ.*1 only in tuned.*its own fine-tuned version.*share"):
        forgetting_report(base, other, out=tmp_path / "out")


def test_unknown_domain_lists_the_valid_ones(tiny_pair, tmp_path, no_weights):
    with pytest.raises(ReportError, match="'poetry'.*medical, legal, code, docs, literature, own-answers"):
        forgetting_report(*tiny_pair, domains=["legal", "poetry"], out=tmp_path / "out")


def test_malformed_probes_file_says_what_is_wrong(tiny_pair, tmp_path, no_weights):
    bad = tmp_path / "probes.json"
    bad.write_text(json.dumps({"domains": {"legal": [{"prompt": "The licence is"}]}}))
    with pytest.raises(probes.ProbesError, match=r"domains.legal\[0\] needs a non-empty string 'answer'"):
        forgetting_report(*tiny_pair, probes=bad, out=tmp_path / "out")
    bad.write_text("{not json")
    with pytest.raises(probes.ProbesError, match="not valid JSON"):
        forgetting_report(*tiny_pair, probes=bad, out=tmp_path / "out")


@pytest.mark.parametrize("kwargs, expected", [({"n_blocks": 0}, "n_blocks .--blocks. must be a whole number of at "
                                                                 "least 1"),
                                              ({"block_len": 1}, "block_len must be"),
                                              ({"max_new_tokens": 0}, "max_new_tokens must be")])
def test_bad_sizes_are_refused(tiny_pair, tmp_path, no_weights, kwargs, expected):
    with pytest.raises(ReportError, match=expected):
        forgetting_report(*tiny_pair, out=tmp_path / "out", **kwargs)


def test_out_that_is_a_file_is_refused(tiny_pair, tmp_path, no_weights):
    out = tmp_path / "report.txt"
    out.write_text("keep me")
    with pytest.raises(ReportError, match="is an existing file; give a folder"):
        forgetting_report(*tiny_pair, out=out)
    assert out.read_text() == "keep me"


def test_custom_probes_file_is_used(tiny_pair, tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"domains": {"house": [{"prompt": "Our product is called", "answer": " Widget"}]}}))
    result = forgetting_report(*tiny_pair, domains=["legal"], probes=mine, out=tmp_path / "r", n_blocks=1,
                               block_len=BLOCK_LEN, prompts=[], max_new_tokens=4)
    assert list(result["probes"]["summary"]) == ["house"] and result["settings"]["probes"] == str(mine)
    assert result["generations"] == []


# --- the command line ---------------------------------------------------------------------------------------------

def test_cli_report_prints_the_table_and_where_the_files_are(tiny_pair, tmp_path, capsys):
    base, tuned = tiny_pair
    code = main(["report", "--base", str(base), "--tuned", str(tuned), "--domains", "legal", "code",
                 "--blocks", "2", "--out", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| domain | base ppl | tuned ppl | change | 95% interval | verdict |" in out and "| legal |" in out
    assert str(tmp_path / "rep" / "report.md") in out
    assert (tmp_path / "rep" / "report.png").is_file()


@pytest.mark.parametrize("argv, expected", [
    (["--domains", "poetry"],
     "error: unknown domain(s) 'poetry'; choose from medical, legal, code, docs, literature, own-answers"),
    (["--blocks", "0"], "error: n_blocks (--blocks) must be a whole number of at least 1"),
])
def test_cli_refuses_bad_input_with_exit_2(tiny_pair, tmp_path, capsys, no_weights, argv, expected):
    base, tuned = tiny_pair
    code = main(["report", "--base", str(base), "--tuned", str(tuned), "--out", str(tmp_path / "rep"), *argv])
    assert code == 2 and expected in capsys.readouterr().err


def test_python_m_cfcourse_report_not_a_model_exits_2(tiny_pair, tmp_path, subprocess_env, lm_data):
    env = dict(subprocess_env, CFCOURSE_DATA=str(lm_data), HF_HUB_OFFLINE="1", CFCOURSE_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "cfcourse", "report", "--base", str(tiny_pair[0]), "--tuned",
                           str(tmp_path), "--out", str(tmp_path / "rep")], capture_output=True, text=True, env=env,
                          timeout=120, cwd=os.getcwd())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: tuned model: ") and "no config.json" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "rep").exists()


# --- the real course model -----------------------------------------------------------------------------------------

def test_course_model_against_itself_changes_nothing(tmp_path):
    """The course's name resolves as in load_model; a model compared with itself keeps everything (about 15 s)."""
    paris = [probes.Probe("general", "The capital of France is", " Paris")]
    result = forgetting_report(lm_model.DEFAULT_MODEL, lm_model.DEFAULT_MODEL, domains=["legal"], probes=paris,
                               out=tmp_path / "r", n_blocks=1, block_len=64, prompts=["What is 2 + 2?"],
                               max_new_tokens=8)
    legal = result["domains"]["legal"]
    assert 2 < legal["ppl_base"] < 200 and legal["change"] == pytest.approx(0, abs=1e-6)
    assert result["base"]["resolved"] == str(lm_model.default_model_dir())
    item = result["probes"]["items"][0]
    assert item["top1_base"] and item["top1_tuned"] and not item["worse"]
    assert result["generations"][0]["base"] == result["generations"][0]["tuned"] != ""


def test_a_second_report_against_the_same_base_reuses_its_numbers(tiny_pair, tmp_path, lm_data, monkeypatch):
    """Comparing several tuned models with one base (lesson 10) measures the base only once per session."""
    from cfcourse.lm import report as rp

    monkeypatch.setenv("CFCOURSE_DATA", str(lm_data))
    base, tuned = tiny_pair
    kwargs = dict(domains=["legal", "code"], n_blocks=2, block_len=16, prompts=["Hello"], max_new_tokens=2)
    monkeypatch.setattr(rp, "_BASE_MEASURED", {})
    first = rp.forgetting_report(base, tuned, out=tmp_path / "one", **kwargs)
    measured = []
    real = rp._measure
    monkeypatch.setattr(rp, "_measure", lambda side, plan, say: measured.append(side.role) or real(side, plan, say))
    second = rp.forgetting_report(base, tuned, out=tmp_path / "two", **kwargs)
    assert measured == ["tuned"]
    assert second["domains"] == first["domains"] and second["seconds"]["base"] == 0.0
    rp.forgetting_report(base, tuned, out=tmp_path / "three", **{**kwargs, "n_blocks": 1})
    assert measured == ["tuned", "base", "tuned"]  # other settings: measured again


# --- your own texts -----------------------------------------------------------------------------------------------

SONNET = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate: rough winds do shake the "
          "darling buds of May, and summer's lease hath all too short a date. ") * 6


@pytest.fixture
def my_texts(tmp_path) -> dict[str, Path]:
    """A plain text file (one document) and a JSONL file (one document per line, blank lines skipped)."""
    plain = tmp_path / "notes.txt"
    plain.write_text(SONNET + "\n\n" + SONNET, encoding="utf-8")
    jsonl = tmp_path / "faq.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": SONNET, "id": i}) for i in range(3)) + "\n\n", encoding="utf-8")
    return {"notes": plain, "faq": jsonl}


def test_your_own_texts_are_domains_measured_alone_by_default(tiny_pair, my_texts, course_tokenizer, tmp_path):
    result = forgetting_report(*tiny_pair, texts=my_texts, out=tmp_path / "r", n_blocks=4, block_len=BLOCK_LEN,
                               prompts=[], dtype="bfloat16", device="cpu")
    assert list(result["domains"]) == ["notes", "faq"]
    assert result["texts"]["notes"] == {"path": str(my_texts["notes"]), "format": "text", "documents": 1}
    assert result["texts"]["faq"] == {"path": str(my_texts["faq"]), "format": "jsonl", "documents": 3}
    assert (result["settings"]["dtype"], result["settings"]["device"]) == ("bfloat16", "cpu")
    model, _ = load_model(tiny_pair[0], device="cpu", dtype=torch.bfloat16)
    docs = report_module().read_text("notes", my_texts["notes"])
    blocks = domains.blocks(domains.encode(course_tokenizer, docs), BLOCK_LEN, 4)
    assert result["domains"]["notes"]["ppl_base"] == pytest.approx(measures.perplexity(model, blocks, 1), rel=1e-5)
    text = (tmp_path / "r" / "report.md").read_text()
    assert "- your texts, measured as given" in text and f"notes (`{my_texts['notes']}`, 1 document)" in text
    assert "bfloat16 on cpu" in text


def test_your_texts_beside_course_domains(tiny_pair, my_texts, tmp_path):
    result = forgetting_report(*tiny_pair, domains=["legal"], texts={"faq": my_texts["faq"]}, out=tmp_path / "r",
                               n_blocks=1, block_len=BLOCK_LEN, prompts=[])
    assert list(result["domains"]) == ["legal", "faq"]
    assert all(r["interval"] is None and r["verdict"] == "unclear" for r in result["domains"].values())
    assert "| none (1 block) | unclear |" in (tmp_path / "r" / "report.md").read_text()


def report_module():
    from cfcourse.lm import report as rp
    return rp


@pytest.mark.parametrize("name, content, expected", [
    ("missing.txt", None, r"text 'mine': .*missing.txt does not exist; give a UTF-8 text file, or a .jsonl file"),
    ("empty.txt", " \n\n  \n", r"text 'mine': .*empty.txt has no text \(it is empty or only white space\)"),
    ("short.txt", "Too short.", r"the mine \(.*short.txt\) text has \d+ tokens, fewer than one block of 32; give a "
                                r"longer text"),
    ("bad.jsonl", '{"text": "fine"}\n\n{"text": "broken"\n', r"text 'mine': line 3 of .*bad.jsonl is not valid JSON"),
    ("no-field.jsonl", '{"text": "fine"}\n{"body": "no text"}\n', r"line 2 of .*no-field.jsonl has no string field "
                                                                 r"\"text\""),
    ("latin1.txt", b"caf\xe9 " * 50, r"is not UTF-8 text .*save it as UTF-8"),
])
def test_bad_texts_are_refused_before_weights_load(tiny_pair, tmp_path, no_weights, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError, match=expected):
        forgetting_report(*tiny_pair, texts={"mine": path}, out=tmp_path / "out", block_len=BLOCK_LEN)
    assert not (tmp_path / "out").exists()


def test_text_names_must_be_new_and_plain(tiny_pair, my_texts, tmp_path, no_weights):
    with pytest.raises(ReportError, match="text name 'legal' is a course domain; call your text something else"):
        forgetting_report(*tiny_pair, texts={"legal": my_texts["notes"]}, out=tmp_path / "out")
    with pytest.raises(ReportError, match="text name 'my notes' must be letters, digits"):
        forgetting_report(*tiny_pair, texts={"my notes": my_texts["notes"]}, out=tmp_path / "out")


# --- a PEFT adapter as the tuned model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_adapter(tiny_pair, tmp_path_factory) -> Path:
    """A LoRA adapter saved by peft for the tiny base model, with random A and B so that it changes the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(tiny_pair[0])
    cfg = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("tiny-adapter")
    get_peft_model(model, cfg).save_pretrained(folder)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_pair[0])
    return folder


def test_an_adapter_is_measured_on_its_base_model(tiny_pair, tiny_adapter, tmp_path):
    from peft import PeftModel

    base = tiny_pair[0]
    result = forgetting_report(base, tiny_adapter, domains=["legal"], out=tmp_path / "r", n_blocks=2,
                               block_len=BLOCK_LEN, prompts=["Hello"], max_new_tokens=4)
    legal = result["domains"]["legal"]
    assert result["tuned"]["adapter"] == {"peft_type": "LORA", "base_model_name_or_path": str(base)}
    assert abs(legal["change"]) > 1e-3 and legal["nll_tuned"] != legal["nll_base"]
    model, tokenizer = load_model(base, device="cpu")
    tuned = PeftModel.from_pretrained(model, tiny_adapter).eval()
    blocks = domains.domain_blocks("legal", tokenizer, "heldout", 2, BLOCK_LEN)
    assert legal["ppl_tuned"] == pytest.approx(measures.perplexity(tuned, blocks, batch_size=1), rel=1e-5)


def test_an_adapter_for_another_base_is_refused(tiny_pair, tiny_adapter, tmp_path, no_weights):
    import shutil

    other = shutil.copytree(tiny_adapter, tmp_path / "adapter")
    cfg = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(tiny_pair[1])}))
    with pytest.raises(ReportError, match=r"tuned model: the adapter .* was trained on '.*tiny-tuned.*', but the base "
                                          r"model is '.*tiny-base.*'; give '.*tiny-tuned.*' as --base"):
        forgetting_report(tiny_pair[0], other, out=tmp_path / "out")
    with pytest.raises(ReportError, match="base model: .* is a PEFT adapter, not a whole model"):
        forgetting_report(tiny_adapter, tiny_pair[0], out=tmp_path / "out")
    (other / "adapter_model.safetensors").unlink()
    with pytest.raises(ReportError, match="has no adapter_model.safetensors"):
        forgetting_report(tiny_pair[1], other, out=tmp_path / "out")


def test_an_adapter_on_the_course_model_matches_the_course_name(tiny_adapter, tmp_path):
    """An adapter trained on `smollm2-135m-instruct` fits the course folder (and nothing else)."""
    rp = report_module()
    course = lm_model.default_model_dir()
    tuned = rp._Side("tuned", str(tiny_adapter), tiny_adapter, None,
                     {"base_model_name_or_path": lm_model.DEFAULT_MODEL})
    rp._check_adapter_base(tuned, rp._Side("base", str(course), course, None))
    tuned.adapter = {"base_model_name_or_path": str(course)}
    rp._check_adapter_base(tuned, rp._Side("base", lm_model.DEFAULT_MODEL, course, None))
    with pytest.raises(ReportError, match="was trained on 'smollm2-135m-instruct'"):
        tuned.adapter = {"base_model_name_or_path": lm_model.DEFAULT_MODEL}
        rp._check_adapter_base(tuned, rp._Side("base", str(tmp_path), tmp_path, None))


# --- dtype and device ---------------------------------------------------------------------------------------------

def test_a_device_this_machine_lacks_is_refused(tiny_pair, tmp_path, no_weights, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ReportError, match=r"device 'cuda' is not available on this machine; available: cpu \("):
        forgetting_report(*tiny_pair, device="cuda", out=tmp_path / "out")
    with pytest.raises(ReportError, match="device .--device. must be one of auto, cpu, cuda, mps, got 'tpu'"):
        forgetting_report(*tiny_pair, device="tpu", out=tmp_path / "out")
    with pytest.raises(ReportError, match="dtype .--dtype. must be one of float32, bfloat16, float16, got 'int8'"):
        forgetting_report(*tiny_pair, dtype="int8", out=tmp_path / "out")
    code = main(["report", "--base", str(tiny_pair[0]), "--tuned", str(tiny_pair[1]), "--device", "mps",
                 "--out", str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out").exists()


# --- --json and --text on the command line ------------------------------------------------------------------------

def test_cli_json_holds_stdout_alone_and_progress_bars_go_to_stderr(tiny_pair, my_texts, tmp_path, capsys,
                                                                     monkeypatch):
    from functools import partial

    from tqdm.auto import tqdm

    monkeypatch.setattr(measures, "tqdm", partial(tqdm, disable=False))  # as without TQDM_DISABLE
    code = main(["report", "--base", str(tiny_pair[0]), "--tuned", str(tiny_pair[1]), "--text",
                 f"notes={my_texts['notes']}", "--blocks", "2", "--out", str(tmp_path / "rep"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report == json.loads((tmp_path / "rep" / "report.json").read_text())
    assert list(report["domains"]) == ["notes"]
    assert "| domain | base ppl |" in err and "base model, notes" in err and "tuned model, notes" in err


@pytest.mark.parametrize("argv, expected", [
    (["--text", "notes"], "expected NAME=PATH (e.g. notes=notes.txt), got 'notes'"),
    (["--text", "a=x.txt", "--text", "a=y.txt"], "--text names must differ: a given more than once"),
    (["--dtype", "int8"], "invalid choice: 'int8'"),
])
def test_cli_refuses_bad_text_and_dtype_options(tiny_pair, tmp_path, capsys, no_weights, argv, expected):
    try:
        code = main(["report", "--base", str(tiny_pair[0]), "--tuned", str(tiny_pair[1]), "--out",
                     str(tmp_path / "rep"), *argv])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2 and expected in capsys.readouterr().err


def test_python_m_cfcourse_report_json_pipes_into_json_load(tiny_pair, my_texts, tmp_path, subprocess_env,
                                                             lm_data):
    env = dict(subprocess_env, CFCOURSE_DATA=str(lm_data), HF_HUB_OFFLINE="1", CFCOURSE_THREADS="1")
    one_probe = tmp_path / "probe.json"
    one_probe.write_text(json.dumps({"domains": {"general": [{"prompt": "One plus one is", "answer": " two"}]}}))
    proc = subprocess.run([sys.executable, "-m", "cfcourse", "report", "--base", str(tiny_pair[0]), "--tuned",
                           str(tiny_pair[1]), "--text", f"faq={my_texts['faq']}", "--blocks", "3", "--json",
                           "--probes", str(one_probe), "--out", str(tmp_path / "rep")], capture_output=True,
                          text=True, env=env, timeout=180, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert list(report["domains"]) == ["faq"] and len(report["domains"]["faq"]["interval"]) == 2
    assert "| faq |" in proc.stderr and "cfcourse: loading the base model" in proc.stderr
    assert "model, faq" not in proc.stderr  # TQDM_DISABLE=1: no progress bars
