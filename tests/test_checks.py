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


def test_measures_hold_on_their_side_of_the_threshold():
    assert checks.at_least(0.9, 0.85, "acc") and not checks.at_least(0.8, 0.85, "acc")
    assert checks.at_most(0.2, 0.3, "share") and not checks.at_most(0.4, 0.3, "share")
    assert checks.at_least(0.85, 0.85, "acc").passed  # the threshold itself passes
    assert checks.at_least(0.9, 0.85, "acc").margin == pytest.approx(0.05)
    assert checks.at_most(0.4, 0.3, "share").margin == pytest.approx(-0.1)


@pytest.mark.parametrize("bad", ["", "  ", None])
def test_a_measure_needs_a_name(bad):
    with pytest.raises(ValueError, match="a measure needs a name"):
        checks.at_least(1.0, 0.5, bad)


def test_a_measure_refuses_nan():
    with pytest.raises(ValueError, match="acc: a measure cannot be NaN"):
        checks.at_least(float("nan"), 0.5, "acc")


def test_expect_takes_a_list_and_fails_when_any_fails(capsys):
    assert checks.expect([checks.at_least(0.9, 0.8, "a"), True], "yes", "no") == "yes"
    with pytest.raises(checks.EffectMissing, match="^no$"):
        checks.expect([checks.at_least(0.9, 0.8, "a"), checks.at_most(0.5, 0.3, "b")], "yes", "no")
    with pytest.raises(checks.EffectMissing):
        checks.expect([checks.at_least(0.9, 0.8, "a"), False], "yes", "no")


def read_log(path):
    import json
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_nothing_is_logged_unless_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("CFCOURSE_CHECK_LOG", raising=False)
    monkeypatch.chdir(tmp_path)
    checks.expect(checks.at_least(0.9, 0.8, "a"), "yes", "no")
    assert list(tmp_path.iterdir()) == []


def test_every_measure_is_logged_with_its_lesson_seed_and_mode(monkeypatch, tmp_path):
    log = tmp_path / "checks.jsonl"
    monkeypatch.setenv("CFCOURSE_CHECK_LOG", str(log))
    monkeypatch.setenv("CFCOURSE_CHECK_LESSON", "03_three_scenarios")
    monkeypatch.setenv("CFCOURSE_SEED", "4")
    monkeypatch.setenv("CFCOURSE_FAST", "1")
    checks.expect([checks.at_least(0.9, 0.85, "task-IL average"), True], "yes", "no")
    with pytest.raises(checks.EffectMissing):  # a failing check is logged too, every measure of it
        checks.expect([checks.at_most(0.4, 0.3, "share"), checks.at_least(1.0, 0.5, "gain")], "yes", "no")
    checks.forgetting(AccuracyMatrix.from_array(DROP), min_drop=0.3)
    lines = read_log(log)
    assert [(x["check"], x["passed"]) for x in lines] == [("task-IL average", True), ("share", False), ("gain", True),
                                                          ("task 1's drop by the end", True)]
    first = lines[0]
    assert first["lesson"] == "03_three_scenarios" and first["seed"] == 4 and first["mode"] == "fast"
    assert (first["value"], first["threshold"], first["op"]) == (0.9, 0.85, ">=")
    assert first["margin"] == pytest.approx(0.05)
    assert lines[3]["value"] == pytest.approx(0.97 - 0.54) and lines[3]["threshold"] == 0.3
    assert lines[1]["margin"] == pytest.approx(-0.1)


def test_learned_is_logged(monkeypatch, tmp_path):
    log = tmp_path / "checks.jsonl"
    monkeypatch.setenv("CFCOURSE_CHECK_LOG", str(log))
    monkeypatch.delenv("CFCOURSE_CHECK_LESSON", raising=False)
    monkeypatch.delenv("CFCOURSE_SEED", raising=False)
    checks.learned(AccuracyMatrix.from_array(DROP), 1, 0.9)
    (line,) = read_log(log)
    assert line["check"] == "task 2 learned" and line["lesson"] is None and line["seed"] == 0
    assert line["value"] == pytest.approx(0.96)
