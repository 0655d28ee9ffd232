"""The lab's text: held-out blocks each stage is measured on, validation blocks a learning rate is chosen on,
training blocks, the old text replay mixes in, and the medical questions scored at every stage.

Every size comes from the LabSettings the caller passes (see cfcourse.lm.settings).
"""
from __future__ import annotations

import torch

from . import corpora
from . import domains as dom
from . import questions as qs
from .settings import ALL_DOMAINS, FIRST_DOMAIN, NEW_DOMAIN, LabSettings


def held_out(tokenizer, s: LabSettings, names=ALL_DOMAINS, n_blocks: int | None = None,
             block_len: int | None = None) -> dict[str, torch.Tensor]:
    """Held-out token blocks of each domain: s.headline_blocks of medical and legal, s.other_blocks of the rest
    (or `n_blocks` of each), of s.block_len tokens (or `block_len`)."""
    return {d: dom.domain_blocks(d, tokenizer, block_len=block_len or s.block_len,
                                 n_blocks=n_blocks or s.blocks_per_domain(d))
            for d in names}


def validation(tokenizer, domain: str, s: LabSettings) -> torch.Tensor:
    """Validation blocks of a domain (legal or medical): what a learning rate is chosen on, never reported."""
    return dom.domain_blocks(domain, tokenizer, split="validation", n_blocks=s.validation_blocks,
                             block_len=s.block_len)


def train_text(tokenizer, block_len: int, domain: str = NEW_DOMAIN) -> torch.Tensor:
    """Every training-split block of a domain (by default the new one, legal)."""
    return dom.domain_blocks(domain, tokenizer, split="train", n_blocks=None, block_len=block_len)


def old_text(tokenizer, s: LabSettings, n_blocks: int | None = None, block_len: int | None = None,
             names=(FIRST_DOMAIN,), seed: int = 0) -> torch.Tensor:
    """Training-split blocks of the old domain(s), shuffled together: the text replay mixes in (never held-out).
    s.replay_blocks of each, of s.block_len tokens (or `n_blocks`, `block_len`)."""
    n_blocks, block_len = n_blocks or s.replay_blocks, block_len or s.block_len
    blocks = torch.cat([dom.domain_blocks(d, tokenizer, split="train", n_blocks=n_blocks, block_len=block_len)
                        for d in names])
    return blocks[torch.randperm(blocks.shape[0], generator=torch.Generator().manual_seed(seed))]


def medical_questions(s: LabSettings) -> list[corpora.Question]:
    """The MMLU medical questions scored at every stage: a fixed sample of s.questions of the 1,089."""
    return qs.pick(corpora.mmlu(corpora.MEDICAL_SUBJECTS), s.questions)


def ask(model, tokenizer, questions: list[corpora.Question]) -> list[dict]:
    """Score the medical questions: each right answer's log-likelihood, and whether the model's choice is right."""
    return qs.score_questions(model, tokenizer, questions)
