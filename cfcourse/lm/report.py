"""The forgetting report: a base model and its fine-tuned version compared on held-out text; see lesson 10.

``forgetting_report(base, tuned)`` (or ``python -m cfcourse report --base BASE --tuned TUNED``) measures
both models on the same held-out blocks of every text domain (the course's, or your own texts), on the
knowledge probes and on a few greedy generations, and writes three files into one folder:

- report.md: what to read first, a table of perplexities with the change, its 95% interval and a verdict per
  domain, the probes, generations;
- report.json: every number (down to each block's loss), the settings and the models as given and as resolved;
- report.png: perplexity of base vs tuned per domain (with the change and its interval), and the probes.

The verdict is honest about noise: a paired bootstrap over the blocks gives a 95% interval of the change, and
the verdict says where the whole interval lies (see verdict()). TUNED may be a whole model or a PEFT adapter
trained on BASE.

Everything that can be checked without weights is checked first (paths, adapters, tokenizers, domains, your
texts, probes, dtype, device, the output folder). Then the base model is loaded, measured and freed before the
tuned model is loaded, so only one model is in memory at a time.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import config
from . import domains as dom
from . import model as lm_model
from .measures import block_nll, generate, side_by_side
from .probes import Probe, ProbesError, load_probes, score_probes, summarise
from .runs import model_key, own_answers, release_memory
from .settings import lm_threads

PRACTICAL_CHANGE = 0.02  # a change of perplexity within ±2% is too small to matter: the domain was kept
CONFIDENCE = 0.95  # the verdict reads the 95% interval of the change
BOOTSTRAP_RESAMPLES = 2000  # resamples of the blocks in the paired bootstrap
BOOTSTRAP_SEED = 0  # the bootstrap's blocks are drawn from this seed, so a report is repeatable
VERDICT_RULE = (f"the whole {CONFIDENCE:.0%} interval of the change above +{PRACTICAL_CHANGE:.0%}: forgotten; "
                f"below -{PRACTICAL_CHANGE:.0%}: learned; within ±{PRACTICAL_CHANGE:.0%}: kept; "
                f"across +{PRACTICAL_CHANGE:.0%} or -{PRACTICAL_CHANGE:.0%} (or a single block): unclear")
GENERATED_DOMAINS = dom.GENERATED  # domains whose text the base model writes (its own answers), not read from files
PROBE_WORSE_NATS = 0.1  # a probe got worse when its answer's log-likelihood fell by more than this (~10% less likely)
OWN_ANSWER_TOKENS = 64  # length of the base model's own answers to the medical questions (the own-answers text)
GENERAL_PROMPTS = ("What is the capital of France?", "Write a Python function that returns the square of a number.")
FILES = ("report.md", "report.json", "report.png")
MAX_LISTED = 10  # probes that got worse, listed in report.md (all of them are in report.json)


class ReportError(ValueError):
    """The report cannot run on this input; the message says what to change."""


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda", "mps")
TEXT_NAME = re.compile(r"^[\w.-]+$")  # a name for your own text: letters, digits, _ . -


@dataclass
class _Side:
    """One of the two models: as given, the folder it resolved to, its tokenizer, and its PEFT adapter config if
    the folder holds an adapter rather than a whole model."""

    role: str
    given: str
    folder: Path
    tokenizer: object
    adapter: dict | None = None


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
    dtype: str
    device: str
    texts: dict[str, dict] = field(default_factory=dict)  # your own texts: where each came from
    blocks: dict[str, torch.Tensor] = field(default_factory=dict)  # (n_blocks, block_len) per domain


# --- checks that need no weights ----------------------------------------------------------------------------------

def _check_int(name: str, value, least: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ReportError(f"{name} must be a whole number of at least {least} ({what}), got {value!r}")
    return value


def _check_domains(domains, texts: dict) -> list[str]:
    """The course domains to measure: all of them by default, none by default when you give your own texts."""
    if domains is None:
        return [] if texts else list(dom.DOMAINS)
    chosen = [domains] if isinstance(domains, str) else list(domains)
    unknown = [d for d in chosen if d not in dom.DOMAINS]
    if unknown or not (chosen or texts):
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


def _check_dtype(dtype) -> str:
    """The name of the weights' dtype: float32 (the default), bfloat16 or float16."""
    name = next((n for n, t in DTYPES.items() if t == dtype), dtype)
    if name not in DTYPES:
        raise ReportError(f"dtype (--dtype) must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return name


def available_devices() -> list[str]:
    """The devices torch can use on this machine, cpu first."""
    mps = getattr(torch.backends, "mps", None)
    return ["cpu"] + ["cuda"] * torch.cuda.is_available() + ["mps"] * bool(mps is not None and mps.is_available())


def _check_device(device) -> str:
    """The device to load the models on; 'auto' picks as config.device() does (CFCOURSE_DEVICE, else cuda, mps,
    cpu). A device this machine lacks is refused, before any weights load."""
    name = "auto" if device is None else str(device)
    chosen_by = ""
    if name == "auto":
        try:
            name = str(config.device())
        except ValueError as e:
            raise ReportError(f"CFCOURSE_DEVICE: {e}") from None
        chosen_by = " (CFCOURSE_DEVICE asks for it)"
    kind, _, index = name.partition(":")
    if kind not in DEVICES[1:] or (index and not index.isdigit()):
        raise ReportError(f"device (--device) must be one of {', '.join(DEVICES)}, got {name!r}")
    have = available_devices()
    if kind not in have or (kind == "cuda" and index and int(index) >= torch.cuda.device_count()):
        raise ReportError(f"device {name!r}{chosen_by} is not available on this machine; available: "
                          f"{', '.join(have)} (--device auto picks the first of cuda, mps, cpu that is there)")
    return name


def _tokenizer(role: str, folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        why = " ".join(str(e).split())  # transformers' messages span several lines
        raise ReportError(f"{role} model: {folder} has no usable tokenizer ({type(e).__name__}: {why}); save it "
                          "beside the weights with tokenizer.save_pretrained(folder)") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _side(role: str, given) -> _Side:
    """Resolve a model name or path the way load_model does, check the folder and load only its tokenizer.

    A folder with adapter_config.json is a PEFT adapter; its tokenizer is loaded only if it saved one."""
    try:
        folder = lm_model.resolve(given)
        adapter = _adapter_config(role, folder)
        if adapter is None:
            lm_model._check_folder(folder)  # config.json, safetensors weights, manifest if any
    except lm_model.ModelError as e:
        raise ReportError(f"{role} model: {e}") from None
    has_tokenizer = any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = _tokenizer(role, folder) if adapter is None or has_tokenizer else None
    return _Side(role, str(given), folder, tokenizer, adapter)


def _adapter_config(role: str, folder: Path) -> dict | None:
    """The PEFT adapter config in `folder`, checked; None when the folder holds a whole model."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return None
    if role == "base":
        raise ReportError(f"base model: {folder} is a PEFT adapter, not a whole model; give the model it was trained "
                          "from as --base and the adapter as --tuned")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"tuned model: {path} is not readable JSON ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("base_model_name_or_path"), str):
        raise ReportError(f"tuned model: {path} does not name its base model (base_model_name_or_path); save the "
                          "adapter with peft_model.save_pretrained(folder)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise ReportError(f"tuned model: {folder} has no adapter_model.safetensors; cfcourse loads weights only from "
                          "safetensors (pickled .bin files can run code): save it with peft_model.save_pretrained("
                          "folder), whose default is safetensors")
    return cfg


def _model_folder(name: str) -> Path | None:
    """The local folder a model name stands for, found without downloading anything; None if not here."""
    if name == lm_model.DEFAULT_MODEL:
        return lm_model.default_model_dir()
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    try:
        return lm_model._download_snapshot(name, local_only=True)
    except Exception:  # noqa: BLE001 - not a hub id in the local cache
        return None


def _check_adapter_base(tuned: _Side, base: _Side) -> None:
    """An adapter only means something on the model it was trained on: that model must be BASE."""
    named = tuned.adapter["base_model_name_or_path"]
    folder = _model_folder(named)
    if named == base.given or (folder is not None and folder.resolve() == base.folder.resolve()):
        return
    where = f" ({folder})" if folder is not None and str(folder) != named else ""
    base_where = f" ({base.folder})" if str(base.folder) != base.given else ""
    raise ReportError(f"tuned model: the adapter {tuned.folder} was trained on {named!r}{where}, but the base model "
                      f"is {base.given!r}{base_where}; give {named!r} as --base, or an adapter trained on "
                      f"{base.given!r}")


def _tuned_side(given, base: _Side) -> _Side:
    """The tuned model: a whole model, or a PEFT adapter on BASE (which then lends it its tokenizer if need be)."""
    side = _side("tuned", given)
    if side.adapter is not None:
        _check_adapter_base(side, base)
        side.tokenizer = side.tokenizer or base.tokenizer
    return side


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


# --- your own texts -------------------------------------------------------------------------------------------------

def read_text(name: str, path) -> list[dom.Document]:
    """A text file of yours as documents: JSONL (.jsonl, one {"text": ...} per line, each line a document) or
    plain UTF-8 text (any other name, the whole file one document, so paragraphs stay together)."""
    path = Path(path).expanduser()
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "does not exist"
        raise ReportError(f"text {name!r}: {path} {why}; give a UTF-8 text file, or a .jsonl file with a \"text\" "
                          "field on every line")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReportError(f"text {name!r}: {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as "
                          "UTF-8") from None
    docs = _jsonl_documents(name, path, raw) if path.suffix.lower() == ".jsonl" else [dom.Document(path.name, raw)]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise ReportError(f"text {name!r}: {path} has no text (it is empty or only white space)")
    return docs


def _jsonl_documents(name: str, path: Path, raw: str) -> list[dom.Document]:
    """One document per non-blank line; a line that is not a JSON object with a string "text" is refused."""
    docs = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise ReportError(f"text {name!r}: line {number} of {path} is not valid JSON ({e}); every line must be "
                              "an object such as {\"text\": \"...\"}") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ReportError(f"text {name!r}: line {number} of {path} has no string field \"text\"; every line "
                              "must be an object such as {\"text\": \"...\"}")
        docs.append(dom.Document(f"{path.name}:{number}", item["text"]))
    return docs


def _check_texts(texts) -> dict[str, tuple[Path, list[dom.Document]]]:
    """Your texts by name, read and checked: a name must be new (not a course domain) and plain."""
    if texts is None:
        return {}
    if not isinstance(texts, dict):
        raise ReportError(f"texts must be a dict {{name: path}}, got {type(texts).__name__}")
    out = {}
    for name, path in texts.items():
        if not isinstance(name, str) or not TEXT_NAME.match(name):
            raise ReportError(f"text name {name!r} must be letters, digits, '_', '.' or '-' (e.g. my-notes)")
        if name in dom.DOMAINS:
            raise ReportError(f"text name {name!r} is a course domain; call your text something else "
                              f"(the course's domains are {', '.join(dom.DOMAINS)})")
        out[name] = (Path(path).expanduser(), read_text(name, path))
    return out


def _blocks(domain: str, tokenizer, docs, n_blocks: int, block_len: int, advice: str = "use shorter blocks"
            ) -> torch.Tensor:
    """Up to `n_blocks` held-out blocks: fewer when the text is shorter (the report says how many it used)."""
    ids = dom.encode(tokenizer, docs)  # (n_tokens,)
    n = min(n_blocks, ids.numel() // block_len)
    if n < 1:
        raise ReportError(f"the {domain} text has {ids.numel()} tokens, fewer than one block of {block_len}; "
                          f"{advice}")
    return dom.blocks(ids, block_len, n)


def _plan(base, tuned, domains, probes, out, n_blocks, block_len, prompts, max_new_tokens, texts=None,
          dtype="float32", device="auto") -> _Plan:
    """Check every input and tokenize the text domains, all before any model weights are loaded."""
    n_blocks = _check_int("n_blocks (--blocks)", n_blocks, 1, "held-out blocks scored per domain")
    block_len = _check_int("block_len", block_len, 2, "tokens per block: one token predicts the next")
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1, "tokens generated per prompt")
    mine = _check_texts(texts)
    chosen = _check_domains(domains, mine)
    probe_list, probes_source = _check_probes(probes)
    folder = _check_out(out)
    dtype, device = _check_dtype(dtype), _check_device(device)
    base_side = _side("base", base)
    tuned_side = _tuned_side(tuned, base_side)
    _check_same_tokenizer(base_side, tuned_side)
    chat = base_side.tokenizer.chat_template is not None
    generated = [d for d in chosen if d in GENERATED_DOMAINS]
    if generated and not chat:
        raise ReportError(f"the {', '.join(generated)} text is the base model's own chat answers, but its tokenizer "
                          "has no chat template; leave it out: --domains "
                          + " ".join(d for d in chosen if d not in GENERATED_DOMAINS))
    plan = _Plan(base_side, tuned_side, chosen + list(mine), probe_list, probes_source, _check_prompts(prompts), chat,
                 folder, n_blocks, block_len, max_new_tokens, dtype, device)
    _tokenize(plan, chosen, mine)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the output folder {folder}: {e}") from None
    return plan


def _tokenize(plan: _Plan, chosen: list[str], mine: dict) -> None:
    """The blocks of every domain whose text exists before a model runs: the course's held-out text and yours."""
    tokenizer = plan.base.tokenizer
    for d in chosen:
        if d not in GENERATED_DOMAINS:
            plan.blocks[d] = _blocks(f"held-out {d}", tokenizer, dom.documents(d, "heldout"), plan.n_blocks,
                                     plan.block_len)
    for name, (path, docs) in mine.items():
        plan.blocks[name] = _blocks(f"{name} ({path})", tokenizer, docs, plan.n_blocks, plan.block_len,
                                    advice="give a longer text")
        plan.texts[name] = {"path": str(path), "format": "jsonl" if path.suffix.lower() == ".jsonl" else "text",
                            "documents": len(docs)}


# --- measuring, one model at a time ---------------------------------------------------------------------------------

def _load(side: _Side, plan: _Plan):
    """The side's model on the plan's device and dtype; an adapter is put on a fresh copy of the base model."""
    try:
        model, _ = lm_model.load_model(side.folder if side.adapter is None else plan.base.folder,
                                       device=plan.device, dtype=DTYPES[plan.dtype])
    except lm_model.ModelError as e:
        raise ReportError(f"{side.role} model: {e}") from None
    if side.adapter is None:
        return model
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, side.folder).to(plan.device).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ReportError(f"tuned model: the adapter {side.folder} does not fit the base model "
                          f"{plan.base.folder} ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None


_BASE_MEASURED: dict[tuple, tuple[dict, dict]] = {}  # one process's base measurements


def _base_key(plan: _Plan) -> tuple:
    """Everything the base model's numbers depend on: its weights, the text, the probes, the prompts, the dtype
    and the device."""
    folder = Path(plan.base.folder)
    text = tuple((d, hashlib.sha256(b.numpy().tobytes()).hexdigest()) for d, b in plan.blocks.items())
    return (str(folder.resolve()), model_key(folder), tuple(plan.domains), text, plan.n_blocks, plan.block_len,
            tuple((p.domain, p.prompt, p.answer) for p in plan.probes), tuple(plan.prompts), plan.max_new_tokens,
            plan.chat, plan.dtype, plan.device)


def _measure_base(plan: _Plan, say) -> dict:
    """The base model's numbers, measured once per process: comparing several tuned models with one base
    model (as lesson 10 does) measures the base only the first time."""
    key = _base_key(plan)
    if key in _BASE_MEASURED:
        out, generated = _BASE_MEASURED[key]
        plan.blocks.update(generated)
        say("the base model was measured earlier in this session with the same settings: reusing its numbers")
        return {**out, "seconds": 0.0}
    out = _measure(plan.base, plan, say)
    _BASE_MEASURED[key] = (out, {d: plan.blocks[d] for d in GENERATED_DOMAINS if d in plan.blocks})
    return out


def _measure(side: _Side, plan: _Plan, say) -> dict:
    """Load one model, measure everything on it, and free it; the base model also writes the generated text."""
    start = time.perf_counter()
    say(f"loading the {side.role} model from {side.folder}" + (" (a PEFT adapter on the base model)"
                                                                 if side.adapter else ""))
    model = _load(side, plan)
    out: dict = {}
    for d in GENERATED_DOMAINS:
        if d in plan.domains and d not in plan.blocks:  # the base model's own answers
            say(f"the base model answers the held-out {d} questions (the {d} text)")
            docs = own_answers(model, side.tokenizer, "heldout", max_new_tokens=OWN_ANSWER_TOKENS,
                                     model_name=str(side.folder), verbose=False)  # cached per model, as lessons do
            plan.blocks[d] = _blocks(d, side.tokenizer, docs, plan.n_blocks, plan.block_len)
            out["own_answers_text"] = [doc.text for doc in docs]
    say(f"measuring the {side.role} model: perplexity, probes, generations")
    out["nll"] = {d: [a.tolist() for a in block_nll(model, plan.blocks[d], batch_size=1,
                                                       progress=f"{side.role} model, {d}")] for d in plan.domains}
    out["probes"] = score_probes(model, side.tokenizer, plan.probes)
    out["generations"] = (generate(model, side.tokenizer, plan.prompts, plan.max_new_tokens, chat=plan.chat)
                          if plan.prompts else [])
    del model
    release_memory()
    out["seconds"] = time.perf_counter() - start
    return out


def forgetting_report(base, tuned, domains=None, probes=None, out=None, n_blocks: int = 16, block_len: int = 128,
                      prompts: list[str] | None = None, max_new_tokens: int = 48, verbose: bool = False,
                      texts: dict[str, str | os.PathLike] | None = None, dtype: str = "float32",
                      device: str = "auto") -> dict:
    """Compare a base model with its fine-tuned version (a whole model or a PEFT adapter) on the course's domains
    and on your own `texts` ({name: file}); write report.md, .json and .png into `out`; see lesson 10."""
    start = time.perf_counter()
    say = (lambda msg: print(f"cfcourse: {msg}", file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    plan = _plan(base, tuned, domains, probes, out, n_blocks, block_len, prompts, max_new_tokens, texts, dtype,
                 device)
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

def change_interval(nll_base, nll_tuned, tokens, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
                    ) -> tuple[float, float | None, float | None]:
    """(change, low, high): tuned / base perplexity - 1 on the same blocks, and its 95% paired-bootstrap interval.

    Each resample draws blocks with replacement, the same blocks for both models, so the interval shows how much
    the change depends on which blocks were measured. One block has no such spread: low and high are None.
    """
    nll_base, nll_tuned, tokens = (np.asarray(a, dtype=float) for a in (nll_base, nll_tuned, tokens))
    if not nll_base.ndim == 1 or not nll_base.shape == nll_tuned.shape == tokens.shape or not len(tokens):
        raise ValueError(f"need one NLL per block for both models and one token count per block, got shapes "
                         f"{nll_base.shape}, {nll_tuned.shape}, {tokens.shape}")
    diff = nll_tuned - nll_base  # (n_blocks,) nats the tuned model lost on each block
    change = math.expm1(diff.sum() / tokens.sum())
    if len(diff) < 2:
        return change, None, None
    picks = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))  # (resamples, n_blocks)
    changes = np.expm1(diff[picks].sum(axis=1) / tokens[picks].sum(axis=1))  # (resamples,)
    low, high = np.quantile(changes, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return change, float(low), float(high)


def verdict(low: float | None, high: float | None, threshold: float = PRACTICAL_CHANGE) -> str:
    """Where the whole interval of the change lies: above +threshold 'forgotten', below -threshold 'learned',
    within ±threshold 'kept'; across either edge, or no interval at all, 'unclear'."""
    if low is None or high is None:
        return "unclear"
    if low > threshold:
        return "forgotten"
    if high < -threshold:
        return "learned"
    return "kept" if -threshold <= low and high <= threshold else "unclear"


def _domain_rows(plan: _Plan, measured: dict) -> dict:
    rows = {}
    for d in plan.domains:
        (nll_b, tokens), (nll_t, _) = measured["base"]["nll"][d], measured["tuned"]["nll"][d]
        change, low, high = change_interval(nll_b, nll_t, tokens)
        rows[d] = {"ppl_base": math.exp(sum(nll_b) / sum(tokens)), "ppl_tuned": math.exp(sum(nll_t) / sum(tokens)),
                   "change": change, "interval": None if low is None else [low, high], "verdict": verdict(low, high),
                   "blocks": int(plan.blocks[d].shape[0]), "tokens": int(plan.blocks[d].numel()),
                   "nll_base": nll_b, "nll_tuned": nll_t, "block_tokens": tokens}
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


def _model_entry(side: _Side) -> dict:
    entry = {"given": side.given, "resolved": str(side.folder)}
    if side.adapter is not None:
        entry["adapter"] = {"peft_type": side.adapter.get("peft_type"),
                            "base_model_name_or_path": side.adapter["base_model_name_or_path"]}
    return entry


def _assemble(plan: _Plan, measured: dict, threads: int, seconds: float) -> dict:
    import transformers

    base, tuned = measured["base"], measured["tuned"]
    return {
        "base": _model_entry(plan.base),
        "tuned": _model_entry(plan.tuned),
        "settings": {"n_blocks": plan.n_blocks, "block_len": plan.block_len, "split": "heldout", "batch_size": 1,
                     "max_new_tokens": plan.max_new_tokens, "own_answer_tokens": OWN_ANSWER_TOKENS,
                     "chat": plan.chat, "threads": threads, "dtype": plan.dtype, "device": plan.device,
                     "verdict": {"rule": VERDICT_RULE, "practical_change": PRACTICAL_CHANGE,
                                 "confidence": CONFIDENCE, "bootstrap": "paired, percentile, over blocks",
                                 "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
                     "probe_worse_nats": PROBE_WORSE_NATS, "probes": plan.probes_source,
                     "versions": {"torch": torch.__version__, "transformers": transformers.__version__}},
        "texts": plan.texts,
        "domains": _domain_rows(plan, measured),
        "probes": _probe_rows(base["probes"], tuned["probes"]),
        "generations": [{"prompt": p, "base": b, "tuned": t}
                        for p, b, t in zip(plan.prompts, base["generations"], tuned["generations"])],
        "own_answers_text": base.get("own_answers_text", []),
        "seconds": {"total": seconds, "base": base["seconds"], "tuned": tuned["seconds"]},
    }


# --- the three files ------------------------------------------------------------------------------------------------

def _pct(change: float, digits: int = 1) -> str:
    """+43.0% or −27.5% (a real minus sign)."""
    return f"{change:+.{digits}%}".replace("-", "−")


def _interval(row: dict) -> str:
    """The 95% interval of a domain's change as text; none from a single block."""
    return "none (1 block)" if row["interval"] is None else " to ".join(_pct(v) for v in row["interval"])


def perplexity_table(report: dict) -> str:
    """The Markdown table of perplexity per domain, base vs tuned, with the change, its interval and the verdict."""
    lines = ["| domain | base ppl | tuned ppl | change | 95% interval | verdict |", "|---|---:|---:|---:|---:|---|"]
    for d, r in report["domains"].items():
        lines.append(f"| {d} | {r['ppl_base']:.2f} | {r['ppl_tuned']:.2f} | {_pct(r['change'])} | {_interval(r)} | "
                     f"{r['verdict']} |")
    return "\n".join(lines)


def verdict_rule_text(settings: dict) -> str:
    """The verdict rule and the bootstrap behind it, in words, for report.md."""
    v, t = settings["verdict"], _pct(settings["verdict"]["practical_change"], 0)
    return (f"Each change comes with a {v['confidence']:.0%} interval from a paired bootstrap over the blocks "
            f"({v['resamples']:,} resamples of the blocks with replacement, the same blocks for both models, seed "
            f"{v['seed']}): how much the change depends on which blocks were measured. The verdict reads the whole "
            f"interval: above {t} *forgotten*; below {t.replace('+', '−')} *learned*; within ±{t[1:]} *kept* (any "
            f"change is too small to matter); across {t} or {t.replace('+', '−')} *unclear* (the change may or may "
            "not matter: more blocks, --blocks, narrow the interval). A single block gives no interval and the "
            "verdict *unclear*. "
            "Perplexity is exp(mean loss per token); lower is better.")


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


def _texts_lines(report: dict) -> list[str]:
    texts = report.get("texts", {})
    if not texts:
        return []
    return ["- your texts, measured as given (keep them out of the fine-tuning data to see forgetting): "
            + ", ".join(f"{n} (`{t['path']}`, {t['documents']} document{'s' * (t['documents'] != 1)})"
                        for n, t in texts.items())]


def markdown(report: dict) -> str:
    """report.md: the summary a person reads first."""
    s = report["settings"]
    short = [f"{d} ({r['blocks']} blocks)" for d, r in report["domains"].items() if r["blocks"] < s["n_blocks"]]
    lines = ["# Forgetting report", "",
             f"- base: {_model_line(report['base'])}", f"- tuned: {_model_line(report['tuned'])}",
             f"- {s['n_blocks']} blocks of {s['block_len']} tokens per domain (held-out text for the course's domains)"
             + (f"; fewer where the text is shorter: {', '.join(short)}" if short else "")
             + f"; {s.get('dtype', 'float32')} on {s.get('device', 'cpu')}; {report['seconds']['total']:.0f} s",
             *_texts_lines(report), "",
             "## Perplexity per domain", "", perplexity_table(report), ""]
    lines += [f"- {d}: perplexity {_pct(r['change'])} ({s['verdict']['confidence']:.0%} interval {_interval(r)}) — "
              f"{r['verdict']}" for d, r in report["domains"].items()]
    lines += ["", verdict_rule_text(s)]
    for d in GENERATED_DOMAINS:
        if d in report["domains"]:
            lines += ["", f"The {d} text is the base model's own greedy answers to held-out medical questions: "
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


def _tuned_error_bars(rows: dict) -> list[list[float]]:
    """Below and above each tuned bar: the 95% interval of the change, as perplexity (base ppl x (1 + change))."""
    below, above = [], []
    for r in rows.values():
        low, high = r["interval"] or (r["change"], r["change"])
        below.append(max(0.0, r["ppl_tuned"] - r["ppl_base"] * (1 + low)))
        above.append(max(0.0, r["ppl_base"] * (1 + high) - r["ppl_tuned"]))
    return [below, above]


def figure(report: dict):
    """Perplexity per domain (the tuned bars with the change's 95% interval) and mean probe log-likelihood per
    probe domain, base vs tuned."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_ppl, ax_probe = fig.subplots(1, 2, width_ratios=[3, 2])
    rows = report["domains"]
    x = range(len(rows))
    base, tuned = [r["ppl_base"] for r in rows.values()], [r["ppl_tuned"] for r in rows.values()]
    ax_ppl.bar([i - 0.2 for i in x], base, 0.4, label="base")
    ax_ppl.bar([i + 0.2 for i in x], tuned, 0.4, yerr=_tuned_error_bars(rows), capsize=3,
               label="tuned (bar: 95% interval of the change)")
    tops = [r["ppl_base"] * (1 + max(r["change"], (r["interval"] or [0, 0])[1])) for r in rows.values()]
    for i, r in enumerate(rows.values()):
        ax_ppl.annotate(f"{_pct(r['change'])}\n{r['verdict']}", (i, max(r["ppl_base"], tops[i])),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax_ppl.set_xticks(list(x), list(rows))
    ax_ppl.set_ylim(0, 1.4 * max(base + tuned + tops))  # room for the labels and the legend above the bars
    ax_ppl.set(ylabel="perplexity (lower is better)", title="Perplexity per domain")
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
