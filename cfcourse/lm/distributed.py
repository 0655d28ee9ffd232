"""Language-model fine-tuning on several processes, CPU (gloo) or GPU (NCCL), through Hugging Face Accelerate.

`accelerate launch --multi_gpu --num_processes N script.py` (or torchrun) starts N copies of one script, on N
GPUs, or on N CPU processes where there is no GPU or ACCELERATE_USE_CPU=1 says so; `finetune` notices
(`launched`) and trains data-parallel. Every process draws the same global batch from the run's seeded
generator (replay's old blocks included) and trains on its own share of the rows; DDP averages the gradients,
and each process's loss is scaled so that the average is the gradient of the mean loss over the global batch.
N processes thus take the same steps as one process with the whole batch (up to the order of floating-point
sums): the config's `batch_size` is the global batch, whatever the number of processes.

The strategies (cures) run on every process on identical inputs, so the L2 anchor, EWC's Fisher and replay's
memory come out the same everywhere; they are broadcast from process 0 once anyway (`broadcast_state`), so that
the pulls added in place after the all-reduce are identical and the weights never drift apart. On one process
without a launcher none of this runs, and `finetune` computes exactly what it always did.

`python -m cfcourse.lm.tune` fine-tunes a model on a course domain and saves it; start it with `accelerate launch`
to use several processes or GPUs.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch
from torch import nn

from .measures import lm_loss


def launched() -> bool:
    """Whether this process is one of several started together (`accelerate launch`, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@lru_cache(maxsize=1)
def process_accelerator():
    """The process's Accelerator (one per process: accelerate keeps its state per process anyway); on a machine
    without CUDA, processes started by `accelerate launch --multi_gpu` or torchrun are CPU processes (gloo)."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def choose(accelerator, batch_size: int):
    """The Accelerator to fine-tune with: `accelerator` if given, else this process's own when it was started with
    others, else None (one process: the plain path)."""
    acc = accelerator if accelerator is not None else (process_accelerator() if launched() else None)
    if acc is not None and batch_size < acc.num_processes:
        raise ValueError(f"batch_size is the global batch, shared by {acc.num_processes} processes: it must be at "
                         f"least {acc.num_processes}, got {batch_size}")
    return acc


def shard(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Process `rank`'s share of a global batch (rows, ...): contiguous rows, sizes differing by at most one."""
    if batch.shape[0] < world:
        raise ValueError(f"a batch of {batch.shape[0]} blocks cannot be shared by {world} processes; "
                         f"use batch_size >= {world}")
    return torch.tensor_split(batch, world)[rank]


class SummedNLL(nn.Module):
    """`model`'s summed next-token NLL of a batch as a module's forward, so that DDP sees the forward pass."""

    def __init__(self, model: nn.Module, chunk_size: int):
        super().__init__()
        self.model, self.chunk_size = model, chunk_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return lm_loss(self.model, input_ids, chunk_size=self.chunk_size)[0]


def _tensors(obj, seen: set):
    """Every tensor a strategy holds, in a fixed order: through dicts, lists, tuples and cfcourse objects."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value, seen)
    elif type(obj).__module__.startswith("cfcourse.") and hasattr(obj, "__dict__"):
        for value in vars(obj).values():
            yield from _tensors(value, seen)


@torch.no_grad()
def broadcast_state(strategy, device: torch.device) -> int:
    """Overwrite every tensor `strategy` holds (anchors, Fishers, replay memory) with process 0's; returns how
    many (none on one process). Tensors off `device` travel through it (NCCL broadcasts GPU tensors only)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return 0
    on_device = dist.get_backend() != "nccl"  # gloo broadcasts CPU tensors as they are
    count = 0
    for t in _tensors(strategy, set()):
        if on_device or t.device == device:
            dist.broadcast(t, src=0)
        else:
            moved = t.to(device)
            dist.broadcast(moved, src=0)
            t.copy_(moved)
        count += 1
    return count


class DataParallel:
    """The forward and backward pass of each step, on this process's rows of the global batch, under DDP."""

    def __init__(self, acc, model: nn.Module, optimizer, chunk_size: int):
        self.acc, self.rank, self.world = acc, acc.process_index, acc.num_processes
        self.module, self.optimizer = acc.prepare(SummedNLL(model, chunk_size), optimizer)

    def backward(self, batch: torch.Tensor, penalty) -> float:
        """Backpropagate the global batch's mean loss (plus `penalty(rows)`); returns that mean, the same on every
        process. Each process's summed NLL is divided by the global token count over the number of processes,
        since DDP averages the processes' gradients."""
        tokens = batch.shape[0] * (batch.shape[1] - 1)  # lm_loss scores every position after the first
        rows = shard(batch, self.rank, self.world)
        total = self.module(rows.to(self.acc.device))
        loss = total * self.world / tokens
        extra = penalty(rows)
        self.acc.backward(loss + extra if isinstance(extra, torch.Tensor) else loss)
        return (self.acc.reduce(total.detach(), "sum") / tokens).item()

    def close(self) -> None:
        """Drop accelerate's references to the wrapped model and optimiser (a lab run fine-tunes many models)."""
        self.acc.free_memory()

