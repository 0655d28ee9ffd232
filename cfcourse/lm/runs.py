"""Runs and their storage: a fine-tuning run trained, measured and recorded; tuned models saved in the runs folder
with a sha256 manifest and read back; and the answers cached there.

The runs folder is `config.runs_dir`: CFCOURSE_RUNS, else ``lm-runs`` in the user's own cache. Lessons 09 and 10
reuse the models lesson 08 saved there, when they were trained with exactly the same settings.
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import config
from ..assets import write_atomic
from . import domains as dom
from .finetune import FinetuneConfig, finetune
from .measures import domain_perplexities, generate
from .model import DEFAULT_MODEL, MANIFEST, load_model, resolve, write_manifest
from .settings import ALL_DOMAINS, NEW_DOMAIN, LabSettings
from .texts import train_text


def runs_dir() -> Path:
    """Where the lessons keep their tuned models, records and cached reference answers (config.runs_dir)."""
    return config.runs_dir()


def model_key(folder: Path) -> str:
    """A short fingerprint of a model folder's weights (from its manifest, else its file sizes and times)."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        blob = manifest.read_bytes()
    else:
        blob = json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def own_answers(model, tokenizer, split: str = "heldout", *, max_new_tokens: int,
                model_name: str | None = DEFAULT_MODEL, verbose: bool = True) -> list[dom.Document]:
    """The base model's own greedy answers to the medical questions, as documents; cached per model and length
    (LabSettings.own_tokens is the lessons' length)."""
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
        ppl = domain_perplexities(m, record["blocks"])
        answer = generate(m, tokenizer, [record["prompt"]], max_new_tokens=record.get("tokens", 40))[0]
        snapshots.append(Snapshot(step, loss, ppl, answer))

    on_step = None
    if record is not None:
        snap(0, float("nan"), model)
        every = record["every"]
        on_step = lambda step, loss, m: snap(step + 1, loss, m) if (step + 1) % every == 0 else None  # noqa: E731
    t0 = time.perf_counter()
    block_len = next(iter(blocks.values())).shape[1]
    result = finetune(model, train_text(tokenizer, block_len, domain), cfg, old_blocks=old_blocks, on_step=on_step,
                      schedule=schedule)
    after = domain_perplexities(result["model"], blocks)
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
          domain: str = NEW_DOMAIN, start: str = DEFAULT_MODEL, names=ALL_DOMAINS,
          s: LabSettings | None = None) -> Run | None:
    """The run saved under `name` if it was trained from `start` with exactly `cfg` on `domain` and measured on
    blocks of the same shapes (`blocks`, or those texts.held_out gives with the settings `s` for `names`), so that
    its numbers compare with a run made now; otherwise None."""
    if blocks is None and s is None:
        raise ValueError("reuse needs the blocks a run must have been measured on, or the settings s that make them")
    run = saved_run(name)
    if run is None or run.config != json.loads(json.dumps(asdict(cfg))) or run.domain != domain:
        return None
    if run.start != start:
        return None
    if blocks is None:
        shapes = {d: [s.blocks_per_domain(d), s.block_len] for d in names}
    else:
        shapes = {d: list(b.shape) for d, b in blocks.items()}
    return run if run.blocks == shapes else None


def remove_run(name: str) -> None:
    """Delete a saved run's folder (a model is about 540 MB)."""
    import shutil

    shutil.rmtree(runs_dir() / name, ignore_errors=True)


def save_json(path: Path, data: dict) -> None:
    """Write `data` as JSON at `path` in one step (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1).encode())
