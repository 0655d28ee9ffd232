"""The website's parts that need no browser: the execution cache's keys, the links to repository files, and how
the site template draws widgets and progress bars (book/; tests/test_site.py checks the built site)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from cfcourse import links

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "book"))
executed = _load("executed", ROOT / "book" / "executed.py")
build = _load("cfcourse_book_build", ROOT / "book" / "build.py")
render = _load("cfcourse_book_render", ROOT / "book" / "theme" / "render.py")


@pytest.fixture
def course_copy(tmp_path) -> Path:
    """The lessons and the package's source, copied (what the cache keys read)."""
    shutil.copytree(ROOT / "lessons", tmp_path / "lessons", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "cfcourse", tmp_path / "cfcourse", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _edit(path: Path, change) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    change(notebook)
    path.write_text(json.dumps(notebook), encoding="utf-8")


def test_a_changed_lesson_changes_its_key_and_only_its_own(course_copy):
    before = executed.keys("fast", course_copy)
    assert before != executed.keys("full", course_copy)  # each mode has its own executions
    lesson = course_copy / "lessons" / "03_three_scenarios.ipynb"
    _edit(lesson, lambda nb: nb["cells"][-1]["source"].append("\nOne more sentence."))
    after = executed.keys("fast", course_copy)
    assert [n for n in before if before[n] != after[n]] == ["03_three_scenarios.ipynb"]


def test_outputs_do_not_change_a_key_but_lesson_08_changes_09_and_10(course_copy):
    before = executed.keys("fast", course_copy)
    first_code = lambda nb: next(c for c in nb["cells"] if c["cell_type"] == "code")  # noqa: E731
    _edit(course_copy / "lessons" / "02_permuted_mnist.ipynb",
          lambda nb: first_code(nb).update(outputs=[{"output_type": "stream", "name": "stdout", "text": "x"}]))
    assert executed.keys("fast", course_copy) == before
    _edit(course_copy / "lessons" / "08_language_models_forget.ipynb",
          lambda nb: first_code(nb)["source"].append("\n# a comment"))
    after = executed.keys("fast", course_copy)
    assert sorted(n[:2] for n in before if before[n] != after[n]) == ["08", "09", "10"]


def test_a_package_change_changes_every_key(course_copy):
    before = executed.keys("fast", course_copy)
    (course_copy / "cfcourse" / "metrics.py").write_text("# changed\n", encoding="utf-8")
    after = executed.keys("fast", course_copy)
    assert all(before[n] != after[n] for n in before)


def test_links_to_files_that_are_not_pages_point_to_the_repository():
    where = links.address()
    text = "[a](lessons/02_permuted_mnist.ipynb) [b](CITATION.cff) [c](#start) [d](https://x.org) [e](docs/hub)"
    out = build.rewrite_links(text, "README.md", {"README.md", "lessons/02_permuted_mnist.ipynb"})
    assert "[a](lessons/02_permuted_mnist.ipynb)" in out and "[c](#start)" in out and "[d](https://x.org)" in out
    assert f"[b]({where.repository}/blob/{where.branch}/CITATION.cff)" in out
    assert f"[e]({where.repository}/tree/{where.branch}/docs/hub)" in out
    guide = build.rewrite_links("[cfg](hub/config.yaml) [r](../README.md)", "docs/teaching.md", {"README.md"})
    assert f"({where.repository}/blob/{where.branch}/docs/hub/config.yaml)" in guide and "(../README.md)" in guide


class _Site:
    """What a Page needs from the site, without a content server."""
    index = "index"
    pages = [{"slug": "index"}]
    links = links
    where = links.address()
    mode = "fast"


def _page(widgets: dict) -> "render.Page":
    data = {"kind": "Notebook", "location": "/lessons/01_forgetting_in_2d.ipynb", "widgets": widgets, "mdast": {}}
    return render.Page(_Site(), "forgetting-in-2d", data)


def _model(name: str, **state) -> dict:
    return {"model_name": name, "state": state}


def _widget_output(model_id: str, text: str) -> dict:
    data = {render.WIDGET: {"content": json.dumps({"model_id": model_id})}, "text/plain": {"content": text}}
    return {"type": "output", "jupyter_data": {"output_type": "display_data", "data": data}}


def test_a_widget_shows_its_last_figure_under_a_note_that_names_it():
    png = "iVBORw0KGgo="
    state = {"box": _model("VBoxModel", children=["IPY_MODEL_slider", "IPY_MODEL_out"]),
             "slider": _model("IntSliderModel", description="snapshot", value=3),
             "out": _model("OutputModel", outputs=[{"output_type": "display_data", "data": {"image/png": png}}])}
    page = _page({"application/vnd.jupyter.widget-state+json": {"state": state}})
    html = page.render(_widget_output("box", "VBox(children=(IntSlider(value=3, description='snapshot'),))"))
    assert "Live widget: a slider (snapshot)." in html and "last state" in html
    assert f'src="data:image/png;base64,{png}"' in html
    assert f'href="{links.binder_url("01_forgetting_in_2d.ipynb")}"' in html


def test_a_widget_without_its_state_is_named_from_its_text():
    html = _page({}).render(_widget_output("gone", "VBox(children=(IntSlider(value=310, description='snapshot',"))
    assert "Live widget: a slider (snapshot)." in html and "<img" not in html


def test_progress_bars_are_left_out():
    state = {"bar": _model("HBoxModel", children=["IPY_MODEL_label", "IPY_MODEL_p"]),
             "label": _model("HTMLModel", value="fine-tuning"), "p": _model("FloatProgressModel", value=1.0)}
    page = _page({"application/vnd.jupyter.widget-state+json": {"state": state}})
    assert page.render(_widget_output("bar", "fine-tuning: 100%|##########| 16/16")) == ""
    assert _page({}).render(_widget_output("x", "checking model.safetensors:   0%|          | 0.00/108M")) == ""
