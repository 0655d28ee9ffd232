"""A real browser runs every lesson of 01-06 (each has a widget) in JupyterLab, in fast mode: every cell runs without
error, the widget renders, and moving it redraws its figure (tests/lesson_browser.py says how).

One JupyterLab (this venv's) serves a temporary copy of lessons/ to one headless Chromium (Debian's, driven by
Playwright) for all of them; each lesson's kernel is shut down before the next. Needs `apt-get install chromium`
and `pip install playwright`; without them the tests are skipped, except under CI (CI set), where they fail.
Lessons 08-10 are tests/test_browser_lm.py's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser_helpers import LM_CHAIN, WIDGET_CELLS
from lesson_browser import browser_page, lab_server, run_lesson_and_widgets

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(set(WIDGET_CELLS) - set(LM_CHAIN))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from lab_server(tmp_path_factory)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    yield from browser_page(tmp_path_factory)


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_in_a_browser_and_its_widget_redraws(lesson, lab, page, tmp_path):
    run_lesson_and_widgets(page, lab, lesson, tmp_path)


def test_every_widget_of_every_lesson_is_tested_in_the_browser():
    """WIDGET_CELLS names every cell that builds a widget (no browser needed to check this)."""
    builders = re.compile(r"\b(widgets\.(scrubber|permutation_viewer|sweep_viewer)|views\.\w+_viewer)\(")
    found = {}
    for path in sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code" and builders.search("".join(cell["source"])):
                found.setdefault(path.name, []).append(cell["id"])
    assert found == WIDGET_CELLS, f"the lessons' widget cells are {found}; update WIDGET_CELLS in tests/browser_helpers.py"
