"""How fast does language-model fine-tuning run on 1 and 2 CPU processes, and on a GPU, and in how much memory?

Fine-tunes the course's model (or --model) on legal text for a few steps of the lab's batch (4 blocks of 128
tokens, the top 10 layers) in each layout, each in fresh processes, and prints the tokens trained per second
(after the first step, which warms up) and the peak memory: each process's peak RSS, and on a GPU the peak
memory allocated. The processes of a layout share each global batch (cfcourse/lm/distributed.py), so on 2 cores
1 process with 2 threads and 2 processes with 1 thread each use the same cores.

    python benchmarks/lm_scaling.py                 # 1 process (1 and 2 threads), 2 processes; GPUs if any
    python benchmarks/lm_scaling.py --steps 6 --model HuggingFaceTB/SmolLM2-360M --json

The GPU rows are skipped, with a message, on a machine without CUDA. Not a test: it measures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(args) -> None:
    """One process of a layout: fine-tune, then write this process's numbers to args.out/rank<r>.json."""
    import torch

    from cfcourse.lm import distributed
    from cfcourse.lm.domains import domain_blocks
    from cfcourse.lm.finetune import FinetuneConfig, finetune
    from cfcourse.lm.model import load_model

    torch.set_num_threads(args.threads)
    cfg = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, trainable_layers=args.trainable_layers)
    device = distributed.process_accelerator().device if distributed.launched() else args.device
    model, tok = load_model(args.model, device=device)
    blocks = domain_blocks("legal", tok, split="train", n_blocks=64)
    times = []
    result = finetune(model, blocks, cfg, on_step=lambda step, loss, m: times.append(time.perf_counter()))
    if torch.cuda.is_available() and args.device == "cuda":
        torch.cuda.synchronize()
    rank = int(os.environ.get("RANK", "0"))
    row = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "processes": result["processes"],
           "loss": result["losses"][-1],
           "gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}
    if times:  # the main process: tokens per second over the steps after the first
        row["tokens_per_s"] = (len(times) - 1) * cfg.batch_size * (blocks.shape[1] - 1) / (times[-1] - times[0])
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(row))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def layout(name: str, processes: int, threads: int, device: str, args) -> dict:
    """Run the worker on `processes` processes of `threads` threads each; its numbers over the processes."""
    with tempfile.TemporaryDirectory() as out:
        own = [__file__, "--worker", "--out", out, "--threads", str(threads), "--device", device,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--trainable-layers", str(args.trainable_layers)] + (["--model", args.model] if args.model else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
        if processes == 1:
            cmd = [sys.executable, *own]
        else:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port()), *own]
            if device == "cpu":
                env["ACCELERATE_USE_CPU"] = "1"
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    main = next(r for r in rows if "tokens_per_s" in r)
    gpu = [r["gpu_mb"] for r in rows if r["gpu_mb"] is not None]
    return {"layout": name, "processes": main["processes"], "tokens_per_s": main["tokens_per_s"],
            "peak_rss_mb_per_process": max(r["rss_mb"] for r in rows),
            "peak_rss_mb_total": sum(r["rss_mb"] for r in rows),
            "peak_gpu_mb_per_process": max(gpu) if device == "cuda" and gpu else None,
            "final_loss": main["loss"], "wall_s": time.perf_counter() - start}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a model folder or hub id (default: the course's SmolLM2-135M)")
    p.add_argument("--steps", type=int, default=4, help="steps per run (default 4; the first warms up)")
    p.add_argument("--batch-size", type=int, default=4, help="the global batch in blocks (default 4)")
    p.add_argument("--trainable-layers", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    import torch

    plan = [("1 process, 1 thread", 1, 1, "cpu"), ("1 process, 2 threads", 1, 2, "cpu"),
            ("2 processes, 1 thread each", 2, 1, "cpu")]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        plan.append(("1 GPU", 1, 1, "cuda"))
        if gpus > 1:
            plan.append((f"{gpus} GPUs", gpus, 1, "cuda"))
    else:
        print("no CUDA GPU here: the GPU rows are skipped", file=sys.stderr)
    rows = []
    for name, processes, threads, device in plan:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(layout(name, processes, threads, device, args))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'layout':<28} {'tokens/s':>9} {'peak RSS/process':>17} {'RSS, all':>9} {'GPU peak':>9} {'loss':>7}")
    for r in rows:
        gpu = f"{r['peak_gpu_mb_per_process']:.0f} MB" if r["peak_gpu_mb_per_process"] else "-"
        print(f"{r['layout']:<28} {r['tokens_per_s']:>9.0f} {r['peak_rss_mb_per_process']:>14.0f} MB "
              f"{r['peak_rss_mb_total']:>6.0f} MB {gpu:>9} {r['final_loss']:>7.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
