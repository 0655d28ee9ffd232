"""Running a lesson in JupyterLab in a real browser, as a learner would, and moving its widgets: shared by
tests/test_browser.py (lessons 01-06) and tests/test_browser_lm.py (lessons 08-10).

A lesson is opened, run from the Run menu, checked (every cell ran, none shows an error), each of its widgets is
checked to be a real widget whose figure changes when its control moves, a screenshot of each widget is saved (to
$CFCOURSE_SCREENSHOT_DIR, else pytest's tmp_path), the notebook is saved and, in the full test run
(CFCOURSE_SITE_CACHE=1), kept as the website's execution of the lesson, and its kernel is shut down.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
from pathlib import Path

from browser_helpers import (WIDGET_CELLS, chromium_page, notebook_state, remember_family, shut_down_kernels,
                             start_lab, stop_lab, sync_playwright_or_skip, wait_for_state, wait_until_answering)
from site_cache import ENV as SITE_CACHE_ENV, load_executed

ROOT = Path(__file__).resolve().parent.parent
SLIDER = ".widget-hslider"
SELECT = ".widget-select select"
WIDGET_IMG = ".widget-output img"  # the figure inside a widget's Output
NOT_RENDERED = ("Loading widget", "IntSlider(", "VBox(children", "HBox(children", "Error displaying widget")
RUN_TIMEOUT = 900  # seconds for a whole lesson in fast mode on a busy 2-core machine (lesson 08 takes a few minutes)


def lab_server(tmp_path_factory):
    """A generator fixture body: one JupyterLab serving a copy of lessons/ (outputs and saves land there)."""
    sync_playwright_or_skip()  # skip (or fail under CI) before starting a server for nothing
    assert importlib.util.find_spec("jupyterlab_widgets"), \
        "jupyterlab_widgets is missing, so JupyterLab cannot render ipywidgets; reinstall ipywidgets>=8"
    home = tmp_path_factory.mktemp("lab")
    root = home / "lessons"
    shutil.copytree(ROOT / "lessons", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    server = start_lab(root, home / "jupyter")
    server.root = root
    try:
        wait_until_answering(server)
        yield server
    finally:
        leftover = stop_lab(server)
        assert server.proc.returncode is not None, "jupyter lab is still running after shutdown"
        assert not leftover, f"processes left running after shutting jupyter lab down: {leftover}"


def browser_page(tmp_path_factory):
    """A generator fixture body: one headless Chromium page, checked gone after. A smaller window than a desktop's:
    Chromium draws every output as the lesson runs, on the same two cores as the kernel."""
    yield from chromium_page(sync_playwright_or_skip(), tmp_path_factory.mktemp("chromium"),
                             viewport={"width": 1280, "height": 900})


def run_lesson_and_widgets(page, lab, lesson: str, tmp_path: Path) -> None:
    """The whole check of one lesson (see the module's docstring); screenshots of the page where it fails."""
    shots = Path(os.environ.get("CFCOURSE_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    stem = f"lesson{lesson[:2]}"
    moved = []
    try:
        open_lesson(page, lab, lesson)
        seconds = run_all(page, lab)
        for k, cell_id in enumerate(WIDGET_CELLS.get(lesson, [])):
            cell = widget_cell(page, lab, lesson, cell_id)
            moved.append(move_control(page, cell, check_widget_rendered(page, cell)))
            cell.locator(WIDGET_IMG).first.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / f"{stem}_widget{k + 1 if k else ''}.png"))
        save_and_keep(page, lab, lesson, seconds)
    except BaseException:
        failed = shots / f"{stem}_failure.png"
        try:
            page.screenshot(path=str(failed))
            print(f"\nscreenshot of the page at the failure: {failed}")
        except Exception as e:  # a dead browser must not hide the original error
            print(f"\nno failure screenshot: {e}")
        print(f"jupyter lab log (last lines):\n{lab.log_tail()}")
        raise
    finally:
        shut_down_kernels(lab)
    for what, before, after in moved:
        print(f"{what} moved from {before!r} to {after!r} and the figure was redrawn")


OPEN_IN_APP = """async (path) => {
  const app = window.jupyterapp;
  await app.commands.execute('application:close-all');
  await app.commands.execute('docmanager:open', {path});
}"""


def open_lesson(page, lab, lesson: str) -> None:
    """Open the lesson alone and wait until its kernel is idle: the first by its address (?reset: no tab of an
    earlier session comes back), the next ones in the same JupyterLab (File > Open, after closing the last)."""
    if page.url.startswith(lab.url) and page.evaluate("() => !!window.jupyterapp"):
        page.evaluate(OPEN_IN_APP, lesson)
    else:
        page.goto(f"{lab.url}lab/tree/{lesson}?reset&token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell", timeout=60_000)
    wait_for_state(page, lambda s: s["idle"], timeout=60, what="kernel idle after opening the lesson")
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").first.inner_text()
    assert lesson in tab, f"the open notebook is {tab!r}, not {lesson}"


def run_all_cells(page, attempts: int = 3) -> None:
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


def finished(state: dict) -> bool:
    """Every code cell has run (or an error stopped the run), nothing is queued, and the kernel is idle."""
    done = state["numbered"] == len(state["prompts"]) or state["errors"]
    return state["running"] == 0 and state["idle"] and bool(done)


def run_all(page, lab) -> float:
    """Run every cell and check that each one ran and none shows an error; return the seconds it took."""
    started = time.monotonic()
    run_all_cells(page)
    remember_family(lab)  # the kernel now exists: teardown checks it exits with the server
    state = wait_for_state(page, finished, timeout=RUN_TIMEOUT, what="all cells executed")
    seconds = time.monotonic() - started
    print(f"\nall {len(state['prompts'])} code cells ran in the browser in {seconds:.1f} s")
    assert not state["errors"], "a cell shows an error:\n\n" + "\n\n".join(state["errors"])
    assert state["numbered"] == len(state["prompts"]), f"some cells did not run: {state['prompts']}"
    return seconds


def widget_cell(page, lab, lesson: str, cell_id: str):
    """The notebook cell `cell_id` (found by its place in the notebook, and checked by its first line)."""
    cells = json.loads((lab.root / lesson).read_text(encoding="utf-8"))["cells"]
    ids = [c.get("id") for c in cells]
    assert cell_id in ids, f"{lesson} has no cell {cell_id}: update WIDGET_CELLS in tests/browser_helpers.py"
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(ids.index(cell_id))
    first_line = "".join(cells[ids.index(cell_id)]["source"]).splitlines()[0].strip()
    assert first_line[:30] in cell.locator(".jp-InputArea").inner_text(), \
        f"cell {cell_id} of {lesson} in the page does not start with {first_line!r}"
    return cell


def check_widget_rendered(page, cell):
    """The widget is real (jupyterlab_widgets loaded), not its text repr; returns its first control."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    control = cell.locator(f"{SLIDER}, {SELECT}").first
    try:  # widgets render asynchronously, after the kernel is already idle
        control.wait_for(state="visible", timeout=30_000)
    except PlaywrightTimeout:
        pass  # the asserts below say why
    outputs = cell.locator(".jp-OutputArea-output").all_inner_texts()
    stuck = [t[:200] for t in outputs if any(s in t for s in NOT_RENDERED)]
    assert not stuck, f"a widget did not render: {stuck}; browser console errors: {page.console_errors}"
    assert control.count() == 1, f"no rendered slider or list; browser console errors: {page.console_errors}"
    return control


def move_control(page, cell, control) -> tuple[str, str, str]:
    """Move a slider to its end (or start, if already there) or pick another entry of a list; wait for the
    widget's figure to change. Returns what was moved, and its reading before and after."""
    control.scroll_into_view_if_needed()
    img = cell.locator(WIDGET_IMG).first
    img.wait_for(state="visible")
    before_src = img.get_attribute("src")
    if control.evaluate("e => e.tagName") == "SELECT":
        options = control.locator("option").all_inner_texts()
        before = control.evaluate("e => e.options[e.selectedIndex].text")
        control.select_option(label=next(o for o in reversed(options) if o != before))
        what, after_value = "list", lambda: control.evaluate("e => e.options[e.selectedIndex].text")
    else:
        readout = control.locator(".widget-readout").first
        before = readout.inner_text().strip()
        handle = control.locator(".noUi-handle")
        at_end = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
        handle.focus()
        page.keyboard.press("Home" if at_end else "End")  # continuous_update=False: the key press commits it
        what, after_value = "slider", lambda: readout.inner_text().strip()
    page.wait_for_function("([cell, old]) => { const i = cell.querySelector('.widget-output img');"
                           " return i && i.src && i.src !== old; }",
                           arg=[cell.element_handle(), before_src], timeout=30_000)
    after = after_value()
    assert after != before, f"the figure changed but the {what} still reads {before!r}"
    wait_for_state(page, lambda s: s["idle"], timeout=30, what="kernel idle after the redraw")
    assert not notebook_state(page)["errors"], f"moving the {what} produced an error"
    return what, before, after


def save_and_keep(page, lab, lesson: str, seconds: float) -> None:
    """Save the notebook (Ctrl+S, widget state included) and, in the full test run, keep it as the site's
    execution of the lesson."""
    path = lab.root / lesson
    before = path.stat().st_mtime_ns
    page.keyboard.press("Escape")  # command mode: the shortcut goes to the notebook, not to a widget
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.stat().st_mtime_ns != before, "saving the notebook did not write it"
    if os.environ.get(SITE_CACHE_ENV) != "1":
        return
    import nbformat

    time.sleep(0.5)  # the save's last bytes
    notebook = nbformat.read(str(path), as_version=4)
    unrun = [k for k, c in enumerate(notebook.cells) if c.cell_type == "code" and not c.execution_count]
    assert not unrun, f"the saved notebook has cells that did not run: {unrun}"
    executed = load_executed()
    run_mode = executed.mode()
    executed.store(notebook, lesson, executed.keys(run_mode)[lesson], run_mode, seconds,
                   by="JupyterLab in Chromium (tests/lesson_browser.py)")
