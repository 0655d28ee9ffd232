"""`python -m cfcourse`: cache the assets, run an experiment headless and print its numbers, or make student copies.

Exit status: 0 when the command did its work; 2 for a usage error (an option, value or input it cannot accept);
1 when it could not do its work (data or a model it needs is missing or fails its check). Progress goes to stderr;
with --json, stdout holds the JSON alone.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from . import __version__, config


class UsageError(ValueError):
    """A combination of options the command cannot accept; reported with the usage line, exit status 2."""


def called_as() -> str:
    """The command as the user typed it, for the usage line: `cfcourse` (the installed script) or
    `python -m cfcourse` (with the name of the Python that ran it)."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if script in ("cfcourse", "cfcourse.exe"):
        return "cfcourse"
    return f"{Path(sys.executable).name or 'python'} -m cfcourse"


def _number(kind: type, ok, expected: str, allowed: str):
    """An argparse type: `kind` parsed from the text and accepted when `ok(value)`; else an error saying what
    was `expected` (unparsable) or what is `allowed` (out of range)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value
    return convert


_positive_int = _number(int, lambda v: v >= 1, "a positive integer", "a positive integer (1 or more)")
_non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer", "0 or more")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number", "a positive finite number")
_fraction = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)", "in [0, 1)")


def _strategy_names(text: str) -> list[str]:
    """--strategy's type: one known strategy name, or several joined with '+'."""
    from .strategies import split_names
    try:
        return split_names(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


THREADS_NOTE = ("threads: CFCOURSE_THREADS if set; else all the CPUs granted when no other job holds one as the run "
                "starts, else 1")
SWEEP_FAMILIES = ("replay", "EWC", "LoRA", "generative-replay")  # the kinds of cfcourse.lm.lab.sweep_grid()


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from .data import BUILDERS, SCENARIOS
    from .lm.domains import DOMAINS
    from .strategies import STRATEGIES

    parser = argparse.ArgumentParser(prog=prog or called_as(), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cfcourse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fetch,run,reproduce,student-copy,report,lm-record,lm-sweep}")
    fetch = sub.add_parser("fetch", help="cache every data file the course uses, checked by sha256")
    fetch.add_argument("--quiet", action="store_true", help="print only the cache paths")

    run = sub.add_parser("run", help="train a task sequence headless and print its accuracy matrix and measures",
                         epilog=THREADS_NOTE)
    run.add_argument("benchmark", choices=sorted(BUILDERS), help="which task sequence")
    run.add_argument("--strategy", action="append", type=_strategy_names, default=None, metavar="NAME",
                     help=f"continual-learning strategy, one of {', '.join(sorted(STRATEGIES))} (default naive); "
                          f"give it twice (--strategy replay --strategy ewc) or join names with '+' (replay+ewc) "
                          f"to run several together")
    run.add_argument("--scenario", default=None, choices=SCENARIOS,
                     help="task-, domain- or class-incremental (default: class for split-mnist, domain for the "
                          "others); task gives one head per task, class gives permuted and rotated MNIST 10 new "
                          "classes per task")
    run.add_argument("--tasks", type=_positive_int, default=5, help="number of tasks (split-mnist: at most 5)")
    run.add_argument("--epochs", type=_positive_int, default=1, help="epochs per task")
    run.add_argument("--hidden", type=_positive_int, nargs="+", default=[400, 400], help="hidden layer sizes")
    run.add_argument("--lr", type=_positive_float, default=0.01, help="learning rate")
    run.add_argument("--momentum", type=_fraction, default=0.9, help="SGD momentum in [0, 1)")
    run.add_argument("--batch-size", type=_positive_int, default=128)
    run.add_argument("--seed", type=_non_negative_int, default=0)
    run.add_argument("--train-size", type=_positive_int, default=None, help="use this many training digits")
    run.add_argument("--test-size", type=_positive_int, default=None, help="use this many test digits")
    _add_strategy_options(run, STRATEGIES)
    run.add_argument("--json", action="store_true",
                     help="print one JSON object instead of a table (progress bars go to stderr)")
    run.add_argument("--plot", metavar="FILE.png", help="save the accuracy matrix as a heatmap")

    rep = sub.add_parser("reproduce", help="run a published continual-learning table with our strategies",
                         epilog=THREADS_NOTE)
    rep.add_argument("paper", choices=["hsu2018"], help="hsu2018: split MNIST in three scenarios (Hsu et al. 2018)")
    rep.add_argument("--seeds", type=_positive_int, default=3, help="seeds per cell (default 3)")
    rep.add_argument("--fast", action="store_true", help="hidden layers of 200, 3 epochs on 12,000 training digits, 200 Fisher samples: the ordering of the methods in about a minute, not the published numbers")
    rep.add_argument("--json", action="store_true",
                     help="print one JSON object instead of a table (the progress lines go to stderr)")
    rep.add_argument("--plot", metavar="FILE.png", help="save ours beside the published numbers as a figure")

    student = sub.add_parser("student-copy", help="write the lessons without their solutions, with checks that "
                                                  "stop the notebook until each exercise is right")
    student.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the student notebooks into")
    student.add_argument("--lessons", metavar="DIR", default=None,
                         help="folder of the lessons to copy (default: lessons/ of this repository)")
    student.add_argument("--force", action="store_true",
                         help="write into a non-empty OUT_DIR, replacing notebooks of the same name")

    report = sub.add_parser("report", help="compare a language model with its fine-tuned version: held-out "
                                           "perplexity per domain, probes and generations (see lesson 10)")
    report.add_argument("--base", required=True, help="the model before fine-tuning: a folder, a hub id or "
                                                       "smollm2-135m-instruct (the course's model)")
    report.add_argument("--tuned", required=True, help="its fine-tuned version (same tokenizer): a folder or hub id, "
                                                        "or a PEFT adapter folder trained on BASE")
    report.add_argument("--domains", nargs="+", metavar="D", default=None,
                        help=f"course text domains to measure (default: {' '.join(DOMAINS)}; with --text, none "
                             "unless named here)")
    report.add_argument("--text", action="append", type=_name_path, metavar="NAME=PATH", default=None,
                        help="your own text as a domain called NAME: a UTF-8 text file (one document) or a .jsonl "
                             "file with a \"text\" field per line; repeat for more texts. With --text, only your "
                             "texts are measured unless --domains names course domains too")
    report.add_argument("--probes", metavar="FILE", default=None,
                        help="your own probes JSON (default: the course's probes)")
    report.add_argument("--out", metavar="DIR", default="forgetting-report",
                        help="folder for report.md, report.json and report.png (default: forgetting-report)")
    report.add_argument("--blocks", type=int, default=16, metavar="N",
                        help="held-out blocks of 128 tokens per domain (default 16); the verdict's 95%% interval "
                             "narrows with more")
    report.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="weights' dtype while measuring (default float32)")
    report.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help="where to run the models (default auto: CFCOURSE_DEVICE, else cuda, mps, cpu)")
    report.add_argument("--json", action="store_true",
                        help="print the whole report as JSON on stdout (the progress lines go to stderr)")

    record = sub.add_parser("lm-record", help="the story of lesson 08 over several seeds: fine-tune on medical text, "
                                              "choose stage 2's learning rate on legal validation text, fine-tune "
                                              "on legal text, measuring as it goes; write the record lessons 08-10 show")
    record.add_argument("--out", metavar="FILE.json", default=None,
                        help="where to write it (default: record-<mode>.json in the cache, where the lessons find it)")
    record.add_argument("--sweep-from", metavar="RECORD.json", type=Path, default=None,
                        help="take the learning-rate sweep from this earlier record instead of running it again, "
                             "if it was made with the same settings and versions and its seed 0 reached the same "
                             "medical model (checked; else the sweep runs)")
    record.add_argument("--model", metavar="MODEL", default=None,
                        help="the pretrained model stage 1 starts from: a model folder or a hub id in the local cache "
                             "(default: the course's smollm2-135m-instruct); needs --out, so that the record the "
                             "lessons show stays the course model's")
    record.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help="where to run the models (default auto: CFCOURSE_DEVICE, else cuda, mps, cpu)")
    record.add_argument("--table", action="store_true",
                        help="run nothing: print the headline of the record the lessons show (yours, else the "
                             "course's) as a Markdown table")

    sweep = sub.add_parser("lm-sweep", help="fine-tune lesson 08's medical model on legal text with each setting "
                                            "of a grid of cures; write the learning-forgetting trade-off (lesson 09)")
    sweep.add_argument("--out", metavar="FILE.json", default=None,
                       help="where to write the points (default: sweep.json in the cache, where lesson 09 finds it)")
    sweep.add_argument("--plot", metavar="FILE.png", default=None, help="save the trade-off figure")
    sweep.add_argument("--only", nargs="+", metavar="FAMILY", default=None,
                       help=f"run only these families of the grid: {', '.join(SWEEP_FAMILIES)}")
    sweep.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                       help="where to run the models (default auto: CFCOURSE_DEVICE, else cuda, mps, cpu)")
    sweep.add_argument("--json", action="store_true",
                       help="print the points as one JSON object on stdout (the progress lines go to stderr)")
    for subparser in sub.choices.values():
        subparser.set_defaults(usage_error=subparser.error)  # a UsageError found later prints this usage line
    return parser


