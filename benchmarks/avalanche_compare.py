"""The same experiment in cfcourse and in Avalanche: 5-task permuted MNIST, naive fine-tuning, side by side.

Setup (both): MLP 784-400-400-10, 1 epoch per task, SGD lr 0.01 momentum 0.9, batch 128, all 60,000 training
digits per task, every task's 10,000 test digits evaluated after each task. Each side runs as its own process
with its default threads, and the time is the whole process's wall time (start-up, data and imports included),
as a user would wait for it. Avalanche reads the same MNIST digits (cfcourse's verified copy, written out in the
file format torchvision reads, so it never downloads) and permutes them its own way.

Avalanche lives in a virtual environment of its own (its pins differ from the course's), for example:

    python -m venv ~/avalanche-venv
    ~/avalanche-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 avalanche-lib==0.6.0
    .venv/bin/python benchmarks/avalanche_compare.py --avalanche-python ~/avalanche-venv/bin/python

Without --avalanche-python (or AVALANCHE_PYTHON) it says how to get one and runs only cfcourse's side.
--repeats N runs each side N times, alternating, and reports medians.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AVALANCHE_RUN = r'''
import json, sys, time
start = time.perf_counter()
import torch
from torch.nn import CrossEntropyLoss
from torch.optim import SGD
from avalanche.benchmarks.classic import PermutedMNIST
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import SimpleMLP
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import Naive

torch.manual_seed(0)
bench = PermutedMNIST(n_experiences=5, seed=0, dataset_root=sys.argv[1])
model = SimpleMLP(num_classes=10, input_size=784, hidden_size=400, hidden_layers=2, drop_rate=0)
evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
strategy = Naive(model, SGD(model.parameters(), lr=0.01, momentum=0.9), CrossEntropyLoss(), train_mb_size=128,
                 train_epochs=1, eval_mb_size=1000, device="cpu", evaluator=evaluator)
final = None
for exp in bench.train_stream:
    strategy.train(exp)
    final = strategy.eval(bench.test_stream)
acc = [v for k, v in final.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
print(json.dumps({"average_accuracy": sum(acc) / len(acc), "threads": torch.get_num_threads(),
                  "inner_s": time.perf_counter() - start}))
'''


def write_torchvision_mnist(root: Path) -> None:
    """cfcourse's verified MNIST in the raw files torchvision's MNIST reads (root/MNIST/raw/*-ubyte)."""
    import torch

    from cfcourse import data

    m = data.load_mnist()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, x, y in (("train", m.train_images, m.train_labels), ("t10k", m.test_images, m.test_labels)):
        images = x.reshape(len(x), 28, 28).to(torch.uint8).numpy()
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(x), 28, 28)
                                                         + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(y))
                                                         + y.to(torch.uint8).numpy().tobytes())
        for name in (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"):  # torchvision also looks for .gz
            with gzip.open(raw / f"{name}.gz", "wb", compresslevel=1) as f:
                f.write((raw / name).read_bytes())


def timed(cmd: list[str], env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avalanche-python", default=os.environ.get("AVALANCHE_PYTHON"),
                        help="the python of a virtual environment with avalanche-lib installed")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, alternating (medians)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg")
    ours_cmd = [sys.executable, "-m", "cfcourse", "run", "permuted-mnist", "--tasks", "5", "--epochs", "1",
                "--hidden", "400", "400", "--lr", "0.01", "--momentum", "0.9", "--batch-size", "128", "--json"]
    rows: dict[str, list] = {"cfcourse": []}
    with tempfile.TemporaryDirectory(prefix="avalanche-mnist-") as root:
        if args.avalanche_python:
            probe = subprocess.run([args.avalanche_python, "-c", "import avalanche; print(avalanche.__version__)"],
                                   capture_output=True, text=True)
            if probe.returncode != 0:
                raise SystemExit(f"{args.avalanche_python} cannot import avalanche: {probe.stderr.strip()[-300:]}")
            rows[f"Avalanche {probe.stdout.strip()}"] = []
            write_torchvision_mnist(Path(root))
        else:
            print("Avalanche is not installed here: only cfcourse's side runs. To compare, install it in its own "
                  "virtual environment and pass --avalanche-python (see this script's docstring).", file=sys.stderr)
        for _ in range(args.repeats):
            seconds, out = timed(ours_cmd, env)
            rows["cfcourse"].append((seconds, out["avg_acc"], out.get("threads")))
            for name in rows:
                if name != "cfcourse":
                    seconds, out = timed([args.avalanche_python, "-c", AVALANCHE_RUN, root], env)
                    rows[name].append((seconds, out["average_accuracy"], out["threads"]))
    result = {name: {"wall_s": round(statistics.median(r[0] for r in runs), 1),
                     "average_accuracy": round(statistics.median(r[1] for r in runs), 4),
                     "threads": runs[0][2], "runs": len(runs)} for name, runs in rows.items()}
    ours = result["cfcourse"]["wall_s"]
    for name, r in result.items():
        r["x_cfcourse"] = round(r["wall_s"] / ours, 1)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("| 5-task permuted MNIST, naive, 1 epoch | wall time (s) | x cfcourse | average accuracy | threads |")
    print("|---|---|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['wall_s']} | {r['x_cfcourse']} | {r['average_accuracy']:.3f} | {r['threads']} |")
    print(f"\n{len(os.sched_getaffinity(0))} CPU cores, median of {args.repeats} run(s) each, "
          f"{time.strftime('%Y-%m-%d')}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
