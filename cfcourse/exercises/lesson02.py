"""Exercises of lesson 02: backward transfer and forgetting, read off an accuracy matrix given as a NumPy array.

Both are checked against `cfcourse.metrics.AccuracyMatrix`, so the learner's
formula and the package's can never disagree. When an answer is wrong, the
check says which common mistake it matches.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..metrics import AccuracyMatrix
from . import Comparison, Exercise, Mistakes, check, named


def backward_transfer(R: np.ndarray) -> float:
    """Mean over the earlier tasks j < T-1 of R[T-1][j] - R[j][j]: final accuracy minus accuracy just after training."""
    T = len(R)
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def forgetting_per_task(R: np.ndarray) -> np.ndarray:
    """Per earlier task j < T-1: the best accuracy it had before the last stage, minus its final accuracy."""
    T = len(R)
    return np.array([R[: T - 1, j].max() - R[T - 1, j] for j in range(T - 1)])


def _matrices() -> list[np.ndarray]:
    """Hand-made accuracy matrices: row i = after training task i, column j = accuracy on task j."""
    return [
        np.array([[0.90, 0.10],
                  [0.60, 0.95]]),
        np.array([[0.95, 0.12, 0.09],
                  [0.70, 0.96, 0.11],
                  [0.55, 0.80, 0.97]]),
        np.array([[0.60, 0.10, 0.11],   # positive backward transfer: later tasks help earlier ones
                  [0.70, 0.80, 0.12],
                  [0.75, 0.85, 0.90]]),
        np.array([[0.97, 0.08, 0.10, 0.11],
                  [0.90, 0.96, 0.09, 0.12],   # task 2 rises above its diagonal, then falls
                  [0.82, 0.98, 0.97, 0.10],
                  [0.99, 0.70, 0.91, 0.98]]),  # task 1 ends at its best: its forgetting is negative
    ]


def _show(x) -> str:
    """A learner's answer, rounded when it is numbers."""
    try:
        return str(np.round(np.asarray(x, dtype=float), 4))
    except (TypeError, ValueError):
        return repr(x)


def _cases() -> list[tuple[str, tuple[np.ndarray]]]:
    """Each hand-made matrix, shown as it is."""
    return [(f"R =\n{R}", (R,)) for R in _matrices()]


def _verifier(name: str, truth: Callable[[np.ndarray], object], mistakes: Mistakes,
              one_number: bool) -> Comparison:
    """Compare fn(R) with `truth(R)` on every hand-made matrix, naming known mistakes."""
    def shown(what, got, want) -> str:
        return f"for {what}\n{name} returned {_show(got)}, expected {_show(want)}"

    def form(what, got, want) -> str | None:
        if one_number and np.ndim(got) > 0:
            return f"{shown(what, got, want)}: it should be one number, the mean over the earlier tasks"
        if not one_number and np.ndim(got) == 0:
            return f"{shown(what, got, want)}: it should give one number per earlier task, not a single number"
        return None
    return Comparison(name, truth, _cases, mistakes, shown=shown, form=form)


def _diag(R: np.ndarray) -> np.ndarray:
    return np.diag(R)


def _mean_or_nan(values: np.ndarray) -> float:
    """The mean, or NaN (without NumPy's warning) when there is nothing to average."""
    return float(np.mean(values)) if len(values) else float("nan")


BWT_MISTAKES = [
    (named("averaged_over_all_tasks", lambda R: float(np.mean(R[-1] - _diag(R)))),
     "it looks like you averaged over all T tasks; the last task has no 'later' yet (its term is always 0), "
     "so average over the T-1 earlier tasks only"),
    (named("forgot_the_diagonal", lambda R: float(np.mean(R[-1, :-1]))),
     "it looks like you averaged the final accuracies without subtracting R[j][j], the accuracy just after "
     "training task j (the diagonal)"),
    (named("sign_flipped", lambda R: float(np.mean(_diag(R)[:-1] - R[-1, :-1]))),
     "the sign is flipped: BWT is final minus just-after, so forgetting makes it negative"),
    (named("rows_and_columns_swapped", lambda R: float(np.mean(R[:-1, -1] - _diag(R)[:-1]))),
     "it looks like rows and columns are swapped: R[i][j] is row i (after training task i), column j "
     "(evaluated on task j); the final accuracies are the last row, R[T-1][j]"),
    (named("subtracted_first_row", lambda R: float(np.mean(R[-1, :-1] - R[0, :-1]))),
     "it looks like you subtracted the first row; subtract the diagonal R[j][j], the accuracy on task j right "
     "after training it"),
    (named("summed_instead_of_mean", lambda R: float(np.sum(R[-1, :-1] - _diag(R)[:-1]))),
     "it looks like a sum; BWT is the mean over the earlier tasks"),
    (named("second_to_last_row", lambda R: float(np.mean(R[-2, :-1] - _diag(R)[:-1]))),
     "it looks like you took the second-to-last row, R[T-2], as the final accuracies; the final row is "
     "R[T-1], i.e. R[-1]"),
    (named("row_after_the_next_task", lambda R: float(np.mean([R[j + 1, j] - R[j, j] for j in range(len(R) - 1)]))),
     "it looks like you subtracted R[j][j] from R[j+1][j], the accuracy one task later; BWT compares with the "
     "final row, R[T-1][j]"),
    (named("dropped_one_earlier_task", lambda R: _mean_or_nan(R[-1, :-2] - _diag(R)[:-2])),
     "it looks like one earlier task is missing (an index off by one): the earlier tasks are j = 0 .. T-2, "
     "range(T - 1)"),
]

