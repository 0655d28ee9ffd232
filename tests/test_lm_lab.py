"""The lessons' shared experiment (the lab: settings, texts, runs, story, sweep) and its figures (views), on tiny random
Llamas with the course tokenizer."""
from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import replace

import matplotlib
import pytest
import torch

import cfcourse.lm.runs as lm_runs
import cfcourse.lm.story as lm_story
from cfcourse.lm import finetune as ft
from cfcourse.lm import views
from cfcourse.lm.measures import domain_perplexities
from cfcourse.lm.model import DEFAULT_MODEL, MANIFEST, ModelError, load_model
from cfcourse.lm.runs import Snapshot, own_answers, reuse, runs_dir, saved_run, train
from cfcourse.lm.settings import settings, stage2_config, use_threads
from cfcourse.lm.story import (RECORD_VERSION, STAGE1, STAGE2, chosen_lr, load_record, record, record_table,
                               story_numbers)
from cfcourse.lm.sweep import load_sweep, point, recorded_points, sweep, sweep_grid
from cfcourse.lm.texts import held_out, old_text, validation

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def tok(lm_data):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(lm_data / DEFAULT_MODEL)
    t.pad_token = t.pad_token or t.eos_token
    return t


def _tiny(vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=160,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def data_dir(lm_data, tmp_path, monkeypatch):
    """CFCOURSE_DATA with the text assets; runs and cached answers go to this test's own CFCOURSE_RUNS."""
    monkeypatch.setenv("CFCOURSE_DATA", str(lm_data))
    monkeypatch.setenv("CFCOURSE_RUNS", str(tmp_path / "runs"))
    return lm_data


def test_settings_follow_the_mode(monkeypatch):
    monkeypatch.setenv("CFCOURSE_FAST", "0")
    full = settings()
    monkeypatch.setenv("CFCOURSE_FAST", "1")
    fast = settings()
    assert fast.finetune.steps < full.finetune.steps and fast.medical.steps < full.medical.steps
    assert fast.headline_blocks * fast.block_len < full.headline_blocks * full.block_len
    assert full.headline_blocks >= 32 and full.block_len == 128, "the headline numbers rest on 32 blocks of 128"
    assert full.finetune.trainable_layers == 10 and full.finetune.batch_size == 2
    assert len(full.seeds) >= 3 and full.legal.lr in full.lr_grid


def test_threads_are_two_on_a_quiet_machine_and_one_on_a_busy_one(monkeypatch):
    from cfcourse import config

    monkeypatch.delenv("CFCOURSE_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(config, "idle_cpus", lambda *a: 1.9)
        assert use_threads() == min(2, config.cpu_budget()) == torch.get_num_threads()
        monkeypatch.setattr(config, "idle_cpus", lambda *a: 0.9)
        assert use_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("CFCOURSE_THREADS", "2")
        assert use_threads() == min(2, config.cpu_budget())
        monkeypatch.setenv("CFCOURSE_THREADS", "1")
        monkeypatch.setattr(config, "idle_cpus", lambda *a: None)
        assert use_threads() == 1
        monkeypatch.delenv("CFCOURSE_THREADS")
        assert use_threads() == 1  # idle CPUs unknown: the safe choice
    finally:
        torch.set_num_threads(before)


def test_held_out_blocks_and_old_text_never_use_held_out_documents(tok, data_dir):
    blocks = held_out(tok, settings(), n_blocks=2, block_len=32, names=("legal", "code"))
    assert {d: tuple(b.shape) for d, b in blocks.items()} == {"legal": (2, 32), "code": (2, 32)}
    old = old_text(tok, settings(), n_blocks=3, block_len=32)
    assert old.shape == (3, 32)  # medical training text, the old domain of stage 2
    assert torch.equal(old, old_text(tok, settings(), n_blocks=3, block_len=32))  # fixed shuffle
    held = set(map(tuple, held_out(tok, settings(), n_blocks=3, block_len=32, names=("medical",))["medical"].tolist()))
    assert not held & set(map(tuple, old.tolist()))
    val = validation(tok, "legal", replace(settings(), validation_blocks=2, block_len=32))
    assert val.shape == (2, 32) and not set(map(tuple, val.tolist())) & set(map(tuple, blocks["legal"].tolist()))


def test_own_answers_are_cached_per_model(tok, data_dir, monkeypatch, tmp_path):
    model = _tiny(len(tok))
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    first = own_answers(model, tok, max_new_tokens=4, model_name=str(folder), verbose=False)
    assert len(first) == 20 and all(d.text.startswith("Question: ") for d in first)
    cached = list(runs_dir().glob("own-answers-heldout-4-*.json"))
    assert len(cached) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("answered again instead of using the cache")
    monkeypatch.setattr("cfcourse.lm.measures.generate", no_generation)
    again = own_answers(model, tok, max_new_tokens=4, model_name=str(folder), verbose=False)
    assert [d.text for d in again] == [d.text for d in first]


def test_a_run_is_trained_measured_saved_and_reused(tok, data_dir, tmp_path):
    model = _tiny(len(tok))
    blocks = held_out(tok, settings(), n_blocks=2, block_len=16, names=("legal", "code"))
    before = domain_perplexities(model, blocks)
    cfg = ft.FinetuneConfig(steps=4, batch_size=2, lr=1e-2, trainable_layers=1, gradient_checkpointing=False)
    recording = {"blocks": {d: b[:1] for d, b in blocks.items()}, "prompt": "What is a fever?", "every": 2,
                 "tokens": 3}
    run = train(model, tok, cfg, before, blocks, name="tiny-legal", record=recording, verbose=False)
    assert [s.step for s in run.snapshots] == [0, 2, 4]
    assert run.snapshots[0].ppl == domain_perplexities(_tiny(len(tok)), recording["blocks"])
    assert run.after == domain_perplexities(model, blocks)
    assert run.change()["legal"] == pytest.approx(run.after["legal"] / before["legal"] - 1)
    folder = tmp_path / "runs" / "tiny-legal"
    assert (folder / MANIFEST).is_file() and run.folder == str(folder)
    reloaded, _ = load_model(folder)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))

    again = reuse("tiny-legal", cfg, blocks)
    assert again is not None and again.after == run.after and [s.step for s in again.snapshots] == [0, 2, 4]
    assert reuse("tiny-legal", replace(cfg, lr=2e-2), blocks) is None  # other settings
    assert reuse("tiny-legal", cfg, {d: b[:1] for d, b in blocks.items()}) is None  # other blocks
    assert reuse("tiny-legal", cfg, blocks, domain="code") is None
    assert reuse("never-trained", cfg, blocks) is None
    assert reuse("tiny-legal", cfg, s=settings()) is None  # measured on 2 x 16 blocks of two domains, not this mode's
    with pytest.raises(ValueError, match="the settings s"):
        reuse("tiny-legal", cfg)
    assert reuse("tiny-legal", cfg, blocks, start="lesson08-medical") is None  # another starting model

    (folder / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_model(folder)


def test_sweep_points_round_trip_and_bad_files_are_ignored(tmp_path):
    path = tmp_path / "sweep.json"
    assert load_sweep(path) is None
    path.write_text("{not json")
    assert load_sweep(path) is None
    path.write_text(json.dumps({"points": [{"gain": 0.1}]}))
    assert load_sweep(path) is None
    good = [{"gain": 0.3, "rise": 0.05, "label": "lr 3e-04"}]
    path.write_text(json.dumps({"points": good}))
    assert load_sweep(path) == good


def test_sweep_grid_has_each_cure_at_two_learning_rates():
    grid = sweep_grid(settings(), lr=4e-4)
    kinds = [k for k, _ in grid]
    assert {k: kinds.count(k) for k in kinds} == {"replay": 2, "EWC": 2, "LoRA": 2, "generative replay": 2}
    assert {c.lr for k, c in grid if k == "replay"} == {4e-4, 8e-4}
    assert all(c.replay_ratio == 0.5 for k, c in grid if "replay" in k)


def test_story_numbers_of_hand_made_perplexities():
    n = story_numbers({"medical": 40.0, "legal": 30.0}, {"medical": 30.0, "legal": 31.0},
                          {"medical": 35.0, "legal": 24.8})
    assert n["medical_gain"] == pytest.approx(0.25) and n["medical_rise"] == pytest.approx(35 / 30 - 1)
    assert n["gain_lost"] == pytest.approx(0.5) and n["legal_gain"] == pytest.approx(0.2)


def test_points_and_matched_gain():
    from cfcourse.lm import cures

    start = {"medical": 30.0, "legal": 30.0, "code": 10.0}
    p = point(start, {"medical": 33.0, "legal": 24.0, "code": 50.0}, "plain", "learning rate")
    assert p["gain"] == pytest.approx(0.2) and p["rise"] == pytest.approx(0.1), "only medical counts as forgotten"
    points = [{"kind": "learning rate", "gain": 0.1, "rise": 0.04}, {"kind": "learning rate", "gain": 0.3, "rise": 0.2},
              {"kind": "replay", "gain": 0.15, "rise": 0.0}, {"kind": "replay", "gain": 0.25, "rise": 0.02}]
    at = cures.rise_at_gain(points, 0.2)
    assert at["learning rate"] == pytest.approx(0.12) and at["replay"] == pytest.approx(0.01)
    assert cures.rise_at_gain(points, 0.35) == {"learning rate": None, "replay": None}
    wise = [{"kind": "WiSE-FT", "gain": g, "rise": r} for g, r in ((0.0, 0.0), (0.13, -0.04), (0.18, -0.04),
                                                                    (0.11, 0.10))]  # a = 0, 0.5, 0.75, 1: a path
    assert cures.rise_at_gain(wise, 0.11)["WiSE-FT"] == pytest.approx(-0.04 * 0.11 / 0.13)
    rec = {"lr_sweep": [{"lr": 1e-3, "after": {"medical": 36.0, "legal": 21.0}}],
           "seeds": [{"stage1": {"medical": 30.0, "legal": 30.0}}]}
    (q,) = recorded_points(rec)
    assert q["kind"] == "learning rate" and q["gain"] == pytest.approx(0.3) and q["rise"] == pytest.approx(0.2)
    assert recorded_points(None) == []


def test_records_mine_first_then_the_courses(data_dir, monkeypatch):
    mine = runs_dir() / "record-full.json"
    mine.unlink(missing_ok=True)
    shipped = load_record("full")
    assert shipped is not None and shipped["source"] == "the course's record"
    assert len(shipped["seeds"]) >= 3 and shipped["best_lr"] in shipped["settings"]["lr_grid"]
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text(json.dumps({**shipped, "best_lr": 1.6e-4, "source": None}))
    try:
        assert load_record("full")["source"] == "your own record"
        monkeypatch.setenv("CFCOURSE_FAST", "0")
        assert chosen_lr(settings())[0] == 1.6e-4
    finally:
        mine.unlink()
    assert load_record("no-such-mode") is None


def test_interpolation_moves_only_along_the_line(tok):
    from cfcourse.lm import cures

    model, other = _tiny(len(tok)), _tiny(len(tok))
    with torch.no_grad():
        for p in ft.decoder_layers(other)[-1].parameters():
            p.add_(1.0)
    start, tuned = cures.top_layer_weights(model, 1), cures.top_layer_weights(other, 1)
    assert start.keys() == tuned.keys() and all(k.startswith("model.layers.1.") for k in start)
    name = next(iter(start))
    for a in (0.0, 0.5, 1.0):
        cures.interpolate(model, start, tuned, a)
        assert torch.allclose(dict(model.named_parameters())[name], start[name] + a * 1.0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        cures.interpolate(model, start, tuned, 1.5)


def test_an_unmerged_lora_adapter_switched_off_is_the_start_model_exactly(tok):
    model = _tiny(len(tok))
    ids = torch.randint(0, len(tok), (2, 12))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    cfg = ft.FinetuneConfig(steps=3, batch_size=2, lr=5e-2, trainable_layers=2, gradient_checkpointing=False,
                            lora_rank=2, lora_targets=("q_proj", "v_proj"), merge_lora=False)
    tuned = ft.finetune(model, torch.randint(0, len(tok), (6, 12)), cfg)["model"]
    with torch.no_grad():
        assert not torch.equal(tuned(input_ids=ids).logits, want), "the adapter changed the model"
        with tuned.disable_adapter():
            assert torch.equal(tuned(input_ids=ids).logits, want)
    assert "unmerged" in cfg.label()


# --- figures and widgets -------------------------------------------------------------------------------------

def test_perplexity_change_figure_writes_the_change():
    ax = views.plot_perplexity_change({"legal": 30.0, "code": 10.0}, {"legal": 21.0, "code": 15.0}, "legal")
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["-30%", "+50%"]
    assert ax.get_xticklabels()[0].get_text() == "legal\n(new)"


def test_step_figure_and_viewer():
    snaps = [Snapshot(s, math.nan if s == 0 else 2.0, {"legal": 30.0 - s, "code": 10.0 + s}, f"answer {s}")
             for s in (0, 10, 20)]
    fig = views.step_figure(snaps, 1)
    assert "answer 10" in fig.axes[1].texts[0].get_text()
    widget = views.step_viewer(snaps, question="What is a fever?")
    slider = widget.children[0].children[0]
    assert slider.max == 2 and slider.value == 2
    slider.value = 0
    assert widget.children[0].children[1].value.startswith("step 0")
    with pytest.raises(ValueError, match="no snapshots"):
        views.step_viewer([])


def test_stage_figure_and_wise_viewer():
    rows = {"pretrained": {"medical": 40.0, "legal": 30.0}, "medical": {"medical": 30.0, "legal": 31.0},
            "legal": {"medical": 35.0, "legal": 24.0}}
    ax = views.plot_stages(rows, recorded=[rows, rows])
    assert len(ax.lines) == 2 * 3 + 1  # each domain: two recorded seeds and the live run; the zero line
    curve = {0.0: {"medical": 30.0, "legal": 30.0}, 0.5: {"medical": 31.0, "legal": 27.0},
             1.0: {"medical": 35.0, "legal": 24.0}}
    fig = views.wise_figure(curve, curve[0.0], 0.5)
    assert "a = 0.5" in fig.axes[0].get_title() and "legal -10%" in fig.axes[0].get_title()
    widget = views.wise_viewer(curve, curve[0.0])
    assert widget.children[0].children[0].max == 2
    with pytest.raises(ValueError, match="at least two"):
        views.wise_viewer({0.0: curve[0.0]}, curve[0.0])


def test_tradeoff_viewer_shows_the_selected_settings():
    points = [{"label": "plain", "gain": 0.22, "rise": 0.58, "kind": "plain", "old_rise": {"code": 0.6}},
              {"label": "lr 3e-04", "gain": 0.42, "rise": 0.07, "kind": "learning rate", "seconds": 80.0}]
    widget = views.tradeoff_viewer(points)
    chooser, details = widget.children[1].children
    assert "plain" in details.value and "+58%" in details.value and "code: +60%" in details.value
    chooser.value = 1
    assert "lr 3e-04" in details.value and "-42%" in details.value and "80 s" in details.value
    ax = views.plot_tradeoff(points, selected=1)
    assert len(ax.collections) == 3  # two families and the ring
    with pytest.raises(ValueError, match="no points"):
        views.tradeoff_viewer([])


def test_runs_go_to_cfcourse_runs_or_the_users_cache_never_the_data_folder(tmp_path, monkeypatch):
    from cfcourse import config

    monkeypatch.delenv("CFCOURSE_RUNS", raising=False)
    monkeypatch.setenv("CFCOURSE_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    (tmp_path / "shared").mkdir()
    assert config.data_dir() == tmp_path / "shared"
    assert runs_dir() == tmp_path / "home-cache" / "cfcourse" / "lm-runs"  # even when the data folder is writable
    monkeypatch.setenv("CFCOURSE_RUNS", str(tmp_path / "mine"))
    assert runs_dir() == tmp_path / "mine"


def test_two_students_with_their_own_runs_folders_never_touch_each_other_or_the_data(tok, data_dir, tmp_path,
                                                                                   monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in data_dir.iterdir()}
    model = _tiny(len(tok))
    blocks = held_out(tok, settings(), n_blocks=2, block_len=16, names=("legal",))
    cfg = ft.FinetuneConfig(steps=1, batch_size=2, lr=1e-2, trainable_layers=1, gradient_checkpointing=False)
    for student in ("ada", "bo"):
        monkeypatch.setenv("CFCOURSE_RUNS", str(tmp_path / student))
        train(model, tok, cfg, domain_perplexities(model, blocks), blocks, name="lesson08-legal", verbose=False)
    assert (tmp_path / "ada" / "lesson08-legal" / MANIFEST).is_file()
    assert (tmp_path / "bo" / "lesson08-legal" / MANIFEST).is_file()
    assert {p: p.stat().st_mtime_ns for p in data_dir.iterdir()} == before


def test_record_tells_the_story_over_seeds_and_chooses_stage_2s_rate_on_validation(tok, data_dir, tmp_path,
                                                                                     monkeypatch):
    folder = tmp_path / "tiny"
    _tiny(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    real = lm_runs.load_model
    monkeypatch.setattr(lm_runs, "load_model", lambda name=None: real(folder if name is None else name))
    monkeypatch.setenv("CFCOURSE_RUNS", str(tmp_path / "runs"))
    step = dict(steps=2, batch_size=2, trainable_layers=1, gradient_checkpointing=False)
    s = replace(settings(), block_len=16, headline_blocks=2, other_blocks=1, validation_blocks=2, questions=2,
                seeds=(0, 1), lr_grid=(5e-2, 1e-3), medical=ft.FinetuneConfig(lr=1e-2, **step),
                legal=ft.FinetuneConfig(lr=1e-2, seed=100, **step), choose_steps=4, long_steps=7,
                checkpoint_every=3)
    rec = record(s, verbose=False)
    assert [x["seed"] for x in rec["seeds"]] == [0, 1] and len(rec["lr_sweep"]) == 2
    assert rec["best_lr"] == min(rec["lr_sweep"], key=lambda p: p["validation_long"])["lr"]
    assert rec["chosen_at_step"] == 4 and rec["sweep_source"] == "this run"
    assert [r["step"] for r in rec["lr_sweep"][0]["trajectory"]] == [2, 3, 4], "every 3 steps, at 2 and at the end"
    assert all("validation" in r for r in rec["lr_sweep"][0]["trajectory"])
    assert [r["step"] for r in rec["seeds"][1]["trajectory"]] == [2, 3, 6, 7], "the seeds run on past the sweep"
    seed0 = rec["seeds"][0]
    assert seed0["numbers"] == story_numbers(rec["pretrained"]["ppl"], seed0["stage1"], seed0["stage2"])
    assert rec["summary"]["medical_rise"]["values"] == [x["numbers"]["medical_rise"] for x in rec["seeds"]]
    assert seed0["numbers_long"] == story_numbers(rec["pretrained"]["ppl"], seed0["stage1"], seed0["stage2_long"])
    assert rec["summary"]["long"]["gain_lost"]["values"] == [x["numbers_long"]["gain_lost"] for x in rec["seeds"]]
    assert {"change2_long", "share2_long"} <= set(seed0["questions"])
    assert seed0["trajectory"][-1]["medical"] == pytest.approx(seed0["stage2_long"]["medical"])
    assert {"change1", "change2", "share1", "share2"} <= set(seed0["questions"])
    runs = tmp_path / "runs"
    assert (runs / STAGE1 / MANIFEST).is_file() and (runs / STAGE2 / MANIFEST).is_file()
    assert not (runs / "record-medical-s1").exists(), "the other seeds' models are not kept"
    assert saved_run(STAGE2).start == STAGE1
    assert saved_run(STAGE2).after == seed0["stage2"], "the saved model is the run at the lessons' length"
    assert reuse(STAGE2, stage2_config(s, rec["best_lr"]), start=STAGE1,
                     blocks=held_out(lm_runs.load_model()[1], s)) is not None
    assert load_record()["source"] == "your own record"

    # The sweep of that record stands in for a new record's when the new seed 0 reaches the same medical model...
    def no_sweep(*a, **k):
        raise AssertionError("the earlier sweep fits: it must not be run again")
    monkeypatch.setattr(lm_story, "choose_lr", no_sweep)
    earlier = runs / "earlier.json"
    earlier.write_text(json.dumps(rec))
    again = record(replace(s, seeds=(0,)), out=runs / "again.json", verbose=False, sweep_from=earlier)
    as_read = json.loads(earlier.read_text())
    assert again["lr_sweep"] == as_read["lr_sweep"] and again["best_lr"] == rec["best_lr"]
    assert again["sweep_source"].startswith("earlier.json of ")
    assert {k: v for k, v in json.loads(json.dumps(again["seeds"][0])).items() if k != "seconds"} == \
        {k: v for k, v in as_read["seeds"][0].items() if k != "seconds"}
    # ... and not when anything differs: then the sweep is run, and the record says why.
    monkeypatch.setattr(lm_story, "choose_lr", lambda *a, **k: rec["lr_sweep"])
    changed = json.loads(earlier.read_text())
    changed["seeds"][0]["stage1"]["medical"] *= 1.01
    earlier.write_text(json.dumps(changed))
    other = record(replace(s, seeds=(0,)), out=runs / "other.json", verbose=False, sweep_from=earlier)
    assert other["sweep_source"].startswith("this run (earlier.json") and "another medical model" in other["sweep_source"]
    header = {k: v for k, v in other.items() if k in ("mode", "versions", "settings", "pretrained")}
    assert lm_story._earlier_sweep(header, earlier) is not None
    for key, value in (("lr_grid", [1.0]), ("questions", 99)):
        earlier.write_text(json.dumps({**changed, "settings": {**changed["settings"], key: value}}))
        assert lm_story._earlier_sweep(header, earlier) is None, f"a sweep with another {key} cannot stand in"


def test_sweep_trains_each_cure_from_the_medical_model_and_writes_its_points(tok, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CFCOURSE_RUNS", str(tmp_path / "runs"))
    model = _tiny(len(tok))
    blocks = held_out(tok, settings(), n_blocks=2, block_len=16)
    cfg = ft.FinetuneConfig(steps=1, batch_size=2, lr=1e-2, trainable_layers=1, gradient_checkpointing=False)
    train(model, tok, cfg, domain_perplexities(model, blocks), blocks, name=STAGE1, domain="medical", verbose=False)
    s = replace(settings(), block_len=16, headline_blocks=2, other_blocks=2, replay_blocks=3, self_blocks=2)
    grid = [("replay", replace(cfg, replay_ratio=0.5)), ("generative replay", replace(cfg, replay_ratio=0.5))]
    points = sweep(s, grid, verbose=False, seeds=(0, 1, 2))
    assert [p["kind"] for p in points] == ["replay", "generative replay"]
    assert all({"gain", "rise", "ppl_before", "per_seed", "label", "rise_range"} <= set(p) for p in points)
    for p in points:
        assert [r["seed"] for r in p["per_seed"]] == [0, 1, 2]
        assert p["rise"] == sorted(r["rise"] for r in p["per_seed"])[1], "the median of three"
        assert p["gain_range"] == [min(r["gain"] for r in p["per_seed"]), max(r["gain"] for r in p["per_seed"])]
    assert load_sweep() == json.loads(json.dumps(points))  # yours, in this mode, from the runs folder


def test_long_run_figure_draws_each_seed_their_median_and_your_run():
    s1 = {"medical": 30.0, "legal": 30.0}
    seeds = [{"trajectory": [{"step": 50, "medical": 31.0 + k, "legal": 24.0}, {"step": 100, "medical": 33.0 + k,
                                                                                "legal": 21.0}]} for k in range(3)]
    left, right = views.plot_long_run(seeds, [s1] * 3, 50, mine={"medical": 0.05, "legal": 0.2})
    medians = [line for line in left.lines if line.get_label().startswith("median")]
    assert len(medians) == 1 and list(medians[0].get_ydata()) == pytest.approx([0, 100 * 2 / 30, 100 * 4 / 30])
    assert list(right.lines[-3].get_ydata()) == pytest.approx([0, 20, 30]), "legal: the drop, upwards"
    assert len(left.collections) == 1 and left.collections[0].get_offsets()[0][1] == pytest.approx(5)


def test_the_teaching_guide_shows_the_courses_own_record():
    """The numbers the guide quotes are the shipped record's, as record_table prints them: not typed by hand."""
    from importlib import resources

    rec = json.loads(resources.files("cfcourse.lm").joinpath("records", "record-full.json").read_text())
    assert rec["version"] == RECORD_VERSION and len(rec["seeds"]) >= 3
    guide = (Path(__file__).resolve().parent.parent / "docs" / "teaching.md").read_text()
    block = guide.split("<!-- lm-record:start -->")[1].split("<!-- lm-record:end -->")[0]
    assert block.strip() == record_table(rec), "run: python -m cfcourse lm-record --table, and paste it"