def _option(hparam_name: str) -> str:
    return "--" + hparam_name.replace("_", "-")


def _add_strategy_options(parser: argparse.ArgumentParser, strategies: dict) -> None:
    """One option per strategy hyperparameter (shared by strategies that use the same name)."""
    users: dict[str, list[str]] = {}
    for name, cls in sorted(strategies.items()):
        for h in cls.hparams:
            users.setdefault(h.name, []).append(name)
    group = parser.add_argument_group("strategy hyperparameters (each applies only to the strategies named)")
    for hname, names in users.items():
        h = next(hp for cls in strategies.values() for hp in cls.hparams if hp.name == hname)
        group.add_argument(_option(hname), dest=f"hp_{hname}", default=None,
                           metavar=None if h.choices else h.type.__name__.upper(),  # with choices: {a,b}
                           choices=h.choices or None, help=f"{h.help} ({', '.join(names)}; default {h.default})")


def _strategy_from_args(args):
    """Build the chosen strategies (one, or several together) from the options given, refusing options that
    none of them takes and combinations that cannot run together."""
    from .strategies import STRATEGIES, make_strategies, split_names
    try:
        names = split_names([n for group in (args.strategy or [["naive"]]) for n in group])
    except ValueError as e:
        raise UsageError(str(e)) from None
    args.strategy = "+".join(names)
    own = {h.name for n in names for h in STRATEGIES[n].hparams}
    given = {k[3:]: v for k, v in vars(args).items() if k.startswith("hp_") and v is not None}
    for hname in sorted(set(given) - own):
        users = sorted(n for n, cls in STRATEGIES.items() if hname in {h.name for h in cls.hparams})
        raise UsageError(f"{_option(hname)} applies to {', '.join(users)}, not to --strategy {args.strategy}")
    return make_strategies(names, **given)  # a bad value or combination: an error, exit status 2


