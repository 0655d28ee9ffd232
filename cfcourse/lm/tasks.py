"""A domain's text as a task of the strategy protocol (cfcourse.strategies), so that one set of strategies
serves classifiers and language models; see lesson 09.

Fine-tuning a language model on a new domain is the second task of a two-task sequence: the first, what the
model knew before, was learned elsewhere. `finetune` tells the strategies so (their `after_task` on the old
domain's `TextTask`): L2 then anchors at the starting weights, EWC estimates its Fisher on the old text and
replay keeps the old blocks in memory, exactly as they do after a task of permuted MNIST.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .measures import lm_loss


@dataclass
class TextTask:
    """Token blocks (n_blocks, block_len) of one domain, as a task: its samples are blocks, without labels."""

    name: str
    blocks: torch.Tensor | None  # (n_blocks, block_len) token ids; None when no text of the domain is at hand
    chunk_size: int = 128  # positions per chunk of the loss (bounds the logits' memory)
    task_id: int = 0

    def __post_init__(self):
        if self.blocks is not None and (self.blocks.ndim != 2 or self.blocks.shape[0] < 1):
            raise ValueError(f"{self.name}: blocks must be (n_blocks >= 1, block_len) token ids, "
                             f"got shape {tuple(self.blocks.shape)}")

    def _need_blocks(self) -> torch.Tensor:
        if self.blocks is None:
            raise ValueError(f"no text of {self.name!r} was given: pass old_blocks (token blocks of the old "
                             f"domain, or cures.self_generated_blocks when the old data is gone)")
        return self.blocks

    @property
    def train_x(self) -> torch.Tensor:
        return self._need_blocks()

    @property
    def train_y(self) -> torch.Tensor:
        """No labels: zeros, one per block (what a replay memory stores beside each sample)."""
        return torch.zeros(self._need_blocks().shape[0], dtype=torch.long)

    def sample_loss(self, model, i: int) -> torch.Tensor:
        """Block i's mean next-token loss under `model`: the per-sample loss of the Fisher (diagonal_fisher)."""
        device = next(model.parameters()).device
        total, count = lm_loss(model, self._need_blocks()[i:i + 1].to(device), chunk_size=self.chunk_size)
        return total / count
