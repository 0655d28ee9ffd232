"""The accuracy matrix and every measure read off it, checked against hand-computed values."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cfcourse.metrics import AccuracyMatrix

R = [[0.9, 0.1, 0.1],
     [0.6, 0.95, 0.1],
     [0.5, 0.7, 0.92]]
BASELINE = [0.1, 0.1, 0.1]


@pytest.fixture
def acc():
    return AccuracyMatrix.from_array(R, BASELINE)


def test_measures_by_hand(acc):
    assert acc.stage == 2
    assert acc.avg_acc == pytest.approx((0.5 + 0.7 + 0.92) / 3)
    assert acc.bwt == pytest.approx(((0.5 - 0.9) + (0.7 - 0.95)) / 2)  # -0.325
    assert acc.bwt == pytest.approx(-0.325)
    assert acc.fwt == pytest.approx(((0.1 - 0.1) + (0.1 - 0.1)) / 2)
    assert acc.forgetting == pytest.approx([0.9 - 0.5, 0.95 - 0.7])


def test_fwt_positive_when_earlier_tasks_help():
    m = AccuracyMatrix.from_array([[0.9, 0.3, 0.2], [0.8, 0.9, 0.4], [0.7, 0.8, 0.9]], baseline=[0.1, 0.1, 0.1])
    assert m.fwt == pytest.approx(((0.3 - 0.1) + (0.4 - 0.1)) / 2)


def test_forgetting_uses_the_best_earlier_accuracy_bwt_the_diagonal():
    # task 1 improves to 0.95 while task 2 trains, then falls to 0.5
    m = AccuracyMatrix.from_array([[0.8, 0.1, 0.1], [0.95, 0.9, 0.1], [0.5, 0.9, 0.9]])
    assert m.forgetting == pytest.approx([0.95 - 0.5, 0.0])
    assert m.bwt == pytest.approx(((0.5 - 0.8) + (0.9 - 0.9)) / 2)


def test_filled_stage_by_stage():
    m = AccuracyMatrix(3, ["a", "b", "c"])
    assert m.stage == -1
    with pytest.raises(ValueError, match="no complete row yet"):
        _ = m.avg_acc
    m.set_baseline(BASELINE)
    m.record_row(0, R[0])
    assert m.stage == 0
    assert m.avg_acc == pytest.approx(0.9)
    assert math.isnan(m.bwt) and math.isnan(m.fwt) and m.forgetting == []
    m.update(1, 0, 0.6)  # a row in progress does not count yet
    assert m.stage == 0
    m.update(1, 1, 0.95)
    m.update(1, 2, 0.1)
    assert m.stage == 1
    assert m.avg_acc == pytest.approx((0.6 + 0.95) / 2)
    assert m.bwt == pytest.approx(0.6 - 0.9)
    assert m.fwt == pytest.approx(0.1 - 0.1)
    assert m.forgetting == pytest.approx([0.3])
    m.record_row(2, R[2])
    np.testing.assert_allclose(m.R, R)
    assert m.names == ["a", "b", "c"]


def test_partly_filled_from_array_uses_last_complete_row():
    nan = float("nan")
    m = AccuracyMatrix.from_array([[0.9, 0.2, 0.1], [0.4, 0.8, 0.1], [nan, nan, nan]])
    assert m.stage == 1
    assert m.avg_acc == pytest.approx((0.4 + 0.8) / 2)
    assert m.bwt == pytest.approx(0.4 - 0.9)
    assert math.isnan(m.fwt)  # no baseline given


def test_default_names():
    assert AccuracyMatrix(2).names == ["task 1", "task 2"]


@pytest.mark.parametrize("bad", [[[0.5, 0.5]], [0.5, 0.5], [[[0.5]]]])
def test_from_array_refuses_non_square(bad):
    with pytest.raises(ValueError, match="must be square"):
        AccuracyMatrix.from_array(bad)


def test_input_errors(acc):
    with pytest.raises(ValueError, match="n_tasks must be a positive integer"):
        AccuracyMatrix(0)
    with pytest.raises(ValueError, match="got 1 names for 2 tasks"):
        AccuracyMatrix(2, ["only one"])
    with pytest.raises(IndexError, match=r"trained must be in 0..2, got 3"):
        acc.update(3, 0, 0.5)
    with pytest.raises(IndexError, match="evaluated"):
        acc.update(0, -1, 0.5)
    with pytest.raises(ValueError, match="fraction in"):
        acc.update(0, 0, 95.0)  # a percentage, not a fraction
    with pytest.raises(ValueError, match="fraction in"):
        acc.update(0, 0, float("nan"))
    with pytest.raises(ValueError, match="expected 3 accuracies, got 2"):
        acc.record_row(0, [0.1, 0.2])
    with pytest.raises(ValueError, match="baseline needs 3 accuracies"):
        acc.set_baseline([0.1])


def test_to_dict_is_json_safe(acc):
    d = acc.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["acc_matrix"] == R
    assert back["avg_acc"] == pytest.approx(0.706667, abs=1e-6)
    assert back["bwt"] == pytest.approx(-0.325)
    assert back["fwt"] == pytest.approx(0.0)
    assert back["forgetting"] == pytest.approx([0.4, 0.25])
    assert back["baseline"] == BASELINE


def test_to_dict_of_partly_filled_matrix_uses_null():
    m = AccuracyMatrix(2)
    m.record_row(0, [0.9, 0.1])
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["acc_matrix"] == [[0.9, 0.1], [None, None]]
    assert d["bwt"] is None and d["fwt"] is None and d["baseline"] == [None, None]
    assert d["forgetting"] == []


def test_repr_marks_missing_cells():
    m = AccuracyMatrix(2)
    m.record_row(0, [0.9, 0.123])
    text = repr(m)
    assert "90.0%" in text and "12.3%" in text and "-" in text.splitlines()[2]


def test_from_array_refuses_percentages_like_update_does():
    """update() refuses values outside [0, 1] (a percentage by mistake); from_array must not accept them silently.

    Known bug (reported): from_array copies R without the check, so avg_acc comes out as 75.0 here.
    """
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AccuracyMatrix.from_array([[97.0, 10.0], [54.0, 96.0]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AccuracyMatrix.from_array([[0.9, 0.1], [0.5, 0.9]], baseline=[10.0, 10.0])
