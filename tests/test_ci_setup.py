"""How the tests run: in parallel where they are independent, each notebook and test module whole on one worker,
lessons 08-10 in order on one worker and handed out first, the slowest tests listed; the learner's command installs
no test tools."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import conftest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FakeItem:
    path: Path
    marks: list = field(default_factory=list)

    def add_marker(self, mark):
        self.marks.append(mark)


def _group(item: FakeItem) -> str | None:
    names = [m.args[0] for m in item.marks if m.name == "xdist_group"]
    return names[0] if names else None


def test_each_notebook_and_module_is_one_group_and_lessons_08_to_10_share_one():
    lessons = sorted((ROOT / "lessons").glob("*.ipynb"))
    modules = [ROOT / "tests" / "test_metrics.py", ROOT / "tests" / "test_cli.py"]
    items = [FakeItem(p) for p in [*modules, *lessons] for _ in range(3)]
    conftest.pytest_collection_modifyitems(None, items)
    groups = {item.path.name: _group(item) for item in items}
    assert groups["test_metrics.py"] == "test_metrics" and groups["test_cli.py"] == "test_cli"
    lm = {name for name, g in groups.items() if g == "lm-lessons"}
    assert lm == {p.name for p in lessons if p.name[:2] in ("08", "09", "10")} and len(lm) == 3
    others = [g for name, g in groups.items() if name.endswith(".ipynb") and name not in lm]
    assert len(set(others)) == len(lessons) - 3  # one group per notebook
    for path in [*modules, *lessons]:  # every cell of a notebook, every test of a module, in the same group
        assert len({_group(i) for i in items if i.path == path}) == 1
    assert [i.path for i in items] == [p for p in [*modules, *lessons] for _ in range(3)]  # no worker: same order


def test_workers_hand_out_lessons_08_to_10_first_then_the_other_lessons():
    lessons = sorted((ROOT / "lessons").glob("*.ipynb"))
    module = ROOT / "tests" / "test_metrics.py"
    items = [FakeItem(p) for p in [module, *lessons] for _ in range(2)]

    class Worker:
        workerinput = {"workerid": "gw0"}
    conftest.pytest_collection_modifyitems(Worker(), items)
    order = [i.path for i in items]
    lm = [p for p in lessons if p.name.startswith(conftest.LM_LESSONS)]
    rest = [p for p in lessons if p not in lm]
    assert order == [p for p in [*lm, *rest, module] for _ in range(2)]  # stable: cells keep their order


def test_lessons_08_to_10_are_collected_in_order():
    names = [p.name for p in sorted((ROOT / "lessons").glob("*.ipynb")) if p.name.startswith(conftest.LM_LESSONS)]
    assert [n[:2] for n in names] == ["08", "09", "10"]


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