def _hparams(strategy) -> dict:
    """Every hyperparameter of a strategy or of each strategy of a Compose, by name."""
    parts = getattr(strategy, "strategies", [strategy])
    return {h.name: getattr(s, h.name) for s in parts for h in s.hparams}


def _build_tasks(args):
    from . import data
    kwargs = dict(seed=args.seed, train_size=args.train_size, test_size=args.test_size)
    if args.benchmark == "split-mnist":
        args.scenario = args.scenario or "class"
        if args.tasks > len(data.SPLIT_PAIRS):
            raise UsageError(f"split-mnist has at most {len(data.SPLIT_PAIRS)} tasks, got --tasks {args.tasks}")
        return data.split_mnist(args.tasks, args.scenario, **kwargs)
    args.scenario = args.scenario or "domain"
    return data.BUILDERS[args.benchmark](args.tasks, scenario=args.scenario, **kwargs)


def cmd_run(args) -> int:
    from .models import for_scenario
    from .train import run_tasks, sgd

    config.set_seed(args.seed)  # seeds the model's initial weights
    strategy = _strategy_from_args(args)
    tasks = _build_tasks(args)
    model = for_scenario(args.scenario, tasks, args.hidden).to(config.device())
    with config.threads(config.auto_threads()) as threads:
        result = run_tasks(model, tasks, strategy, sgd(args.lr, args.momentum), args.epochs,
                           args.batch_size, args.seed)
    out = {"benchmark": args.benchmark, "strategy": args.strategy, "tasks": args.tasks, "seed": args.seed,
           "hparams": _hparams(strategy), **result.to_dict()}
    out["scenario"], out["threads"] = args.scenario, threads
    if args.plot:
        from .plots import save_acc_matrix
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        save_acc_matrix(result.acc_matrix, args.plot, title=f"{args.benchmark}, {args.strategy}")
        out["plot"] = args.plot
    if args.json:
        print(json.dumps(out))
    else:
        print(result.acc_matrix)
        m = result.acc_matrix
        print(f"average accuracy {m.avg_acc:.1%}   backward transfer {m.bwt:+.1%}   "
              f"forward transfer {m.fwt:+.1%}   wall {result.wall_s:.1f} s on {threads} thread(s)")
    return 0


