"""How scripts/test.sh spreads the tests over pytest-xdist workers (`-n N --dist loadgroup`): each notebook and
each test module stays whole on one worker (a notebook's cells share one kernel; a module's fixtures are built
once and its tests keep their order), and lessons 08-10 run in order on one worker, because 09 and 10 reuse the
models that 08 saves. The workers are handed the lessons first: lessons 08-10, the other lessons, then the tests;
the browser tests that run whole lessons (tests/test_browser_lm.py, tests/test_browser.py) count as lessons.

pytest-xdist's own loadgroup reads `xdist_group` marks through the node ids, which pytest 9.2 no longer lets it
change (pytest-xdist issue 1386), so the groups come from this scheduler instead; tests/conftest.py imports it.
"""
from __future__ import annotations

from pathlib import PurePosixPath

import pytest

LM_LESSONS = ("08_", "09_", "10_")


def work_group(nodeid: str) -> str:
    """The unit of work a test belongs to: lm-lessons for lessons 08-10, else its notebook's or module's path."""
    path = PurePosixPath(nodeid.split("::", 1)[0])
    if path.parent.name == "lessons" and path.name.startswith(LM_LESSONS):
        return "lm-lessons"
    return str(path)


BROWSER_LESSON_MODULES = {"tests/test_browser_lm.py": 0, "tests/test_browser.py": 1}  # they run whole lessons


def hand_out_order(nodeid: str) -> int:
    """Lessons 08-10 (or the browser test that runs them) first, then the other lessons (or the browser test of
    lessons 01-06), then the test modules: no worker starts a long unit late."""
    if work_group(nodeid) == "lm-lessons":
        return 0
    path = PurePosixPath(nodeid.split("::", 1)[0])
    if str(path) in BROWSER_LESSON_MODULES:
        return BROWSER_LESSON_MODULES[str(path)]
    return 1 if path.parent.name == "lessons" else 2


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With --dist loadgroup: whole units of work_group(), handed out in collection order."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_group(nodeid)

    return ByWorkGroup(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """On a pytest-xdist worker, collect the lessons first (every worker sorts alike; the sort is stable, so each
    notebook's cells and each module's tests keep their order). Without workers the order stays as collected."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: hand_out_order(item.nodeid))
