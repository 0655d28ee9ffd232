"""A real browser runs lessons 08, 09 and 10 in JupyterLab, in this order and in fast mode (09 and 10 start from the
models 08 saves): every cell runs without error, and every widget of 08 and 09 renders and redraws its figure when
its slider or list moves (tests/lesson_browser.py says how). A module of its own, so that pytest-xdist runs it on
one worker while lessons 01-06 (tests/test_browser.py) run on another.
"""
from __future__ import annotations

import pytest

from browser_helpers import LM_CHAIN
from lesson_browser import run_lesson_and_widgets
from test_browser import lab, page  # noqa: F401  (the module's own JupyterLab and Chromium page)


@pytest.mark.parametrize("lesson", LM_CHAIN)
def test_language_model_lesson_runs_in_a_browser_and_its_widgets_redraw(lesson, lab, page, tmp_path):
    run_lesson_and_widgets(page, lab, lesson, tmp_path)
