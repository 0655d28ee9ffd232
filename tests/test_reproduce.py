"""reproduce hsu2018: every published method maps to a strategy, runs, and is compared honestly."""
import pytest

from cfcourse import reproduce as rep
from cfcourse.strategies import STRATEGIES, make_strategy


def test_every_published_method_runs_as_a_registered_strategy_with_valid_settings():
    assert list(rep.METHODS) == list(rep.HSU2018)  # every row of the published table, GEM included
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
    assert rep.settings("GEM", "class") == ("gem", {"buffer_size": 1100, "margin": 0.5})
    with pytest.raises(ValueError, match="unknown method 'MAS'; choose one of fine-tune"):
        rep.settings("MAS", "task")
    with pytest.raises(ValueError, match="unknown scenario 'instance'; choose one of task, domain, class"):
        rep.settings("EWC", "instance")


def test_agreement_is_three_points_or_the_95_percent_interval_of_our_mean():
    assert rep.Cell("fine-tune", "class", [21.0, 22.0], 19.71).agrees  # within 3 points
    assert not rep.Cell("fine-tune", "class", [30.0, 30.2], 19.71).agrees
    assert rep.Cell("fine-tune", "class", [20.0, 40.0], 19.71).agrees  # mean 30, half-width 12.7 * 10 = 127
    assert rep.Cell("x", "class", [1.0], None).agrees is None


def test_the_interval_is_t_times_the_standard_error():
    assert rep.t_quantile(1) == 12.706 and rep.t_quantile(2) == 4.303 and rep.t_quantile(100) == 1.96
    assert abs(rep.standard_error([60.0, 62.0, 64.0]) - 2 / 3 ** 0.5) < 1e-12
    assert abs(rep.half_width([60.0, 62.0, 64.0]) - 4.303 * 2 / 3 ** 0.5) < 1e-12
    assert rep.half_width([50.0]) == 0.0 and rep.standard_error([50.0]) == 0.0
    many = [80.0, 84.0, 86.0, 78.0, 82.0, 85.0, 79.0, 83.0, 81.0, 87.0]  # sd 3.03: 2 sd = 6.06, half-width 2.17
    assert not rep.agrees(many, 86.0) and rep.agrees(many, 84.0)  # 3.5 off is out, though within 2 sd of the seeds
    with pytest.raises(ValueError, match="df must be a positive integer"):
        rep.t_quantile(0)


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
    with pytest.raises(ValueError, match="first_seed must be a non-negative integer, got -1"):
        rep.reproduce(2, first_seed=-1)


def test_the_seeds_run_start_at_first_seed(monkeypatch):
    ran = []
    monkeypatch.setattr(rep, "run_cell", lambda method, scenario, seed, setup: ran.append(seed) or 50.0)
    rep.reproduce(3, methods=["fine-tune"], scenarios=("task",), first_seed=7)
    rep.reproduce(2, methods=["fine-tune"], scenarios=("task",))
    assert ran == [7, 8, 9, 0, 1]


def test_agrees_is_the_rule_the_table_uses():
    assert rep.agrees([21.0, 22.0], 19.71) and not rep.agrees([30.0, 30.2], 19.71)
    assert rep.agrees([20.0, 40.0], 19.71)  # mean 30, half-width 127: inside
    assert not rep.agrees([23.0], 19.71) and rep.agrees([22.71], 19.71)  # one seed: 3 points exactly is in
    cell = rep.Cell("EWC", "class", [60.0, 62.0, 64.0], 66.5)
    assert cell.agrees == rep.agrees(cell.ours, 66.5) and f"{cell.half_width:.2f}" in rep.table([cell])


def test_choose_on_validation_reads_the_test_number_of_the_validation_pick_only():
    val, test = {0.0: 60.0, 10.0: 64.0, 100.0: 62.0}, {0.0: 61.0, 10.0: 62.0, 100.0: 65.0}
    assert rep.choose_on_validation(val, test) == (10.0, 62.0)
    assert rep.choose_on_validation({1.0: 7.0, 2.0: 7.0}, {1.0: 1.0, 2.0: 2.0}) == (1.0, 1.0)  # a tie: the first


def test_hold_out_takes_validation_digits_from_training_and_leaves_the_test_digits_alone():
    from cfcourse.data import split_mnist
    tasks = split_mnist(2, "class", train_size=1000, test_size=200)
    train, val = rep.hold_out(tasks, 0.1)
    for task, tr, va in zip(tasks, train, val):
        n = len(task.train_y)
        assert len(tr.train_y) + len(va.test_y) == n and len(va.test_y) == int(0.1 * n)
        assert (va.test_x == task.train_x[len(tr.train_y):]).all() and tr.test_x is task.test_x
    with pytest.raises(ValueError, match="fraction must be between 0 and 1"):
        rep.hold_out(tasks, 1.0)


def test_a_small_sweep_gives_a_validation_and_a_test_number_per_value():
    setup = rep.Setup(hidden=(16,), epochs=1, train_size=600, test_size=200, fisher_samples=20)
    val, test = rep.sweep_on_validation("EWC", "domain", "ewc_lambda", [0.0, 100.0], 0, setup)
    assert list(val) == list(test) == [0.0, 100.0] and all(0 <= a <= 100 for a in [*val.values(), *test.values()])
    assert rep.tune("EWC", "domain", "ewc_lambda", [0.0, 100.0], 0, setup) == rep.choose_on_validation(val, test)


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


def test_the_readme_table_has_every_cell_its_spread_the_paper_and_the_verdict():
    cells = [rep.Cell("fine-tune", "task", [97.08, 90.99, 93.83], 93.46),
             rep.Cell("LwF", "domain", [76.0, 75.0, 77.0], 71.02), rep.Cell("GEM", "class", [91.5], 92.20)]
    text = rep.markdown_table(cells)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3
    se = rep.standard_error(cells[0].ours)
    assert f"| fine-tune | task-IL | {cells[0].mean:.2f} ± {se:.2f} | {cells[0].half_width:.2f} | 93.46 | agrees |" \
        in text
    assert "| LwF | domain-IL | 76.00 ± 0.58 | 2.48 | 71.02 | differs by +4.98 (note 1) |" in text
    assert "| GEM | class-IL | 91.50 ± 0.00 | 0.00 | 92.20 | agrees |" in text
    assert "1. LwF, domain-IL: " + rep.NOTES[("LwF", "domain")] in text and "standard error" in text
    assert rep.notes_for(cells) == ["LwF, domain-IL: " + rep.NOTES[("LwF", "domain")]]


def test_a_cell_survives_its_json():
    cell = rep.Cell("EWC", "class", [19.8, 19.7], 19.80, 12.5)
    back = rep.Cell.from_dict(cell.to_dict())
    assert (back.method, back.scenario, back.ours, back.published, back.seconds) == ("EWC", "class", [19.8, 19.7],
                                                                                      19.8, 12.5)


def test_every_note_is_about_a_cell_of_the_table():
    for method, scenario in rep.NOTES:
        assert method in rep.HSU2018 and scenario in rep.SCENARIOS
