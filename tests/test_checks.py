"""Effect checks: a readable verdict when the effect shows, EffectMissing when it does not."""
from __future__ import annotations

import pytest

from cfcourse import checks
from cfcourse.metrics import AccuracyMatrix

DROP = [[0.97, 0.1], [0.54, 0.96]]
NO_DROP = [[0.97, 0.1], [0.96, 0.96]]


def test_forgetting_passes_and_prints_a_verdict(capsys):
    verdict = checks.forgetting(AccuracyMatrix.from_array(DROP))
    printed = capsys.readouterr().out
    assert "task 1 fell from 97% to 54% after training task 2: forgetting." in printed
    assert verdict in printed


def test_forgetting_raises_without_a_drop(capsys):
    with pytest.raises(checks.EffectMissing, match="from 97% to 96%, a drop under 5%"):
        checks.forgetting(AccuracyMatrix.from_array(NO_DROP))
    assert capsys.readouterr().out == ""
    assert issubclass(checks.EffectMissing, AssertionError)  # pytest and nbval report it as a failure


def test_forgetting_threshold_and_task():
    m = AccuracyMatrix.from_array([[0.9, 0.1, 0.1], [0.8, 0.9, 0.1], [0.7, 0.87, 0.9]])
    checks.forgetting(m, task=0, min_drop=0.2)
    with pytest.raises(checks.EffectMissing):
        checks.forgetting(m, task=0, min_drop=0.25)
    with pytest.raises(checks.EffectMissing):
        checks.forgetting(m, task=1)  # 0.90 -> 0.87 is a drop under the default 0.05
    assert "task 2 fell" in checks.forgetting(m, task=1, min_drop=0.02)


def test_forgetting_needs_a_later_stage():
    m = AccuracyMatrix(2)
    m.record_row(0, [0.9, 0.1])
    with pytest.raises(ValueError, match="need results after a later task"):
        checks.forgetting(m)


def test_learned(capsys):
    m = AccuracyMatrix.from_array(DROP)
    assert "task 2 learned: 96%" in checks.learned(m, 1, 0.9)
    assert "task 2 learned" in capsys.readouterr().out
    with pytest.raises(checks.EffectMissing, match=r"task 1 reached only 97% \(wanted at least 99%\)"):
        checks.learned(m, 0, 0.99)


def test_expect():
    assert checks.expect(True, "yes", "no") == "yes"
    with pytest.raises(checks.EffectMissing, match="^no$"):
        checks.expect(False, "yes", "no")
