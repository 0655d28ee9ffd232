"""Run each lesson top to bottom in a fresh kernel and report its wall time, CPU time and peak memory.

Usage: python scripts/measure_lessons.py [--fast] [--json | --update docs/teaching.md] [lessons/NN_*.ipynb ...]

Peak memory is the kernel's peak resident set size (VmHWM in /proc, Linux
only) and CPU time its user + system time, both read by a cell appended to a
copy of the notebook. The baseline row is a kernel that only imports torch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
PEAK_CELL = (
    "import re as _re, resource as _res\n"
    "_u = _res.getrusage(_res.RUSAGE_SELF)\n"
    "print(_u.ru_utime + _u.ru_stime, _re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
)


def measure(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> tuple[float, float, float]:
    """Execute `nb` in a fresh kernel; return (wall seconds, kernel CPU seconds, peak RSS in MiB)."""
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    seconds = time.perf_counter() - start
    cpu, peak_kb = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split()[-2:]
    return seconds, float(cpu), int(peak_kb) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", type=Path)
    parser.add_argument("--fast", action="store_true", help="fast mode (CFCOURSE_FAST=1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--update", type=Path, metavar="FILE.md",
                        help="write the table between the resources markers in FILE.md instead of printing it")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    args = parser.parse_args()
    os.environ["CFCOURSE_FAST"] = "1" if args.fast else ""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    lessons = args.lessons or sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    rows = []
    for imports in BASELINES:
        baseline = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(imports)])
        rows.append((f"(baseline: {imports})", *measure(baseline, ROOT, args.timeout)))
    for path in lessons:
        rows.append((path.name, *measure(nbformat.read(path, as_version=4), path.parent, args.timeout)))
        print(f"{path.name}: {rows[-1][1]:.1f} s, {rows[-1][3]:.0f} MiB", file=sys.stderr)
    mode = "fast" if args.fast else "full"
    if args.json:
        print(json.dumps([{"lesson": n, "mode": mode, "wall_s": round(s, 1), "cpu_s": round(c, 1),
                           "peak_rss_mib": round(m)} for n, s, c, m in rows]))
    elif args.update:
        update_between_markers(args.update, table(merged(args.update, rows), mode))
        print(f"updated the resource table in {args.update}", file=sys.stderr)
    else:
        print(table(rows, mode))
    return 0


BASELINES = ("import torch", "import torch, transformers")  # the language-model lessons' budget is above the second


def merged(path: Path, rows: list[tuple]) -> list[tuple]:
    """`rows` with the rows already in `path`'s table for lessons not measured this time (so that measuring
    a few lessons again updates their rows and keeps the others); baselines first, then lessons in order."""
    old = {}
    doc = path.read_text(encoding="utf-8")
    if "<!-- resources:start -->" in doc:
        block = doc.split("<!-- resources:start -->", 1)[1].split("<!-- resources:end -->", 1)[0]
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0].endswith(".ipynb"):
                try:
                    old[cells[0]] = (cells[0], float(cells[1]), float(cells[2]), float(cells[3].replace(",", "")))
                except ValueError:
                    continue
    new = {r[0]: r for r in rows}
    lessons = {**old, **{n: r for n, r in new.items() if n.endswith(".ipynb")}}
    return [r for r in rows if not r[0].endswith(".ipynb")] + [lessons[n] for n in sorted(lessons)]


def table(rows: list[tuple], mode: str) -> str:
    """The measurements as a Markdown table, with the machine they were taken on."""
    lines = [f"| lesson ({mode} mode) | wall time (s) | CPU time (s) | peak RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {n} | {s:.1f} | {c:.1f} | {m:.0f} |" for n, s, c, m in rows]
    lessons = [r for r in rows if r[0].endswith(".ipynb")]
    lines.append(f"| total | {sum(r[1] for r in lessons):.1f} | {sum(r[2] for r in lessons):.1f} | |")
    lines.append(f"\nMeasured on {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                 f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.")
    return "\n".join(lines)


def update_between_markers(path: Path, text: str) -> None:
    """Replace what stands between <!-- resources:start --> and <!-- resources:end --> in `path`."""
    start, end = "<!-- resources:start -->", "<!-- resources:end -->"
    doc = path.read_text(encoding="utf-8")
    if start not in doc or end not in doc:
        raise SystemExit(f"{path} has no {start} ... {end} block to fill")
    head, rest = doc.split(start, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
