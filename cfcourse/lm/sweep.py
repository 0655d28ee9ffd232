"""Stage 2's trade-off, legal learned against medical forgotten: points on that plane, and the cures' sweep
(python -m cfcourse lm-sweep) that lesson 09's frontier is drawn from.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path

from .. import config
from . import cures
from .finetune import FinetuneConfig
from .runs import fresh_model, runs_dir, save_json, saved_run, train
from .settings import HEADLINE, NEW_DOMAIN, LabSettings
from .story import STAGE1, chosen_lr, spread
from .texts import held_out, old_text

SWEEP_FILE = "sweep.json"


def point(start: dict[str, float], after: dict[str, float], label: str, kind: str, **extra) -> dict:
    """One stage-2 setting on the trade-off plane: legal gain and medical rise, both from the medical model."""
    p = cures.tradeoff_point({d: start[d] for d in HEADLINE}, {d: after[d] for d in HEADLINE}, NEW_DOMAIN)
    return {**p, "label": label, "kind": kind, **extra}


def recorded_points(rec: dict | None) -> list[dict]:
    """The learning-rate sweep of a record (seed 0) as trade-off points: the plain fine-tuning's curve."""
    if not rec or "lr_sweep" not in rec:
        return []
    start = rec["seeds"][0]["stage1"]
    return [point(start, p["after"], f"plain, lr {p['lr']:g}", "learning rate", recorded=True)
            for p in rec["lr_sweep"]]


def sweep_grid(s: LabSettings, lr: float | None = None) -> list[tuple[str, FinetuneConfig]]:
    """(family, settings) of stage 2's cures, each at two learning rates: replay of medical text, EWC and
    generative replay at lr and 2·lr (they learn less per step than plain fine-tuning, so the higher rate lets
    them reach its gain), LoRA at 4·lr and 8·lr; the plain runs at several learning rates come from the record.
    `s`: the lab's settings; `lr`: default the one chosen on legal validation text."""
    lr = lr or chosen_lr(s)[0]
    base = s.legal
    grid = []
    for x in (lr, 2 * lr):
        grid += [("replay", replace(base, lr=x, replay_ratio=0.5)),
                 ("EWC", replace(base, lr=x, ewc=1.0)),
                 ("LoRA", replace(base, lr=4 * x, lora_rank=8)),
                 ("generative replay", replace(base, lr=x, replay_ratio=0.5))]
    return grid


def sweep(s: LabSettings, grid: list[tuple[str, FinetuneConfig]] | None = None, out: Path | None = None,
          verbose: bool = True, seeds: tuple[int, ...] | None = None) -> list[dict]:
    """Train every setting of `grid` (default: sweep_grid(s)) from lesson 08's medical model once per seed of
    stage 2's batches (default s.seeds), and return (and write to `out`, by default runs_dir()/sweep.json, after
    every setting) one trade-off point per setting: the median gain and rise over the seeds, with each seed's under
    "per_seed". `s`: the lab's settings (the command line passes this mode's, `settings()`)."""
    grid = grid or sweep_grid(s)
    seeds = tuple(s.seeds if seeds is None else seeds)
    out = Path(out) if out is not None else runs_dir() / SWEEP_FILE
    start = STAGE1
    if saved_run(start) is None:
        raise FileNotFoundError(f"no saved medical model ({start}) yet: run lesson 08 or python -m cfcourse lm-record")
    model, tokenizer = fresh_model(start)
    blocks = held_out(tokenizer, s)
    before = saved_run(start).after
    old = old_text(tokenizer, s)
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
        save_json(out, {"points": points, "start": start, "mode": config.mode_name(), "seeds": list(seeds),
                         "blocks": {d: list(b.shape) for d, b in blocks.items()}})
    return points


def _median_point(runs: list[dict], before: dict[str, float], cfg: FinetuneConfig, kind: str) -> dict:
    """One setting's point over seeds: the median legal gain and medical rise, their ranges, and every seed."""
    gain, rise = spread([r["gain"] for r in runs]), spread([r["rise"] for r in runs])
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
