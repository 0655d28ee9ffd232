"""What lessons 08-10 share: the settings of each mode, the held-out text, measuring a model, recorded and saved runs.

The experiment of lessons 08-10 is the course's central example: SmolLM2-135M-Instruct is fine-tuned on
medical text (PubMed abstracts; stage 1), and that medical model is then fine-tuned on legal text (licences
and law scenarios; stage 2). Every stage is measured on held-out text of five domains and on MMLU's medical
questions: does stage 2 undo what stage 1 taught? One function, `settings()`, decides every size from the
run mode, as `config.by_mode` does for the MNIST lessons. Tuned models are saved in the runs folder
(`config.runs_dir`: CFCOURSE_RUNS, else ``lm-runs`` in the data folder when it is writable, else in the user's
own cache) with a sha256 manifest, so lessons 09 and 10 reuse the models lesson 08 made.
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import config
from ..assets import write_atomic
from . import corpora
from . import domains as dom
from . import questions as qs
from .finetune import FinetuneConfig, finetune
from .measures import generate, perplexity
from .model import DEFAULT_MODEL, MANIFEST, load_model, resolve, write_manifest

FIRST_DOMAIN = "medical"  # stage 1
NEW_DOMAIN = "legal"  # stage 2
ALL_DOMAINS = ("medical", "legal", "code", "docs", "literature")
HEADLINE = ("medical", "legal")  # measured on more blocks: the story is about these two
OLD_DOMAINS = ("medical", "code", "docs", "literature")  # what stage 2 (legal) may make the model forget


@dataclass(frozen=True)
class LabSettings:
    """Sizes of the language-model lessons in one run mode."""

    block_len: int
    headline_blocks: int  # held-out blocks of medical and legal text
    other_blocks: int  # held-out blocks of code, docs and literature
    validation_blocks: int  # legal validation blocks the learning rate is chosen on
    medical: FinetuneConfig  # stage 1: the pretrained model fine-tuned on medical abstracts
    legal: FinetuneConfig  # stage 2: the medical model fine-tuned on legal text (lr: the default choice)
    lr_grid: tuple[float, ...]  # stage 2 learning rates tried on the legal validation split
    questions: int  # MMLU medical questions scored at each stage
    seeds: tuple[int, ...]  # seeds of the recorded runs (python -m cfcourse lm-record)
    record_every: int  # steps between snapshots of the recorded run (lesson 08's slider)
    record_blocks: int  # blocks per domain measured at each snapshot
    replay_blocks: int  # medical training blocks kept for replay and the Fisher (lesson 09)
    self_blocks: int  # blocks of the model's own text for generative replay (lesson 09)
    own_tokens: int  # length of the model's own answers (the own-answers domain of the report)
    choose_steps: int  # stage 2's length in the record's learning-rate sweep: the rate is chosen on validation there
    long_steps: int  # stage 2's length in the record's seeds (lm-record): how forgetting goes on as law goes on
    checkpoint_every: int  # steps between measurements of the record's stage 2

    @property
    def finetune(self) -> FinetuneConfig:
        """Stage 2's settings (the fine-tuning lessons 09 and 10 compare against)."""
        return self.legal


def settings() -> LabSettings:
    """The lessons' sizes: full mode shows the effect clearly in minutes; fast mode keeps it visible for CI."""
    return config.by_mode(
        full=LabSettings(block_len=128, headline_blocks=32, other_blocks=8, validation_blocks=16,
                         medical=FinetuneConfig(steps=50, batch_size=2, lr=3.25e-4, gradient_checkpointing=False),
                         legal=FinetuneConfig(steps=50, batch_size=2, lr=3.25e-4, gradient_checkpointing=False,
                                              seed=100),
                         lr_grid=(6.5e-4, 3.25e-4, 1.6e-4, 8e-5), questions=24, seeds=(0, 1, 2),
                         record_every=10, record_blocks=1, replay_blocks=256, self_blocks=12, own_tokens=64,
                         choose_steps=200, long_steps=400, checkpoint_every=50),
        fast=LabSettings(block_len=64, headline_blocks=8, other_blocks=4, validation_blocks=4,
                         medical=FinetuneConfig(steps=16, batch_size=2, lr=5e-4, gradient_checkpointing=False),
                         legal=FinetuneConfig(steps=16, batch_size=2, lr=8e-4, gradient_checkpointing=False,
                                              seed=100),
                         lr_grid=(1.6e-3, 8e-4), questions=12, seeds=(0,),
                         record_every=4, record_blocks=2, replay_blocks=64, self_blocks=4, own_tokens=48,
                         choose_steps=32, long_steps=32, checkpoint_every=16),
    )


