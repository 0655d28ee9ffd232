"""The forgetting report: a base model and its fine-tuned version compared on held-out text; see lesson 10.

``forgetting_report(base, tuned)`` (or ``python -m cfcourse report --base BASE --tuned TUNED``) measures
both models on the same held-out blocks of every text domain, on the knowledge probes and on a few greedy
generations, and writes three files into one folder:

- report.md: what to read first, a table of perplexities with a verdict per domain, the probes, generations;
- report.json: every number, the settings and the models as given and as resolved;
- report.png: perplexity of base vs tuned per domain (with the change), and the probes per probe domain.

Everything that can be checked without weights is checked first (paths, tokenizers, domains, probes, the
output folder). Then the base model is loaded, measured and freed before the tuned model is loaded, so only
one model is in memory at a time.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import domains as dom
from . import model as lm_model
from .lab import lm_threads, model_key, release_memory
from .lab import own_answers as medical_reference
from .measures import generate, perplexity, side_by_side
from .probes import Probe, ProbesError, load_probes, score_probes, summarise

FORGOTTEN_AT = 0.10  # tuned perplexity at least 10% above the base model's: the domain was forgotten
LEARNED_AT = -0.10  # at least 10% below: the domain was learned; in between: kept
PROBE_WORSE_NATS = 0.1  # a probe got worse when its answer's log-likelihood fell by more than this (~10% less likely)
MEDICAL_MAX_NEW_TOKENS = 64  # length of the base model's answers that form the medical text (as in lessons 08-09)
GENERAL_PROMPTS = ("What is the capital of France?", "Write a Python function that returns the square of a number.")
FILES = ("report.md", "report.json", "report.png")
MAX_LISTED = 10  # probes that got worse, listed in report.md (all of them are in report.json)


class ReportError(ValueError):
    """The report cannot run on this input; the message says what to change."""


@dataclass
class _Side:
    """One of the two models: as given, the folder it resolved to, and its tokenizer."""

    role: str
    given: str
    folder: Path
    tokenizer: object


@dataclass
class _Plan:
    """Everything checked and prepared before any weights are loaded."""

    base: _Side
    tuned: _Side
    domains: list[str]
    probes: list[Probe]
    probes_source: str
    prompts: list[str]
    chat: bool
    out: Path
    n_blocks: int
    block_len: int
    max_new_tokens: int
    blocks: dict[str, torch.Tensor] = field(default_factory=dict)  # (n_blocks, block_len) per domain


# --- checks that need no weights ----------------------------------------------------------------------------------

def _check_int(name: str, value, least: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ReportError(f"{name} must be a whole number of at least {least} ({what}), got {value!r}")
    return value


def _check_domains(domains) -> list[str]:
    chosen = list(dom.DOMAINS) if domains is None else [domains] if isinstance(domains, str) else list(domains)
    unknown = [d for d in chosen if d not in dom.DOMAINS]
    if unknown or not chosen:
        raise ReportError(f"unknown domain(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {', '.join(dom.DOMAINS)}")
    return list(dict.fromkeys(chosen))


def _check_probes(probes) -> tuple[list[Probe], str]:
    """The probes to score and where they came from; a malformed file raises ProbesError, which says why."""
    if probes is None:
        return load_probes(), "the course's probes (cfcourse/lm/probes.json)"
    if isinstance(probes, (str, os.PathLike)):
        return load_probes(probes), str(probes)
    probes = list(probes)
    if not probes or not all(isinstance(p, Probe) for p in probes):
        raise ProbesError("probes must be None, a probes JSON file, or a non-empty list of Probe")
    return probes, "probes given in code"


def _check_out(out) -> Path:
    folder = Path(out if out is not None else "forgetting-report").expanduser()
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"the output {folder} is an existing file; give a folder for {', '.join(FILES)} "
                          "(it is created if missing)")
    return folder


def _side(role: str, given) -> _Side:
    """Resolve a model name or path the way load_model does, check the folder and load only its tokenizer."""
    from transformers import AutoTokenizer

    try:
        folder = lm_model.resolve(given)
        lm_model._check_folder(folder)  # config.json, safetensors weights, manifest if any
    except lm_model.ModelError as e:
        raise ReportError(f"{role} model: {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        why = " ".join(str(e).split())  # transformers' messages span several lines
        raise ReportError(f"{role} model: {folder} has no usable tokenizer ({type(e).__name__}: {why}); save it "
                          "beside the weights with tokenizer.save_pretrained(folder)") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return _Side(role, str(given), folder, tokenizer)


def _check_same_tokenizer(base: _Side, tuned: _Side) -> None:
    vb, vt = base.tokenizer.get_vocab(), tuned.tokenizer.get_vocab()
    if vb == vt:
        return
    moved = sum(vb[t] != vt[t] for t in vb.keys() & vt.keys())
    raise ReportError(f"the tokenizers differ: base has {len(vb)} tokens, tuned {len(vt)} ({len(vb.keys() - vt.keys())}"
                      f" only in base, {len(vt.keys() - vb.keys())} only in tuned, {moved} with another id). The "
                      "report compares a model with its own fine-tuned version, and both must share one tokenizer: "
                      "save the fine-tuned model with the base model's tokenizer (tokenizer.save_pretrained(folder))")


def _check_prompts(prompts) -> list[str]:
    if prompts is None:
        return dom.medical_questions("heldout")[:2] + list(GENERAL_PROMPTS)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ReportError(f"prompts must be non-empty strings, got {prompts!r}")
    return prompts


def _blocks(domain: str, tokenizer, docs, n_blocks: int, block_len: int) -> torch.Tensor:
    """Up to `n_blocks` held-out blocks: fewer when the text is shorter (the report says how many it used)."""
    ids = dom.encode(tokenizer, docs)  # (n_tokens,)
    n = min(n_blocks, ids.numel() // block_len)
    if n < 1:
        raise ReportError(f"the held-out {domain} text has {ids.numel()} tokens, fewer than one block of "
                          f"{block_len}; use shorter blocks")
    return dom.blocks(ids, block_len, n)


def _plan(base, tuned, domains, probes, out, n_blocks, block_len, prompts, max_new_tokens) -> _Plan:
    """Check every input and tokenize the text domains, all before any model weights are loaded."""
    n_blocks = _check_int("n_blocks (--blocks)", n_blocks, 1, "held-out blocks scored per domain")
    block_len = _check_int("block_len", block_len, 2, "tokens per block: one token predicts the next")
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1, "tokens generated per prompt")
    chosen = _check_domains(domains)
    probe_list, probes_source = _check_probes(probes)
    folder = _check_out(out)
    base_side, tuned_side = _side("base", base), _side("tuned", tuned)
    _check_same_tokenizer(base_side, tuned_side)
    chat = base_side.tokenizer.chat_template is not None
    if "medical" in chosen and not chat:
        raise ReportError("the medical domain is the base model's own chat answers, but its tokenizer has no chat "
                          "template; leave medical out: --domains " + " ".join(d for d in chosen if d != "medical"))
    plan = _Plan(base_side, tuned_side, chosen, probe_list, probes_source, _check_prompts(prompts), chat,
                 folder, n_blocks, block_len, max_new_tokens)
    for d in chosen:
        if d != "medical":
            plan.blocks[d] = _blocks(d, base_side.tokenizer, dom.documents(d, "heldout"), n_blocks, block_len)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the output folder {folder}: {e}") from None
    return plan


# --- measuring, one model at a time ---------------------------------------------------------------------------------

def _load(side: _Side):
    try:
        model, _ = lm_model.load_model(side.folder)
    except lm_model.ModelError as e:
        raise ReportError(f"{side.role} model: {e}") from None
    return model


_BASE_MEASURED: dict[tuple, tuple[dict, torch.Tensor | None]] = {}  # one process's base measurements


def _base_key(plan: _Plan) -> tuple:
    """Everything the base model's numbers depend on: its weights, the text, the probes and the prompts."""
    folder = Path(plan.base.folder)
    return (str(folder.resolve()), model_key(folder), tuple(plan.domains), plan.n_blocks, plan.block_len,
            tuple((p.domain, p.prompt, p.answer) for p in plan.probes), tuple(plan.prompts), plan.max_new_tokens,
            plan.chat)


