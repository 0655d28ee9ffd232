"""Fine-tuning of a causal LM in a memory-lean form, on a laptop CPU, with the cures of lesson 09 as options.

Full AdamW on all 135M weights of SmolLM2 needs about 5 GB. The lean form
keeps every weight in float32 but trains only the top `trainable_layers`
decoder layers (embeddings and the tied output head stay frozen, so no
gradient or optimiser state is kept for them), recomputes activations in the
backward pass (gradient checkpointing), computes the loss a chunk of positions
at a time (measures.lm_loss), and uses Adafactor, whose state is a few vectors
per matrix instead of AdamW's two full copies.

The cures (cures.py) are fields of the same config: replay_ratio, l2, ewc,
lora_rank and lora_targets, and the learning rate; they combine freely. The
config builds them as strategies of cfcourse.strategies (`FinetuneConfig.strategies`),
the same objects and hooks the MNIST runner uses, and `finetune` runs any list of
them: the config's, or one of your own.

Started by `accelerate launch` on several processes (CPUs or GPUs), `finetune` trains data-parallel with the
same numbers of blocks, steps and cures: distributed.py says how.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..models import model_device
from ..strategies import Strategy, compose
from ..strategies.regularization import EWC, L2
from ..strategies.rehearsal import MixedReplay, replay_schedule
from . import cures, distributed
from .measures import lm_loss
from .model import decoder_layers
from .tasks import TextTask


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

    @property
    def has_cures(self) -> bool:
        return bool(self.replay_ratio or self.l2 or self.ewc or self.lora_rank)

    def strategies(self, n_old_blocks: int = 0, generator: torch.Generator | None = None,
                   schedule: list[int] | None = None) -> list[Strategy]:
        """The cures this config switches on, as strategies: LoRA, replay mixing, the L2 pull, EWC.

        Replay keeps all `n_old_blocks` old blocks and draws from them with replacement, with `generator` (the
        run's) and `schedule` (old blocks per step; default: the even spread). The L2 and EWC pulls add their
        gradient in place, which on a 135M-weight model saves a few hundred MB.
        """
        out: list[Strategy] = []
        if self.lora_rank:
            out.append(cures.LoRA(lora_rank=self.lora_rank, targets=self.lora_targets,
                                  top_layers=self.trainable_layers, merge=self.merge_lora, seed=self.seed))
        if self.replay_ratio:
            out.append(MixedReplay(generator, schedule, replace=True, replay_ratio=self.replay_ratio,
                                   buffer_size=n_old_blocks))
        if self.l2:
            out.append(L2(grad_in_place=True, l2_lambda=self.l2))
        if self.ewc:
            out.append(EWC(normalise_fisher=True, grad_in_place=True, ewc_lambda=self.ewc,
                           fisher_samples=self.fisher_blocks))
        return out

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


def _check_blocks(cfg: FinetuneConfig, train_blocks: torch.Tensor, old_blocks) -> None:
    if train_blocks.ndim != 2 or train_blocks.shape[0] < 1:
        raise ValueError(f"train_blocks must be (n_blocks >= 1, block_len), got {tuple(train_blocks.shape)}")
    if cfg.needs_old_text and (old_blocks is None or old_blocks.ndim != 2 or old_blocks.shape[0] < 1):
        raise ValueError("replay_ratio > 0 and ewc > 0 need old_blocks: (n_blocks, block_len) token ids of "
                         "old-domain text (or cures.self_generated_blocks when the old data is gone)")
    if old_blocks is not None and old_blocks.ndim == 2 and old_blocks.shape[1] != train_blocks.shape[1]:
        raise ValueError(f"old_blocks have {old_blocks.shape[1]} tokens a block, train_blocks "
                         f"{train_blocks.shape[1]}; use the same block length")


def _schedule(cfg: FinetuneConfig, schedule) -> list[int]:
    """Old blocks in each step's batch, from `schedule(steps, batch_size, ratio)` (default: the even spread)."""
    counts = [int(n) for n in (schedule or replay_schedule)(cfg.steps, cfg.batch_size, cfg.replay_ratio)]
    if len(counts) != cfg.steps or not all(0 <= n <= cfg.batch_size for n in counts):
        raise ValueError(f"a replay schedule gives one count per step ({cfg.steps}), each in 0..{cfg.batch_size}")
    return counts


def finetune(model, train_blocks: torch.Tensor, cfg: FinetuneConfig | None = None, old_blocks=None,
             on_step=None, schedule=None, strategies=None, accelerator=None) -> dict:
    """Train `model` on random batches of `train_blocks` (n_blocks, block_len), with the cures `cfg` switches on
    (or your own `strategies`, a list of cfcourse strategies, with no cures in `cfg`).

    `old_blocks` (n, block_len) is old-domain text (real, or `cures.self_generated_blocks`): the strategies
    see it as the task the model learned before (`after_task`), so replay keeps it and EWC takes its Fisher
    there. `on_step(step, loss, model)` is called after every step (e.g. to record perplexities as training
    goes). `schedule(steps, batch_size, ratio)` gives the number of old blocks in each step's batch (default
    `replay_schedule`; lesson 09 passes the learner's own). The model is trained in place; with LoRA the
    adapters are merged into its weights at the end (with `cfg.merge_lora` False, "model" is peft's model,
    whose adapter `with model.disable_adapter():` switches off). Returns the losses, the seconds and the
    config, and under "model" the trained model.

    `accelerator` (an `accelerate.Accelerator`) trains data-parallel on its processes: each takes its share of
    every global batch of `cfg.batch_size` blocks (see distributed.py); by default one is made when the process
    was started with others (`accelerate launch --multi_gpu --num_processes N`). Then every process returns the
    same losses and weights, and `on_step` runs on the main process only.
    """
    cfg = cfg or FinetuneConfig()
    _check_blocks(cfg, train_blocks, old_blocks)
    gen = torch.Generator().manual_seed(cfg.seed)
    counts = _schedule(cfg, schedule) if cfg.replay_ratio else [0] * cfg.steps
    if strategies is not None and cfg.has_cures:
        raise ValueError("give the cures either as fields of cfg or as strategies, not both")
    n_old = 0 if old_blocks is None else old_blocks.shape[0]
    strategy = compose(cfg.strategies(n_old, gen, counts) if strategies is None else strategies)
    acc = distributed.choose(accelerator, cfg.batch_size)  # None on one process started alone
    if acc is not None:
        model.to(acc.device)
    freeze_all_but_top(model, cfg.trainable_layers)
    trained = strategy.setup(model)  # LoRA wraps the model here
    strategy.after_task(trained, TextTask("old domain", old_blocks, cfg.chunk_size))  # what it knew before
    new = TextTask("new domain", train_blocks, cfg.chunk_size, task_id=1)
    strategy.before_task(trained, new)
    if cfg.gradient_checkpointing:
        _checkpointing(model, True)
    opt = adafactor([p for p in trained.parameters() if p.requires_grad], cfg.lr)
    dp = None if acc is None else distributed.DataParallel(acc, trained, opt, cfg.chunk_size)
    if dp is not None:
        opt = dp.optimizer
        distributed.broadcast_state(strategy, acc.device)  # the same anchors, Fisher and memory everywhere
    main = acc is None or acc.is_main_process
    losses, start = [], time.perf_counter()
    trained.train()
    try:
        steps = range(cfg.steps)
        for step in tqdm(steps, desc="fine-tuning", unit="step", leave=False) if main else steps:
            losses.append(_step(trained, strategy, opt, train_blocks, step, cfg, gen, dp))
            if on_step is not None and main:
                trained.eval()
                on_step(step, losses[-1], trained)
                trained.train()
    finally:
        if dp is not None:
            dp.close()
        trained.eval()
        if cfg.gradient_checkpointing:
            _checkpointing(model, False)
        model = strategy.teardown(trained)
        model.requires_grad_(False)
    return {"losses": losses, "wall_s": time.perf_counter() - start, "config": asdict(cfg), "model": model,
            "replayed": sum(counts) if cfg.replay_ratio else 0, "processes": 1 if acc is None else acc.num_processes}


def _step(model, strategy: Strategy, opt, train_blocks: torch.Tensor, step: int, cfg: FinetuneConfig,
          gen: torch.Generator, dp: distributed.DataParallel | None = None) -> float:
    """One step of the strategy protocol on a batch of blocks; returns its mean next-token loss."""
    new_idx = torch.randint(0, train_blocks.shape[0], (strategy.new_samples(step, cfg.batch_size),), generator=gen)
    batch, _, _ = strategy.transform_batch(train_blocks[new_idx], None, None)  # replay appends old blocks
    if dp is None:
        loss = _backward(model, strategy, batch, cfg.chunk_size)
    else:  # this process's rows; the gradients are averaged over the processes when backward returns
        loss = dp.backward(batch, lambda rows: strategy.penalty(model, rows, None))
    strategy.add_penalty_grad(model)  # the L2 and EWC pulls, added in place (no autograd copies)
    strategy.before_step(model)
    opt.step()
    opt.zero_grad(set_to_none=True)
    strategy.after_step(model)
    return loss


def _backward(model, strategy: Strategy, batch: torch.Tensor, chunk_size: int) -> float:
    """Backpropagate the batch's mean next-token loss and the strategies' penalty; returns that mean loss."""
    total, count = lm_loss(model, batch.to(model_device(model)), chunk_size=chunk_size)
    loss = total / count
    penalty = strategy.penalty(model, batch, None)
    (loss + penalty if isinstance(penalty, torch.Tensor) else loss).backward()
    return loss.item()
