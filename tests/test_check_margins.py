"""scripts/check_margins.py: which lessons and seeds it runs, how it reads the checks' logs, and the table it makes
(no lesson is run here)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cfcourse import checks

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_margins", ROOT / "scripts" / "check_margins.py")
cm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cm)


def test_lessons_by_number_range_and_path():
    names = [p.name[:2] for p in cm.lesson_paths(["00-02", "5", "05", "lessons/07_benchmark_lab.ipynb"])]
    assert names == ["00", "01", "02", "05", "07"]  # 5 and 05 are one lesson, listed once
    assert [p.name[:2] for p in cm.lesson_paths(["3,4"])] == ["03", "04"]


@pytest.mark.parametrize("bad, message", [("07-03", "runs backwards; write 03-07"), ("99", "there is no lesson 99"),
                                          ("three", "a lesson is a number"), ("nope.ipynb", "no notebook at")])
def test_bad_lessons_are_refused_with_advice(bad, message):
    with pytest.raises(ValueError, match=message):
        cm.lesson_paths([bad])


def test_default_seeds_follow_the_mode():
    fast = cm.parse_args([])
    assert (fast.mode, fast.seeds, fast.first_seed) == ("fast", 5, 0)
    assert [p.name[:2] for p in fast.lesson_paths] == [f"{n:02d}" for n in range(8)]
    full = cm.parse_args(["--mode", "full", "--lessons", "3"])
    assert full.seeds == 3 and [p.name[:2] for p in full.lesson_paths] == ["03"]
    chosen = cm.parse_args(["--mode", "full", "--seeds", "2", "--first-seed", "10"])
    assert (chosen.seeds, chosen.first_seed) == (2, 10)


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--first-seed", "-1"], ["--lessons", "42"], ["--mode", "slow"]])
def test_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cm.parse_args(argv)
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err


def write_log(tmp_path, monkeypatch, lesson, mode, values_by_seed):
    """A log written by the checks themselves, as a lesson's kernel would: one measure per seed."""
    log = tmp_path / "margins.jsonl"
    monkeypatch.setenv("CFCOURSE_CHECK_LOG", str(log))
    monkeypatch.setenv("CFCOURSE_CHECK_LESSON", lesson)
    monkeypatch.setenv("CFCOURSE_FAST", "1" if mode == "fast" else "")
    for seed, (acc, share) in values_by_seed.items():
        monkeypatch.setenv("CFCOURSE_SEED", str(seed))
        try:
            checks.expect([checks.at_least(acc, 0.85, "task-IL average accuracy"),
                           checks.at_most(share, 0.30, "class-IL average accuracy")], "yes", "no")
        except checks.EffectMissing:
            pass
    with log.open("a") as f:
        for seed in values_by_seed:
            f.write(json.dumps({"run": lesson, "mode": mode, "seed": seed, "seconds": 40.0 + seed, "errors": []}) + "\n")
    return log


def test_the_table_gives_spread_and_worst_margin_per_check(tmp_path, monkeypatch, capsys):
    log = write_log(tmp_path, monkeypatch, "03_three_scenarios", "full",
                    {0: (0.95, 0.19), 1: (0.97, 0.20), 2: (0.90, 0.18)})
    measures, runs = cm.read_logs([log])
    assert len(measures) == 6 and len(runs) == 3
    acc, share = cm.summarise(measures)
    assert acc["check"] == "task-IL average accuracy" and acc["seeds"] == [0, 1, 2]
    assert (acc["min"], acc["median"], acc["max"]) == (0.90, 0.95, 0.97)
    assert acc["worst_margin"] == pytest.approx(0.05) and acc["spread"] == pytest.approx(0.07)
    assert acc["verdict"] == "tight"  # every seed passes, but with less room than the spread of the seeds
    assert share["worst_margin"] == pytest.approx(0.10) and share["verdict"] == "ok"
    text = cm.table([acc, share], runs)
    assert "| 03 | full | 0-2 | task-IL average accuracy | ≥ 0.850 | 0.900 | 0.950 | 0.970 | 0.050 | 0.070 | tight |" in text
    assert "| 03 | full | 0-2 | class-IL average accuracy | ≤ 0.300 | 0.180 | 0.190 | 0.200 | 0.100 | 0.020 | ok |" in text
    assert "03 full 40-42" in text and "Errors" not in text
    stopped = {"run": "03_three_scenarios", "mode": "full", "seed": 1, "seconds": 60.0, "errors": ["run stopped: x"]}
    assert "Errors: 03_three_scenarios (full, seed 1): run stopped: x" in cm.table([acc], runs + [stopped])
    assert "Errors" not in cm.table([acc], [stopped] + runs)  # the seed's later run went through


