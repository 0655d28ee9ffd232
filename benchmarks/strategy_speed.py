"""What does each continual-learning strategy cost, side by side with naive fine-tuning?

Runs every strategy on the same setup: 5-task permuted MNIST, MLP 784-400-400-10, 1 epoch per task, batch 128,
SGD lr 0.01 momentum 0.9, all 60,000 training digits per task. The runs are interleaved (one of each strategy per
round, --repeats rounds) so that a machine whose load drifts slows every strategy alike, and the table gives the
median of `RunResult.wall_s` (training and evaluation, after the data is loaded) and its ratio to naive's.

    python benchmarks/strategy_speed.py                # the table
    python benchmarks/strategy_speed.py --json         # the same, as JSON
    python benchmarks/strategy_speed.py --train-size 6000 --repeats 1   # a quick look

Exits 1 if a strategy costs more than --max-ratio (2.0) times naive, GEM more than 3 times (it takes one
gradient per earlier task at every step), or replay+EWC (two strategies run together) more than naive plus what
replay and EWC each add to it, with 15% slack: running strategies together must cost nothing of its own.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cfcourse import config, data  # noqa: E402
from cfcourse.models import MLP  # noqa: E402
from cfcourse.strategies import make_strategies  # noqa: E402
from cfcourse.train import run_tasks, sgd  # noqa: E402

# Each strategy with the settings a learner meets first: the defaults (what `python -m cfcourse run` uses).
STRATEGIES = ["naive", "l2", "ewc", "online-ewc", "si", "lwf", "replay", "mixed-replay", "agem", "gem", "freeze",
              "joint", "replay+ewc"]
# x naive allowed where it is not --max-ratio: GEM takes one gradient per earlier task at every step. A list of
# strategies may cost what its parts add to naive, together, and 15% more (see ceiling()).
CEILINGS = {"gem": 3.0}
COMBINED_SLACK = 1.15


def one_run(name: str, tasks, seed: int) -> tuple[float, float]:
    """Wall seconds and final average accuracy of strategy `name` on `tasks`."""
    config.set_seed(seed)
    model = MLP(hidden=(400, 400)).to(config.device())
    result = run_tasks(model, tasks, make_strategies(name), sgd(0.01, 0.9), epochs=1, batch_size=128, seed=seed,
                       progress=False)
    return result.wall_s, result.acc_matrix.avg_acc


def measure(names: list[str], tasks, repeats: int) -> dict[str, dict]:
    """Interleaved runs; per strategy the wall times, their median, the ratio to naive and the accuracy."""
    walls: dict[str, list[float]] = {n: [] for n in names}
    accs: dict[str, float] = {}
    for r in range(repeats):
        for name in names:
            wall, acc = one_run(name, tasks, seed=0)
            walls[name].append(wall)
            accs[name] = acc
            print(f"round {r + 1}/{repeats} {name:>10}: {wall:6.1f} s, ACC {acc:.1%}", file=sys.stderr)
    base = statistics.median(walls["naive"])
    return {n: {"wall_s": [round(w, 2) for w in walls[n]], "median_s": round(statistics.median(walls[n]), 2),
                "ratio": round(statistics.median(walls[n]) / base, 2), "acc": round(accs[n], 4)} for n in names}


def ceiling(name: str, results: dict[str, dict], max_ratio: float) -> float:
    """The most `name` may cost, x naive: its own ceiling; for strategies run together ('replay+ewc'), naive plus
    what each part adds to naive, times COMBINED_SLACK (running them together must cost nothing of its own)."""
    parts = name.split("+")
    if len(parts) == 1 or not all(p in results for p in parts):
        return CEILINGS.get(name, max_ratio)
    return (1 + sum(max(results[p]["ratio"] - 1, 0) for p in parts)) * COMBINED_SLACK


def table(results: dict[str, dict]) -> str:
    lines = ["| strategy | median wall (s) | x naive | final ACC |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['median_s']:.1f} | {r['ratio']:.2f} | {r['acc']:.1%} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--strategies", nargs="+", default=STRATEGIES, metavar="NAME")
    p.add_argument("--train-size", type=int, default=None, help="training digits per task (default: all 60,000)")
    p.add_argument("--test-size", type=int, default=None, help="test digits per task (default: all 10,000)")
    p.add_argument("--max-ratio", type=float, default=2.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    names = ["naive"] + [n for n in args.strategies if n != "naive"]
    for name in names:
        make_strategies(name)  # refuse an unknown name before any run
    tasks = data.permuted_mnist(5, seed=0, train_size=args.train_size, test_size=args.test_size)
    results = measure(names, tasks, args.repeats)
    print(json.dumps(results, indent=1) if args.json else table(results))
    # joint is the upper bound, not a remedy: it retrains on everything seen, so it is slower by design.
    over = [n for n, r in results.items() if n != "joint" and r["ratio"] > ceiling(n, results, args.max_ratio)]
    if over:
        print(f"over their ceiling ({args.max_ratio}x naive, gem {CEILINGS['gem']}x, strategies run together "
              f"{COMBINED_SLACK}x the sum of what their parts add): {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
