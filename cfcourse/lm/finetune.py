"""Full fine-tuning of a causal LM in a memory-lean form, on a laptop CPU; see lesson 08.

Full AdamW on all 135M weights of SmolLM2 needs about 5 GB. The lean form
keeps every weight in float32 but trains only the top `trainable_layers`
decoder layers (embeddings and the tied output head stay frozen, so no
gradient or optimiser state is kept for them), recomputes activations in the
backward pass (gradient checkpointing), computes the loss a chunk of positions
at a time (measures.lm_loss), and uses Adafactor, whose state is a few vectors
per matrix instead of AdamW's two full copies.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from .measures import lm_loss


@dataclass
class FinetuneConfig:
    """One fine-tuning run; the defaults forget clearly on SmolLM2-135M in about 3 minutes of a 2-core CPU."""

    steps: int = 70
    batch_size: int = 4  # blocks per step
    lr: float = 1.3e-3  # constant; Adafactor without relative step or parameter scaling
    trainable_layers: int = 10  # the top layers; the rest, the embeddings and the output head are frozen
    chunk_size: int = 128  # positions per chunk of the loss (bounds the logits' memory)
    gradient_checkpointing: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "trainable_layers", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def decoder_layers(model) -> torch.nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face causal LM (Llama, Mistral, Qwen: .layers; GPT-2: .h)."""
    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        if isinstance(getattr(decoder, name, None), torch.nn.ModuleList):
            return getattr(decoder, name)
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}; expected .layers or .h")


def freeze_all_but_top(model, trainable_layers: int) -> list[torch.nn.Parameter]:
    """Freeze every weight, then unfreeze the top `trainable_layers` decoder layers; returns the trainable ones."""
    layers = decoder_layers(model)
    if not 1 <= trainable_layers <= len(layers):
        raise ValueError(f"trainable_layers must be in 1..{len(layers)}, got {trainable_layers}")
    model.requires_grad_(False)
    for layer in layers[len(layers) - trainable_layers:]:
        layer.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def adafactor(params, lr: float):
    """Adafactor at a constant learning rate (no relative step, no parameter scaling, no warm-up)."""
    from transformers.optimization import Adafactor

    return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False)


def _checkpointing(model, on: bool) -> None:
    """Recompute each layer's activations in backward instead of keeping them (transformers 5.x has two names)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def finetune(model, train_blocks: torch.Tensor, cfg: FinetuneConfig | None = None, on_step=None) -> dict:
    """Train `model` in place on random batches of `train_blocks` (n_blocks, block_len); returns the losses."""
    cfg = cfg or FinetuneConfig()
    if train_blocks.ndim != 2 or train_blocks.shape[0] < cfg.batch_size:
        raise ValueError(f"train_blocks must be (n_blocks >= batch_size={cfg.batch_size}, block_len), "
                         f"got {tuple(train_blocks.shape)}")
    params = freeze_all_but_top(model, cfg.trainable_layers)
    if cfg.gradient_checkpointing:
        _checkpointing(model, True)
    opt = adafactor(params, cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    losses, start = [], time.perf_counter()
    model.train()
    try:
        for step in range(cfg.steps):
            idx = torch.randint(0, train_blocks.shape[0], (cfg.batch_size,), generator=gen)
            total, count = lm_loss(model, train_blocks[idx].to(device), chunk_size=cfg.chunk_size)
            loss = total / count
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if on_step is not None:
                on_step(step, losses[-1])
    finally:
        model.eval()
        if cfg.gradient_checkpointing:
            _checkpointing(model, False)
    return {"losses": losses, "wall_s": time.perf_counter() - start, "config": asdict(cfg)}
