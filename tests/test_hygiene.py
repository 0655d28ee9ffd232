"""Every lesson is committed clean, numbered without gaps, listed in the README, and opens with objectives and time."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_lessons_exist_and_are_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name) for p in LESSONS), [p.name for p in LESSONS]
    assert numbers == list(range(len(LESSONS))), f"lesson numbers must run 00, 01, ... without gaps: {numbers}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    dirty = [i for i, c in enumerate(load(path)["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_same_kernel_spec(path):
    assert load(path)["metadata"].get("kernelspec") == KERNELSPEC


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_listed_in_readme(path):
    assert f"lessons/{path.name}" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_opens_with_objectives_and_time(path):
    first = load(path)["cells"][0]
    text = "".join(first["source"]).lower()
    assert first["cell_type"] == "markdown"
    assert "objective" in text or "you will" in text, f"{path.name}: first cell states no learning objectives"
    assert re.search(r"\d+\s*(min|minutes)", text), f"{path.name}: first cell states no time estimate"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_has_exercise_with_check_and_solution(path):
    cells = load(path)["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert 'NotImplementedError("Exercise' in code, f"{path.name}: no exercise stub"
    assert "check." in code, f"{path.name}: no exercise check"
    assert any("solution" in c.get("metadata", {}).get("tags", []) for c in cells), f"{path.name}: no solution cell"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_ends_with_a_summary_and_questions(path):
    text = "\n".join("".join(c["source"]) for c in load(path)["cells"] if c["cell_type"] == "markdown")
    assert re.search(r"^#+\s*Summary", text, re.M), f"{path.name}: no Summary section"
    assert re.search(r"^#+\s*Check yourself", text, re.M | re.I), f"{path.name}: no 'Check yourself' questions"


TIERED_HINTS = LESSONS
HINT = re.compile(r"<details><summary>Hint (\d+): [^<]+</summary>")


def exercises_with_hints(cells: list[dict]) -> list[tuple[str, list[str], str]]:
    """For each exercise stub: its cell id, the hint cells between it and its solution, and the solution's text."""
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and 'NotImplementedError("Exercise' in "".join(cell["source"]):
            later = cells[i + 1:]
            k = next(j for j, c in enumerate(later) if "solution" in c.get("metadata", {}).get("tags", []))
            hints = ["".join(c["source"]) for c in later[:k] if c["cell_type"] == "markdown"
                     and HINT.match("".join(c["source"]))]
            found.append((cell["id"], hints, "".join(later[k]["source"])))
    return found


@pytest.mark.parametrize("path", TIERED_HINTS, ids=lambda p: p.name)
def test_every_exercise_has_tiered_hints_that_are_not_the_solution(path):
    for cell_id, hints, solution in exercises_with_hints(load(path)["cells"]):
        numbers = [int(HINT.match(h).group(1)) for h in hints]
        assert len(hints) >= 2 and numbers == list(range(1, len(hints) + 1)), \
            f"{path.name} {cell_id}: wants collapsed hints 'Hint 1', 'Hint 2' (and 'Hint 3') in order, got {numbers}"
        assert all(h.rstrip().endswith("</details>") for h in hints), f"{path.name} {cell_id}: a hint is not collapsed"
        code = re.search(r"```python\n(.*?)```", solution, re.S)
        lines = [ln.strip() for ln in code.group(1).splitlines() if len(ln.strip()) > 12] if code else []
        for line in lines:
            assert not any(line in h for h in hints), f"{path.name} {cell_id}: a hint gives away the solution: {line}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_predicts_answers_and_cites(path):
    cells = load(path)["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"^predict(ed|ion)\w* = None", code, re.M), \
        f"{path.name}: no prediction cell (a variable predicted_<what> = None for the learner to fill in)"
    assert "checks.prediction(" in code, f"{path.name}: no check compares a prediction with the learner's run"
    assert re.search(r"<summary>[^<]*[Aa]nswer", markdown), f"{path.name}: no collapsed model answers"
    assert re.search(r"^## References", markdown, re.M), f"{path.name}: no References section"
    last = [c for c in cells if c["cell_type"] == "markdown"][-1]
    assert "".join(last["source"]).startswith("## References"), f"{path.name}: the References section is not last"