def lm_threads() -> int:
    """Torch threads for a language model: CFCOURSE_THREADS if set; else 2 on a quiet machine, 1 on a busy one.

    A 135M-parameter model's matrix products are large enough that a second thread nearly halves the time when
    the cores are free. When another job is already using a core, a second thread mostly waits for it, and
    measured on 2 busy cores it made the model 15-20 times slower; so a second thread only when no other job
    holds a CPU right now (config.idle_cpus: less than three quarters of a CPU in use), else 1.
    """
    wanted = min(2, config.cpu_budget())
    idle = config.idle_cpus(0.5)
    quiet = idle is not None and idle >= wanted - 0.75
    return config.thread_count(default=wanted if quiet else 1)


def use_threads() -> int:
    """Set torch's thread count to lm_threads() (the language-model lessons call this first); returns it."""
    n = lm_threads()
    torch.set_num_threads(n)
    return n


def runs_dir() -> Path:
    """Where the lessons keep their tuned models, records and cached reference answers (config.runs_dir)."""
    return config.runs_dir()


# --- the text the model is measured on -----------------------------------------------------------------------

def model_key(folder: Path) -> str:
    """A short fingerprint of a model folder's weights (from its manifest, else its file sizes and times)."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        blob = manifest.read_bytes()
    else:
        blob = json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def own_answers(model, tokenizer, split: str = "heldout", max_new_tokens: int | None = None,
                model_name: str | None = DEFAULT_MODEL, verbose: bool = True) -> list[dom.Document]:
    """The base model's own greedy answers to the medical questions, as documents; cached per model and length."""
    max_new_tokens = max_new_tokens or settings().own_tokens
    cache = None
    questions = dom.medical_questions(split)
    if model_name is not None:
        key = model_key(resolve(model_name))
        cache = runs_dir() / f"own-answers-{split}-{max_new_tokens}-{key}.json"
        try:
            data = json.loads(cache.read_text())
            if data.get("questions") == questions:
                return dom.own_answers(model, tokenizer, split, answers=data["answers"])
        except (OSError, ValueError, KeyError):
            pass  # no cache, or an unreadable one: answer again
    start = time.perf_counter()
    docs = dom.own_answers(model, tokenizer, split, max_new_tokens=max_new_tokens)
    if verbose:
        print(f"the model answered {len(docs)} medical questions in {time.perf_counter() - start:.0f} s")
    if cache is not None:
        answers = [d.text.split("\nAnswer: ", 1)[1].rstrip("\n") for d in docs]
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, json.dumps({"questions": questions, "answers": answers}, indent=1).encode())
    return docs


def held_out(tokenizer, s: LabSettings | None = None, names=ALL_DOMAINS, n_blocks: int | None = None,
             block_len: int | None = None) -> dict[str, torch.Tensor]:
    """Held-out token blocks of each domain: s.headline_blocks of medical and legal, s.other_blocks of the rest
    (or `n_blocks` of each), of s.block_len tokens (or `block_len`)."""
    s = s or settings()
    return {d: dom.domain_blocks(d, tokenizer, block_len=block_len or s.block_len,
                                 n_blocks=n_blocks or (s.headline_blocks if d in HEADLINE else s.other_blocks))
            for d in names}


def validation(tokenizer, domain: str = NEW_DOMAIN, s: LabSettings | None = None) -> torch.Tensor:
    """Validation blocks of a domain (legal or medical): what a learning rate is chosen on, never reported."""
    s = s or settings()
    return dom.domain_blocks(domain, tokenizer, split="validation", n_blocks=s.validation_blocks,
                             block_len=s.block_len)