def _measure_base(plan: _Plan, say) -> dict:
    """The base model's numbers, measured once per process: comparing several tuned models with one base
    model (as lesson 10 does) measures the base only the first time."""
    key = _base_key(plan)
    if key in _BASE_MEASURED:
        out, medical = _BASE_MEASURED[key]
        if medical is not None:
            plan.blocks["medical"] = medical
        say("the base model was measured earlier in this session with the same settings: reusing its numbers")
        return {**out, "seconds": 0.0}
    out = _measure(plan.base, plan, say)
    _BASE_MEASURED[key] = (out, plan.blocks.get("medical"))
    return out


def _measure(side: _Side, plan: _Plan, say) -> dict:
    """Load one model, measure everything on it, and free it; the base model also writes the medical text."""
    start = time.perf_counter()
    say(f"loading the {side.role} model from {side.folder}")
    model = _load(side)
    out: dict = {}
    if "medical" in plan.domains and "medical" not in plan.blocks:  # the base model's own answers
        say("the base model answers the held-out medical questions (the medical text)")
        docs = medical_reference(model, side.tokenizer, "heldout", max_new_tokens=MEDICAL_MAX_NEW_TOKENS,
                                 model_name=str(side.folder), verbose=False)  # cached per model, as the lessons do
        plan.blocks["medical"] = _blocks("medical", side.tokenizer, docs, plan.n_blocks, plan.block_len)
        out["medical_text"] = [d.text for d in docs]
    say(f"measuring the {side.role} model: perplexity, probes, generations")
    out["ppl"] = {d: perplexity(model, plan.blocks[d], batch_size=1) for d in plan.domains}
    out["probes"] = score_probes(model, side.tokenizer, plan.probes)
    out["generations"] = (generate(model, side.tokenizer, plan.prompts, plan.max_new_tokens, chat=plan.chat)
                          if plan.prompts else [])
    del model
    release_memory()
    out["seconds"] = time.perf_counter() - start
    return out


