"""Is `python -m cfcourse run` within 1.5x of a bare torch loop doing the same training and evaluation?

Runs, alternately and --repeats times each, the runner

    python -m cfcourse run permuted-mnist --strategy naive --tasks 5 --epochs 1 --hidden 400 400 \
        --lr 0.01 --momentum 0.9 --batch-size 128 --seed 0 --json

and benchmarks/bare_loop.py with the same settings, and prints the medians:

- loop: the `wall_s` each one reports: evaluation before training, training, evaluation after each task;
  it excludes starting Python, importing torch, loading MNIST, building the tasks and the model.
- whole command: wall time of the whole process, from launch to exit (includes all of the above).

Exits 1 if the runner's loop takes more than --max-ratio (1.5) times the bare loop's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def settings(args) -> list[str]:
    out = ["--tasks", str(args.tasks), "--epochs", "1", "--hidden", "400", "400", "--lr", "0.01",
           "--momentum", "0.9", "--batch-size", "128", "--seed", "0"]
    if args.train_size:
        out += ["--train-size", str(args.train_size)]
    if args.test_size:
        out += ["--test-size", str(args.test_size)]
    return out


def timed(cmd: list[str], env: dict[str, str]) -> tuple[dict, float]:
    """Run `cmd`, parse the JSON on its last stdout line; return it and the whole process's wall time."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    whole = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), whole


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--train-size", type=int, default=None, help="smaller runs for a quick check")
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both (default: torch's own choice on this machine)")
    p.add_argument("--device", default="cpu", help="the same device for both (default cpu)")
    p.add_argument("--max-ratio", type=float, default=1.5)
    args = p.parse_args()

    import torch

    threads = str(args.threads or torch.get_num_threads())  # the same for both: the runner would choose its own
    env = dict(os.environ, TQDM_DISABLE="1", CFCOURSE_DEVICE=args.device, CFCOURSE_OFFLINE="1",
               OMP_NUM_THREADS=threads, CFCOURSE_THREADS=threads)
    common = settings(args)
    runner = [sys.executable, "-m", "cfcourse", "run", "permuted-mnist", "--strategy", "naive", *common, "--json"]
    bare = [sys.executable, str(ROOT / "benchmarks" / "bare_loop.py"), *common, "--device", args.device]

    results: dict[str, list[tuple[dict, float]]] = {"bare": [], "runner": []}
    for r in range(args.repeats):
        order = [("bare", bare), ("runner", runner)] if r % 2 == 0 else [("runner", runner), ("bare", bare)]
        for name, cmd in order:  # alternate, so slow drift in machine load hits both alike
            out, whole = timed(cmd, env)
            results[name].append((out, whole))
            print(f"  run {r + 1}/{args.repeats} {name:6s}: loop {out['wall_s']:7.2f} s   whole {whole:7.2f} s",
                  file=sys.stderr)

    def med(name, key):
        return statistics.median(o["wall_s"] if key == "loop" else w for o, w in results[name])

    loop_b, loop_r = med("bare", "loop"), med("runner", "loop")
    whole_b, whole_r = med("bare", "whole"), med("runner", "whole")
    R_b, R_r = results["bare"][0][0]["acc_matrix"], results["runner"][0][0]["acc_matrix"]
    max_diff = max(abs(a - b) for rb, rr in zip(R_b, R_r) for a, b in zip(rb, rr))

    print(f"permuted MNIST, naive, {args.tasks} tasks x 1 epoch, MLP 784-400-400-10, SGD lr 0.01 momentum 0.9, "
          f"batch 128, device {args.device}, torch threads {results['bare'][0][0]['threads']}, "
          f"median of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'what is timed':<58} {'bare s':>8} {'runner s':>9} {'ratio':>6}")
    print(f"{'loop: eval before + train + eval after each task (wall_s)':<58} {loop_b:8.2f} {loop_r:9.2f} "
          f"{loop_r / loop_b:6.2f}")
    print(f"{'whole command: python start, imports, MNIST, tasks, loop':<58} {whole_b:8.2f} {whole_r:9.2f} "
          f"{whole_r / whole_b:6.2f}")
    print(f"final average accuracy: bare {results['bare'][0][0]['avg_acc']:.2%}, "
          f"runner {results['runner'][0][0]['avg_acc']:.2%}; largest accuracy-matrix difference {max_diff:.4f}")
    ok = loop_r <= args.max_ratio * loop_b
    verdict = "within" if ok else "OVER"
    print(f"runner loop / bare loop = {loop_r / loop_b:.2f} ({verdict} the {args.max_ratio}x budget)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
