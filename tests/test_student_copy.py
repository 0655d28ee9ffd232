"""`python -m cfcourse student-copy`: lessons without solutions, whose checks stop until each exercise is right."""
from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from cfcourse import student
from cfcourse.cli import main
from cfcourse.exercises import Exercise, ExerciseNotDone, Verdict, check

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
STUB = 'raise NotImplementedError("Exercise'
SOLUTION_BLOCK = "<details><summary>Show solution"
CHECK_CALL = re.compile(r"(\w+) = check\.(\w+)\((\w+)\)")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def text_of(path: Path) -> str:
    """Every cell's source in a notebook, one after another."""
    return "\n".join("".join(c["source"]) for c in load(path)["cells"])


def is_solution(cell: dict) -> bool:
    return "solution" in cell.get("metadata", {}).get("tags", [])


def distinctive(lines: list[str]) -> list[str]:
    """Code lines without comments, long enough to give a solution away (not `T = len(R)` or a def line)."""
    code = [line.split("#")[0].strip() for line in lines]
    return [c for c in code if len(c) >= 12 and not c.startswith("def ")]


def reference_body(exercise: Exercise) -> list[str]:
    """The distinctive body lines of an exercise's reference function (no def line, docstring or blanks)."""
    source = textwrap.dedent(inspect.getsource(exercise.reference))
    func = ast.parse(source).body[0]
    body = func.body[1:] if ast.get_docstring(func) else func.body
    return distinctive(source.splitlines()[body[0].lineno - 1:func.end_lineno])


def solution_blocks(path: Path) -> list[str]:
    """The distinctive code lines shown in a lesson's solution cells."""
    cells = [c for c in load(path)["cells"] if is_solution(c)]
    blocks = [b for c in cells for b in re.findall(r"```python\n(.*?)```", "".join(c["source"]), re.S)]
    return distinctive([line for block in blocks for line in block.splitlines()])


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """One student copy of the repository's lessons, made through the CLI."""
    out = tmp_path_factory.mktemp("student") / "copy"
    assert main(["student-copy", str(out)]) == 0
    return out


@pytest.fixture
def lessons_copy(tmp_path) -> Path:
    """A scratch copy of lessons/, so that refused runs can never touch the real one."""
    folder = tmp_path / "lessons"
    shutil.copytree(ROOT / "lessons", folder)
    return folder


# --- what a student copy holds ------------------------------------------------------------------

