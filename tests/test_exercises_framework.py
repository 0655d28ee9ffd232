"""The exercise machinery: answers compared with references, verdicts printed, stuck learners carried on."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cfcourse.exercises import Exercise, Verdict, check, close


def square(x):
    return x * x


EX = Exercise("square", square, hint="multiply x by itself", cases=lambda: [(torch.tensor([1.0, -2.0]),), (3,)])


def test_close_compares_numbers_arrays_and_tensors():
    assert close(1.0, 1.0 + 1e-7)
    assert not close(1.0, 1.1)
    assert close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0]))
    assert not close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0]))
    assert close("a", "a") and not close("a", "b")
    assert not close([1, 2], "12")


def test_right_answer_is_kept(capsys):
    mine = lambda x: x ** 2  # noqa: E731
    assert EX(mine) is mine
    assert "Correct" in capsys.readouterr().out


def test_wrong_answer_gets_hint_and_reference(capsys):
    got = EX(lambda x: x + x)
    out = capsys.readouterr().out
    assert got is square
    assert "multiply x by itself" in out and "expected" in out and "reference solution" in out


def test_stub_is_reported_as_not_done():
    def stub(x):
        raise NotImplementedError("Exercise: write square")
    v = EX.verify(stub)
    assert not v.ok and v.not_done and "not done yet" in v.message


def test_crashing_answer_is_a_verdict_not_a_crash():
    v = EX.verify(lambda x: x.nonexistent)
    assert not v.ok and "AttributeError" in v.message


def test_custom_verifier_is_used():
    ex = Exercise("custom", square, hint="h", verify_fn=lambda fn: Verdict(fn(2) == 4, "two squared"))
    assert ex.verify(square).ok and not ex.verify(lambda x: 5).ok


@pytest.mark.parametrize("exercise", list(check), ids=lambda e: e.name)
def test_every_registered_exercise_passes_with_its_reference(exercise):
    assert exercise.verify(exercise.reference).ok


# Every registered exercise refusing its known wrong answers: tests/test_exercise_mutants.py.


@pytest.mark.parametrize("exercise", list(check), ids=lambda e: e.name)
def test_every_registered_exercise_keeps_a_right_answer(exercise, capsys):
    mine = lambda *args: exercise.reference(*args)  # noqa: E731 - a learner's own (right) function
    assert exercise(mine) is mine
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("exercise", list(check), ids=lambda e: e.name)
def test_every_registered_exercise_reports_a_stub_and_goes_on_with_the_reference(exercise, capsys):
    def stub(*args):
        raise NotImplementedError(f"Exercise: write {exercise.name}")
    verdict = exercise.verify(stub)
    assert not verdict.ok and verdict.not_done
    assert exercise(stub) is exercise.reference
    out = capsys.readouterr().out
    assert "not done yet" in out and "Hint:" in out and "reference solution" in out


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(AttributeError, match="known:"):
        check.no_such_exercise


# --- every lesson: each exercise has its stub, its check and a solution cell whose code passes that check -------

LESSONS = sorted((Path(__file__).resolve().parent.parent / "lessons").glob("*.ipynb"))


def _lesson_exercises(path: Path) -> tuple[str, list[str], dict[str, str]]:
    """The lesson's first code cell (its imports), the exercises it checks, and the solution code per name."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code_cells = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    names = re.findall(r"^(\w+) = check\.\1\(\1\)", "\n".join(code_cells), re.M)
    solutions = {}
    for c in cells:
        if "solution" in c.get("metadata", {}).get("tags", []):
            text = "".join(c["source"])
            assert ("<details><summary>Show solution</summary>" in text
                    or "<details><summary>Model answers</summary>" in text), f"{path.name}: a solution cell is not folded"
            for block in re.findall(r"```python\n(.*?)```", text, re.S):
                for name in re.findall(r"^def (\w+)\(", block, re.M):
                    solutions.setdefault(name, block)
    setup = "\n".join(line for line in code_cells[0].splitlines() if not line.startswith("%"))
    return setup, names, solutions


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_each_exercise_has_a_stub_a_check_and_a_solution_that_passes(path):
    setup, names, solutions = _lesson_exercises(path)
    assert names, f"{path.name}: no `name = check.name(name)` exercise"
    code = path.read_text(encoding="utf-8")
    for name in names:
        assert f"def {name}(" in code and 'raise NotImplementedError(\\"Exercise' in code, f"{path.name}: {name}"
        assert name in solutions, f"{path.name}: exercise {name} has no solution cell defining it"
        namespace: dict = {}
        exec(setup, namespace)  # noqa: S102 - our own notebook's imports
        for earlier in list(solutions)[: list(solutions).index(name) + 1]:  # a solution may use an earlier one
            exec(solutions[earlier], namespace)  # noqa: S102 - our own notebook's solutions, in lesson order
        verdict = getattr(check, name).verify(namespace[name])
        assert verdict.ok, f"{path.name}: the solution of {name} fails its own check: {verdict.message}"