FORGETTING_MISTAKES = [
    (named("used_the_diagonal", lambda R: _diag(R)[:-1] - R[-1, :-1]),
     "it looks like you used R[j][j] (just after training) as the reference; forgetting uses the best "
     "accuracy task j ever had before the last stage, the maximum of its column above the last row"),
    (named("max_includes_last_row", lambda R: R[:, :-1].max(axis=0) - R[-1, :-1]),
     "it looks like the maximum includes the last row; take the best accuracy from the stages before the last, "
     "so that forgetting can be negative when a task ends at its best"),
    (named("sign_flipped", lambda R: R[-1, :-1] - R[:-1, :-1].max(axis=0)),
     "the sign is flipped: forgetting is best-before minus final, positive when accuracy fell"),
    (named("included_last_task", lambda R: R[:-1].max(axis=0) - R[-1]),
     "it looks like you included the last task; forgetting is defined for the T-1 earlier tasks only"),
    (named("max_along_rows", lambda R: R[:-1, :-1].max(axis=1) - R[-1, :-1]),
     "it looks like the maximum runs along a row; take it down column j (over stages i), i.e. axis=0"),
    (named("min_instead_of_max", lambda R: R[:-1, :-1].min(axis=0) - R[-1, :-1]),
     "it looks like the minimum of the column; forgetting starts from the best accuracy, the maximum"),
    (named("first_row_as_the_best", lambda R: R[0, :-1] - R[-1, :-1]),
     "it looks like you subtracted from the first row, R[0][j]; take the best accuracy of column j over every "
     "stage before the last, R[:-1, j].max()"),
    (named("second_to_last_row_as_final", lambda R: R[:-1, :-1].max(axis=0) - R[-2, :-1]),
     "it looks like the second-to-last row, R[T-2], is used as the final accuracies; the final row is R[T-1], "
     "i.e. R[-1]"),
    (named("rows_and_columns_swapped", lambda R: R[:-1, :-1].max(axis=1) - R[:-1, -1]),
     "it looks like rows and columns are swapped: task j's accuracies over time are column j, R[:, j], and its "
     "final accuracy is in the last row, R[-1][j]"),
]


def _mean_forgetting(R: np.ndarray) -> float:
    """The mean over the earlier tasks: one number, where one per task is asked for."""
    return float(forgetting_per_task(R).mean())


def _forgetting_without_return(R: np.ndarray) -> None:
    """The right values, computed and never returned."""
    forgetting_per_task(R)


def _bwt_per_task(R: np.ndarray) -> np.ndarray:
    """One difference per earlier task, not their mean."""
    return R[-1, :-1] - _diag(R)[:-1]

check.register(Exercise(
    name="backward_transfer",
    reference=backward_transfer,
    hint="the final accuracies are the last row R[-1]; the just-after-training accuracies are the diagonal "
         "np.diag(R); take their difference for the T-1 earlier tasks only, then the mean",
    verify_fn=_verifier("backward_transfer(R)", lambda R: AccuracyMatrix.from_array(R).bwt, BWT_MISTAKES, True),
    wrong_answers=[mistake for mistake, _ in BWT_MISTAKES] + [_bwt_per_task],
))

check.register(Exercise(
    name="forgetting_per_task",
    reference=forgetting_per_task,
    hint="for each earlier task j: the best of R[0][j] .. R[T-2][j] (column j without its last row) minus the "
         "final R[T-1][j]; R[:-1, :-1].max(axis=0) gives every best at once",
    verify_fn=_verifier("forgetting_per_task(R)", lambda R: AccuracyMatrix.from_array(R).forgetting,
                        FORGETTING_MISTAKES, False),
    wrong_answers=[mistake for mistake, _ in FORGETTING_MISTAKES] + [_mean_forgetting, _forgetting_without_return],
))
