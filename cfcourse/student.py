"""Student copies of the lessons: solutions removed, outputs cleared, and checks that stop until an answer is right.

`python -m cfcourse student-copy OUT_DIR` writes every lesson into OUT_DIR. In a
copy, each `x = check.x(x)` becomes `x = check.x(x, strict=True)`, so a wrong or
unfinished exercise raises `ExerciseNotDone` with its hint instead of carrying
on with the reference solution (which is not in the copy).
"""
from __future__ import annotations

import ast
import copy
import io
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
SOLUTION_MARK = "<details><summary>Show solution"  # how a lesson shows a collapsed solution
NOTE_ID = "student-copy-note"
NOTE = (
    "**Student copy.** This copy of the lesson holds no solutions. The check after each exercise stops the "
    "notebook with `ExerciseNotDone` and a hint until your answer is right; it does not go on with a reference "
    "answer, and the *Show solution* cells the text mentions are not here. Write the exercise, run its cell, run "
    "the check again, and carry on."
)


class StudentCopyError(ValueError):
    """Bad input to `student-copy`; the message says what was wrong and what to do."""


@dataclass
class CopiedLesson:
    """What `student-copy` did to one lesson."""

    source: Path
    target: Path
    strict_checks: list[str] = field(default_factory=list)  # exercise names whose checks are now strict
    solutions_removed: int = 0
    untagged_solutions_removed: list[int] = field(default_factory=list)  # source cell numbers

    def summary(self) -> str:
        checks = ", ".join(self.strict_checks) or "none"
        text = f"{self.target}: {self.solutions_removed} solution cell(s) removed; strict checks: {checks}"
        if self.untagged_solutions_removed:
            text += (f"; also removed cell(s) {self.untagged_solutions_removed}, which show a solution without "
                     f"the {SOLUTION_TAG!r} tag (tag them in the lesson)")
        return text


def default_lessons_dir() -> Path:
    """The repository's lessons/ folder, next to the cfcourse package."""
    return Path(__file__).resolve().parent.parent / "lessons"


def exercise_names() -> set[str]:
    """Names of every registered exercise: the `check.NAME` calls a student copy makes strict."""
    from .exercises import check
    return {exercise.name for exercise in check}


# --- rewriting one code cell ----------------------------------------------------------------------

def _mask_magics(source: str) -> str:
    """IPython line magics and shell escapes (`%...`, `!...`) turned into comments, keeping every position."""
    lines = source.splitlines(keepends=True)
    for k, line in enumerate(lines):
        body = line.lstrip()
        if body.startswith(("%", "!")):
            indent = len(line) - len(body)
            lines[k] = line[:indent] + "#" + line[indent + 1:]
    return "".join(lines)


def _check_calls(tree: ast.AST, names: set[str], where: str) -> list[ast.Call]:
    """Every `check.NAME(...)` call in `tree`; an unknown NAME is an error."""
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "check"):
            if node.func.attr not in names:
                raise StudentCopyError(f"{where}: check.{node.func.attr}(...) is not a registered exercise "
                                       f"(known: {', '.join(sorted(names))}); fix the lesson")
            calls.append(node)
    return calls


