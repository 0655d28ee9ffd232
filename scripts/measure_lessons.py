"""Run each lesson top to bottom in a fresh kernel and report its wall time and peak memory.

Usage: python scripts/measure_lessons.py [--fast] [--json] [lessons/NN_*.ipynb ...]

Peak memory is the kernel's peak resident set size (VmHWM in /proc, Linux
only), read by a cell appended to a copy of the notebook. The baseline row is
a kernel that only imports torch, for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
PEAK_CELL = (
    "import re as _re\n"
    "print('PEAK_RSS_KB', _re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
)


def measure(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> tuple[float, float]:
    """Execute `nb` in a fresh kernel; return (seconds, peak RSS in MiB)."""
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    seconds = time.perf_counter() - start
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    return seconds, int(text.split()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", type=Path)
    parser.add_argument("--fast", action="store_true", help="fast mode (CFCOURSE_FAST=1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    args = parser.parse_args()
    os.environ["CFCOURSE_FAST"] = "1" if args.fast else ""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    lessons = args.lessons or sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    baseline = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import torch")])
    rows = [("(baseline: import torch)", *measure(baseline, ROOT, args.timeout))]
    for path in lessons:
        rows.append((path.name, *measure(nbformat.read(path, as_version=4), path.parent, args.timeout)))
        print(f"{path.name}: {rows[-1][1]:.1f} s, {rows[-1][2]:.0f} MiB", file=sys.stderr)
    mode = "fast" if args.fast else "full"
    if args.json:
        print(json.dumps([{"lesson": n, "mode": mode, "wall_s": round(s, 1), "peak_rss_mib": round(m)}
                          for n, s, m in rows]))
    else:
        print(f"| lesson ({mode} mode) | wall time (s) | peak RSS (MiB) |\n|---|---|---|")
        for n, s, m in rows:
            print(f"| {n} | {s:.1f} | {m:.0f} |")
        print(f"| total | {sum(r[1] for r in rows[1:]):.1f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
