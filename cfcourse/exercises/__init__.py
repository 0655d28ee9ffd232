"""Exercise checks: run the learner's function on cases with known answers and give a verdict with a hint.

In a lesson::

    def accuracy(logits, labels):
        raise NotImplementedError("Exercise: ...")

    accuracy = check.accuracy(accuracy)

The check prints a verdict. If the answer is right the learner's function is
returned; otherwise the reference solution is returned, so one stuck
exercise never breaks the rest of the notebook.

Student copies (`python -m cfcourse student-copy`) call ``check.accuracy(accuracy,
strict=True)`` instead: there a wrong or unfinished answer raises
`ExerciseNotDone`, so the notebook stops at the exercise rather than going on
with the reference.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class ExerciseNotDone(NotImplementedError):
    """A strict check found an exercise unfinished or wrong: the notebook stops here, with a hint."""

    def __init__(self, message: str, exercise: str = "", verdict: Verdict | None = None):
        super().__init__(message)
        self.exercise = exercise
        self.verdict = verdict


@dataclass
class Verdict:
    """Whether an answer is right, and what to tell the learner."""

    ok: bool
    message: str
    not_done: bool = False


def close(a: Any, b: Any, tol: float = 1e-5) -> bool:
    """Numbers, arrays and tensors equal within `tol`; other values equal exactly."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    if isinstance(a, (int, float, np.ndarray, np.number, list, tuple)) and not isinstance(a, bool):
        try:
            a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        except (TypeError, ValueError):
            return False
        return a_arr.shape == b_arr.shape and bool(np.allclose(a_arr, b_arr, atol=tol, rtol=tol, equal_nan=True))
    return a == b


@dataclass
class Exercise:
    """One exercise: its reference solution, test cases or a custom verifier, and a hint."""

    name: str
    reference: Callable
    hint: str
    cases: Callable[[], list[tuple]] | None = None  # each case: a tuple of positional arguments
    verify_fn: Callable[[Callable], Verdict] | None = None
    wrong_answers: list[Callable] = field(default_factory=list)  # the reference with one plausible mistake each

    def verify(self, fn: Callable) -> Verdict:
        """Run `fn` against the cases (or the custom verifier) and say whether it is right."""
        try:
            if self.verify_fn is not None:
                return self.verify_fn(fn)
            for args in self.cases():
                want = self.reference(*_copy(args))
                got = fn(*_copy(args))
                if not close(got, want):
                    return Verdict(False, f"for inputs {_short(args)} your function returned {_short(got)}, "
                                          f"expected {_short(want)}")
            return Verdict(True, "all cases match")
        except NotImplementedError:
            return Verdict(False, "not done yet (the stub still raises NotImplementedError)", not_done=True)
        except Exception as e:  # noqa: BLE001 - any error in the learner's code is a verdict, not a crash
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            return Verdict(False, f"your function raised {last}")

    def __call__(self, fn: Callable, strict: bool = False) -> Callable:
        """Print the verdict; return `fn` if it is right, else the reference so the lesson can go on.

        With `strict=True` (student copies) a wrong or unfinished answer raises `ExerciseNotDone` instead.
        """
        v = self.verify(fn)
        if v.ok:
            print(f"Correct: {self.name} passes every check.")
            return fn
        if strict:
            print(f"{self.name}: {v.message}.\nHint: {self.hint}")
            raise self.not_done_error(v)
        print(f"{self.name}: {v.message}.\nHint: {self.hint}\n"
              "Continuing with the reference solution so the rest of the lesson runs; come back and try again.")
        return self.reference

    def not_done_error(self, v: Verdict) -> ExerciseNotDone:
        """The error a strict check raises: which exercise, what is wrong, the hint, and what to do next."""
        if v.not_done:
            what = f"Exercise {self.name} is not done yet: its function still raises NotImplementedError."
            todo = (f"Write {self.name} in the exercise cell above (replace the `raise NotImplementedError` line), "
                    "run that cell, then run this check again.")
        else:
            what = f"Exercise {self.name} is not right yet: {v.message}."
            todo = f"Fix {self.name} in the exercise cell above, run that cell, then run this check again."
        return ExerciseNotDone(f"{what}\nHint: {self.hint}\n{todo}", exercise=self.name, verdict=v)


