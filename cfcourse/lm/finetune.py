"""Fine-tuning of a causal LM in a memory-lean form, on a laptop CPU, with the cures of lesson 09 as options.

Full AdamW on all 135M weights of SmolLM2 needs about 5 GB. The lean form
keeps every weight in float32 but trains only the top `trainable_layers`
decoder layers (embeddings and the tied output head stay frozen, so no
gradient or optimiser state is kept for them), recomputes activations in the
backward pass (gradient checkpointing), computes the loss a chunk of positions
at a time (measures.lm_loss), and uses Adafactor, whose state is a few vectors
per matrix instead of AdamW's two full copies.

The cures (cures.py) are fields of the same config: replay_ratio, l2, ewc,
lora_rank and lora_targets, and the learning rate; they combine freely.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from . import cures
from .measures import lm_loss


@dataclass
class FinetuneConfig:
    """One fine-tuning run; the defaults forget clearly on SmolLM2-135M in about 3 minutes of a 2-core CPU."""

    steps: int = 70
    batch_size: int = 4  # blocks per step
    lr: float = 1.3e-3  # constant; Adafactor without relative step or parameter scaling
    trainable_layers: int = 10  # the top layers (with LoRA: that get adapters); the rest, the embeddings and
    #                             the output head are frozen
    chunk_size: int = 128  # positions per chunk of the loss (bounds the logits' memory)
    gradient_checkpointing: bool = True
    seed: int = 0
    # cures (lesson 09); 0 switches each one off
    replay_ratio: float = 0.0  # share of every batch that is old text (needs old_blocks)
    l2: float = 0.0  # strength of the pull back to the starting weights
    ewc: float = 0.0  # strength of the Fisher-weighted pull (needs old_blocks for the Fisher)
    fisher_blocks: int = 8  # old-text blocks the Fisher is estimated on
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank instead of the top layers
    lora_targets: tuple[str, ...] = cures.DEFAULT_LORA_TARGETS
    merge_lora: bool = True  # False: keep the adapter separate (switch it off to get the start model back exactly)

    def __post_init__(self):
        for name in ("steps", "batch_size", "trainable_layers", "chunk_size", "fisher_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "l2", "ewc"):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if name == "lr" else value >= 0)):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value}")
        if not 0.0 <= self.replay_ratio < 1.0:
            raise ValueError(f"replay_ratio is the share of each batch that is old text: in [0, 1), "
                             f"got {self.replay_ratio}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0: no LoRA), got {self.lora_rank}")
        self.lora_targets = tuple(self.lora_targets)

    @property
    def needs_old_text(self) -> bool:
        return self.replay_ratio > 0 or self.ewc > 0

    def label(self) -> str:
        """A short name for plots and tables, e.g. 'lr 5e-04, replay 25%, L2 1'."""
        parts = [f"lr {self.lr:.0e}"]
        if self.lora_rank:
            parts.append(f"LoRA r{self.lora_rank}" + ("" if self.merge_lora else ", unmerged"))
        if self.replay_ratio:
            parts.append(f"replay {self.replay_ratio:.0%}")
        if self.l2:
            parts.append(f"L2 {self.l2:g}")
        if self.ewc:
            parts.append(f"EWC {self.ewc:g}")
        return ", ".join(parts)


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


def finetune(model, train_blocks: torch.Tensor, cfg: FinetuneConfig | None = None, old_blocks=None,
             on_step=None, schedule=None) -> dict:
    """Train `model` on random batches of `train_blocks` (n_blocks, block_len), with the cures `cfg` switches on.

    `old_blocks` (n, block_len) is old-domain text (real, or `cures.self_generated_blocks`): replayed when
    `cfg.replay_ratio` > 0, and the Fisher sample when `cfg.ewc` > 0. `on_step(step, loss, model)` is called
    after every step (e.g. to record perplexities as training goes). `schedule(steps, batch_size, ratio)` gives
    the number of old blocks in each step's batch (default `cures.replay_schedule`; lesson 09 passes the
    learner's own). The model is trained in place; with LoRA
    the adapters are merged into its weights at the end (with `cfg.merge_lora` False, "model" is peft's model,
    whose adapter `with model.disable_adapter():` switches off). Returns the losses, the seconds and the config, and
    under "model" the trained model (the same object that was passed in).
    """
    cfg = cfg or FinetuneConfig()
    if train_blocks.ndim != 2 or train_blocks.shape[0] < 1:
        raise ValueError(f"train_blocks must be (n_blocks >= 1, block_len), got {tuple(train_blocks.shape)}")
    if cfg.needs_old_text:
        if old_blocks is None or old_blocks.ndim != 2 or old_blocks.shape[0] < 1:
            raise ValueError("replay_ratio > 0 and ewc > 0 need old_blocks: (n_blocks, block_len) token ids of "
                             "old-domain text (or cures.self_generated_blocks when the old data is gone)")
        if old_blocks.shape[1] != train_blocks.shape[1]:
            raise ValueError(f"old_blocks have {old_blocks.shape[1]} tokens a block, train_blocks "
                             f"{train_blocks.shape[1]}; use the same block length")
    if cfg.lora_rank:
        model.requires_grad_(False)
        trained = cures.add_lora(model, cfg.lora_rank, cfg.lora_targets, top_layers=cfg.trainable_layers)
        params = [p for p in trained.parameters() if p.requires_grad]
    else:
        trained = model
        params = freeze_all_but_top(model, cfg.trainable_layers)
    device = next(model.parameters()).device
    penalty = None
    if cfg.ewc:
        fisher = cures.lm_fisher(trained, old_blocks[:cfg.fisher_blocks], params, cfg.chunk_size)
        penalty = cures.EWCPenalty(params, fisher, cfg.ewc)
    elif cfg.l2:
        penalty = cures.L2ToStart(params, cfg.l2)
    if cfg.gradient_checkpointing:
        _checkpointing(model, True)
    opt = adafactor(params, cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    schedule = [int(n) for n in (schedule or cures.replay_schedule)(cfg.steps, cfg.batch_size, cfg.replay_ratio)]
    if len(schedule) != cfg.steps or not all(0 <= n <= cfg.batch_size for n in schedule):
        raise ValueError(f"a replay schedule gives one count per step ({cfg.steps}), each in 0..{cfg.batch_size}")
    losses, start = [], time.perf_counter()
    trained.train()
    try:
        for step in tqdm(range(cfg.steps), desc="fine-tuning", unit="step", leave=False):
            batch = cures.mixed_batch(train_blocks, old_blocks, cfg.batch_size, schedule[step], gen)
            total, count = lm_loss(trained, batch.to(device), chunk_size=cfg.chunk_size)
            loss = total / count
            loss.backward()
            if penalty is not None:
                penalty.add_grad()  # the pull's gradient, added in place (no autograd copies)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if on_step is not None:
                trained.eval()
                on_step(step, losses[-1], trained)
                trained.train()
    finally:
        trained.eval()
        if cfg.gradient_checkpointing:
            _checkpointing(model, False)
        if cfg.lora_rank and cfg.merge_lora:
            model = cures.merge_lora(trained)
        elif cfg.lora_rank:
            model = trained  # peft's model: the adapter stays a separate, switchable part
        model.requires_grad_(False)
    return {"losses": losses, "wall_s": time.perf_counter() - start, "config": asdict(cfg), "model": model,
            "replayed": sum(schedule)}
