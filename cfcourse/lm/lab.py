"""What lessons 08-10 share: the settings of each mode, the held-out text, measuring a model, recorded and saved runs.

The experiment of lessons 08-10: SmolLM2-135M-Instruct is fine-tuned on legal
text (the new domain) and measured on held-out text of the domains it knew
(code, docs, literature, and its own answers to medical questions). One
function, `settings()`, decides every size from the run mode, as `config.by_mode`
does for the MNIST lessons. Tuned models are saved under
``<data dir>/lm-runs/<name>`` with a sha256 manifest, so lesson 10 can compare
the models lessons 08 and 09 made, and the medical reference answers are cached
there too (they are the base model's greedy answers: the same on every run).
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import config
from ..assets import write_atomic
from . import domains as dom
from .finetune import FinetuneConfig, finetune
from .measures import generate, perplexity
from .model import DEFAULT_MODEL, MANIFEST, load_model, resolve, write_manifest

NEW_DOMAIN = "legal"
OLD_DOMAINS = ("code", "docs", "literature", "medical")
ALL_DOMAINS = (NEW_DOMAIN, *OLD_DOMAINS)


@dataclass(frozen=True)
class LabSettings:
    """Sizes of the language-model lessons in one run mode."""

    eval_blocks: int  # held-out blocks of block_len tokens per domain
    block_len: int
    finetune: FinetuneConfig  # the plain fine-tuning run of lesson 08
    record_every: int  # steps between snapshots of the recorded run (lesson 08's slider)
    record_blocks: int  # blocks per domain measured at each snapshot
    medical_tokens: int  # length of the model's reference answers to the medical questions
    replay_blocks: int  # old-domain blocks per domain kept for replay and the Fisher (lesson 09)
    self_blocks: int  # blocks of the model's own text for self-generated replay (lesson 09)


def settings() -> LabSettings:
    """The lessons' sizes: full mode shows the effect clearly in minutes; fast mode keeps it visible for CI."""
    return config.by_mode(
        full=LabSettings(eval_blocks=8, block_len=128, record_every=10, record_blocks=3, medical_tokens=64,
                         replay_blocks=24, self_blocks=12,
                         finetune=FinetuneConfig(steps=50, batch_size=2, lr=1.3e-3, gradient_checkpointing=False)),
        fast=LabSettings(eval_blocks=6, block_len=64, record_every=10, record_blocks=2, medical_tokens=64,
                         replay_blocks=6, self_blocks=4,
                         finetune=FinetuneConfig(steps=20, batch_size=2, lr=1.3e-3, gradient_checkpointing=False)),
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


def replay_l2_config(base: FinetuneConfig | None = None) -> FinetuneConfig:
    """Lesson 09's combined cure: half of every batch replayed old text, the L2 pull, a lower learning rate."""
    base = base or settings().finetune
    return replace(base, lr=base.lr / 2.5, replay_ratio=0.5, l2=0.1)


def use_threads() -> int:
    """Set torch's thread count to lm_threads() (the language-model lessons call this first); returns it."""
    n = lm_threads()
    torch.set_num_threads(n)
    return n


def runs_dir() -> Path:
    """Where the lessons keep their tuned models and cached reference answers."""
    return config.data_dir() / "lm-runs"


# --- the text the model is measured on -----------------------------------------------------------------------

def model_key(folder: Path) -> str:
    """A short fingerprint of a model folder's weights (from its manifest, else its file sizes and times)."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        blob = manifest.read_bytes()
    else:
        blob = json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def medical_reference(model, tokenizer, split: str = "heldout", max_new_tokens: int | None = None,
                      model_name: str | None = DEFAULT_MODEL, verbose: bool = True) -> list[dom.Document]:
    """The base model's own greedy answers to the medical questions, as documents; cached per model and length."""
    max_new_tokens = max_new_tokens or settings().medical_tokens
    cache = None
    if model_name is not None:
        key = model_key(resolve(model_name))
        cache = runs_dir() / f"medical-{split}-{max_new_tokens}-{key}.json"
        questions = dom.medical_questions(split)
        if cache.is_file():
            try:
                data = json.loads(cache.read_text())
                if data.get("questions") == questions:
                    return dom.medical_documents(model, tokenizer, split, answers=data["answers"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache: answer again
    start = time.perf_counter()
    docs = dom.medical_documents(model, tokenizer, split, max_new_tokens=max_new_tokens)
    if verbose:
        print(f"the model answered {len(docs)} medical questions in {time.perf_counter() - start:.0f} s")
    if cache is not None:
        answers = [d.text.split("\nAnswer: ", 1)[1].rstrip("\n") for d in docs]
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, json.dumps({"questions": dom.medical_questions(split), "answers": answers},
                                       indent=1).encode())
    return docs


def held_out(tokenizer, medical_docs: list[dom.Document] | None = None, n_blocks: int | None = None,
             block_len: int | None = None, names=ALL_DOMAINS) -> dict[str, torch.Tensor]:
    """Held-out token blocks of each domain (medical from `medical_docs`, the base model's own answers)."""
    s = settings()
    n_blocks, block_len = n_blocks or s.eval_blocks, block_len or s.block_len
    out = {}
    for name in names:
        if name == "medical":
            if medical_docs is None:
                raise ValueError("the medical domain needs medical_docs: lab.medical_reference(model, tokenizer)")
            out[name] = dom.domain_blocks("medical", tokenizer, docs=medical_docs, n_blocks=n_blocks,
                                          block_len=block_len)
        else:
            out[name] = dom.domain_blocks(name, tokenizer, n_blocks=n_blocks, block_len=block_len)
    return out


def old_text(tokenizer, n_blocks: int | None = None, block_len: int | None = None,
             names=("code", "docs", "literature"), seed: int = 0) -> torch.Tensor:
    """Training-split blocks of the old domains, shuffled together: the text replay mixes in (never held-out)."""
    s = settings()
    n_blocks, block_len = n_blocks or s.replay_blocks, block_len or s.block_len
    blocks = torch.cat([dom.domain_blocks(d, tokenizer, split="train", n_blocks=n_blocks, block_len=block_len)
                        for d in names])
    return blocks[torch.randperm(blocks.shape[0], generator=torch.Generator().manual_seed(seed))]


def train_text(tokenizer, domain: str = NEW_DOMAIN, block_len: int | None = None) -> torch.Tensor:
    """Every training-split block of a domain (by default the new one, legal)."""
    return dom.domain_blocks(domain, tokenizer, split="train", n_blocks=None,
                             block_len=block_len or settings().block_len)


def measure(model, blocks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Perplexity on each domain's blocks, two blocks at a time (the loss in chunks keeps the logits small)."""
    return {name: perplexity(model, b, batch_size=2) for name, b in blocks.items()}


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

    def change(self) -> dict[str, float]:
        return {d: self.after[d] / self.before[d] - 1 for d in self.after}

    def to_dict(self) -> dict:
        return asdict(self)


def train(model, tokenizer, cfg: FinetuneConfig, before: dict[str, float], blocks: dict[str, torch.Tensor],
          name: str = "run", domain: str = NEW_DOMAIN, old_blocks: torch.Tensor | None = None,
          record: dict | None = None, save: bool = True, verbose: bool = True) -> Run:
    """Fine-tune `model` on `domain` (legal) with `cfg`, measure it on `blocks`, save it under runs_dir()/name.

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
    start = time.perf_counter()
    block_len = next(iter(blocks.values())).shape[1]
    result = finetune(model, train_text(tokenizer, domain, block_len), cfg, old_blocks=old_blocks, on_step=on_step)
    after = measure(result["model"], blocks)
    run = Run(name, result["config"], dict(before), after, result["losses"], time.perf_counter() - start, snapshots,
              domain=domain, blocks={d: list(b.shape) for d, b in blocks.items()})
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
    """(model, tokenizer): the course model as it was before any fine-tuning, read again from disk.

    Delete the previous model first (`del model`): this frees it before loading the next, so two never coexist.
    """
    release_memory()
    return load_model(name)


def reuse(name: str, cfg: FinetuneConfig, blocks: dict[str, torch.Tensor] | None = None,
          domain: str = NEW_DOMAIN) -> Run | None:
    """The run saved under `name` if it was trained with exactly `cfg` on `domain` and measured on blocks of the
    same shapes (by default those held_out() gives in this mode), so that its numbers compare with a run made
    now; otherwise None."""
    run = saved_run(name)
    if run is None or run.config != json.loads(json.dumps(asdict(cfg))) or run.domain != domain:
        return None
    if blocks is None:
        s = settings()
        shapes = {d: [s.eval_blocks, s.block_len] for d in ALL_DOMAINS}
    else:
        shapes = {d: list(b.shape) for d, b in blocks.items()}
    return run if run.blocks == shapes else None


# --- the trade-off sweep ---------------------------------------------------------------------------------------

SWEEP_FILE = "sweep.json"


def sweep_grid(base: FinetuneConfig | None = None) -> list[tuple[str, FinetuneConfig]]:
    """(family, settings) of the sweep: learning rates, LoRA ranks, replay ratios (with and without L2), EWC."""
    base = base or settings().finetune
    lr = base.lr
    grid = [("learning rate", replace(base, lr=x)) for x in (lr, lr / 2, lr / 4, lr / 8)]
    grid += [("LoRA", replace(base, lr=1e-3, lora_rank=r)) for r in (2, 8, 32)]
    grid += [("replay", replace(base, replay_ratio=r)) for r in (0.25, 0.5)]
    grid += [("replay and L2", replay_l2_config(base)),
             ("EWC", replace(base, lr=lr / 2.5, ewc=0.1))]
    return grid


def sweep(grid: list[tuple[str, FinetuneConfig]] | None = None, out: Path | None = None,
          verbose: bool = True) -> list[dict]:
    """Train every setting of `grid` from the pretrained model, and return (and write to `out`, by default
    runs_dir()/sweep.json, after every run) one trade-off point per setting."""
    from . import cures

    grid = grid or sweep_grid()
    out = Path(out) if out is not None else runs_dir() / SWEEP_FILE
    model, tokenizer = fresh_model()
    blocks = held_out(tokenizer, medical_reference(model, tokenizer, verbose=verbose))
    before = measure(model, blocks)
    old = old_text(tokenizer)
    points: list[dict] = []
    for i, (kind, cfg) in enumerate(grid):
        if i:
            del model
            model, tokenizer = fresh_model()
        run = train(model, tokenizer, cfg, before, blocks, name=f"sweep-{i}", save=False, verbose=verbose,
                    old_blocks=old if cfg.needs_old_text else None)
        points.append({**cures.tradeoff_point(before, run.after, NEW_DOMAIN), "label": cfg.label(), "kind": kind,
                       "seconds": run.seconds, "config": run.config, "before": before, "after": run.after})
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps({"points": points, "blocks": {d: list(b.shape) for d, b in blocks.items()}},
                                     indent=1).encode())
    return points


def load_sweep(path: Path | None = None) -> list[dict] | None:
    """The points of a sweep written by `sweep` (None if there is none, or it cannot be read)."""
    path = Path(path) if path is not None else runs_dir() / SWEEP_FILE
    try:
        points = json.loads(path.read_text())["points"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(points, list) and all(isinstance(p, dict) and {"gain", "rise", "label"} <= set(p) for p in points)
    return points if ok and points else None
