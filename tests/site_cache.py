"""The lessons nbval executes, kept for the website: with CFCOURSE_SITE_CACHE=1 (scripts/test.sh sets it), every
lesson whose cells all passed is written with the outputs nbval received into the site's execution cache
(book/executed.py), so that the site's build and its browser test (tests/test_site.py) use these executions
instead of running every lesson a second time. tests/conftest.py imports these hooks."""
from __future__ import annotations

import copy
import importlib.util
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = "CFCOURSE_SITE_CACHE"
_runs: dict[str, dict] = {}  # a notebook's node id -> the outputs of its passed cells, by cell number


def load_executed():
    """book/executed.py, by its path."""
    spec = importlib.util.spec_from_file_location("cfcourse_book_executed", ROOT / "book" / "executed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_lesson_cell(item) -> bool:
    """An nbval cell of one of the repository's lessons."""
    parent = getattr(item, "parent", None)
    return (hasattr(item, "test_outputs") and hasattr(parent, "nb")
            and Path(str(parent.fspath)).parent == ROOT / "lessons")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if os.environ.get(ENV) == "1" and _is_lesson_cell(item):
        run = _runs.setdefault(item.parent.nodeid, {"outputs": {}, "failed": False, "started": time.monotonic()})
        if report.failed or (report.skipped and call.when != "teardown"):
            run["failed"] = True  # an incomplete or failed execution is not kept
        elif call.when == "call" and item.test_outputs is not None:
            run["outputs"][item.cell_num] = copy.deepcopy(item.test_outputs)
    return report


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After a lesson's last cell: store it when every code cell ran and passed."""
    if os.environ.get(ENV) != "1" or not _is_lesson_cell(item):
        return
    if nextitem is not None and getattr(nextitem, "parent", None) is item.parent:
        return
    run = _runs.pop(item.parent.nodeid, None)
    notebook = copy.deepcopy(item.parent.nb)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if not run or run["failed"] or sorted(run["outputs"]) != list(range(len(code))):
        return
    for number, cell in enumerate(code):
        cell.outputs = run["outputs"][number]
        cell.execution_count = number + 1
        for output in cell.outputs:
            if output.get("output_type") == "execute_result":
                output["execution_count"] = number + 1
    executed = load_executed()
    name = Path(str(item.parent.fspath)).name
    run_mode = executed.mode()
    executed.store(notebook, name, executed.keys(run_mode)[name], run_mode, time.monotonic() - run["started"],
                   by="nbval (scripts/test.sh)")


BROWSER_ENV = "CFCOURSE_BROWSER_LESSONS"


def _browser_runs_widget_lessons() -> bool:
    """In the full run (scripts/test.sh sets CFCOURSE_BROWSER_LESSONS=1) tests/test_browser.py and
    tests/test_browser_lm.py execute the lessons that have a widget (and lesson 10, which follows 08 and 09), in
    JupyterLab, wherever they can run (Chromium and Playwright are here)."""
    from browser_helpers import missing_browser_tools

    return os.environ.get(BROWSER_ENV) == "1" and not missing_browser_tools()


def pytest_ignore_collect(collection_path, config):
    """nbval does not run a lesson a second time that the browser test runs whole (see _browser_runs_widget_lessons)."""
    from browser_helpers import BROWSER_LESSONS

    if collection_path.name in BROWSER_LESSONS and collection_path.parent == ROOT / "lessons" \
            and _browser_runs_widget_lessons():
        return True
    return None


def pytest_report_header(config):
    if _browser_runs_widget_lessons():
        from browser_helpers import BROWSER_LESSONS

        return (f"lessons {', '.join(n[:2] for n in BROWSER_LESSONS)} run whole in JupyterLab in Chromium "
                "(tests/test_browser.py, tests/test_browser_lm.py) instead of nbval")
    return None
