"""How the tests run: in parallel where they are independent, each notebook whole on one worker, lessons 08-10 in
order on one worker, the slowest tests listed; the learner's command installs no test tools."""
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


def test_each_notebook_is_one_group_and_lessons_08_to_10_share_one():
    lessons = sorted((ROOT / "lessons").glob("*.ipynb"))
    items = [FakeItem(p) for p in lessons for _ in range(3)] + [FakeItem(ROOT / "tests" / "test_metrics.py")]
    conftest.pytest_collection_modifyitems(None, items)
    groups = {item.path.name: _group(item) for item in items}
    assert groups["test_metrics.py"] is None  # plain tests spread over the workers one by one
    lm = {name for name, g in groups.items() if g == "lm-lessons"}
    assert lm == {p.name for p in lessons if p.name[:2] in ("08", "09", "10")} and len(lm) == 3
    others = [g for name, g in groups.items() if name.endswith(".ipynb") and name not in lm]
    assert len(set(others)) == len(lessons) - 3  # one group per notebook
    for path in lessons:  # every cell of a notebook in the same group
        assert len({_group(i) for i in items if i.path == path}) == 1


def test_lessons_08_to_10_are_collected_in_order():
    names = [p.name for p in sorted((ROOT / "lessons").glob("*.ipynb")) if p.name.startswith(conftest.LM_LESSONS)]
    assert [n[:2] for n in names] == ["08", "09", "10"]


@pytest.mark.parametrize("option", ["-n ", "--dist loadgroup", "--durations=15", "--nbval-lax"])
def test_the_test_command_runs_in_parallel_and_lists_the_slowest(option):
    assert option in (ROOT / "scripts" / "test.sh").read_text()


def test_the_learner_command_installs_no_test_tools():
    lab, test = (ROOT / "scripts" / "lab.sh").read_text(), (ROOT / "scripts" / "test.sh").read_text()
    assert "setup.sh lab" in lab and "setup.sh test" in test
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'lab) extras="lab"' in setup and 'test) extras="lab,test"' in setup
    assert (ROOT / ".ci" / "run").read_text().count("scripts/test.sh") == 1