def train_text(tokenizer, domain: str = NEW_DOMAIN, block_len: int | None = None) -> torch.Tensor:
    """Every training-split block of a domain (by default the new one, legal)."""
    return dom.domain_blocks(domain, tokenizer, split="train", n_blocks=None,
                             block_len=block_len or settings().block_len)


def old_text(tokenizer, n_blocks: int | None = None, block_len: int | None = None,
             names=(FIRST_DOMAIN,), seed: int = 0) -> torch.Tensor:
    """Training-split blocks of the old domain(s), shuffled together: the text replay mixes in (never held-out)."""
    s = settings()
    n_blocks, block_len = n_blocks or s.replay_blocks, block_len or s.block_len
    blocks = torch.cat([dom.domain_blocks(d, tokenizer, split="train", n_blocks=n_blocks, block_len=block_len)
                        for d in names])
    return blocks[torch.randperm(blocks.shape[0], generator=torch.Generator().manual_seed(seed))]


def measure(model, blocks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Perplexity on each domain's blocks, two blocks at a time (the loss in chunks keeps the logits small)."""
    return {name: perplexity(model, b, batch_size=2) for name, b in blocks.items()}


def medical_questions(s: LabSettings | None = None) -> list[corpora.Question]:
    """The MMLU medical questions scored at every stage: a fixed sample of s.questions of the 1,089."""
    return qs.pick(corpora.mmlu(corpora.MEDICAL_SUBJECTS), (s or settings()).questions)


def ask(model, tokenizer, questions: list[corpora.Question]) -> list[dict]:
    """Score the medical questions: each right answer's log-likelihood, and whether the model's choice is right."""
    return qs.score_questions(model, tokenizer, questions)


# --- a run, recorded and saved -------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """The model part-way through fine-tuning: perplexities on a few blocks and one answer."""

    step: int
    loss: float
    ppl: dict[str, float]
    answer: str


@dataclass
class Run:
    """A fine-tuning run: its settings, perplexities before and after, and its snapshots (if recorded)."""

    name: str
    config: dict
    before: dict[str, float]
    after: dict[str, float]
    losses: list[float]
    seconds: float
    snapshots: list[Snapshot] = field(default_factory=list)
    folder: str | None = None
    domain: str = NEW_DOMAIN  # the domain it was fine-tuned on
    blocks: dict = field(default_factory=dict)  # {domain: [n_blocks, block_len]} it was measured on
    start: str = DEFAULT_MODEL  # the model it started from: the course model, or a saved run's name

    def change(self) -> dict[str, float]:
        return {d: self.after[d] / self.before[d] - 1 for d in self.after}

    def to_dict(self) -> dict:
        return asdict(self)


def train(model, tokenizer, cfg: FinetuneConfig, before: dict[str, float], blocks: dict[str, torch.Tensor],
          name: str = "run", domain: str = NEW_DOMAIN, old_blocks: torch.Tensor | None = None,
          record: dict | None = None, save: bool = True, verbose: bool = True, start: str = DEFAULT_MODEL,
          schedule=None) -> Run:
    """Fine-tune `model` (which is `start`) on `domain` with `cfg`, measure it on `blocks`, save it as `name`.
    `schedule` is replay's schedule, passed to finetune (default: cures.replay_schedule).

    `record` = {"blocks": {domain: small blocks}, "prompt": a question, "every": steps} snapshots the model during
    training (lesson 08's slider); the snapshot at step 0 is the model before training.
    """
    snapshots = []

    def snap(step, loss, m):
        ppl = measure(m, record["blocks"])
        answer = generate(m, tokenizer, [record["prompt"]], max_new_tokens=record.get("tokens", 40))[0]
        snapshots.append(Snapshot(step, loss, ppl, answer))

    on_step = None
    if record is not None:
        snap(0, float("nan"), model)
        every = record["every"]
        on_step = lambda step, loss, m: snap(step + 1, loss, m) if (step + 1) % every == 0 else None  # noqa: E731
    t0 = time.perf_counter()
    block_len = next(iter(blocks.values())).shape[1]
    result = finetune(model, train_text(tokenizer, domain, block_len), cfg, old_blocks=old_blocks, on_step=on_step,
                      schedule=schedule)
    after = measure(result["model"], blocks)
    run = Run(name, result["config"], dict(before), after, result["losses"], time.perf_counter() - t0, snapshots,
              domain=domain, blocks={d: list(b.shape) for d, b in blocks.items()}, start=start)
    if save:
        run.folder = str(save_model(result["model"], tokenizer, name, run))
    if verbose:
        print(f"{name}: {cfg.label()}, {cfg.steps} steps in {result['wall_s']:.0f} s; " + ", ".join(
            f"{d} {run.before[d]:.1f} -> {run.after[d]:.1f} ({run.change()[d]:+.0%})" for d in run.after))
    return run


def save_model(model, tokenizer, name: str, run: Run | None = None) -> Path:
    """Save a tuned model as a safetensors folder with a manifest under runs_dir()/name; returns the folder."""
    folder = runs_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="100MB")  # one shard in memory at a time
    tokenizer.save_pretrained(folder)
    if run is not None:
        info = {k: v for k, v in run.to_dict().items() if k not in ("snapshots", "folder")}
        info["snapshots"] = [asdict(x) for x in run.snapshots]
        write_atomic(folder / "cfcourse-run.json", json.dumps(info, indent=1).encode())
    write_manifest(folder, {"trained_by": "cfcourse.lm.lab.train", "name": name})
    return folder


