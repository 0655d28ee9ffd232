"""Run lessons over several seeds and show how far each effect check stays from its threshold.

Usage:
    python scripts/check_margins.py [--lessons 00-07] [--mode fast|full] [--seeds N] [--first-seed S]
                                    [--log FILE.jsonl] [--update docs/teaching.md]
    python scripts/check_margins.py --table-only FILE.jsonl [FILE.jsonl ...] [--update docs/teaching.md]

Each lesson runs top to bottom in a fresh kernel once per seed (CFCOURSE_SEED = S, S + 1, ...), in fast mode by
default with 5 seeds (full mode: 3). Every effect check appends its measures to a JSON-lines log
(CFCOURSE_CHECK_LOG, see cfcourse.checks); the script adds one line per run (lesson, mode, seed, seconds, errors).
The table has one row per measure: its threshold, its lowest, median and highest value over the seeds, and the
worst seed's margin (how far that value is on the right side of the threshold). A row is marked `ok` when every
seed passes and the worst margin is at least the spread of the values over the seeds (max - min), so that another
seed, or another machine's arithmetic, would have to land twice as far out to fail; `tight` when every seed passes
with less room than that; `FAILS` when a seed failed; `one seed` when a single seed says nothing about the spread.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS_DIR = ROOT / "lessons"
DEFAULT_SEEDS = {"fast": 5, "full": 3}
START, END = "<!-- margins:start -->", "<!-- margins:end -->"


def lesson_paths(spec: list[str], folder: Path = LESSONS_DIR) -> list[Path]:
    """The lessons named by `spec`: numbers ('3', '03'), ranges ('00-07') or paths; refuses a number with no lesson."""
    available = {int(p.name[:2]): p for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}
    chosen: list[Path] = []
    for item in spec:
        for part in filter(None, item.split(",")):
            if part.endswith(".ipynb"):
                path = Path(part)
                if not path.exists():
                    raise ValueError(f"no notebook at {part}")
                chosen.append(path)
                continue
            match = re.fullmatch(r"(\d{1,2})(?:-(\d{1,2}))?", part.strip())
            if not match:
                raise ValueError(f"a lesson is a number (3), a range (00-07) or a .ipynb path, got {part!r}")
            first, last = int(match[1]), int(match[2] or match[1])
            if last < first:
                raise ValueError(f"the range {part!r} runs backwards; write {last:02d}-{first:02d}")
            for n in range(first, last + 1):
                if n not in available:
                    raise ValueError(f"there is no lesson {n:02d} in {folder}")
                chosen.append(available[n])
    return list(dict.fromkeys(chosen))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="+", default=["00-07"], metavar="N",
                        help="lesson numbers, ranges or paths (default: 00-07)")
    parser.add_argument("--mode", choices=("fast", "full"), default="fast", help="run mode (default: fast)")
    parser.add_argument("--seeds", type=int, help="how many seeds (default: 5 in fast mode, 3 in full mode)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--log", type=Path, help="the JSON-lines log to append to (default: a new file in "
                                                 "~/.cache/cfcourse/margins/)")
    parser.add_argument("--table-only", nargs="+", type=Path, metavar="FILE.jsonl",
                        help="run nothing: make the table from these logs")
    parser.add_argument("--update", type=Path, metavar="FILE.md",
                        help="write the table between the margins markers in FILE.md as well as printing it")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = DEFAULT_SEEDS[args.mode]
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.first_seed < 0:
        parser.error(f"--first-seed must be >= 0, got {args.first_seed}")
    if not args.table_only:
        try:
            args.lesson_paths = lesson_paths(args.lessons)
        except ValueError as e:
            parser.error(str(e))
    return args


def run_lesson(path: Path, mode: str, seed: int, log: Path, timeout: int) -> dict:
    """Execute one lesson in a fresh kernel with the given mode and seed; its checks append to `log`. Returns the
    run's record: seconds, and the errors of cells that failed (a failed check is an EffectMissing among them)."""
    import tempfile

    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    env = {"CFCOURSE_SEED": str(seed), "CFCOURSE_FAST": "1" if mode == "fast" else "",
           "CFCOURSE_CHECK_LOG": str(log), "CFCOURSE_CHECK_LESSON": path.stem}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    stopped = []  # a run that stopped before its end: a cell past the timeout, or a kernel that died
    try:
        with tempfile.TemporaryDirectory() as sockets:
            # local sockets rather than TCP ports: on a shared machine another job can take a port between the
            # moment it is chosen and the moment the kernel binds it, and the run then waits forever
            km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
            try:
                NotebookClient(nb, km=km, timeout=timeout, startup_timeout=timeout, allow_errors=True,
                               resources={"metadata": {"path": str(path.parent)}}).execute()
            finally:  # a kernel manager handed to nbclient is ours to close: each idle kernel holds ~0.8 GB
                if km.has_kernel:
                    km.shutdown_kernel(now=True)
    except Exception as e:  # noqa: BLE001 - reported in the run's record, and the next run goes on
        stopped.append(f"run stopped: {type(e).__name__}: {str(e)[:300]}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [f"{o.get('ename')}: {o.get('evalue', '')[:300]}" for cell in nb.cells if cell.cell_type == "code"
              for o in cell.get("outputs", []) if o.get("output_type") == "error"] + stopped
    return {"run": path.stem, "mode": mode, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
            "errors": errors}