def _is_strict(call: ast.Call) -> bool:
    return any(k.arg == "strict" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def _insertion(source: str, call: ast.Call) -> tuple[int, int, str]:
    """Where to add `strict=True` in `call` (line, column in characters) and the text to add there."""
    line = source.splitlines(keepends=True)[call.end_lineno - 1]
    close_col = len(line.encode("utf-8")[:call.end_col_offset].decode("utf-8")) - 1  # the closing parenthesis
    previous = None  # the last real token before the closing parenthesis
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.start == (call.end_lineno, close_col):
            break
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            previous = tok
    text = {"(": "strict=True", ",": " strict=True"}.get(previous.string if previous else "", ", strict=True")
    return call.end_lineno, close_col, text


def make_checks_strict(source: str, names: set[str], where: str = "cell") -> tuple[str, list[str]]:
    """`source` with every `check.NAME(...)` call given `strict=True`, and the names of those checks."""
    masked = _mask_magics(source)
    for masked_line, line in zip(masked.splitlines(), source.splitlines()):
        if masked_line != line and any(f"check.{name}" in line for name in names):
            raise StudentCopyError(f"{where} runs an exercise check inside an IPython magic ({line.strip()!r}), "
                                   "where it cannot be made strict; call the check on a plain Python line")
    try:
        tree = ast.parse(masked)
    except SyntaxError:
        if any(f"check.{name}" in source for name in names):
            raise StudentCopyError(f"{where} holds an exercise check but is not valid Python, so its check cannot "
                                   "be made strict; fix the cell or put the check in a cell of its own") from None
        return source, []
    calls = _check_calls(tree, names, where)
    edits = [_insertion(masked, call) for call in calls if not _is_strict(call)]
    lines = source.splitlines(keepends=True)
    for lineno, col, text in sorted(edits, reverse=True):  # from the end, so earlier positions stay valid
        lines[lineno - 1] = lines[lineno - 1][:col] + text + lines[lineno - 1][col:]
    new = "".join(lines)
    try:
        done = all(_is_strict(call) for call in _check_calls(ast.parse(_mask_magics(new)), names, where))
    except SyntaxError:
        done = False
    if not done:
        raise StudentCopyError(f"{where}: could not make every exercise check strict; "
                               "write each check as `x = check.x(x)`")
    return new, [call.func.attr for call in calls]


# --- one notebook ---------------------------------------------------------------------------------

def _is_solution(cell) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def student_notebook(nb: nbformat.NotebookNode, names: set[str], name: str = "notebook"
                     ) -> tuple[nbformat.NotebookNode, CopiedLesson]:
    """A student copy of `nb`: solution cells dropped, checks strict, outputs cleared, kernel spec kept."""
    report = CopiedLesson(source=Path(name), target=Path(name))
    cells = []
    for k, cell in enumerate(nb.cells):
        text = cell.source
        if _is_solution(cell):
            report.solutions_removed += 1
            continue
        if SOLUTION_MARK in text:
            report.untagged_solutions_removed.append(k)
            continue
        cell = copy.deepcopy(cell)
        if cell.cell_type == "code":
            cell.source, strict = make_checks_strict(text, names, where=f"{name}, cell {k}")
            report.strict_checks += strict
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    if report.strict_checks:
        cells.insert(min(1, len(cells)), nbformat.v4.new_markdown_cell(NOTE, id=NOTE_ID))
    student = copy.deepcopy(nb)
    student.cells = cells
    student.metadata.pop("widgets", None)  # saved widget state belongs to a run, not to the lesson
    nbformat.validate(student)
    return student, report


# --- the whole folder -----------------------------------------------------------------------------

def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def lesson_paths(lessons_dir: Path) -> list[Path]:
    """The lesson notebooks of `lessons_dir`, in order; an error if there are none."""
    if not lessons_dir.is_dir():
        raise StudentCopyError(f"no lessons folder at {lessons_dir}; pass --lessons DIR, the folder that holds "
                               "the NN_slug.ipynb lessons (cfcourse may be installed outside its repository)")
    paths = sorted(p for p in lessons_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise StudentCopyError(f"{lessons_dir} holds no notebooks (*.ipynb); pass --lessons DIR, the folder that "
                               "holds the lessons")
    return paths


def check_out_dir(out_dir: Path, lessons_dir: Path, force: bool) -> None:
    """Refuse an OUT_DIR that would overwrite the lessons themselves, or mix with other files unless forced."""
    if _inside(out_dir, lessons_dir):
        raise StudentCopyError(f"OUT_DIR {out_dir} is the lessons folder or inside it; write the student copy "
                               "somewhere else, e.g. student-lessons/")
    if out_dir.exists() and not out_dir.is_dir():
        raise StudentCopyError(f"OUT_DIR {out_dir} is a file, not a folder; choose a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        found = sorted(p.name for p in out_dir.iterdir())
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise StudentCopyError(f"OUT_DIR {out_dir} is not empty ({shown}); choose an empty or new folder, or pass "
                               "--force to write into it (notebooks of the same name are replaced)")


def write_student_copy(out_dir: Path | str, lessons_dir: Path | str | None = None,
                       force: bool = False) -> list[CopiedLesson]:
    """Write a student copy of every lesson into `out_dir`; return what was done to each."""
    lessons_dir = Path(lessons_dir).expanduser().resolve() if lessons_dir else default_lessons_dir()
    out_dir = Path(out_dir).expanduser().resolve()
    paths = lesson_paths(lessons_dir)
    check_out_dir(out_dir, lessons_dir, force)
    names = exercise_names()
    copies = []
    for path in paths:  # every copy made before any is written: a bad lesson leaves OUT_DIR untouched
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as e:  # noqa: BLE001 - any unreadable notebook gets the same clear error
            raise StudentCopyError(f"cannot read {path} as a notebook ({e}); fix or remove it") from None
        student, report = student_notebook(nb, names, name=path.name)
        report.source, report.target = path, out_dir / path.name
        copies.append((student, report))
    out_dir.mkdir(parents=True, exist_ok=True)
    for student, report in copies:
        nbformat.write(student, report.target)
    return [report for _, report in copies]
