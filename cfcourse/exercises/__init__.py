"""Exercise checks: run the learner's function on cases with known answers and give a verdict with a hint.

In a lesson::

    def accuracy(logits, labels):
        raise NotImplementedError("Exercise: ...")

    accuracy = check.accuracy(accuracy)

The check prints a verdict. If the answer is right the learner's function is
returned; otherwise the reference solution is returned, so one stuck
exercise never breaks the rest of the notebook.

Most checks are a `Comparison`: the learner's function and the reference run on
the same cases, a missing `return` is named, and a wrong answer that matches a
known mistake (the reference with one plausible error, given a name with
`named`) is told that mistake's explanation. The few checks that judge an answer
by its properties (a training step, reservoir sampling, replay's schedule) keep
their own verifiers.

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
        verify_fn = self.verify_fn or Comparison(self.name, self.reference, self._described_cases)
        try:
            return verify_fn(fn)
        except NotImplementedError:
            return Verdict(False, "not done yet (the stub still raises NotImplementedError)", not_done=True)
        except Exception as e:  # noqa: BLE001 - any error in the learner's code is a verdict, not a crash
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            return Verdict(False, f"your function raised {last}")

    def _described_cases(self) -> list[tuple[str, tuple]]:
        """The plain cases, each named by its inputs."""
        return [(f"inputs {_short(args)}", args) for args in self.cases()]

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


# --- the one verifier: cases, the None check, the comparison, named mistakes ---------------------------------

Mistakes = list[tuple[Callable, str]]  # (the reference with one plausible mistake, what to tell a learner who made it)

IN_PLACE = ("the answer is right, but your function changed the {what} it was given; leave the caller's values as "
            "they are and build new ones instead of changing them in place")


def named(name: str, fn: Callable) -> Callable:
    """Give a wrong answer (often a lambda) a name that says its mistake, for test reports."""
    fn.__name__ = fn.__qualname__ = name
    return fn


@dataclass
class Comparison:
    """A verifier: fn must give what `reference` gives on every (what, args) case; a wrong answer is told which
    known mistake it matches.

    Options: `same` compares two answers (default: `close` within `tol`); `wrap` turns a function into what is
    compared (e.g. a step into the weights after it); `shown` words a mismatch; `form` says what is wrong with the
    type or shape of an answer that does not match; `unchanged` names the arguments, by position, that fn must not
    change in place (`in_place` words that); `per_case` and `at_end` add checks a matching answer must pass, on
    each case and once at the end (each gives the problem, or None).
    """

    name: str
    reference: Callable
    cases: Callable[[], list[tuple[str, tuple]]]
    mistakes: Mistakes = field(default_factory=list)
    tol: float = 1e-5
    same: Callable[[Any, Any], bool] | None = None
    wrap: Callable[[Callable], Callable] | None = None
    shown: Callable[[str, Any, Any], str] | None = None
    form: Callable[[str, Any, Any], str | None] | None = None
    unchanged: dict[int, str] = field(default_factory=dict)
    in_place: str = IN_PLACE
    per_case: Callable[[Callable, tuple, Any, Any], str | None] | None = None
    at_end: Callable[[Callable], str | None] | None = None

    def __call__(self, fn: Callable) -> Verdict:
        """The verdict on fn: the first case it gets wrong, or the last check it fails, or right."""
        for what, args in self.cases():
            problem = self.problem(fn, what, args)
            if problem:
                return Verdict(False, problem)
        problem = self.at_end(fn) if self.at_end else None
        return Verdict(problem is None, problem or "all cases match")

    def problem(self, fn: Callable, what: str, args: tuple) -> str | None:
        """What is wrong with fn's answer on one case, or None."""
        given = _copy(args)
        want, got = self.run(self.reference, _copy(args)), self.run(fn, given)
        if got is None:
            return f"{self.name} returned None: did you forget the `return`?"
        if not self.agree(got, want):
            return (self.form and self.form(what, got, want)) or self.mismatch(fn, what, args, got, want)
        return self.changed(args, given) or (self.per_case and self.per_case(fn, args, got, want))

    def run(self, fn: Callable, args: tuple) -> Any:
        """fn's answer on args, as compared."""
        return (self.wrap(fn) if self.wrap else fn)(*args)

    def agree(self, got: Any, want: Any) -> bool:
        """Whether two answers agree; one that cannot be compared does not."""
        try:
            return bool(self.same(got, want) if self.same else close(got, want, self.tol))
        except Exception:  # noqa: BLE001 - an answer of the wrong kind simply does not agree
            return False

    def mismatch(self, fn: Callable, what: str, args: tuple, got: Any, want: Any) -> str:
        """The wrong answer in words, with the known mistake it matches."""
        text = (self.shown(what, got, want) if self.shown
                else f"on {what}, your {self.name} returned {_short(got)}, expected {_short(want)}")
        why = self.which_mistake(fn, got, args)
        return f"{text}; {why}" if why else text

    def which_mistake(self, fn: Callable, got: Any, args: tuple) -> str | None:
        """The explanation of the known mistake that `got` (fn's answer on `args`) matches, or None.

        Two mistakes can give the same answer on one case; then the one that agrees with fn on every case wins.
        """
        found = [(m, why) for m, why in self.mistakes if self.gives(m, args, got)]
        if len(found) > 1:
            cases = [a for _, a in self.cases()]
            found = [(m, why) for m, why in found if all(self.gives_as(m, fn, a) for a in cases)] or found
        return found[0][1] if found else None

    def gives(self, mistake: Callable, args: tuple, got: Any) -> bool:
        """Whether `mistake` gives `got` on `args`; a mistake that cannot run there does not."""
        try:
            return self.agree(got, self.run(mistake, _copy(args)))
        except Exception:  # noqa: BLE001 - a mistake that cannot run on this case does not match
            return False

    def gives_as(self, mistake: Callable, fn: Callable, args: tuple) -> bool:
        """Whether `mistake` and fn give the same answer on `args`."""
        try:
            return self.gives(mistake, args, self.run(fn, _copy(args)))
        except Exception:  # noqa: BLE001 - a learner's function that fails on a case simply does not match there
            return False

    def changed(self, args: tuple, given: tuple) -> str | None:
        """The message for an argument fn changed in place, or None."""
        for i, what in self.unchanged.items():
            if not _equal(args[i], given[i]):
                return self.in_place.format(what=what)
        return None


def _equal(a: Any, b: Any) -> bool:
    """Exactly equal, tensors and containers of tensors included."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else a == b


def _copy(x: Any) -> Any:
    """A copy of a case's arguments: tensors, arrays and the lists, tuples and dicts that hold them."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_copy(v) for v in x)
    return x


def _short(x: Any) -> str:
    """A value in a few words: its shape when it is a big tensor or array."""
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
