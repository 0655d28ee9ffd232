"""A real browser runs lesson 01 in JupyterLab: every cell runs without error, the slider renders and redraws.

JupyterLab (this venv's) serves a temporary copy of lessons/; Debian's Chromium, driven headless by Playwright,
opens the lesson, runs all cells from the Run menu, moves the slider and saves a screenshot
(to $CFCOURSE_SCREENSHOT_DIR, else pytest's tmp_path). Needs `apt-get install chromium` and `pip install playwright`;
without them the test is skipped, except under CI (CI set), where it fails.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from pathlib import Path

import psutil
import pytest

from browser_helpers import (CHROMIUM, CHROMIUM_ARGS, browser_env, in_ci, notebook_state, remember_family, start_lab,
                             stop_lab, wait_for_state, wait_until_answering)

ROOT = Path(__file__).resolve().parent.parent
LESSON = "01_forgetting_in_2d.ipynb"
SLIDER = ".jp-OutputArea-output .widget-hslider"
WIDGET_IMG = ".jp-OutputArea-output .widget-output img"  # the figure inside the scrubber's Output widget
NOT_RENDERED = ("Loading widget", "IntSlider(", "VBox(children", "Error displaying widget")


def _missing_browser_tools() -> str:
    """What is missing to drive a browser, or "" when nothing is."""
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    return " and ".join(missing)


@pytest.fixture(scope="module")
def playwright_api():
    """playwright.sync_api.sync_playwright; skipped without browser tools, but failed under CI."""
    missing = _missing_browser_tools()
    if missing and in_ci():
        pytest.fail(f"CI is set but the browser test cannot run: missing {missing}", pytrace=False)
    if missing:
        pytest.skip(f"browser test needs {missing}")
    from playwright.sync_api import sync_playwright
    return sync_playwright


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of lessons/ (outputs and autosaves land there, never in the repository)."""
    assert importlib.util.find_spec("jupyterlab_widgets"), \
        "jupyterlab_widgets is missing, so JupyterLab cannot render ipywidgets; reinstall ipywidgets>=8"
    root = tmp_path / "lessons"
    shutil.copytree(ROOT / "lessons", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    server = start_lab(root, tmp_path / "jupyter")
    try:
        wait_until_answering(server)
        yield server
    finally:
        leftover = stop_lab(server)
        assert server.proc.returncode is not None, "jupyter lab is still running after shutdown"
        assert not leftover, f"processes left running after shutting jupyter lab down: {leftover}"


@pytest.fixture
def page(playwright_api, tmp_path):
    """A headless Chromium page; Playwright's driver and the browser are checked gone afterwards."""
    before = {p.pid for p in psutil.Process().children()}
    with playwright_api() as pw:
        driver = [p for p in psutil.Process().children() if p.pid not in before]  # Playwright's node process
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                     env=browser_env(tmp_path / "chromium"))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(30_000)
            page.console_errors = []
            page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
            yield page
        finally:
            spawned = driver + [c for d in driver for c in d.children(recursive=True)]  # Chromium and its helpers
            browser.close()
    _, alive = psutil.wait_procs(spawned, timeout=10)
    assert not alive, f"browser processes left running: {[(p.pid, p.name()) for p in alive]}"


def _screenshot_path(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CFCOURSE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "lesson01_slider.png"


def _open_lesson(page, lab) -> None:
    """Open the lesson and wait until its kernel has started and is idle."""
    page.goto(f"{lab.url}lab/tree/{LESSON}?token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    wait_for_state(page, lambda s: s["idle"], timeout=60, what="kernel idle after opening the lesson")


def _run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells from the menu bar, as a learner would; click again if a click was lost."""
    for attempt in range(1, attempts + 1):
        page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-content .lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                     has_text=re.compile(r"^Run All Cells$")).click()
        try:
            wait_for_state(page, lambda s: s["running"] > 0 or s["numbered"] > 0, timeout=10, settle=1,
                           what="Run All Cells started")
            return
        except TimeoutError:
            if attempt == attempts:
                raise
            page.keyboard.press("Escape")  # close a menu left open


def _finished(state: dict) -> bool:
    """Every code cell has run (or an error stopped the run), nothing is queued, and the kernel is idle."""
    done = state["numbered"] == len(state["prompts"]) or state["errors"]
    return state["running"] == 0 and state["idle"] and bool(done)


def _run_lesson(page, lab) -> None:
    """Run every cell and check that each one ran and none shows an error."""
    started = time.monotonic()
    _run_all_cells(page)
    remember_family(lab)  # the kernel now exists: teardown checks it exits with the server
    state = wait_for_state(page, _finished, timeout=120, what="all cells executed")
    print(f"\nall {len(state['prompts'])} code cells ran in the browser in {time.monotonic() - started:.1f} s")
    assert not state["errors"], "a cell shows an error:\n\n" + "\n\n".join(state["errors"])
    assert state["numbered"] == len(state["prompts"]), f"some cells did not run: {state['prompts']}"


def _check_widget_rendered(page):
    """The scrubber is a real widget (jupyterlab_widgets loaded), not its text repr; returns the slider."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:  # widgets render asynchronously, after the kernel is already idle
        page.locator(SLIDER).first.wait_for(state="visible", timeout=30_000)
    except PlaywrightTimeout:
        pass  # the asserts below say why
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    stuck = [t[:200] for t in outputs if any(s in t for s in NOT_RENDERED)]
    assert not stuck, f"a widget did not render: {stuck}; browser console errors: {page.console_errors}"
    slider = page.locator(SLIDER)
    assert slider.count() == 1, \
        f"expected one rendered slider, found {slider.count()}; browser console errors: {page.console_errors}"
    return slider


def _move_slider(page, slider) -> tuple[str, str]:
    """Press End (or Home, if already at the end) on the slider's handle; wait for the figure to change."""
    slider.scroll_into_view_if_needed()
    img = page.locator(WIDGET_IMG)
    img.wait_for(state="visible")
    before_src, before_value = img.get_attribute("src"), _slider_readout(slider)
    handle = slider.locator(".noUi-handle")
    at_end = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    handle.focus()
    page.keyboard.press("Home" if at_end else "End")  # continuous_update=False: the key press commits the value
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel); return i && i.src && i.src !== old; }",
        arg=[WIDGET_IMG, before_src], timeout=30_000)
    after_value = _slider_readout(slider)
    assert after_value != before_value, f"the figure changed but the slider readout stayed at {before_value}"
    wait_for_state(page, lambda s: s["idle"], timeout=30, what="kernel idle after the redraw")
    assert not notebook_state(page)["errors"], "moving the slider produced an error"
    return before_value, after_value


def _slider_readout(slider) -> str:
    return slider.locator(".widget-readout").first.inner_text().strip()


def test_lesson_01_runs_in_a_browser_and_the_slider_redraws(lab, page, tmp_path):
    started = time.monotonic()
    shot = _screenshot_path(tmp_path)
    try:
        _open_lesson(page, lab)
        _run_lesson(page, lab)
        before, after = _move_slider(page, _check_widget_rendered(page))
    except BaseException:
        failed = shot.with_name("lesson01_failure.png")
        try:
            page.screenshot(path=str(failed))
            print(f"\nscreenshot of the page at the failure: {failed}")
        except Exception as e:  # a dead browser must not hide the original error
            print(f"\nno failure screenshot: {e}")
        print(f"jupyter lab log (last lines):\n{lab.log_tail()}")
        raise
    page.locator(WIDGET_IMG).scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    print(f"slider moved from {before} to {after} and the figure was redrawn; screenshot: {shot}")
    print(f"browser part took {time.monotonic() - started:.1f} s")