def cmd_fetch(args) -> int:
    from .assets import AssetError, fetch_all
    from .data import load_mnist
    from .lm.model import DEFAULT_MODEL, ModelError, ensure_default_model
    try:
        paths = fetch_all(verbose=not args.quiet)
        load_mnist()  # builds and checks the fast uint8 copy too
        paths[DEFAULT_MODEL] = ensure_default_model(verbose=not args.quiet)  # the GGUF as safetensors, once
    except (AssetError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}" if not args.quiet else path)
    if not args.quiet:
        print(f"all assets cached in {config.data_dir()} (set CFCOURSE_DATA to move them)")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import METHODS, Setup, notes_for, plot, reproduce, table
    setup = Setup.fast() if args.fast else Setup()

    def progress(c):
        print(f"  {c.method:24} {c.scenario:6}-IL  {c.mean:6.2f} ± {c.half_width:.2f}"
              f"   (paper {c.published:.2f}, {c.seconds:.0f} s)", file=sys.stderr, flush=True)
    with config.threads(config.auto_threads()) as threads:
        cells, wall = reproduce(args.seeds, setup, on_cell=progress)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(cells, args.plot)
    if args.json:
        print(json.dumps({"paper": args.paper, "seeds": args.seeds, "fast": args.fast, "setup": vars(setup),
                          "settings": {m: dict(zip(("strategy", "hparams"), v)) for m, v in METHODS.items()},
                          "cells": [c.to_dict() for c in cells], "notes": notes_for(cells),
                          "wall_s": round(wall, 1), "threads": threads}))
    else:
        print(table(cells))
        for note in notes_for(cells):
            print(f"  why: {note}")
        print(f"{args.seeds} seed(s), {'fast' if args.fast else 'published'} setup, {wall / 60:.1f} minutes on "
              f"{threads} thread(s)")
    return 0


def cmd_student_copy(args) -> int:
    from .student import write_student_copy
    copies = write_student_copy(args.out_dir, args.lessons, force=args.force)
    for lesson in copies:
        print(lesson.summary())
    print(f"wrote {len(copies)} student notebook(s) to {copies[0].target.parent}: no solutions, and each check "
          "stops the notebook until its exercise is right")
    return 0


def _name_path(text: str) -> tuple[str, str]:
    """NAME=PATH of --text, split at the first '='."""
    name, eq, path = text.partition("=")
    if not (eq and name.strip() and path.strip()):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. notes=notes.txt), got {text!r}")
    return name.strip(), path.strip()


