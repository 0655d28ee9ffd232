"""reproduce hsu2018: every published method maps to a strategy, runs, and is compared honestly."""
import pytest

from cfcourse import reproduce as rep
from cfcourse.strategies import STRATEGIES, make_strategy


def test_every_method_we_run_is_a_registered_strategy_with_valid_settings():
    for method in rep.METHODS:
        assert method in rep.HSU2018
        for scenario in rep.SCENARIOS:
            name, hparams = rep.settings(method, scenario)
            assert name in STRATEGIES, f"{method}: no strategy {name!r}"
            make_strategy(name, **hparams)


def test_settings_differ_per_scenario_where_the_authors_tuned_them_and_refuse_unknowns():
    assert rep.settings("EWC", "class") == ("ewc", {"ewc_lambda": 1200.0})
    assert rep.settings("EWC", "task") == ("ewc", {"ewc_lambda": 200.0})
    assert rep.settings("replay, 1,100 samples", "domain") == ("replay", {"buffer_size": 1100})
    with pytest.raises(ValueError, match="unknown method 'GEM'; choose one of fine-tune"):
        rep.settings("GEM", "task")
    with pytest.raises(ValueError, match="unknown scenario 'instance'; choose one of task, domain, class"):
        rep.settings("EWC", "instance")


def test_agreement_is_three_points_or_two_standard_deviations():
    assert rep.Cell("fine-tune", "class", [21.0, 22.0], 19.71).agrees  # within 3 points
    assert not rep.Cell("fine-tune", "class", [30.0, 30.2], 19.71).agrees
    assert rep.Cell("fine-tune", "class", [20.0, 40.0], 19.71).agrees  # mean 30, std 14: within 2 std
    assert rep.Cell("x", "class", [1.0], None).agrees is None


def test_a_small_run_fills_the_table_and_figure(tmp_path):
    setup = rep.Setup(hidden=(32,), epochs=1, train_size=1000, test_size=300)
    cells, wall = rep.reproduce(1, setup, methods=["fine-tune", "replay, 1,100 samples"], scenarios=("class",))
    assert [c.method for c in cells] == ["fine-tune", "replay, 1,100 samples"] and wall > 0
    naive, replay = cells
    assert 0 <= naive.mean <= 100 and replay.mean > naive.mean  # replay beats fine-tuning in class-IL
    text = rep.table(cells)
    assert "19.71" in text and "90.78" in text and f"{naive.mean:.2f}" in text
    rep.plot(cells, str(tmp_path / "hsu.png"))
    assert (tmp_path / "hsu.png").stat().st_size > 10_000


def test_seeds_must_be_positive():
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        rep.reproduce(0)


def test_agrees_is_the_rule_the_table_uses():
    assert rep.agrees([21.0, 22.0], 19.71) and not rep.agrees([30.0, 30.2], 19.71)
    assert rep.agrees([20.0, 40.0], 19.71)  # mean 30, sample std 14.1: within two of them
    assert not rep.agrees([23.0], 19.71) and rep.agrees([22.71], 19.71)  # one seed: 3 points exactly is in


def test_cli_json_carries_cells_settings_and_times(monkeypatch, capsys):
    import json

    from cfcourse.cli import main
    monkeypatch.setattr(rep.Setup, "fast", classmethod(lambda cls: cls(hidden=(16,), epochs=1, train_size=500,
                                                                         test_size=200)))
    monkeypatch.setattr(rep, "METHODS", {m: rep.METHODS[m] for m in ("fine-tune", "EWC")})
    assert main(["reproduce", "hsu2018", "--fast", "--seeds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(c["method"], c["scenario"]) for c in out["cells"]] == [
        (m, s) for m in ("fine-tune", "EWC") for s in rep.SCENARIOS]
    assert all(c["seconds"] > 0 and len(c["ours"]) == 1 for c in out["cells"])
    assert out["settings"]["EWC"] == {"strategy": "ewc", "hparams": rep.METHODS["EWC"][1]}
