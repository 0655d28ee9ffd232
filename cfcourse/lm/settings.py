"""The language-model lab's settings: the domains of its story, its sizes in each run mode, and its threads.

One function, `settings()`, decides every size from the run mode, as `config.by_mode` does for the MNIST
lessons; the lessons and the command line call it once and pass what it returns to everything else.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .. import config
from .finetune import FinetuneConfig

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

    def blocks_per_domain(self, domain: str) -> int:
        """Held-out blocks measured of `domain`: more of the headline domains."""
        return self.headline_blocks if domain in HEADLINE else self.other_blocks


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


def stage1_config(s: LabSettings, seed: int = 0) -> FinetuneConfig:
    """Stage 1 (medical) for one seed."""
    return replace(s.medical, seed=s.medical.seed + seed)


def stage2_config(s: LabSettings, lr: float, seed: int = 0) -> FinetuneConfig:
    """Stage 2 (legal) at learning rate `lr` for one seed."""
    return replace(s.legal, lr=lr, seed=s.legal.seed + seed)


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