def test_every_lesson_is_written_and_reported(tmp_path, capsys):
    out = tmp_path / "class"
    assert main(["student-copy", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in LESSONS]
    for path in LESSONS:
        assert str(out / path.name) in printed
    assert "strict checks: accuracy" in printed and f"wrote {len(LESSONS)} student notebook" in printed


def test_no_solution_cell_or_block_is_left(student_dir):
    for path in sorted(student_dir.glob("*.ipynb")):
        cells = load(path)["cells"]
        assert not [c for c in cells if is_solution(c)], path.name
        assert SOLUTION_BLOCK not in text_of(path), path.name


def open_text(path: Path) -> str:
    """The cells of a lesson that students may see anyway: all but its solution cells."""
    return "\n".join("".join(c["source"]) for c in load(path)["cells"] if not is_solution(c))


def test_no_reference_solution_code_is_left(student_dir):
    copies = {path.name: text_of(path) for path in sorted(student_dir.glob("*.ipynb"))}
    exercises = list(check)
    assert exercises and len(copies) == len(LESSONS)
    seen_in_lessons = []  # proof that the search finds solution code where it is: in the teacher's lessons
    for exercise in exercises:
        lines = reference_body(exercise)
        assert lines, f"{exercise.name}: its reference has no distinctive line to look for"
        seen_in_lessons += [line for line in lines if any(line in text_of(p) for p in LESSONS)]
        for path in LESSONS:
            # a line the lesson shows outside its solutions (`logits = model(x)` in lesson 00) gives nothing away
            telling = [line for line in lines if line not in open_text(path)]
            leaked = [line for line in telling if line in copies[path.name]]
            assert not leaked, f"{path.name} holds the reference solution of {exercise.name}: {leaked}"
    assert seen_in_lessons, "no reference line appears in the lessons either: the search would miss a leak"
    for path in LESSONS:
        shown = solution_blocks(path)
        assert shown and all(line in text_of(path) for line in shown)
        leaked = [line for line in shown if line in copies[path.name]]
        assert not leaked, f"{path.name}: the student copy still shows solution code {leaked}"


def test_stubs_and_checks_are_kept_and_checks_made_strict(student_dir):
    for path in LESSONS:
        lesson, copy = load(path), load(student_dir / path.name)
        assert copy["metadata"]["kernelspec"] == lesson["metadata"]["kernelspec"]
        kept = [c for c in lesson["cells"] if not is_solution(c)]
        cells = [c for c in copy["cells"] if c.get("id") != student.NOTE_ID]
        assert len(cells) == len(kept)
        n_checks = 0
        for old, new in zip(kept, cells):
            old_text, new_text = "".join(old["source"]), "".join(new["source"])
            n_checks += len(CHECK_CALL.findall(old_text))
            assert new_text == CHECK_CALL.sub(r"\1 = check.\2(\3, strict=True)", old_text)
            if new["cell_type"] == "code":
                assert new["outputs"] == [] and new["execution_count"] is None
        copy_code = text_of(student_dir / path.name)
        assert copy_code.count(STUB) == text_of(path).count(STUB) >= 1
        assert n_checks >= 1 and copy_code.count("strict=True)") == n_checks
        assert copy["cells"][0] == lesson["cells"][0]  # still opens with the objectives
        assert copy["cells"][1]["id"] == student.NOTE_ID and "no solutions" in "".join(copy["cells"][1]["source"])
        nbformat.validate(nbformat.reads(json.dumps(copy), as_version=4))


# --- a student copy, run -----------------------------------------------------------------------

def run_notebook(nb: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    """Execute `nb` top to bottom in a fresh kernel, going on after errors (as nbval would report them)."""
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def errors(nb: nbformat.NotebookNode) -> list[tuple[int, dict]]:
    return [(k, o) for k, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


def printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def fill_in_solutions(nb: nbformat.NotebookNode) -> list[str]:
    """Replace each exercise stub in `nb` by its reference solution's source; return the exercises filled in."""
    filled = []
    for cell in nb.cells:
        if cell.cell_type != "code" or STUB not in cell.source:
            continue
        lines = cell.source.splitlines()
        stubs = [node for node in ast.parse(cell.source).body
                 if isinstance(node, ast.FunctionDef) and STUB in ast.get_source_segment(cell.source, node)]
        for node in reversed(stubs):
            reference = textwrap.dedent(inspect.getsource(getattr(check, node.name).reference))
            lines[node.lineno - 1:node.end_lineno] = reference.splitlines()
            filled.append(node.name)
        cell.source = "\n".join(lines)
    return filled


@pytest.fixture
def lesson_env(monkeypatch):
    """Fast mode, no progress bars, no windows: the settings the lessons are tested with."""
    monkeypatch.setenv("CFCOURSE_FAST", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_student_copy_stops_only_at_unfinished_exercises(student_dir, lesson_env):
    nb = run_notebook(nbformat.read(student_dir / "00_welcome.ipynb", as_version=4), student_dir)
    found = errors(nb)
    assert found, "the unfinished exercise did not stop the student copy"
    for k, error in found:
        assert error.ename in ("ExerciseNotDone", "NotImplementedError"), f"cell {k}: {error.ename}: {error.evalue}"
        assert "Exercise" in error.ename + error.evalue, f"cell {k}: {error.ename}: {error.evalue}"
    k, check_error = found[0]
    assert "check.accuracy(accuracy, strict=True)" in nb.cells[k].source
    assert check_error.ename == "ExerciseNotDone" and "Exercise accuracy is not done yet" in check_error.evalue
    assert check.accuracy.hint in printed(nb.cells[k]) and check.accuracy.hint in check_error.evalue
    assert "reference solution" not in printed(nb.cells[k])  # it does not go on with the reference


def test_student_copy_with_solutions_filled_in_runs_clean(student_dir, lesson_env):
    nb = nbformat.read(student_dir / "00_welcome.ipynb", as_version=4)
    assert fill_in_solutions(nb) == ["accuracy"]
    nb = run_notebook(nb, student_dir)
    assert not errors(nb), [f"cell {k}: {e.ename}: {e.evalue}" for k, e in errors(nb)]
    check_cell = next(c for c in nb.cells if "check.accuracy(" in c.source)
    assert "Correct: accuracy passes every check." in printed(check_cell)


# --- strict checks ------------------------------------------------------------------------------

def square(x):
    return x * x


SQUARE = Exercise("square", square, hint="multiply x by itself", cases=lambda: [(2,), (-3,)])


def test_strict_check_keeps_a_right_answer(capsys):
    mine = lambda x: x ** 2  # noqa: E731
    assert SQUARE(mine, strict=True) is mine
    assert "Correct" in capsys.readouterr().out


def test_strict_check_stops_at_a_stub_with_the_hint(capsys):
    def stub(x):
        raise NotImplementedError("Exercise: write square")
    with pytest.raises(ExerciseNotDone) as info:
        SQUARE(stub, strict=True)
    message = str(info.value)
    assert isinstance(info.value, NotImplementedError)
    assert "Exercise square is not done yet" in message and "Hint: multiply x by itself" in message
    assert "run this check again" in message
    assert info.value.exercise == "square" and info.value.verdict.not_done
    out = capsys.readouterr().out
    assert "multiply x by itself" in out and "reference solution" not in out


def test_strict_check_stops_at_a_wrong_answer_and_says_what_is_wrong():
    with pytest.raises(ExerciseNotDone, match=r"(?s)square is not right yet: .*expected 4.*Hint: multiply"):
        SQUARE(lambda x: x + x + 1, strict=True)


def test_custom_verifier_verdicts_are_strict_too():
    ex = Exercise("custom", square, hint="h", verify_fn=lambda fn: Verdict(False, "two squared is 4"))
    with pytest.raises(ExerciseNotDone, match="two squared is 4"):
        ex(square, strict=True)


def test_without_strict_the_lesson_goes_on_with_the_reference():
    assert SQUARE(lambda x: x + x + 1) is square


@pytest.mark.parametrize("source, want", [
    ("a = check.accuracy(a)", "a = check.accuracy(a, strict=True)"),
    ("a = check.accuracy(a,)", "a = check.accuracy(a, strict=True)"),
    ("a = check.accuracy(\n    a  # mine\n)", "a = check.accuracy(\n    a  # mine\n, strict=True)"),
    ("%matplotlib inline\nt = 'é'; a = check.accuracy(a)",
     "%matplotlib inline\nt = 'é'; a = check.accuracy(a, strict=True)"),
    ("a = check.accuracy(a, strict=True)", "a = check.accuracy(a, strict=True)"),
    ("# check.accuracy(a) in a comment\nprint(1)", "# check.accuracy(a) in a comment\nprint(1)"),
])
def test_checks_are_rewritten_to_strict(source, want):
    assert student.make_checks_strict(source, {"accuracy"})[0] == want


@pytest.mark.parametrize("source, message", [
    ("%time a = check.accuracy(a)", "inside an IPython magic"),
    ("a = check.no_such(a)", "not a registered exercise"),
    ("a = check.accuracy(a) +", "not valid Python"),
])
def test_checks_that_cannot_be_made_strict_are_refused(source, message):
    with pytest.raises(student.StudentCopyError, match=message):
        student.make_checks_strict(source, {"accuracy"})


# --- bad input ----------------------------------------------------------------------------------

def refused(capsys, *argv) -> str:
    """Run the CLI expecting a refusal; return its error message."""
    assert main(["student-copy", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_refuses_to_write_into_the_lessons(capsys, lessons_copy):
    before = sorted(p.name for p in lessons_copy.iterdir())
    for out in (lessons_copy, lessons_copy / "students", lessons_copy / "." / "x" / ".."):
        err = refused(capsys, str(out), "--lessons", str(lessons_copy))
        assert "lessons folder or inside it" in err
    assert sorted(p.name for p in lessons_copy.iterdir()) == before


def test_refuses_a_non_empty_out_dir_without_force(capsys, tmp_path, lessons_copy):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = refused(capsys, str(out), "--lessons", str(lessons_copy))
    assert "not empty (notes.txt)" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["student-copy", str(out), "--lessons", str(lessons_copy), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / LESSONS[0].name).is_file()


def test_refuses_an_out_dir_that_is_a_file(capsys, tmp_path, lessons_copy):
    (tmp_path / "file").write_text("")
    assert "is a file" in refused(capsys, str(tmp_path / "file"), "--lessons", str(lessons_copy))


def test_refuses_a_lessons_folder_without_notebooks(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = refused(capsys, str(tmp_path / "out"), "--lessons", str(empty))
    assert "holds no notebooks" in err
    assert not (tmp_path / "out").exists()


def test_without_a_lessons_folder_it_says_to_pass_lessons(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(student, "default_lessons_dir", lambda: tmp_path / "site-packages" / "lessons")
    err = refused(capsys, str(tmp_path / "out"))
    assert "no lessons folder" in err and "pass --lessons DIR" in err


def test_a_broken_lesson_writes_nothing(capsys, tmp_path, lessons_copy):
    bad = lessons_copy / "99_bad.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = check.no_such_exercise(x)")])
    nbformat.write(nb, bad)
    err = refused(capsys, str(tmp_path / "out"), "--lessons", str(lessons_copy))
    assert "99_bad.ipynb, cell 0" in err and "not a registered exercise" in err
    assert not (tmp_path / "out").exists()


def test_the_command_line_exits_non_zero_with_the_reason(tmp_path, lessons_copy, subprocess_env):
    result = subprocess.run([sys.executable, "-m", "cfcourse", "student-copy", str(lessons_copy),
                             "--lessons", str(lessons_copy)],
                            capture_output=True, text=True, env=subprocess_env, cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and "lessons folder or inside it" in result.stderr


def test_an_untagged_solution_is_dropped_and_reported(capsys, tmp_path, lessons_copy):
    path = lessons_copy / LESSONS[0].name
    nb = nbformat.read(path, as_version=4)
    k = next(k for k, c in enumerate(nb.cells) if "solution" in c.metadata.get("tags", []))
    nb.cells[k].metadata.pop("tags")
    nbformat.write(nb, path)
    assert main(["student-copy", str(tmp_path / "out"), "--lessons", str(lessons_copy)]) == 0
    assert f"removed cell(s) [{k}], which show a solution without the 'solution' tag" in capsys.readouterr().out
    assert SOLUTION_BLOCK not in text_of(tmp_path / "out" / path.name)
