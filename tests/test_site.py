"""The course website (book/, `bash scripts/site.sh`), built in fast mode and opened in a real browser: every lesson
page loads, shows at least one figure from its execution and no error output, widgets stand as a note that says
which widget needs a kernel, the launch buttons come from the one repository address, and the previous/next links
walk through the lessons in order. Screenshots of two pages are saved (to $CFCOURSE_SCREENSHOT_DIR, else tmp_path).

The site is built from the execution cache (book/executed.py). In the full test run (`bash scripts/test.sh`) the
lessons were executed minutes before by nbval and the widget test, and this test runs after them with
CFCOURSE_SITE_NO_EXECUTE=1: it executes no lesson. Run alone, it executes the lessons the cache lacks.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from browser_helpers import WIDGET_CELLS, chromium_page, sync_playwright_or_skip
from cfcourse import links

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    """The site, built into a temporary folder in fast mode by book/build.py; returns its folder."""
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, str(ROOT / "book" / "build.py"), "--out", str(out / "html"), "--stage", str(out / "src")]
    if os.environ.get("CFCOURSE_SITE_NO_EXECUTE") == "1":
        cmd.append("--no-execute")
    env = {**os.environ, "CFCOURSE_FAST": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"book/build.py failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    print(f"\nsite built in {time.monotonic() - started:.1f} s:\n{proc.stdout[-600:]}")
    return out / "html"


@pytest.fixture(scope="module")
def site_pages(built_site) -> dict[str, Path]:
    """Each lesson's page in the built site, by notebook name (read from the page's data-lesson attribute)."""
    pages = {}
    for path in built_site.glob("*/index.html"):
        found = re.search(r'<body [^>]*data-lesson="([^"]+)"', path.read_text(encoding="utf-8"))
        if found:
            pages[found.group(1)] = path
    return pages


@pytest.fixture(scope="module")
def site_url(built_site):
    """The built site, served on a free localhost port for the browser."""
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    yield from chromium_page(sync_playwright_or_skip(), tmp_path_factory.mktemp("chromium"),
                             viewport={"width": 1280, "height": 1000})


def test_every_lesson_has_a_page_with_a_launch_button_from_the_one_address(site_pages):
    repository = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"]
    assert sorted(site_pages) == LESSONS, f"lesson pages: {sorted(site_pages)}, lessons: {LESSONS}"
    for lesson, path in site_pages.items():
        text = path.read_text(encoding="utf-8")
        button = re.search(r'<a class="cf-binder" href="([^"]+)"', text)
        assert button, f"{path} has no launch button"
        href = button.group(1).replace("&amp;", "&")
        assert href == links.binder_url(lesson), f"{lesson}: the launch button opens {href}"
        assert repository.removeprefix("https://github.com/") in href  # the address in pyproject.toml


def test_the_site_has_the_readme_the_teaching_guide_and_a_page_per_command(built_site):
    from cfcourse import cli

    index = (built_site / "index.html").read_text(encoding="utf-8")
    assert "two commands" in index.lower() or "bash scripts/lab.sh" in index, "the landing page is not the README"
    pages = {p.parent.name: p.read_text(encoding="utf-8") for p in built_site.glob("*/index.html")}
    assert any("Teaching with cfcourse" in t for t in pages.values()), "no page holds the teaching guide"
    parser = cli.build_parser(prog="python -m cfcourse")
    commands = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0].choices
    for name in commands:
        assert any(f"python -m cfcourse {name} --help" in t for t in pages.values()), f"no page for `{name}`"


def test_every_lesson_page_shows_figures_and_no_errors_in_a_browser(site_url, site_pages, page, tmp_path):
    """Walk the lessons with the pages' own next links, from lesson 00 to the last, checking each page."""
    failed = []
    page.on("requestfailed", lambda r: r.url.startswith(site_url) and failed.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: r.url.startswith(site_url) and r.status >= 400 and failed.append(
        f"{r.url}: HTTP {r.status}"))
    page.goto(site_url, wait_until="load")
    assert page.locator(".cf-nav").count() == 1, "the landing page has no contents bar"
    shots = Path(os.environ.get("CFCOURSE_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "site_home.png"))
    page.locator(".cf-nav a", has_text=re.compile(r"^Lesson 00")).first.click()
    seen = []
    for k, lesson in enumerate(LESSONS):
        page.wait_for_load_state("load")
        shown = page.locator("body").get_attribute("data-lesson")
        assert shown == lesson, f"after {seen[-1] if seen else 'the contents bar'} the page shows {shown}, not {lesson}"
        _check_lesson_page(page, lesson)
        if lesson == "02_permuted_mnist.ipynb":
            page.locator(".cf-figure img").nth(1).scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "site_lesson02.png"))
        seen.append(lesson)
        if k + 1 < len(LESSONS):
            page.locator("a[rel=next]").click()
    assert not failed, "the site failed to serve: " + "; ".join(failed)
    print(f"\n{len(seen)} lesson pages checked; screenshots: {shots / 'site_home.png'}, {shots / 'site_lesson02.png'}")


def _check_lesson_page(page, lesson: str) -> None:
    figures = page.evaluate("""() => [...document.querySelectorAll('.cf-figure img')]
        .map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))""")
    if not all(f["ok"] for f in figures):
        page.wait_for_function("() => [...document.querySelectorAll('.cf-figure img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=15_000)
    assert figures, f"{lesson}: no figure on its page"
    errors = page.locator(".cf-error").all_inner_texts()
    stderr = [t for t in page.locator(".cf-stderr").all_inner_texts() if re.search(r"Traceback|Error\b", t)]
    assert not errors and not stderr, f"{lesson}: error output on its page: {(errors + stderr)[0][:1000]}"
    notes = page.locator(".cf-widget-note")
    assert notes.count() == len(WIDGET_CELLS.get(lesson, [])), f"{lesson}: {notes.count()} widget notes on its page"
    for k in range(notes.count()):
        note = notes.nth(k).inner_text()
        assert re.search(r"Live widget: an? (slider|select) \(", note), f"{lesson}: the note does not say which " \
            f"widget it is: {note!r}"
        assert notes.nth(k).locator("a").get_attribute("href") == links.binder_url(lesson)
    text = page.locator("main").inner_text()
    assert "IntSlider(" not in text and "VBox(children" not in text, f"{lesson}: a widget shows as its text repr"
