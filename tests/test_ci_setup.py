"""How the tests run: in parallel where they are independent, each notebook and test module whole on one worker,
lessons 08-10 in order on one worker and handed out first, the slowest tests listed; the learner's command installs
no test tools."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from xdist_groups import hand_out_order, work_group

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))


def test_each_notebook_and_module_is_one_unit_and_lessons_08_to_10_share_one():
    ids = [f"lessons/{p.name}::Cell {k}" for p in LESSONS for k in range(3)]
    ids += ["tests/test_cli.py::test_version", "tests/test_cli.py::test_bad_input[argv0-x]"]
    groups = {i: work_group(i) for i in ids}
    lm = {i.split("::")[0] for i, g in groups.items() if g == "lm-lessons"}
    assert lm == {f"lessons/{p.name}" for p in LESSONS if p.name[:2] in ("08", "09", "10")} and len(lm) == 3
    others = {g for i, g in groups.items() if i.startswith("lessons/") and g != "lm-lessons"}
    assert others == {f"lessons/{p.name}" for p in LESSONS} - lm  # one unit per notebook
    assert {groups[i] for i in ids if i.startswith("tests/")} == {"tests/test_cli.py"}


def test_lessons_are_handed_out_first_and_08_to_10_in_order():
    ids = ["tests/test_cli.py::test_version", *[f"lessons/{p.name}::Cell 0" for p in LESSONS]]
    ranked = sorted(ids, key=hand_out_order)  # stable, as the workers sort
    assert [work_group(i) for i in ranked[:3]] == ["lm-lessons"] * 3
    assert [i[8:10] for i in ranked[:3]] == ["08", "09", "10"] and ranked[-1] == ids[0]


TEST_BODY = '''import os, time


def _note(name):
    with open({log!r}, "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + " " + name + "\\n")
    time.sleep(0.05)
''' + "".join(f"\n\ndef test_{k}():\n    _note(__name__ + ' {k}')\n" for k in range(4))


def test_workers_really_keep_the_units_whole(tmp_path):
    """A small project run by pytest-xdist on two workers with these groups: who ran what, in which order."""
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                                          "from xdist_groups import *  # noqa: F401,F403\n")
    log = tmp_path / "log.txt"
    (tmp_path / "lessons").mkdir()
    (tmp_path / "tests").mkdir()
    files = ["lessons/08_a.py", "lessons/09_b.py", "lessons/10_c.py", "lessons/00_d.py", "lessons/01_e.py",
             "tests/test_f.py", "tests/test_g.py"]
    for name in files:
        (tmp_path / name).write_text(TEST_BODY.format(log=str(log)))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                           "loadgroup", "--no-loadscope-reorder", "tests", *files[:5]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = [line.split() for line in log.read_text().splitlines()]  # (worker, module, test number)
    assert len(runs) == 4 * len(files)
    for module in {m for _, m, _ in runs}:  # each file whole on one worker, its tests in order
        mine = [(w, k) for w, m, k in runs if m == module]
        assert len({w for w, _ in mine}) == 1 and [k for _, k in mine] == ["0", "1", "2", "3"], (module, mine)
    lm = [(w, m) for w, m, _ in runs if m[:3] in ("08_", "09_", "10_")]
    assert len({w for w, _ in lm}) == 1, lm  # lessons 08-10 on one worker ...
    assert [m for _, m in lm] == sorted(m for _, m in lm)  # ... in order ...
    first = {kind: next(i for i, (_, m, _) in enumerate(runs) if m.startswith(kind)) for kind in ("08_", "test_")}
    assert first["08_"] < first["test_"]  # ... and handed out before the tests, although the tests were named first


@pytest.mark.parametrize("option", ["-n ", "--dist loadgroup", "--no-loadscope-reorder", "--durations=15",
                                    "--nbval-lax"])
def test_the_test_command_runs_in_parallel_and_lists_the_slowest(option):
    assert option in (ROOT / "scripts" / "test.sh").read_text()


def test_the_learner_command_installs_no_test_tools():
    lab, test = (ROOT / "scripts" / "lab.sh").read_text(), (ROOT / "scripts" / "test.sh").read_text()
    assert "setup.sh lab" in lab and "setup.sh test" in test
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'lab) extras="lab"' in setup and 'test) extras="lab,test"' in setup
    assert (ROOT / ".ci" / "run").read_text().count("scripts/test.sh") == 1