def test_a_failing_seed_is_marked_and_makes_the_script_fail(tmp_path, monkeypatch, capsys):
    log = write_log(tmp_path, monkeypatch, "03_three_scenarios", "fast", {0: (0.95, 0.19), 3: (0.81, 0.19)})
    row = cm.summarise(cm.read_logs([log])[0])[0]
    assert row["failed"] == 1 and row["verdict"] == "FAILS" and row["worst_margin"] == pytest.approx(-0.04)
    assert cm.seed_list(row["seeds"]) == "0, 3"
    (tmp_path / "one").mkdir()
    one = write_log(tmp_path / "one", monkeypatch, "03_three_scenarios", "fast", {0: (0.95, 0.19)})
    assert cm.summarise(cm.read_logs([one])[0])[0]["verdict"] == "one seed"  # no spread to judge the margin by
    assert cm.main(["--table-only", str(log)]) == 1
    assert "| FAILS |" in capsys.readouterr().out


def test_the_table_goes_between_the_markers(tmp_path, monkeypatch, capsys):
    log = write_log(tmp_path, monkeypatch, "03_three_scenarios", "fast", {0: (0.95, 0.19)})
    doc = tmp_path / "guide.md"
    doc.write_text(f"before\n{cm.START}\nold table\n{cm.END}\nafter\n")
    assert cm.main(["--table-only", str(log), "--update", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f"before\n{cm.START}\n| lesson |") and text.endswith(f"{cm.END}\nafter\n")
    assert "old table" not in text and "task-IL average accuracy" in text
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- margins:start -->"):
        cm.main(["--table-only", str(log), "--update", str(tmp_path / "bare.md")])


def test_bad_log_lines_and_changed_thresholds_are_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"run": "x", "mode": "fast", "seed": 0, "seconds": 1, "errors": []}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not JSON"):
        cm.read_logs([bad])
    bad.write_text('{"something": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: neither a check's measure nor a run"):
        cm.read_logs([bad])
    line = {"lesson": "03_x", "mode": "fast", "check": "c", "value": 0.9, "op": ">=", "passed": True, "margin": 0.1}
    mixed = [{**line, "seed": 0, "threshold": 0.8}, {**line, "seed": 1, "threshold": 0.85}]
    with pytest.raises(ValueError, match="the threshold changed between runs"):
        cm.summarise(mixed)


def test_numbers_are_printed_for_people():
    assert cm.fmt(0.8534) == "0.853" and cm.fmt(45.27) == "45.3" and cm.fmt(1234.5) == "1,234"
    assert cm.seed_list([2, 0, 1]) == "0-2" and cm.seed_list([0, 1]) == "0, 1" and cm.seed_list([5]) == "5"


def test_a_run_logs_its_checks_records_its_errors_and_closes_its_kernel(tmp_path):
    """A two-cell notebook instead of a lesson: a check that holds, then a cell that fails."""
    import os

    import nbformat

    cells = ["from cfcourse import checks\n"
             "checks.expect(checks.at_least(0.9, 0.85, 'task-IL average accuracy'), 'yes', 'no')",
             "raise checks.EffectMissing('the effect did not show')"]
    path = tmp_path / "03_tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    log = tmp_path / "log.jsonl"
    names = ("CFCOURSE_CHECK_LOG", "CFCOURSE_CHECK_LESSON", "CFCOURSE_SEED", "CFCOURSE_FAST")
    before = {k: os.environ.get(k) for k in names}
    run = cm.run_lesson(path, "full", 2, log, timeout=120)
    assert run["run"] == "03_tiny" and run["seed"] == 2 and run["mode"] == "full"
    assert run["errors"] == ["EffectMissing: the effect did not show"]
    (measure,) = cm.read_logs([log])[0]
    assert (measure["lesson"], measure["seed"], measure["mode"], measure["value"]) == ("03_tiny", 2, "full", 0.9)
    assert {k: os.environ.get(k) for k in names} == before  # the settings are put back as they were
    kernels = os.popen(f"ps --ppid {os.getpid()} -o cmd=").read()
    assert "ipykernel" not in kernels, "a finished run left its kernel running"