def which_mistake(fn: Callable, got: Any, args: tuple, mistakes: list[tuple[Callable, str]], cases: list[tuple],
                  same: Callable[[Any, Any], bool] = close) -> str | None:
    """The explanation of the known mistake that `got` (fn's answer for `args`) matches, or None.

    Two mistakes can give the same answer on one case; then the one that agrees with fn on every case wins.
    """
    found = [(mistake, why) for mistake, why in mistakes if same(got, mistake(*_copy(args)))]
    if len(found) > 1:
        for mistake, why in found:
            if _same_everywhere(fn, mistake, cases, same):
                return why
    return found[0][1] if found else None


def verify_with_mistakes(name: str, reference: Callable, cases: Callable[[], list[tuple[str, tuple]]],
                         mistakes: list[tuple[Callable, str]], tol: float = 1e-5,
                         same: Callable[[Any, Any], bool] | None = None,
                         shown: Callable[[str, Any, Any], str] | None = None,
                         wrap: Callable[[Callable], Callable] | None = None) -> Callable[[Callable], Verdict]:
    """A verifier: fn must match `reference` on every (what, args) case; a wrong answer that matches a known
    mistake on that case is told the mistake's explanation. `wrap` turns a function into what is compared (e.g.
    a step into the weights after it), `shown` words a mismatch."""
    same = same or (lambda a, b: close(a, b, tol))
    wrap = wrap or (lambda f: f)
    shown = shown or (lambda what, got, want: f"on {what}, your {name} returned {_short(got)}, expected {_short(want)}")

    def verify(fn: Callable) -> Verdict:
        for what, args in cases():
            want = wrap(reference)(*_copy(args))
            got = wrap(fn)(*_copy(args))
            if got is None:
                return Verdict(False, f"{name} returned None: did you forget the `return`?")
            if same(got, want):
                continue
            text = shown(what, got, want)
            found = [(mistake, why) for mistake, why in mistakes if _matches(wrap, mistake, args, got, same)]
            if len(found) > 1:  # two mistakes give this answer here: the one that is fn on every case wins
                everywhere = [(m, why) for m, why in found
                              if all(_matches(wrap, m, a, wrap(fn)(*_copy(a)), same) for _, a in cases())]
                found = everywhere or found
            return Verdict(False, f"{text}: {found[0][1]}" if found else text)
        return Verdict(True, "all cases match")
    return verify


def _matches(wrap: Callable, mistake: Callable, args: tuple, got: Any, same: Callable[[Any, Any], bool]) -> bool:
    """Whether `mistake` gives `got` on `args`; a mistake that cannot run there does not match."""
    try:
        return bool(same(got, wrap(mistake)(*_copy(args))))
    except Exception:  # noqa: BLE001 - a mistake that cannot run on this case does not match
        return False


def _same_everywhere(fn: Callable, mistake: Callable, cases: list[tuple], same: Callable[[Any, Any], bool]) -> bool:
    try:
        return all(same(fn(*_copy(args)), mistake(*_copy(args))) for args in cases)
    except Exception:  # noqa: BLE001 - a learner's function that fails on a case simply does not match there
        return False


def _copy(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a.copy() if isinstance(a, np.ndarray) else a
                 for a in args)


def _short(x: Any) -> str:
    if isinstance(x, torch.Tensor) and x.numel() > 8:
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray) and x.size > 8:
        return f"array of shape {x.shape}"
    if isinstance(x, tuple):
        return "(" + ", ".join(_short(a) for a in x) + ")"
    text = repr(x)
    return text if len(text) < 120 else text[:117] + "..."


class _Checks:
    """Namespace of every registered exercise: `check.accuracy(fn)`."""

    def __init__(self):
        self._all: dict[str, Exercise] = {}

    def register(self, exercise: Exercise) -> Exercise:
        self._all[exercise.name] = exercise
        return exercise

    def __getattr__(self, name: str) -> Exercise:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._all[name]
        except KeyError:
            raise AttributeError(f"no exercise called {name!r}; known: {', '.join(sorted(self._all))}") from None

    def __iter__(self):
        return iter(self._all.values())

    def __dir__(self):
        return sorted(self._all)


check = _Checks()


def _register_lessons() -> None:
    """Import every `lessonNN` module here; each registers its lesson's exercises."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("lesson"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_lessons()
