"""The story of lessons 08-10, medical then legal, measured over seeds: the record (python -m cfcourse lm-record).

SmolLM2-135M-Instruct is fine-tuned on medical text (PubMed abstracts; stage 1), and that medical model is then
fine-tuned on legal text (licences and law scenarios; stage 2) at the learning rate that does best on legal
validation text. Every stage is measured on held-out text of five domains and on MMLU's medical questions: does
stage 2 undo what stage 1 taught? The record keeps the numbers of every seed; lesson 08 shows it beside its
own live run.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .. import config
from ..assets import write_atomic
from . import questions as qs
from .finetune import FinetuneConfig, finetune
from .measures import domain_perplexities, perplexity
from .model import DEFAULT_MODEL, resolve
from .runs import Run, fresh_model, model_key, release_memory, remove_run, runs_dir, save_json, save_model, train
from .settings import FIRST_DOMAIN, HEADLINE, NEW_DOMAIN, LabSettings, stage1_config, stage2_config
from .texts import ask, held_out, medical_questions, train_text, validation

STAGE1, STAGE2 = "lesson08-medical", "lesson08-legal"  # the saved models of lesson 08 (seed 0)
RECORD_FILE = "record-{mode}.json"
RECORD_VERSION = 3  # 3: the rate chosen after choose_steps, the seeds run on to long_steps; another version is not read
BASELINE_VERSION = 2  # raise when what baseline() measures changes, so an older cached baseline is not read


def baseline(model, tokenizer, blocks: dict[str, torch.Tensor], questions: list, verbose: bool = True,
             pretrained: str | None = None) -> dict:
    """The pretrained model's perplexities and question scores, cached per model and text (they never change);
    `pretrained` names the model (default the course's)."""
    key = hashlib.sha256(json.dumps([BASELINE_VERSION, model_key(resolve(pretrained)),
                                     {d: b.tolist() for d, b in blocks.items()},
                                     [q.question for q in questions]]).encode()).hexdigest()[:16]
    cache = runs_dir() / f"baseline-{key}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    start = time.perf_counter()
    out = {"ppl": domain_perplexities(model, blocks), "questions": ask(model, tokenizer, questions)}
    if verbose:
        print(f"measured the pretrained model in {time.perf_counter() - start:.0f} s (kept for next time)")
    runs_dir().mkdir(parents=True, exist_ok=True)
    write_atomic(cache, json.dumps(out).encode())
    return out


def story_numbers(before: dict, stage1: dict, stage2: dict) -> dict:
    """The numbers the story is told with, from the perplexities of the three stages of one seed.

    medical_gain: stage 1's fall of medical perplexity (0.2: 20% lower); medical_rise: stage 2's rise over
    stage 1 (0.1: 10% higher); gain_lost: the share of stage 1's medical gain that stage 2 took back;
    legal_gain: stage 2's fall of legal perplexity.
    """
    m0, m1, m2 = before["medical"], stage1["medical"], stage2["medical"]
    return {"medical_gain": 1 - m1 / m0, "medical_rise": m2 / m1 - 1,
            "gain_lost": (m2 - m1) / (m0 - m1) if m0 != m1 else float("nan"),
            "legal_gain": 1 - stage2["legal"] / stage1["legal"]}


def spread(values: list[float]) -> dict:
    """The median, range and values of a number over seeds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def long_stage2(model, tokenizer, cfg: FinetuneConfig, s: LabSettings, blocks: dict[str, torch.Tensor],
                before: dict[str, float], val: torch.Tensor | None = None, questions: list | None = None,
                save_as: str | None = None, start: str = STAGE1, verbose: bool = True,
                steps: int | None = None) -> dict:
    """Stage 2 with `cfg` run on to `steps` (default s.long_steps) steps, measured as it goes.

    Every s.checkpoint_every steps: the held-out perplexity of the headline domains (and of the legal validation
    blocks `val`, if given). At cfg.steps, the lessons' length: every domain of `blocks` and the `questions`, and
    the model saved as `save_as` (a run that lessons 09 and 10 reuse as if it had stopped there: the first
    cfg.steps steps of a longer run are exactly a run of cfg.steps, same batches, same optimiser steps). At the
    end: every domain and the questions again.
    """
    end = s.long_steps if steps is None else steps
    if end < cfg.steps:
        raise ValueError(f"stage 2's {end} steps must be at least the lessons' {cfg.steps}")
    headline = {d: blocks[d] for d in HEADLINE}
    trajectory, losses, out = [], [], {}
    t0 = time.perf_counter()

    def checkpoint(step, loss, m):
        losses.append(loss)
        k = step + 1
        if k % s.checkpoint_every and k not in (cfg.steps, end):
            return
        every = k in (cfg.steps, end)  # every domain here; the headline ones at the other checkpoints
        ppl = domain_perplexities(m, blocks if every else headline)
        row = {"step": k, **{d: ppl[d] for d in HEADLINE}}
        if val is not None:
            row["validation"] = perplexity(m, val)
        trajectory.append(row)
        if k == end:
            out["after_long"] = ppl
        if k == cfg.steps:
            out["after"] = ppl
            out["questions"] = ask(m, tokenizer, questions) if questions else None
            if save_as is not None:
                run = Run(save_as, asdict(cfg), dict(before), out["after"], list(losses), time.perf_counter() - t0,
                          domain=NEW_DOMAIN, blocks={d: list(b.shape) for d, b in blocks.items()}, start=start)
                save_model(m, tokenizer, save_as, run)

    block_len = next(iter(blocks.values())).shape[1]
    finetune(model, train_text(tokenizer, block_len, NEW_DOMAIN), replace(cfg, steps=end), on_step=checkpoint)
    out["questions_long"] = ask(model, tokenizer, questions) if questions else None
    out.update(trajectory=trajectory, seconds=time.perf_counter() - t0)
    if verbose:
        print(f"stage 2 at {cfg.label()}, {end} steps in {out['seconds']:.0f} s: " + "; ".join(
            f"step {r['step']}: " + ", ".join(f"{d} {r[d]:.1f}" for d in HEADLINE) for r in trajectory))
    return out


def choose_lr(tokenizer, start: str, s: LabSettings, blocks: dict[str, torch.Tensor], before: dict,
              verbose: bool = True) -> list[dict]:
    """Stage 2 from the model `start` at every learning rate of s.lr_grid (seed 0), each run on to s.choose_steps:
    legal validation perplexity at every checkpoint, and every held-out perplexity at the lessons' length
    ("after", "validation_ppl") and at the end ("after_long", "validation_long")."""
    points = []
    for lr in s.lr_grid:
        model, tokenizer = fresh_model(start)
        val = validation(tokenizer, NEW_DOMAIN, s)
        cfg = stage2_config(s, lr)
        run = long_stage2(model, tokenizer, cfg, s, blocks, before, val=val, start=start, verbose=verbose,
                          steps=s.choose_steps)
        at = {r["step"]: r["validation"] for r in run["trajectory"]}
        points.append({"lr": lr, "validation_ppl": at[cfg.steps], "after": run["after"],
                       "validation_long": at[s.choose_steps], "after_long": run["after_long"],
                       "trajectory": run["trajectory"], "seconds": run["seconds"], "config": asdict(cfg)})
        del model
    return points


def record(s: LabSettings, out: Path | None = None, verbose: bool = True, sweep_from: Path | None = None,
           pretrained: str | None = None) -> dict:
    """The whole story over s.seeds, with stage 2's learning rate chosen on legal validation text: what lesson 08
    shows beside its live run (`python -m cfcourse lm-record`). Writes (after every seed) and returns the record.

    `sweep_from`: an earlier record whose learning-rate sweep is taken instead of run again, if it was made with
    the same settings, versions and mode, and its seed 0 reached exactly the medical model this run's seed 0
    trains (else the sweep is run, and the record says so). `s`: the lab's settings (the command line passes
    this mode's, `settings()`). `pretrained`: the model stage 1 starts from, a folder or hub id (default the
    course's)."""
    out = Path(out) if out is not None else runs_dir() / RECORD_FILE.format(mode=config.mode_name())
    t0 = time.perf_counter()
    model, tokenizer = fresh_model(pretrained)
    blocks, questions = held_out(tokenizer, s), medical_questions(s)
    base = baseline(model, tokenizer, blocks, questions, verbose, pretrained)
    del model
    rec = _record_header(s, blocks, questions, base)
    rec["model"] = pretrained or DEFAULT_MODEL
    earlier = _earlier_sweep(rec, sweep_from) if sweep_from is not None else None
    for seed in s.seeds:
        if seed == s.seeds[0] and earlier is not None:
            rec["_earlier"] = earlier
        rec["seeds"].append(_record_seed(rec, s, seed, blocks, questions, base, verbose, pretrained))
        rec["summary"] = _record_summary(rec["seeds"])
        rec["seconds"] = time.perf_counter() - t0
        save_json(out, rec)  # a long record can be stopped and still shows what is done
    release_memory()
    return rec


def _record_header(s: LabSettings, blocks: dict, questions: list, base: dict) -> dict:
    import platform

    import transformers

    return {"version": RECORD_VERSION, "mode": config.mode_name(), "created": time.strftime("%Y-%m-%d"),
            "command": "python -m cfcourse lm-record",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "settings": {"medical": asdict(s.medical), "legal": asdict(s.legal), "lr_grid": list(s.lr_grid),
                         "choose_steps": s.choose_steps, "long_steps": s.long_steps,
                         "checkpoint_every": s.checkpoint_every,
                         "blocks": {d: list(b.shape) for d, b in blocks.items()}, "questions": len(questions)},
            "pretrained": {"ppl": base["ppl"], "questions": qs.summarise(base["questions"])}, "seeds": []}


_SWEEP_SETTINGS = ("medical", "legal", "lr_grid", "blocks", "questions", "checkpoint_every")


def _earlier_sweep(rec: dict, path: Path) -> dict | None:
    """The learning-rate sweep of the record at `path`, if it can stand for this record's: same mode, versions
    and sweep settings, and its sweep as long as this one's choose_steps. Its seed 0's medical model is compared
    with this run's when that is trained (_record_seed)."""
    try:
        old = json.loads(Path(path).read_text())
        rec = json.loads(json.dumps(rec))  # as it would be read back (tuples as lists)
        same = (old["mode"] == rec["mode"] and old["versions"] == rec["versions"]
                and all(old["settings"][k] == rec["settings"][k] for k in _SWEEP_SETTINGS)
                and old["chosen_at_step"] == rec["settings"]["choose_steps"]
                and old["pretrained"]["ppl"] == rec["pretrained"]["ppl"])
        if same:
            return {"lr_sweep": old["lr_sweep"], "stage1": old["seeds"][0]["stage1"],
                    "source": f"{Path(path).name} of {old['created']}"}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    print(f"cfcourse: the sweep in {path} was made otherwise (mode, versions or settings); running the sweep",
          file=sys.stderr)
    return None


def _record_seed(rec: dict, s: LabSettings, seed: int, blocks: dict, questions: list, base: dict,
                 verbose: bool, pretrained: str | None = None) -> dict:
    """Both stages of one seed, stage 2 run on to s.long_steps; the first seed also chooses stage 2's learning rate
    (into `rec`): the one with the lowest legal validation perplexity after s.choose_steps steps of the sweep."""
    model, tokenizer = fresh_model(pretrained)
    name = STAGE1 if seed == 0 else f"record-medical-s{seed}"
    run1 = train(model, tokenizer, stage1_config(s, seed), base["ppl"], blocks, name=name, domain=FIRST_DOMAIN,
                 verbose=verbose, start=pretrained or DEFAULT_MODEL)
    q1 = ask(model, tokenizer, questions)
    if "best_lr" not in rec:
        earlier = rec.pop("_earlier", None)
        if earlier is not None and earlier["stage1"] == run1.after:
            rec["lr_sweep"], rec["sweep_source"] = earlier["lr_sweep"], earlier["source"]
        else:
            del model
            rec["lr_sweep"] = choose_lr(tokenizer, name, s, blocks, run1.after, verbose)
            rec["sweep_source"] = "this run" + ("" if earlier is None else
                                                f" ({earlier['source']} started from another medical model)")
            model, tokenizer = fresh_model(name)
        rec["best_lr"] = min(rec["lr_sweep"], key=lambda p: p["validation_long"])["lr"]
        rec["chosen_at_step"] = s.choose_steps
    run2 = long_stage2(model, tokenizer, stage2_config(s, rec["best_lr"], seed), s, blocks, run1.after,
                       questions=questions, save_as=STAGE2 if seed == 0 else None, start=name, verbose=verbose)
    q2, q_long = run2["questions"], run2["questions_long"]
    del model
    if seed != 0:
        remove_run(name)
    return {"seed": seed, "stage1": run1.after, "stage2": run2["after"], "stage2_long": run2["after_long"],
            "trajectory": run2["trajectory"],
            "numbers": story_numbers(base["ppl"], run1.after, run2["after"]),
            "numbers_long": story_numbers(base["ppl"], run1.after, run2["after_long"]),
            "questions": {"stage1": qs.summarise(q1), "stage2": qs.summarise(q2),
                          "stage2_long": qs.summarise(q_long),
                          "change1": qs.paired_change(base["questions"], q1),
                          "change2": qs.paired_change(q1, q2),
                          "change2_long": qs.paired_change(q1, q_long),
                          "share1": qs.paired_change(base["questions"], q1, "share"),
                          "share2": qs.paired_change(q1, q2, "share"),
                          "share2_long": qs.paired_change(q1, q_long, "share")},
            "seconds": run1.seconds + run2["seconds"]}


def _record_summary(seeds: list[dict]) -> dict:
    """Median and range over seeds of the story's numbers (at the lessons' length, and under "long" at the end of
    the long stage 2) and of the questions' changes."""
    summary = {k: spread([x["numbers"][k] for x in seeds]) for k in seeds[0]["numbers"]}
    summary.update({f"questions_{k}": spread([x["questions"][k]["mean"] for x in seeds])
                    for k in ("change1", "change2", "share1", "share2")})
    summary["long"] = {k: spread([x["numbers_long"][k] for x in seeds]) for k in seeds[0]["numbers_long"]}
    summary["long"].update({f"questions_{k}": spread([x["questions"][f"{k}_long"]["mean"] for x in seeds])
                            for k in ("change2", "share2")})
    return summary


def record_table(rec: dict) -> str:
    """The record's headline as a Markdown table: each story number's median and range over seeds, at the lessons'
    length of stage 2 and at the end of the long run (the teaching guide shows it; a test keeps them equal)."""
    short, long = rec["settings"]["legal"]["steps"], rec["settings"]["long_steps"]
    rows = [f"| over {len(rec['seeds'])} seeds, stage 2 at lr {rec['best_lr']:g} | after {short} steps | after {long} "
            "steps |", "|---|---|---|"]
    names = {"medical_gain": "stage 1: medical perplexity lower by", "medical_rise": "stage 2: medical perplexity "
             "higher by", "gain_lost": "stage 2: share of stage 1's medical gain lost",
             "legal_gain": "stage 2: legal perplexity lower by"}

    def cell(v: dict, fmt: str = "{:.1%}") -> str:
        return f"{fmt.format(v['median'])} ({fmt.format(v['min'])} to {fmt.format(v['max'])})"

    for key, name in names.items():
        rows.append(f"| {name} | {cell(rec['summary'][key])} | "
                    f"{'same' if key == 'medical_gain' else cell(rec['summary']['long'][key])} |")
    summary, long, nats = rec["summary"], rec["summary"]["long"], "{:+.2f}"
    q = "medical questions: the right answer's"
    rows.append(f"| {q} log-likelihood, change in stage 1 (nats) | {cell(summary['questions_change1'], nats)} | same |")
    rows.append(f"| {q} log-likelihood, change in stage 2 (nats) | {cell(summary['questions_change2'], nats)} | "
                f"{cell(long['questions_change2'], nats)} |")
    rows.append(f"| {q} share among the options, change in stage 2 (nats) | {cell(summary['questions_share2'], nats)} "
                f"| {cell(long['questions_share2'], nats)} |")
    return "\n".join(rows)


def load_record(mode: str | None = None) -> dict | None:
    """The record of this mode: yours (python -m cfcourse lm-record) if you made one, else the course's own
    (measured by its authors with the same command, shipped in cfcourse/lm/records/); its "source" says which.
    A record written by another version of the course (another RECORD_VERSION) is passed over."""
    from importlib import resources

    mode = mode or config.mode_name()
    mine = runs_dir() / RECORD_FILE.format(mode=mode)
    shipped = resources.files(__package__).joinpath("records", RECORD_FILE.format(mode=mode))
    for source, path in (("your own record", mine), ("the course's record", shipped)):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("seeds") and rec.get("version") == RECORD_VERSION:
            return {**rec, "source": source}
    return None


def chosen_lr(s: LabSettings) -> tuple[float, str]:
    """Stage 2's learning rate: the one that did best on legal validation text in the record, else the default."""
    rec = load_record()
    if rec is not None and "best_lr" in rec and rec["settings"]["legal"]["steps"] == s.legal.steps:
        return rec["best_lr"], f"chosen on legal validation text in {rec['source']}"
    return s.legal.lr, "the default (no record of a learning-rate sweep yet: python -m cfcourse lm-record)"
