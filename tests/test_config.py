"""Run mode, device choice, seeding and the cache folder."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cfcourse
from cfcourse import config


@pytest.mark.parametrize("value, fast", [("1", True), ("true", True), ("YES", True), (" on ", True),
                                         ("0", False), ("", False), ("no", False), (None, False)])
def test_by_mode_follows_cfcourse_fast(monkeypatch, value, fast):
    if value is None:
        monkeypatch.delenv("CFCOURSE_FAST", raising=False)
    else:
        monkeypatch.setenv("CFCOURSE_FAST", value)
    assert config.fast_mode() is fast
    assert config.by_mode(full=60_000, fast=2_000) == (2_000 if fast else 60_000)
    assert config.mode_name() == ("fast" if fast else "full")
    assert cfcourse.by_mode("F", "f") == ("f" if fast else "F")


def test_offline_follows_cfcourse_offline(monkeypatch):
    monkeypatch.setenv("CFCOURSE_OFFLINE", "1")
    assert config.offline()
    monkeypatch.delenv("CFCOURSE_OFFLINE")
    assert not config.offline()


def test_data_dir_follows_cfcourse_data(monkeypatch, tmp_path):
    monkeypatch.setenv("CFCOURSE_DATA", str(tmp_path / "assets"))
    assert config.data_dir() == tmp_path / "assets"
    monkeypatch.setenv("CFCOURSE_DATA", "~/my-cache")
    assert config.data_dir() == Path.home() / "my-cache"


def test_data_dir_default_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CFCOURSE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert config.data_dir() == tmp_path / "cfcourse"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert config.data_dir() == Path.home() / ".cache" / "cfcourse"


def test_device_honours_cfcourse_device(monkeypatch):
    monkeypatch.setenv("CFCOURSE_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")
    assert cfcourse.device().type == "cpu"


def test_device_refuses_unknown_names(monkeypatch):
    monkeypatch.setenv("CFCOURSE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'; choose one of cpu, cuda, mps"):
        config.device()
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        config.device("gpu")


def test_device_prefer_and_auto(monkeypatch):
    monkeypatch.setenv("CFCOURSE_DEVICE", "tpu")
    assert config.device("cpu") == torch.device("cpu")  # an explicit choice wins over the environment
    monkeypatch.delenv("CFCOURSE_DEVICE")
    auto = config.device()
    assert auto.type in ("cpu", "cuda", "mps")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)


def test_set_seed_makes_everything_reproducible():
    gen = config.set_seed(123)
    a = (torch.rand(5), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    gen = cfcourse.set_seed(123)
    b = (torch.rand(5), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and torch.equal(a[3], b[3])
    config.set_seed(124)
    assert not torch.equal(torch.rand(5), a[0])
    assert isinstance(gen, torch.Generator) and gen.initial_seed() == 123


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_set_seed_refuses_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        config.set_seed(bad)


@pytest.mark.parametrize("value, expected", [(None, 0), ("", 0), ("0", 0), (" 7 ", 7), ("4294967295", 2**32 - 1)])
def test_seed_follows_cfcourse_seed(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CFCOURSE_SEED", raising=False)
    else:
        monkeypatch.setenv("CFCOURSE_SEED", value)
    assert config.seed() == expected
    assert cfcourse.seed() == expected


@pytest.mark.parametrize("bad", ["-1", "1.5", "one", "4294967296", "0x10"])
def test_seed_refuses_bad_values_with_advice(monkeypatch, bad):
    monkeypatch.setenv("CFCOURSE_SEED", bad)
    with pytest.raises(ValueError, match=r"CFCOURSE_SEED must be a whole number from 0 to 4294967295, got '.*'; "
                                         r"unset it for seed 0"):
        config.seed()


def test_package_exports():
    assert set(cfcourse.__all__) >= {"by_mode", "device", "fast_mode", "seed", "set_seed", "__version__"}
    assert cfcourse.__version__


def test_one_thread_by_default_and_never_more_than_the_cpus_we_may_use(monkeypatch):
    monkeypatch.delenv("CFCOURSE_THREADS", raising=False)
    assert config.thread_count() == 1
    monkeypatch.setenv("CFCOURSE_THREADS", " ")
    assert config.thread_count() == 1
    monkeypatch.setenv("CFCOURSE_THREADS", "2")
    assert config.thread_count() == min(2, config.cpu_budget())
    monkeypatch.setenv("CFCOURSE_THREADS", "512")
    assert config.thread_count() == config.cpu_budget()


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_thread_counts_are_refused_with_advice(monkeypatch, bad):
    monkeypatch.setenv("CFCOURSE_THREADS", bad)
    with pytest.raises(ValueError, match=rf"CFCOURSE_THREADS must be a whole number >= 1, got '{bad}'; unset it"):
        config.thread_count()


def test_threads_sets_torch_for_a_block_and_puts_it_back(monkeypatch):
    monkeypatch.setenv("CFCOURSE_THREADS", "1")
    before = torch.get_num_threads()
    with config.threads() as n:
        assert n == 1 == torch.get_num_threads()
        with config.threads() as inner:  # a nested block keeps the enclosing block's choice
            assert inner == 1
    assert torch.get_num_threads() == before
    with config.threads(2) as n:
        assert n == 2 == torch.get_num_threads()
        with config.threads():
            assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_the_training_loops_run_on_the_course_threads(monkeypatch, mnist):
    from cfcourse.data import permuted_mnist
    from cfcourse.models import MLP
    from cfcourse.train import run_tasks

    seen = []
    monkeypatch.setattr(MLP, "forward", lambda self, x, _f=MLP.forward: seen.append(torch.get_num_threads())
                        or _f(self, x))
    tasks = permuted_mnist(1, train_size=256, test_size=64)
    monkeypatch.setenv("CFCOURSE_THREADS", "1")
    before = torch.get_num_threads()
    run_tasks(MLP(hidden=(16,)), tasks, progress=False)
    assert set(seen) == {1} and torch.get_num_threads() == before
    seen.clear()
    with config.threads(2):  # as `python -m cfcourse run` does with auto_threads()
        run_tasks(MLP(hidden=(16,)), tasks, progress=False)
    assert set(seen) == {2} and torch.get_num_threads() == before


def test_headless_runs_take_the_free_cpus(monkeypatch):
    monkeypatch.delenv("CFCOURSE_THREADS", raising=False)
    monkeypatch.setattr(config, "cpu_budget", lambda: 4)
    monkeypatch.setattr(config, "idle_cpus", lambda *a: 3.9)
    assert config.auto_threads() == 4 and config.auto_threads(most=2) == 2
    monkeypatch.setattr(config, "idle_cpus", lambda *a: 3.0)  # another job holds a CPU: one thread
    assert config.auto_threads() == 1 and config.auto_threads(most=2) == 2
    monkeypatch.setattr(config, "idle_cpus", lambda *a: None)  # unknown: the safe choice
    assert config.auto_threads() == 1
    monkeypatch.setenv("CFCOURSE_THREADS", "3")
    monkeypatch.setattr(config, "idle_cpus", lambda *a: pytest.fail("CFCOURSE_THREADS chose already"))
    assert config.auto_threads() == 3


def test_import_cfcourse_leaves_torch_threads_alone():
    code = ("import torch; torch.set_num_threads(3); import cfcourse, cfcourse.train, cfcourse.cli; "
            "print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "CFCOURSE_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         timeout=120).stdout
    assert out.strip() == "3"


def test_idle_cpus_is_a_share_of_the_cpus_or_unknown(monkeypatch):
    import os

    idle = config.idle_cpus(0.05)
    if idle is not None:
        assert 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9
    monkeypatch.setattr(config, "Path", lambda _: Path("/nonexistent/stat"))
    assert config.idle_cpus(0.01) is None
