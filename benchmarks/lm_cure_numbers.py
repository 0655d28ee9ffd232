"""The losses and the held-out medical perplexity of every language-model cure, a few steps on a fixed seed.

Run it before and after a change to the fine-tuning engine and compare the two files: on one machine and one
thread the numbers must agree to the last digit, or the change must say why they do not.

    python benchmarks/lm_cure_numbers.py before.json     # SmolLM2-135M, 4 steps of 2 legal blocks per cure
    python benchmarks/lm_cure_numbers.py after.json --only plain ewc
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cfcourse.lm import finetune as ft  # noqa: E402
from cfcourse.lm.domains import domain_blocks  # noqa: E402
from cfcourse.lm.measures import perplexity  # noqa: E402
from cfcourse.lm.model import load_model  # noqa: E402

CURES = {"plain": {}, "replay": dict(replay_ratio=0.25), "l2": dict(l2=10.0), "ewc": dict(ewc=10.0, fisher_blocks=2),
         "replay+l2": dict(replay_ratio=0.5, l2=10.0), "lora": dict(lora_rank=4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="JSON file to write")
    p.add_argument("--only", nargs="+", choices=sorted(CURES), default=list(CURES))
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = load_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    legal = domain_blocks("legal", tokenizer, split="train", n_blocks=16)
    medical = domain_blocks("medical", tokenizer, split="train", n_blocks=16)
    held_out = domain_blocks("medical", tokenizer, split="heldout", n_blocks=4)
    out = {}
    for name in args.only:
        model.load_state_dict(start)
        cfg = ft.FinetuneConfig(steps=4, batch_size=2, lr=5e-4, trainable_layers=2, **CURES[name])
        result = ft.finetune(model, legal, cfg, old_blocks=medical)
        out[name] = {"losses": result["losses"], "medical_ppl": perplexity(result["model"], held_out)}
        print(name, out[name], file=sys.stderr, flush=True)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