def read_logs(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """The measure lines and the run lines of JSON-lines logs; refuses a line that is neither, saying where."""
    measures, runs = [], []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
            if "check" in record and {"value", "threshold", "op", "passed"} <= record.keys():
                measures.append(record)
            elif "run" in record:
                runs.append(record)
            else:
                raise ValueError(f"{path}:{n}: neither a check's measure nor a run: {line[:80]}")
    return measures, runs


def fmt(x: float) -> str:
    """A value as people read it: whole numbers above 100, one decimal above 10, three below."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.3f}"


def seed_list(seeds: list[int]) -> str:
    """'0-4' for a run of consecutive seeds, else '0, 2, 5'."""
    seeds = sorted(set(seeds))
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def summarise(measures: list[dict]) -> list[dict]:
    """One row per (lesson, mode, check), in the order the checks first ran: the values over seeds and the margin.
    A check measured more than once with one seed (a cell run twice) keeps its last value."""
    groups: dict[tuple, dict[int, dict]] = {}
    for m in measures:
        groups.setdefault((m["lesson"], m["mode"], m["check"]), {})[m["seed"]] = m
    rows = []
    for (lesson, mode, check), by_seed in groups.items():
        values = [m["value"] for m in by_seed.values()]
        margins = [m["margin"] for m in by_seed.values()]
        thresholds = {(m["op"], m["threshold"]) for m in by_seed.values()}
        if len(thresholds) > 1:
            raise ValueError(f"{lesson} {check} ({mode}): the threshold changed between runs: {sorted(thresholds)}; "
                             "make the table from runs of one version of the lesson")
        (op, threshold), = thresholds
        spread = max(values) - min(values)
        worst = min(margins)
        failed = sum(not m["passed"] for m in by_seed.values())
        verdict = "FAILS" if failed else "one seed" if len(by_seed) < 2 else "ok" if worst >= spread else "tight"
        rows.append({"lesson": lesson, "mode": mode, "check": check, "op": op, "threshold": threshold,
                     "seeds": sorted(by_seed), "min": min(values), "median": statistics.median(values),
                     "max": max(values), "worst_margin": worst, "spread": spread, "failed": failed,
                     "verdict": verdict})
    return rows


def table(rows: list[dict], runs: list[dict]) -> str:
    """The rows as a Markdown table, followed by the seconds each lesson took per run and any errors."""
    lines = ["| lesson | mode | seeds | check | must be | min | median | max | worst margin | spread | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lesson'][:2]} | {r['mode']} | {seed_list(r['seeds'])} | {r['check']} | "
                     f"{'≥' if r['op'] == '>=' else '≤'} {fmt(r['threshold'])} | {fmt(r['min'])} | "
                     f"{fmt(r['median'])} | {fmt(r['max'])} | {fmt(r['worst_margin'])} | {fmt(r['spread'])} | "
                     f"{r['verdict']} |")
    runs = list({(r["run"], r["mode"], r["seed"]): r for r in runs}.values())  # a seed run again: its last run
    times: dict[tuple, list[float]] = {}
    for run in runs:
        times.setdefault((run["run"], run["mode"]), []).append(run["seconds"])
    if times:
        lines.append("")
        lines.append("Seconds per run (min-max over seeds): " + "; ".join(
            f"{name[:2]} {mode} {min(s):.0f}-{max(s):.0f}" for (name, mode), s in sorted(times.items())) + ".")
    errors = [f"{run['run']} ({run['mode']}, seed {run['seed']}): {e}" for run in runs for e in run["errors"]]
    if errors:
        lines.append("")
        lines.append("Errors: " + "; ".join(errors))
    return "\n".join(lines)


def update_between_markers(path: Path, text: str) -> None:
    """Replace what stands between the margins markers in `path`."""
    doc = path.read_text(encoding="utf-8")
    if START not in doc or END not in doc:
        raise SystemExit(f"{path} has no {START} ... {END} block to fill")
    head, rest = doc.split(START, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_only:
        logs = args.table_only
    else:
        log = args.log or Path.home() / ".cache" / "cfcourse" / "margins" / f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"logging to {log}", file=sys.stderr)
        for path in args.lesson_paths:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                run = run_lesson(path, args.mode, seed, log, args.timeout)
                with log.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(run) + "\n")
                print(f"{path.stem} {args.mode} seed {seed}: {run['seconds']:.0f} s, {len(run['errors'])} error(s)",
                      file=sys.stderr)
        logs = [log]
    measures, runs = read_logs(logs)
    text = table(summarise(measures), runs)
    text += (f"\n\nMade on {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
             f"{time.strftime('%Y-%m-%d')}.")
    print(text)
    if args.update:
        update_between_markers(args.update, text)
        print(f"updated the margins table in {args.update}", file=sys.stderr)
    rows = summarise(measures)
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
