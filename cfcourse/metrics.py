"""The accuracy matrix R[i][j] and every continual-learning measure derived from it; see lesson 02.

R[i][j] is the accuracy on task j after training on tasks 0..i. Average
accuracy, backward transfer, forward transfer and forgetting are all read
off this one matrix, so they can never disagree with it.
"""
from __future__ import annotations

import math

import numpy as np


def _check_fractions(values: np.ndarray, label: str) -> None:
    """Accuracies are fractions in [0, 1] (NaN for not yet measured), never percentages."""
    bad = values[~np.isnan(values) & ((values < 0) | (values > 1))]
    if bad.size:
        raise ValueError(f"{label} must hold fractions in [0, 1] (e.g. 0.97, not 97), got {bad[0]}")


class AccuracyMatrix:
    """R[i][j]: accuracy on task j after training task i, filled in stage by stage."""

    def __init__(self, n_tasks: int, names: list[str] | None = None):
        if not isinstance(n_tasks, int) or n_tasks < 1:
            raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
        if names is not None and len(names) != n_tasks:
            raise ValueError(f"got {len(names)} names for {n_tasks} tasks")
        self.n_tasks = n_tasks
        self.names = list(names) if names else [f"task {j + 1}" for j in range(n_tasks)]
        self.R = np.full((n_tasks, n_tasks), np.nan)
        self.baseline = np.full(n_tasks, np.nan)  # accuracy of the untrained model, for forward transfer

    @classmethod
    def from_array(cls, R, baseline=None) -> "AccuracyMatrix":
        """Wrap a finished (or partly filled, NaN elsewhere) square matrix."""
        R = np.asarray(R, dtype=float)
        if R.ndim != 2 or R.shape[0] != R.shape[1]:
            raise ValueError(f"an accuracy matrix must be square, got shape {R.shape}")
        m = cls(R.shape[0])
        _check_fractions(R, "accuracy matrix")
        m.R[:] = R
        if baseline is not None:
            m.set_baseline(baseline)
        return m

    def _check_index(self, i: int, label: str) -> None:
        if not 0 <= i < self.n_tasks:
            raise IndexError(f"{label} must be in 0..{self.n_tasks - 1}, got {i}")

    def update(self, trained: int, evaluated: int, acc: float) -> None:
        """Record the accuracy on task `evaluated` after training task `trained`."""
        self._check_index(trained, "trained")
        self._check_index(evaluated, "evaluated")
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"accuracy must be a fraction in [0, 1] (e.g. 0.97, not 97), got {acc}")
        self.R[trained, evaluated] = acc

    def record_row(self, trained: int, accs) -> None:
        """Record the accuracies on every task after training task `trained`."""
        if len(accs) != self.n_tasks:
            raise ValueError(f"expected {self.n_tasks} accuracies, got {len(accs)}")
        for j, a in enumerate(accs):
            self.update(trained, j, float(a))

    def set_baseline(self, accs) -> None:
        """Accuracy of the model before any training, per task (for forward transfer)."""
        accs = np.asarray(accs, dtype=float)
        if accs.shape != (self.n_tasks,):
            raise ValueError(f"baseline needs {self.n_tasks} accuracies, got shape {accs.shape}")
        _check_fractions(accs, "baseline")
        self.baseline[:] = accs

    @property
    def stage(self) -> int:
        """Index of the last fully recorded row; -1 before any."""
        done = [i for i in range(self.n_tasks) if not np.isnan(self.R[i]).any()]
        return max(done) if done else -1

    def _last(self) -> int:
        k = self.stage
        if k < 0:
            raise ValueError("no complete row yet: record the accuracies after the first task first")
        return k

    @property
    def avg_acc(self) -> float:
        """Mean accuracy over the tasks seen so far, after the last recorded stage."""
        k = self._last()
        return float(self.R[k, : k + 1].mean())

    @property
    def bwt(self) -> float:
        """Backward transfer: mean of R[k][j] - R[j][j] over earlier tasks j; negative means forgetting."""
        k = self._last()
        if k == 0:
            return math.nan
        return float(np.mean([self.R[k, j] - self.R[j, j] for j in range(k)]))

    @property
    def fwt(self) -> float:
        """Forward transfer: mean of R[j-1][j] - baseline[j]: how much earlier tasks help before task j is trained."""
        k = self._last()
        if k == 0 or np.isnan(self.baseline).any():
            return math.nan
        return float(np.mean([self.R[j - 1, j] - self.baseline[j] for j in range(1, k + 1)]))

    @property
    def forgetting(self) -> list[float]:
        """Per earlier task j: best accuracy it ever had minus its accuracy now."""
        k = self._last()
        return [float(np.nanmax(self.R[:k, j]) - self.R[k, j]) for j in range(k)]  # NaN: not yet measured

    def to_dict(self) -> dict:
        """Every number, JSON-ready (NaN becomes None)."""
        def clean(v):
            if isinstance(v, list):
                return [clean(x) for x in v]
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)
        return {"acc_matrix": clean(self.R.tolist()), "avg_acc": clean(self.avg_acc), "bwt": clean(self.bwt),
                "fwt": clean(self.fwt), "forgetting": clean(self.forgetting), "baseline": clean(self.baseline.tolist())}

    def __repr__(self) -> str:
        rows = ["  ".join("  -  " if np.isnan(v) else f"{v:5.1%}" for v in row) for row in self.R]
        return "AccuracyMatrix(\n  " + "\n  ".join(rows) + "\n)"