def forgetting_report(base, tuned, domains=None, probes=None, out=None, n_blocks: int = 16, block_len: int = 128,
                      prompts: list[str] | None = None, max_new_tokens: int = 48, verbose: bool = False) -> dict:
    """Compare a base model with its fine-tuned version; write report.md, .json and .png into `out`; see lesson 10."""
    start = time.perf_counter()
    say = (lambda msg: print(f"cfcourse: {msg}", file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    plan = _plan(base, tuned, domains, probes, out, n_blocks, block_len, prompts, max_new_tokens)
    threads, before = lm_threads(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        measured = {"base": _measure_base(plan, say), "tuned": _measure(plan.tuned, plan, say)}
    finally:
        torch.set_num_threads(before)
    report = _assemble(plan, measured, threads, time.perf_counter() - start)
    write_report(report, plan.out)
    say(f"wrote {', '.join(str(plan.out / f) for f in FILES)}")
    return report


# --- the numbers ----------------------------------------------------------------------------------------------------

def verdict(change: float) -> str:
    """'forgotten', 'learned' or 'kept' for a relative change of perplexity (tuned / base - 1)."""
    return "forgotten" if change >= FORGOTTEN_AT else "learned" if change <= LEARNED_AT else "kept"


def _domain_rows(plan: _Plan, measured: dict) -> dict:
    rows = {}
    for d in plan.domains:
        b, t = measured["base"]["ppl"][d], measured["tuned"]["ppl"][d]
        rows[d] = {"ppl_base": b, "ppl_tuned": t, "change": t / b - 1, "verdict": verdict(t / b - 1),
                   "blocks": int(plan.blocks[d].shape[0]), "tokens": int(plan.blocks[d].numel())}
    return rows


def _probe_rows(base_scores: list[dict], tuned_scores: list[dict]) -> dict:
    items = []
    for b, t in zip(base_scores, tuned_scores):
        change = t["logprob"] - b["logprob"]
        items.append({"domain": b["domain"], "prompt": b["prompt"], "answer": b["answer"],
                      "logprob_base": b["logprob"], "logprob_tuned": t["logprob"], "change": change,
                      "top1_base": b["top1"], "top1_tuned": t["top1"], "worse": change < -PROBE_WORSE_NATS})
    sb, st = summarise(base_scores), summarise(tuned_scores)
    summary = {d: {"n": sb[d]["n"], "mean_logprob_base": sb[d]["mean_logprob"],
                   "mean_logprob_tuned": st[d]["mean_logprob"],
                   "change": st[d]["mean_logprob"] - sb[d]["mean_logprob"],
                   "top1_base": sb[d]["top1"], "top1_tuned": st[d]["top1"],
                   "worse": sum(i["worse"] for i in items if i["domain"] == d)} for d in sb}
    return {"items": items, "summary": summary}


def _assemble(plan: _Plan, measured: dict, threads: int, seconds: float) -> dict:
    import transformers

    base, tuned = measured["base"], measured["tuned"]
    return {
        "base": {"given": plan.base.given, "resolved": str(plan.base.folder)},
        "tuned": {"given": plan.tuned.given, "resolved": str(plan.tuned.folder)},
        "settings": {"n_blocks": plan.n_blocks, "block_len": plan.block_len, "split": "heldout", "batch_size": 1,
                     "max_new_tokens": plan.max_new_tokens, "medical_max_new_tokens": MEDICAL_MAX_NEW_TOKENS,
                     "chat": plan.chat, "threads": threads, "forgotten_at": FORGOTTEN_AT, "learned_at": LEARNED_AT,
                     "probe_worse_nats": PROBE_WORSE_NATS, "probes": plan.probes_source,
                     "versions": {"torch": torch.__version__, "transformers": transformers.__version__}},
        "domains": _domain_rows(plan, measured),
        "probes": _probe_rows(base["probes"], tuned["probes"]),
        "generations": [{"prompt": p, "base": b, "tuned": t}
                        for p, b, t in zip(plan.prompts, base["generations"], tuned["generations"])],
        "medical_text": base.get("medical_text", []),
        "seconds": {"total": seconds, "base": base["seconds"], "tuned": tuned["seconds"]},
    }


# --- the three files ------------------------------------------------------------------------------------------------

def _pct(change: float) -> str:
    """+43% or −27% (a real minus sign)."""
    return f"{change:+.0%}".replace("-", "−")


def perplexity_table(report: dict) -> str:
    """The Markdown table of held-out perplexity per domain, base vs tuned, with the verdict."""
    lines = ["| domain | base ppl | tuned ppl | change | verdict |", "|---|---:|---:|---:|---|"]
    for d, r in report["domains"].items():
        lines.append(f"| {d} | {r['ppl_base']:.2f} | {r['ppl_tuned']:.2f} | {_pct(r['change'])} | {r['verdict']} |")
    return "\n".join(lines)


def _probe_markdown(probes: dict) -> list[str]:
    lines = ["| probe domain | probes | base mean log-lik | tuned mean log-lik | change | top-1 base → tuned | "
             "worse |", "|---|---:|---:|---:|---:|---|---:|"]
    for d, s in probes["summary"].items():
        lines.append(f"| {d} | {s['n']} | {s['mean_logprob_base']:.2f} | {s['mean_logprob_tuned']:.2f} | "
                     f"{s['change']:+.2f} | {s['top1_base']:.0%} → {s['top1_tuned']:.0%} | {s['worse']} |")
    worse = sorted((i for i in probes["items"] if i["worse"]), key=lambda i: i["change"])
    lines += ["", f"Probes that got worse: {len(worse)} of {len(probes['items'])}"
              + (f"; the {min(len(worse), MAX_LISTED)} that lost most:" if worse else ".")]
    for i in worse[:MAX_LISTED]:
        prompt, answer = (" ".join(t.split()).replace("`", "'") for t in (i["prompt"], i["answer"]))
        lines.append(f"- {i['domain']}: `{prompt}` → `{answer}` ({i['logprob_base']:.2f} → "
                     f"{i['logprob_tuned']:.2f})")
    if len(worse) > MAX_LISTED:
        lines.append(f"- and {len(worse) - MAX_LISTED} more in report.json")
    return lines


def _model_line(model: dict) -> str:
    same = Path(model["given"]).expanduser().resolve() == Path(model["resolved"]).resolve()
    return f"`{model['given']}`" + ("" if same else f" ({model['resolved']})")


def markdown(report: dict) -> str:
    """report.md: the summary a person reads first."""
    s = report["settings"]
    short = [f"{d} ({r['blocks']} blocks)" for d, r in report["domains"].items() if r["blocks"] < s["n_blocks"]]
    lines = ["# Forgetting report", "",
             f"- base: {_model_line(report['base'])}", f"- tuned: {_model_line(report['tuned'])}",
             f"- {s['n_blocks']} held-out blocks of {s['block_len']} tokens per domain"
             + (f"; fewer where the text is shorter: {', '.join(short)}" if short else "")
             + f"; {report['seconds']['total']:.0f} s", "",
             "## Perplexity on held-out text", "", perplexity_table(report), ""]
    lines += [f"- {d}: perplexity {_pct(r['change'])} — {r['verdict']}" for d, r in report["domains"].items()]
    lines += ["", f"A domain is *forgotten* when the tuned model's perplexity is {FORGOTTEN_AT:.0%} or more above "
              f"the base model's, *learned* when it is {-LEARNED_AT:.0%} or more below, and *kept* in between. "
              "Perplexity is exp(mean loss per token); lower is better."]
    if "medical" in report["domains"]:
        lines += ["", "The medical text is the base model's own greedy answers to held-out medical questions: "
                  "does the tuned model still say what the base model said?"]
    lines += ["", "## Probes", "", f"Log-likelihood (nats) of each probe's reference answer; from "
              f"{s['probes']}. A probe got worse when its log-likelihood fell by more than {PROBE_WORSE_NATS} "
              "nats.", ""] + _probe_markdown(report["probes"])
    if report["generations"]:
        g = report["generations"]
        lines += ["", "## Generations", "", f"Greedy, up to {s['max_new_tokens']} new tokens"
                  + (", as chat answers." if s["chat"] else ", as plain text completions."), "",
                  side_by_side([x["prompt"] for x in g], {"base": [x["base"] for x in g],
                                                          "tuned": [x["tuned"] for x in g]})]
    lines += ["", "Every number is in report.json; the figure is report.png.", ""]
    return "\n".join(lines)


def figure(report: dict):
    """Perplexity per domain and mean probe log-likelihood per probe domain, base vs tuned."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_ppl, ax_probe = fig.subplots(1, 2, width_ratios=[3, 2])
    rows = report["domains"]
    x = range(len(rows))
    base, tuned = [r["ppl_base"] for r in rows.values()], [r["ppl_tuned"] for r in rows.values()]
    ax_ppl.bar([i - 0.2 for i in x], base, 0.4, label="base")
    ax_ppl.bar([i + 0.2 for i in x], tuned, 0.4, label="tuned")
    for i, r in enumerate(rows.values()):
        ax_ppl.annotate(f"{_pct(r['change'])}\n{r['verdict']}", (i, max(r["ppl_base"], r["ppl_tuned"])),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax_ppl.set_xticks(list(x), list(rows))
    ax_ppl.set_ylim(0, 1.4 * max(base + tuned))  # room for the labels and the legend above the bars
    ax_ppl.set(ylabel="perplexity on held-out text (lower is better)", title="Perplexity per domain")
    ax_ppl.legend(loc="upper center", ncols=2)
    summary = report["probes"]["summary"]
    px = range(len(summary))
    ax_probe.bar([i - 0.2 for i in px], [s["mean_logprob_base"] for s in summary.values()], 0.4, label="base")
    ax_probe.bar([i + 0.2 for i in px], [s["mean_logprob_tuned"] for s in summary.values()], 0.4, label="tuned")
    ax_probe.set_xticks(list(px), list(summary))
    ax_probe.axhline(0, color="black", linewidth=0.8)
    ax_probe.set(ylabel="mean log-likelihood of the answers (nats)", title="Probes per domain (higher is better)")
    ax_probe.legend(loc="best")
    fig.suptitle(f"Forgetting report: tuned {Path(report['tuned']['given']).name} vs base "
                 f"{Path(report['base']['given']).name}")
    return fig


def write_report(report: dict, out) -> Path:
    """Write report.json, report.md and report.png into the folder `out`; returns it."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(markdown(report), encoding="utf-8")
    figure(report).savefig(folder / "report.png", dpi=110)
    return folder
