"""`python -m cfcourse.lm.tune`: fine-tune a causal LM on one course domain with the cures of lesson 09 and save it,
on one process or, started by `accelerate launch`, data-parallel on several (CPUs or GPUs; see distributed.py).

    accelerate launch --multi_gpu --num_processes 4 -m cfcourse.lm.tune --model FOLDER --out runs/legal
    python -m cfcourse report --base FOLDER --tuned runs/legal --device cuda
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .distributed import choose
from .domains import DOMAINS, GENERATED, domain_blocks
from .finetune import FinetuneConfig, finetune
from .model import load_model

CONFIG = ("steps", "batch_size", "lr", "trainable_layers", "seed", "replay_ratio", "l2", "ewc", "lora_rank")


def parse_args(argv=None) -> argparse.Namespace:
    """The script's options: the model, the text, FinetuneConfig's sizes and cures, and where to save."""
    texts = [d for d in DOMAINS if d not in GENERATED]
    p = argparse.ArgumentParser(prog="python -m cfcourse.lm.tune", description="Fine-tune a causal LM on one "
                                "course domain's train text with the cures of lesson 09, on one process or, started "
                                "by `accelerate launch --multi_gpu --num_processes N`, data-parallel on N; process 0 "
                                "saves the tuned model (a folder `python -m cfcourse report --tuned` reads).")
    p.add_argument("--model", default=None, help="a model folder, a hub id in the local cache, or "
                                                  "smollm2-135m-instruct (default: the course's model)")
    p.add_argument("--domain", default="legal", choices=texts, help="the new text (default legal)")
    p.add_argument("--old", default="medical", choices=texts,
                   help="the old text that replay mixes in and EWC's Fisher is taken on (default medical)")
    p.add_argument("--blocks", type=int, default=64, help="train blocks of 128 tokens of each text (default 64)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="where one process runs (default auto: CFCOURSE_DEVICE, else cuda, mps, cpu); under "
                        "accelerate launch each process takes its own")
    p.add_argument("--out", required=True, help="folder for the tuned model and finetune.json")
    defaults = FinetuneConfig()
    for name in CONFIG:
        default = getattr(defaults, name)
        shared = "; the global batch, shared by the processes" if name == "batch_size" else ""
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                       help=f"FinetuneConfig.{name} (default {default}{shared})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Fine-tune as the options say; process 0 saves the model, the tokenizer and finetune.json in --out."""
    args = parse_args(argv)
    cfg = FinetuneConfig(**{k: getattr(args, k) for k in CONFIG})
    acc = choose(None, cfg.batch_size)  # None on one process started alone
    device = acc.device if acc is not None else None if args.device == "auto" else args.device
    model, tokenizer = load_model(args.model, device=device)
    new = domain_blocks(args.domain, tokenizer, split="train", n_blocks=args.blocks)
    old = domain_blocks(args.old, tokenizer, split="train", n_blocks=args.blocks) if cfg.needs_old_text else None
    result = finetune(model, new, cfg, old_blocks=old, accelerator=acc)
    if acc is None or acc.is_main_process:
        out = Path(args.out)
        result["model"].save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        keep = {k: result[k] for k in ("losses", "wall_s", "config", "processes", "replayed")}
        (out / "finetune.json").write_text(json.dumps({**keep, "domain": args.domain, "old": args.old,
                                                        "model": args.model}, indent=1))
        print(f"{cfg.label()}: loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f} in "
              f"{result['wall_s']:.0f} s on {result['processes']} process(es); saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
