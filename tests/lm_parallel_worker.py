"""Fine-tuning runs of a tiny random Llama that tests/test_lm_distributed.py compares on 1 and 2 processes.

Started by `accelerate launch --multi_gpu --num_processes 2 lm_parallel_worker.py OUT_DIR CASE...` (CPU processes
with ACCELERATE_USE_CPU=1), each process writes OUT_DIR/rank<r>.json: per case, the losses and the trained weights.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from cfcourse.lm import finetune as ft

# name -> the cures (and the global batch, BATCH blocks unless given), whatever the number of processes
CASES = {"plain": {}, "replay+l2": dict(replay_ratio=0.25, l2=1.0), "ewc": dict(ewc=10.0, fisher_blocks=3),
         "lora": dict(lora_rank=2), "uneven shards": dict(batch_size=3, replay_ratio=0.5)}
BATCH, STEPS = 4, 5


def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def blocks(n=8, length=16, offset=3):
    return (torch.arange(n * length).reshape(n, length) % 7) + offset


def run(case: str) -> dict:
    """Fine-tune a fresh tiny model with `case`'s cures; its losses, processes and trained weights."""
    cfg = ft.FinetuneConfig(**{"steps": STEPS, "batch_size": BATCH, "lr": 1e-2, "trainable_layers": 2,
                               "chunk_size": 5, **CASES[case]})
    result = ft.finetune(tiny(), blocks(), cfg, old_blocks=blocks(offset=20))
    weights = torch.cat([p.detach().flatten() for p in result["model"].parameters()])  # (about 6,000,)
    return {"losses": result["losses"], "processes": result["processes"], "weights": weights.tolist()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    import os

    out = Path(sys.argv[1])
    found = {case: run(case) for case in sys.argv[2:]}
    (out / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(found))
