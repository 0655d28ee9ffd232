"""Effect checks: each prints a verdict a learner can read, and raises if the effect a lesson teaches is missing.

A check is made of measures: a measured value against its threshold (`at_least`, `at_most`). With CFCOURSE_CHECK_LOG
set to a file, every check appends one JSON line per measure to it ({lesson, check, value, threshold, op, passed,
margin, seed, mode}), so that `scripts/check_margins.py` can show how far each value stays from its threshold over
seeds. CFCOURSE_CHECK_LESSON names the lesson in those lines.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import config
from .metrics import AccuracyMatrix

LOG_ENV, LESSON_ENV = "CFCOURSE_CHECK_LOG", "CFCOURSE_CHECK_LESSON"


class EffectMissing(AssertionError):
    """The effect the lesson is about did not show up in this run."""


@dataclass(frozen=True)
class Measure:
    """One measured value of a check against its threshold; true when it holds (`op` is '>=' or '<=')."""

    name: str
    value: float
    threshold: float
    op: str

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    @property
    def margin(self) -> float:
        """How far the value is on the right side of the threshold (negative: on the wrong side)."""
        return self.value - self.threshold if self.op == ">=" else self.threshold - self.value

    def __bool__(self) -> bool:
        return self.passed


def _measure(value, threshold, name: str, op: str) -> Measure:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a measure needs a name that says what was measured, got {name!r}")
    value, threshold = float(value), float(threshold)
    if math.isnan(value) or math.isnan(threshold):
        raise ValueError(f"{name}: a measure cannot be NaN (value {value}, threshold {threshold})")
    return Measure(name, value, threshold, op)


def at_least(value: float, threshold: float, name: str) -> Measure:
    """`value` must be at least `threshold`; `name` says what was measured."""
    return _measure(value, threshold, name, ">=")


def at_most(value: float, threshold: float, name: str) -> Measure:
    """`value` must be at most `threshold`; `name` says what was measured."""
    return _measure(value, threshold, name, "<=")


def log(measures: Sequence[Measure]) -> None:
    """Append one JSON line per measure to the file named by CFCOURSE_CHECK_LOG; nothing when it is unset."""
    path = os.environ.get(LOG_ENV, "").strip()
    if not path or not measures:
        return
    lesson = os.environ.get(LESSON_ENV, "").strip() or None
    lines = [json.dumps({"lesson": lesson, "check": m.name, "value": m.value, "threshold": m.threshold, "op": m.op,
                         "passed": m.passed, "margin": m.margin, "seed": config.seed(), "mode": config.mode_name()})
             for m in measures]
    with Path(path).expanduser().open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def expect(condition: bool | Measure | Sequence[bool | Measure], verdict: str, failure: str) -> str:
    """Print `verdict` if `condition` holds (all of them, for a list), else raise EffectMissing(`failure`).

    Each measure in `condition` is logged (see the module's docstring) whether it holds or not."""
    conditions = list(condition) if isinstance(condition, (list, tuple)) else [condition]
    log([c for c in conditions if isinstance(c, Measure)])
    if not all(bool(c) for c in conditions):
        raise EffectMissing(failure)
    print(verdict)
    return verdict


def forgetting(acc: AccuracyMatrix, task: int = 0, min_drop: float = 0.05) -> str:
    """Check that `task` lost at least `min_drop` accuracy between just after training it and the end."""
    k = acc.stage
    if k <= task:
        raise ValueError(f"need results after a later task than task {task + 1}; last complete stage is {k + 1}")
    best, now = acc.R[task, task], acc.R[k, task]
    return expect(at_least(best - now, min_drop, f"task {task + 1}'s drop by the end"),
                  f"task {task + 1} fell from {best:.0%} to {now:.0%} after training task {k + 1}: forgetting.",
                  f"task {task + 1} went from {best:.0%} to {now:.0%}, a drop under {min_drop:.0%}: the forgetting "
                  "this lesson is about did not show. Check the settings (more steps or a larger learning rate).")


def learned(acc: AccuracyMatrix, task: int, min_acc: float) -> str:
    """Check that the model learned `task` to at least `min_acc` right after training it."""
    got = acc.R[task, task]
    return expect(at_least(got, min_acc, f"task {task + 1} learned"),
                  f"task {task + 1} learned: {got:.0%} right after training it.",
                  f"task {task + 1} reached only {got:.0%} (wanted at least {min_acc:.0%}): the model did not learn it.")


def prediction(guess: float | None, actual: float, what: str, fmt: str = "{:.0%}") -> str:
    """Compare a learner's prediction with what their own run measured, and say how far off it was."""
    if guess is None:
        text = (f"You did not write a prediction for {what}; it came out at {fmt.format(actual)}. Next time, commit "
                "to a number first: a wrong guess teaches more than no guess.")
    else:
        try:
            guess = float(guess)
        except (TypeError, ValueError):
            raise ValueError(f"a prediction is a number, like 0.25; got {guess!r}") from None
        off = actual - guess
        near = abs(off) <= max(0.25 * abs(actual), 0.05)
        text = (f"You predicted {fmt.format(guess)} for {what}; your run measured {fmt.format(actual)}. "
                + ("Close: your picture of what happens was right." if near else
                   f"Your guess was {'too low' if off > 0 else 'too high'}: what did it miss?"))
    print(text)
    return text
