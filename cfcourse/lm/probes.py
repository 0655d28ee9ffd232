"""Knowledge probes: short facts to complete, scored by the log-likelihood of the reference answer; see lesson 08.

A probes file is JSON: ``{"domains": {"legal": [{"prompt": "...", "answer": " ..."}, ...], ...}}``.
The course's own set is cfcourse/lm/probes.json; an engineer can pass their own.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch


class ProbesError(ValueError):
    """A probes file does not have the expected shape."""


@dataclass(frozen=True)
class Probe:
    """A prompt and the reference answer the model should continue it with (answer starts with its space)."""

    domain: str
    prompt: str
    answer: str


_SHAPE = 'expected {"domains": {"<domain>": [{"prompt": "...", "answer": " ..."}, ...], ...}}'


def parse_probes(data, source: str = "probes") -> list[Probe]:
    """Probes from already-parsed JSON, refusing any other shape with a message that says where."""
    domains = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(domains, dict) or not domains:
        raise ProbesError(f"{source}: no non-empty 'domains' object; {_SHAPE}")
    probes = []
    for domain, items in domains.items():
        if not isinstance(items, list) or not items:
            raise ProbesError(f"{source}: domains.{domain} must be a non-empty list of probes; {_SHAPE}")
        for i, item in enumerate(items):
            where = f"{source}: domains.{domain}[{i}]"
            if not isinstance(item, dict) or set(item) - {"prompt", "answer", "note"}:
                raise ProbesError(f"{where} must be an object with keys 'prompt' and 'answer' (and optionally "
                                  f"'note'), got {item!r}")
            for key in ("prompt", "answer"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    raise ProbesError(f"{where} needs a non-empty string {key!r}, got {item.get(key)!r}")
            probes.append(Probe(domain, item["prompt"], item["answer"]))
    return probes


def load_probes(path: str | Path | None = None) -> list[Probe]:
    """The probes in `path`, or the course's own set when `path` is None."""
    if path is None:
        text, source = resources.files(__package__).joinpath("probes.json").read_text(encoding="utf-8"), "probes.json"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ProbesError(f"cannot read probes file {path}: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ProbesError(f"{source} is not valid JSON: {e}") from None
    return parse_probes(data, source)


@torch.no_grad()
def score_probe(model, tokenizer, probe: Probe) -> dict:
    """Log-likelihood of the reference answer after the prompt, and whether its first token is the top guess."""
    prompt = tokenizer(probe.prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer(probe.answer, add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + answer], device=device)
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()  # (answer tokens, vocab): small
    logp = logits.log_softmax(-1)
    token_logp = logp.gather(1, torch.tensor(answer, device=device)[:, None]).squeeze(1)
    total = float(token_logp.sum())
    return {"domain": probe.domain, "prompt": probe.prompt, "answer": probe.answer, "logprob": total,
            "mean_logprob": total / len(answer), "p_answer": math.exp(total),
            "top1": bool(logp[0].argmax() == answer[0])}


def score_probes(model, tokenizer, probes: list[Probe] | None = None) -> list[dict]:
    """Score every probe (the course's set by default); one dict per probe, in order."""
    was_training = model.training
    model.eval()
    try:
        return [score_probe(model, tokenizer, p) for p in (load_probes() if probes is None else probes)]
    finally:
        model.train(was_training)


def summarise(scores: list[dict]) -> dict[str, dict]:
    """Per domain: mean log-likelihood of the answers, and the share whose first token is the model's top guess."""
    out: dict[str, dict] = {}
    for domain in dict.fromkeys(s["domain"] for s in scores):
        mine = [s for s in scores if s["domain"] == domain]
        out[domain] = {"mean_logprob": sum(s["logprob"] for s in mine) / len(mine),
                       "top1": sum(s["top1"] for s in mine) / len(mine), "n": len(mine)}
    return out