def saved_run(name: str) -> Run | None:
    """The run saved under `name` (its numbers; its model is at .folder), or None if there is none."""
    folder = runs_dir() / name
    try:
        info = json.loads((folder / "cfcourse-run.json").read_text())
    except (OSError, ValueError):
        return None
    if not (folder / MANIFEST).is_file():
        return None
    info["snapshots"] = [Snapshot(**x) for x in info.get("snapshots", [])]
    return Run(**{**info, "folder": str(folder)})


def release_memory() -> None:
    """Free what a deleted model left behind: collect reference cycles, and hand freed heap back to the system
    (glibc keeps it otherwise, and the process would look, and on Binder count, as big as two models)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def fresh_model(name: str | None = None):
    """(model, tokenizer) read again from disk: the course model (None), a saved run's name, or any model folder.

    Delete the previous model first (`del model`): this frees it before loading the next, so two never coexist.
    """
    release_memory()
    if name is not None and (runs_dir() / name / MANIFEST).is_file():
        return load_model(runs_dir() / name)
    return load_model(name)


def reuse(name: str, cfg: FinetuneConfig, blocks: dict[str, torch.Tensor] | None = None,
          domain: str = NEW_DOMAIN, start: str = DEFAULT_MODEL, names=ALL_DOMAINS) -> Run | None:
    """The run saved under `name` if it was trained from `start` with exactly `cfg` on `domain` and measured on
    blocks of the same shapes (by default those held_out() gives in this mode for `names`), so that its numbers
    compare with a run made now; otherwise None."""
    run = saved_run(name)
    if run is None or run.config != json.loads(json.dumps(asdict(cfg))) or run.domain != domain:
        return None
    if run.start != start:
        return None
    if blocks is None:
        s = settings()
        shapes = {d: [s.headline_blocks if d in HEADLINE else s.other_blocks, s.block_len] for d in names}
    else:
        shapes = {d: list(b.shape) for d, b in blocks.items()}
    return run if run.blocks == shapes else None


# --- the story: medical, then legal ----------------------------------------------------------------------------

STAGE1, STAGE2 = "lesson08-medical", "lesson08-legal"  # the saved models of lesson 08 (seed 0)
RECORD_FILE = "record-{mode}.json"
RECORD_VERSION = 3  # 3: the rate chosen after choose_steps, the seeds run on to long_steps; another version is not read
BASELINE_VERSION = 2  # raise when what baseline() measures changes, so an older cached baseline is not read


def stage1_config(s: LabSettings, seed: int = 0) -> FinetuneConfig:
    """Stage 1 (medical) for one seed."""
    return replace(s.medical, seed=s.medical.seed + seed)


def stage2_config(s: LabSettings, lr: float, seed: int = 0) -> FinetuneConfig:
    """Stage 2 (legal) at learning rate `lr` for one seed."""
    return replace(s.legal, lr=lr, seed=s.legal.seed + seed)


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
    out = {"ppl": measure(model, blocks), "questions": ask(model, tokenizer, questions)}
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


def _spread(values: list[float]) -> dict:
    import statistics

    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def _save_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1).encode())


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
        ppl = measure(m, blocks if every else headline)
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
    finetune(model, train_text(tokenizer, NEW_DOMAIN, block_len), replace(cfg, steps=end), on_step=checkpoint)
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


def record(s: LabSettings | None = None, out: Path | None = None, verbose: bool = True,
           sweep_from: Path | None = None, pretrained: str | None = None) -> dict:
    """The whole story over s.seeds, with stage 2's learning rate chosen on legal validation text: what lesson 08
    shows beside its live run (`python -m cfcourse lm-record`). Writes (after every seed) and returns the record.

    `sweep_from`: an earlier record whose learning-rate sweep is taken instead of run again, if it was made with
    the same settings, versions and mode, and its seed 0 reached exactly the medical model this run's seed 0
    trains (else the sweep is run, and the record says so). `pretrained`: the model stage 1 starts from, a folder
    or hub id (default the course's)."""
    s = s or settings()
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
        _save_json(out, rec)  # a long record can be stopped and still shows what is done
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
    summary = {k: _spread([x["numbers"][k] for x in seeds]) for k in seeds[0]["numbers"]}
    summary.update({f"questions_{k}": _spread([x["questions"][k]["mean"] for x in seeds])
                    for k in ("change1", "change2", "share1", "share2")})
    summary["long"] = {k: _spread([x["numbers_long"][k] for x in seeds]) for k in seeds[0]["numbers_long"]}
    summary["long"].update({f"questions_{k}": _spread([x["questions"][f"{k}_long"]["mean"] for x in seeds])
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


def remove_run(name: str) -> None:
    """Delete a saved run's folder (a model is about 540 MB)."""
    import shutil

    shutil.rmtree(runs_dir() / name, ignore_errors=True)


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


def chosen_lr(s: LabSettings | None = None) -> tuple[float, str]:
    """Stage 2's learning rate: the one that did best on legal validation text in the record, else the default."""
    s = s or settings()
    rec = load_record()
    if rec is not None and "best_lr" in rec and rec["settings"]["legal"]["steps"] == s.legal.steps:
        return rec["best_lr"], f"chosen on legal validation text in {rec['source']}"
    return s.legal.lr, "the default (no record of a learning-rate sweep yet: python -m cfcourse lm-record)"


# --- stage 2's trade-off: legal learned against medical forgotten ----------------------------------------------

def point(start: dict[str, float], after: dict[str, float], label: str, kind: str, **extra) -> dict:
    """One stage-2 setting on the trade-off plane: legal gain and medical rise, both from the medical model."""
    from . import cures

    p = cures.tradeoff_point({d: start[d] for d in HEADLINE}, {d: after[d] for d in HEADLINE}, NEW_DOMAIN)
    return {**p, "label": label, "kind": kind, **extra}


def recorded_points(rec: dict | None) -> list[dict]:
    """The learning-rate sweep of a record (seed 0) as trade-off points: the plain fine-tuning's curve."""
    if not rec or "lr_sweep" not in rec:
        return []
    start = rec["seeds"][0]["stage1"]
    return [point(start, p["after"], f"plain, lr {p['lr']:g}", "learning rate", recorded=True)
            for p in rec["lr_sweep"]]


# --- the cures' sweep ------------------------------------------------------------------------------------------

SWEEP_FILE = "sweep.json"


def sweep_grid(s: LabSettings | None = None, lr: float | None = None) -> list[tuple[str, FinetuneConfig]]:
    """(family, settings) of stage 2's cures, each at two learning rates: replay of medical text, EWC and
    generative replay at lr and 2·lr (they learn less per step than plain fine-tuning, so the higher rate lets
    them reach its gain), LoRA at 4·lr and 8·lr; the plain runs at several learning rates come from the record."""
    s = s or settings()
    lr = lr or chosen_lr(s)[0]
    base = s.legal
    grid = []
    for x in (lr, 2 * lr):
        grid += [("replay", replace(base, lr=x, replay_ratio=0.5)),
                 ("EWC", replace(base, lr=x, ewc=1.0)),
                 ("LoRA", replace(base, lr=4 * x, lora_rank=8)),
                 ("generative replay", replace(base, lr=x, replay_ratio=0.5))]
    return grid


def sweep(grid: list[tuple[str, FinetuneConfig]] | None = None, out: Path | None = None,
          verbose: bool = True, seeds: tuple[int, ...] | None = None) -> list[dict]:
    """Train every setting of `grid` from lesson 08's medical model once per seed of stage 2's batches (default
    s.seeds), and return (and write to `out`, by default runs_dir()/sweep.json, after every setting) one trade-off
    point per setting: the median gain and rise over the seeds, with each seed's under "per_seed"."""
    from . import cures

    s = settings()
    grid = grid or sweep_grid(s)
    seeds = tuple(s.seeds if seeds is None else seeds)
    out = Path(out) if out is not None else runs_dir() / SWEEP_FILE
    start = STAGE1
    if saved_run(start) is None:
        raise FileNotFoundError(f"no saved medical model ({start}) yet: run lesson 08 or python -m cfcourse lm-record")
    model, tokenizer = fresh_model(start)
    blocks = held_out(tokenizer, s)
    before = saved_run(start).after
    old = old_text(tokenizer)
    own = cures.self_generated_blocks(model, tokenizer, n_blocks=s.self_blocks, block_len=s.block_len,
                                      prompts=cures.MEDICAL_PROMPTS)
    points: list[dict] = []
    for kind, cfg in grid:
        runs = []
        for seed in seeds:
            del model
            model, tokenizer = fresh_model(start)
            replayed = own if kind == "generative replay" else old if cfg.needs_old_text else None
            run = train(model, tokenizer, replace(cfg, seed=cfg.seed + seed), before, blocks, name="sweep",
                        save=False, verbose=verbose, old_blocks=replayed, start=start)
            runs.append({"seed": seed, **point(before, run.after, cfg.label(), kind), "ppl_after": run.after,
                         "seconds": run.seconds})
        points.append(_median_point(runs, before, cfg, kind))
        _save_json(out, {"points": points, "start": start, "mode": config.mode_name(), "seeds": list(seeds),
                         "blocks": {d: list(b.shape) for d, b in blocks.items()}})
    return points


def _median_point(runs: list[dict], before: dict[str, float], cfg: FinetuneConfig, kind: str) -> dict:
    """One setting's point over seeds: the median legal gain and medical rise, their ranges, and every seed."""
    import statistics

    gain, rise = _spread([r["gain"] for r in runs]), _spread([r["rise"] for r in runs])
    old_rise = {d: statistics.median(r["old_rise"][d] for r in runs) for d in runs[0]["old_rise"]}
    return {"label": cfg.label(), "kind": kind, "gain": gain["median"], "rise": rise["median"],
            "old_rise": old_rise, "gain_range": [gain["min"], gain["max"]],
            "rise_range": [rise["min"], rise["max"]], "seconds": sum(r["seconds"] for r in runs) / len(runs),
            "config": asdict(cfg), "ppl_before": before, "per_seed": runs, "recorded": True}


def load_sweep(path: Path | None = None) -> list[dict] | None:
    """The points of a sweep written by `sweep` (None if there is none, or it cannot be read); without `path`,
    yours (python -m cfcourse lm-sweep) if you made one in this mode, else the course's own (full mode)."""
    from importlib import resources

    if path is not None:
        paths = [Path(path)]
    else:
        paths = [runs_dir() / SWEEP_FILE, resources.files(__package__).joinpath("records", SWEEP_FILE)]
    for p in paths:
        try:
            data = json.loads(p.read_text())
            points = data["points"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if path is None and data.get("mode", config.mode_name()) != config.mode_name():
            continue  # a sweep of other sizes does not compare with this mode's runs
        ok = isinstance(points, list) and all(isinstance(x, dict) and {"gain", "rise", "label"} <= set(x)
                                              for x in points)
        if ok and points:
            return points
    return None
