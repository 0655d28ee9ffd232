"""Effect checks: each prints a verdict a learner can read, and raises if the effect a lesson teaches is missing."""
from __future__ import annotations

from .metrics import AccuracyMatrix


class EffectMissing(AssertionError):
    """The effect the lesson is about did not show up in this run."""


def expect(condition: bool, verdict: str, failure: str) -> str:
    """Print `verdict` if `condition` holds, else raise EffectMissing(`failure`)."""
    if not condition:
        raise EffectMissing(failure)
    print(verdict)
    return verdict


def forgetting(acc: AccuracyMatrix, task: int = 0, min_drop: float = 0.05) -> str:
    """Check that `task` lost at least `min_drop` accuracy between just after training it and the end."""
    k = acc.stage
    if k <= task:
        raise ValueError(f"need results after a later task than task {task + 1}; last complete stage is {k + 1}")
    best, now = acc.R[task, task], acc.R[k, task]
    return expect(best - now >= min_drop,
                  f"task {task + 1} fell from {best:.0%} to {now:.0%} after training task {k + 1}: forgetting.",
                  f"task {task + 1} went from {best:.0%} to {now:.0%}, a drop under {min_drop:.0%}: the forgetting "
                  "this lesson is about did not show. Check the settings (more steps or a larger learning rate).")


def learned(acc: AccuracyMatrix, task: int, min_acc: float) -> str:
    """Check that the model learned `task` to at least `min_acc` right after training it."""
    got = acc.R[task, task]
    return expect(got >= min_acc, f"task {task + 1} learned: {got:.0%} right after training it.",
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