def _texts(pairs: list[tuple[str, str]] | None) -> dict[str, str] | None:
    """--text NAME=PATH pairs as a dict; a NAME given twice is refused."""
    if not pairs:
        return None
    names = [n for n, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--text names must differ: {', '.join(twice)} given more than once")
    return dict(pairs)


def cmd_report(args) -> int:
    from .lm.report import FILES, forgetting_report, perplexity_table
    human = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON alone
    texts = _texts(args.text)
    with contextlib.redirect_stdout(sys.stderr):  # progress, whatever prints it
        report = forgetting_report(args.base, args.tuned, domains=args.domains, probes=args.probes, out=args.out,
                                   n_blocks=args.blocks, verbose=True, texts=texts, dtype=args.dtype,
                                   device=args.device)
    print(perplexity_table(report), file=human)
    print(f"\nwrote {', '.join(str(Path(args.out) / f) for f in FILES)} in {report['seconds']['total']:.0f} s; "
          f"read {Path(args.out) / FILES[0]} first", file=human)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


def _lab_device(device: str) -> None:
    """--device of the lab commands: where every model they load goes, as CFCOURSE_DEVICE says (config.device)."""
    if device == "auto":
        return
    from .lm.report import available_devices

    if device not in available_devices():
        raise UsageError(f"--device {device} is not available on this machine; available: "
                         f"{', '.join(available_devices())}")
    os.environ["CFCOURSE_DEVICE"] = device


def cmd_lm_record(args) -> int:
    from .lm import lab

    if args.model is not None and args.out is None and not args.table:
        raise UsageError("--model needs --out FILE.json: the record in the cache is the one the lessons show beside "
                         "their own run of the course's model")
    _lab_device(args.device)

    if args.table:
        rec = lab.load_record()
        if rec is None:
            raise FileNotFoundError("no record in this mode yet: run python -m cfcourse lm-record first")
        print(f"{rec['source']}, {rec['mode']} mode, {rec['created']}, {rec['machine']}:", file=sys.stderr)
        print(lab.record_table(rec))
        return 0
    s = lab.settings()
    steps = len(s.seeds) * (s.medical.steps + s.long_steps) + (0 if args.sweep_from else
                                                                  len(s.lr_grid) * s.choose_steps)
    sweep = (f"the sweep from {args.sweep_from}" if args.sweep_from else
             f"stage 2 at {len(s.lr_grid)} learning rates ({s.choose_steps} steps)")
    print(f"{len(s.seeds)} seeds of stage 1 ({s.medical.steps} steps) and stage 2 ({s.long_steps} steps), and {sweep}: "
          f"{steps:,} steps, about {steps // 20} minutes on one thread in full mode (20 steps a minute with their "
          "measurements)", file=sys.stderr)
    lab.use_threads()
    with contextlib.redirect_stdout(sys.stderr):  # progress
        rec = lab.record(lab.settings(), out=args.out, sweep_from=args.sweep_from, pretrained=args.model)
    for at, summary in ((f"{s.legal.steps} steps", rec["summary"]), (f"{s.long_steps} steps", rec["summary"]["long"])):
        print(f"stage 2 after {at}:")
        for k, v in summary.items():
            if k != "long":
                print(f"{k:>22}: median {v['median']:+.3f} (min {v['min']:+.3f}, max {v['max']:+.3f}) over "
                      f"{len(v['values'])} seeds")
    print(f"stage 2 learning rate chosen on legal validation text after {rec['chosen_at_step']} steps: "
          f"{rec['best_lr']:g} (the sweep: {rec['sweep_source']}); {rec['seconds']:.0f} s")
    return 0


def cmd_lm_sweep(args) -> int:
    from .lm import lab
    from .lm.model import ModelError

    _lab_device(args.device)
    grid = lab.sweep_grid(lab.settings())
    families = {kind.replace(" ", "-").lower(): kind for kind, _ in grid}
    if args.only:
        unknown = sorted(set(f.lower() for f in args.only) - set(families))
        if unknown:
            raise UsageError(f"unknown families {', '.join(unknown)} for --only; choose from {', '.join(SWEEP_FAMILIES)}")
        keep = {families[f.lower()] for f in args.only}
        grid = [(k, c) for k, c in grid if k in keep]
    seeds = len(lab.settings().seeds)
    print(f"{len(grid)} settings, each fine-tuned {seeds} times (one per seed) from lesson 08's medical model (about "
          f"a minute each on 2 quiet cores)", file=sys.stderr)
    lab.use_threads()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # progress
            points = lab.sweep(lab.settings(), grid, out=args.out)
    except (FileNotFoundError, ModelError) as e:
        raise ModelError(f"lm-sweep fine-tunes lesson 08's medical model, and could not load it: {e}") from None
    human = sys.stderr if args.json else sys.stdout
    for p in points:
        spread = (f" (seeds {-p['gain_range'][1]:+.0%} to {-p['gain_range'][0]:+.0%}; {p['rise_range'][0]:+.0%} to "
                  f"{p['rise_range'][1]:+.0%})" if "rise_range" in p else "")
        print(f"{p['label']:>36}: legal {-p['gain']:+.0%}, old domains {p['rise']:+.0%}{spread}  ({p['seconds']:.0f} s a "
              "run)", file=human)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .lm import views
        fig, ax = plt.subplots(figsize=(7.5, 5.4))
        views.plot_tradeoff(points, ax=ax)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}", file=human)
    if args.json:
        print(json.dumps({"points": points, "plot": args.plot}))
    return 0


COMMANDS = {"fetch": cmd_fetch, "run": cmd_run, "reproduce": cmd_reproduce, "student-copy": cmd_student_copy,
            "report": cmd_report, "lm-record": cmd_lm_record, "lm-sweep": cmd_lm_sweep}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run one command; returns its exit status (argparse's own refusals exit 2 through SystemExit)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from .assets import AssetError
    from .lm.model import ModelError
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        args.usage_error(str(e))  # the command's usage line, then exit 2
    except ValueError as e:  # input the command refused: a bad value, setting, file or model
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (AssetError, ModelError, OSError) as e:  # the command could not do its work
        print(f"error: {e}", file=sys.stderr)
        return 1

