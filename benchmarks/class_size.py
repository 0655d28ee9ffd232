"""How many students can one machine hold? N students start the same lesson at the same moment.

Each student is a fresh kernel running one lesson top to bottom (fast mode by default, as a class would start a
lab), with its own run folder (CFCOURSE_RUNS), as on a hub where every student has a home. For each N the table
gives the time until every student is done, the slowest and median student, the peak resident memory of the
largest kernel (what a per-user memory limit must allow) and the peak of the memory all the students' processes
hold together (proportional set size, PSS: pages that the kernels share, such as PyTorch's libraries, are
counted once, split between them), sampled every half second.

    python benchmarks/class_size.py                                  # lessons 02 and 08, N = 1, 2, 4, 8
    python benchmarks/class_size.py --students 1 2 --lessons 02      # a quick look
    python benchmarks/class_size.py --json > class-size.json         # the numbers, as JSON
    python benchmarks/class_size.py --full                           # full mode instead of fast
    python benchmarks/class_size.py --update docs/teaching.md        # rewrite the table in the teaching guide

Linux only (it reads /proc). Each kernel chooses its threads as the lessons do on their own; so does a hub.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def student(lesson: Path) -> dict:
    """Run `lesson` in a fresh kernel (in this process's environment); its wall time, CPU time and peak RSS, as
    scripts/measure_lessons.py measures every lesson."""
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("measure_lessons", ROOT / "scripts" / "measure_lessons.py")
    measure_lessons = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure_lessons)
    wall, cpu, peak = measure_lessons.measure(nbformat.read(lesson, as_version=4), lesson.parent, 1800)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _pss_mib(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            continue  # the process ended between the listing and the read
    return total_kb / 1024


def classroom(lesson: Path, n: int, fast: bool) -> dict:
    """N students start `lesson` together; the class's numbers."""
    me = os.getpid()
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _pss_mib(_descendants(me)))
            done.wait(0.5)

    with tempfile.TemporaryDirectory(prefix="class-") as homes:
        procs = []
        for i in range(n):
            env = dict(os.environ, CFCOURSE_FAST="1" if fast else "", CFCOURSE_RUNS=f"{homes}/student-{i}",
                       TQDM_DISABLE="1", MPLBACKEND="Agg")
            procs.append(subprocess.Popen([sys.executable, __file__, "--student", str(lesson)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        watcher = threading.Thread(target=sample, daemon=True)
        start = time.perf_counter()
        watcher.start()
        results = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                done.set()
                raise SystemExit(f"a student's {lesson.name} failed:\n{err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        everyone = time.perf_counter() - start
        done.set()
        watcher.join()
    walls = [r["wall_s"] for r in results]
    return {"lesson": lesson.name, "mode": "fast" if fast else "full", "students": n,
            "all_done_s": round(everyone, 1), "median_student_s": round(statistics.median(walls), 1),
            "slowest_student_s": round(max(walls), 1),
            "cpu_s_per_student": round(statistics.median(r["cpu_s"] for r in results), 1),
            "largest_kernel_peak_rss_mib": round(max(r["peak_rss_mib"] for r in results)),
            "class_peak_pss_mib": round(peak[0])}


def table(rows: list[dict]) -> str:
    lines = ["| lesson | students | all done (s) | median student (s) | slowest (s) | CPU s per student "
             "| largest kernel, peak RSS (MiB) | whole class, peak PSS (MiB) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['lesson']} ({r['mode']}) | {r['students']} | {r['all_done_s']} | {r['median_student_s']} "
              f"| {r['slowest_student_s']} | {r['cpu_s_per_student']} | {r['largest_kernel_peak_rss_mib']} "
              f"| {r['class_peak_pss_mib']} |" for r in rows]
    lines.append(f"\nMeasured on {len(os.sched_getaffinity(0))} CPU cores, "
                 f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
                 f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="+", default=["02", "08"], help="lesson numbers (default: 02 08)")
    parser.add_argument("--students", nargs="+", type=int, default=[1, 2, 4, 8], help="class sizes")
    parser.add_argument("--full", action="store_true", help="full mode (default: fast mode)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--update", type=Path, metavar="FILE.md",
                        help="write the table between the class-size markers in FILE.md instead of printing it")
    parser.add_argument("--student", type=Path, help=argparse.SUPPRESS)  # one student's run (internal)
    args = parser.parse_args()
    if args.student:
        print(json.dumps(student(args.student)))
        return 0
    if not Path("/proc/self/smaps_rollup").exists():
        print("class_size.py reads /proc (Linux only)", file=sys.stderr)
        return 2
    rows = []
    for number in args.lessons:
        found = sorted((ROOT / "lessons").glob(f"{int(number):02d}_*.ipynb"))
        if not found:
            parser.error(f"no lesson {number} in {ROOT / 'lessons'}")
        for n in args.students:
            if n < 1:
                parser.error("--students takes whole numbers from 1")
            rows.append(classroom(found[0], n, fast=not args.full))
            print(f"{found[0].name}, {n} student{'s' if n > 1 else ''}: all done in {rows[-1]['all_done_s']} s, class peak "
                  f"{rows[-1]['class_peak_pss_mib']} MiB", file=sys.stderr)
    if args.update:
        start, end = "<!-- class-size:start -->", "<!-- class-size:end -->"
        doc = args.update.read_text(encoding="utf-8")
        if start not in doc or end not in doc:
            parser.error(f"{args.update} has no {start} ... {end} block to fill")
        head, rest = doc.split(start, 1)
        args.update.write_text(f"{head}{start}\n{table(rows)}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")
        print(f"updated the class-size table in {args.update}", file=sys.stderr)
        return 0
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
