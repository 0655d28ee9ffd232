"""Run mode, device, seeding and the data cache folder; see lesson 00."""
from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True when CFCOURSE_FAST is set: smaller sizes so the course runs in CI."""
    return os.environ.get("CFCOURSE_FAST", "").strip().lower() in _TRUE


def by_mode(full: T, fast: T) -> T:
    """The one place every size is decided from the run mode."""
    return fast if fast_mode() else full


def mode_name() -> str:
    """'fast' or 'full', for printing."""
    return "fast" if fast_mode() else "full"


def offline() -> bool:
    """True when CFCOURSE_OFFLINE is set: never try the network for assets."""
    return os.environ.get("CFCOURSE_OFFLINE", "").strip().lower() in _TRUE


def device(prefer: str | None = None) -> torch.device:
    """The device to train on: CFCOURSE_DEVICE or `prefer` if given, else cuda, mps, cpu."""
    name = prefer or os.environ.get("CFCOURSE_DEVICE", "").strip() or None
    if name:
        valid = ("cpu", "cuda", "mps")
        if name.split(":")[0] not in valid:
            raise ValueError(f"unknown device {name!r}; choose one of {', '.join(valid)}")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


SEED_LIMIT = 2**32  # numpy's seeds stop here


def seed() -> int:
    """The lessons' base seed: CFCOURSE_SEED (a whole number from 0 to 2**32 - 1), default 0; every lesson derives
    its random choices (data, initial weights, batch order) from it, so another seed shows the spread of a result."""
    raw = os.environ.get("CFCOURSE_SEED", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"CFCOURSE_SEED must be a whole number from 0 to {SEED_LIMIT - 1}, got {raw!r}; "
                         "unset it for seed 0")
    return value


def set_seed(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch from one number; returns a torch generator seeded the same."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def data_dir() -> Path:
    """The asset cache folder: CFCOURSE_DATA, else the user's cache dir + /cfcourse."""
    env = os.environ.get("CFCOURSE_DATA", "").strip()
    return Path(env).expanduser() if env else user_cache_dir()


def user_cache_dir() -> Path:
    """This user's own cache folder for the course (~/.cache/cfcourse on Linux)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", "") or Path.home() / ".cache")
    return base / "cfcourse"


def runs_dir() -> Path:
    """Where a learner's own language-model runs, tuned models and caches go: CFCOURSE_RUNS, else lm-runs in the
    user's own cache. Never the data folder (CFCOURSE_DATA): on a hub a class shares one data folder, which may
    be read-only, and each student writes only their own runs."""
    env = os.environ.get("CFCOURSE_RUNS", "").strip()
    return Path(env).expanduser() if env else user_cache_dir() / "lm-runs"


def cpu_budget() -> int:
    """CPUs this process may really use: its CPU affinity, capped by a container's cgroup CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def thread_count(default: int = 1) -> int:
    """Torch threads for the course: CFCOURSE_THREADS (else `default`, 1), never more than cpu_budget().

    One thread by default: the course's networks are small, and on a shared machine (a classroom hub, a busy
    laptop) a second thread mostly spins while it waits; measured on 2 busy cores, the lessons ran up to 30 times
    slower with 2 threads than with 1. On a quiet machine CFCOURSE_THREADS=2 is about 1.7 times faster.
    """
    raw = os.environ.get("CFCOURSE_THREADS", "").strip() or str(default)
    try:
        wanted = int(raw)
    except ValueError:
        wanted = 0
    if wanted < 1:
        raise ValueError(f"CFCOURSE_THREADS must be a whole number >= 1, got {raw!r}; unset it for 1 thread")
    return min(wanted, cpu_budget())


def idle_cpus(sample_s: float = 0.25) -> float | None:
    """How many CPUs sat idle over the last `sample_s` seconds (from /proc/stat), or None where that is unknown.

    The load average is no good for this: it decays over minutes, so it still counts a job that just ended.
    """
    def times():
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        values = [int(x) for x in fields]
        return sum(values[:8]), values[3] + values[4]  # all time (without guest), idle + iowait
    try:
        total0, idle0 = times()
        time.sleep(sample_s)
        total1, idle1 = times()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


def auto_threads(most: int | None = None) -> int:
    """Threads for a headless run: CFCOURSE_THREADS if set; else all the CPUs granted (at most `most`) when no
    other job holds one right now, else 1 (a thread beyond the free CPUs spins; see thread_count)."""
    if os.environ.get("CFCOURSE_THREADS", "").strip():
        return thread_count()  # chosen: no need to look at the machine
    wanted = cpu_budget() if most is None else max(1, min(most, cpu_budget()))
    idle = idle_cpus(0.5)
    quiet = idle is not None and idle >= wanted - 0.75  # less than three quarters of a CPU in use
    return thread_count(default=wanted if quiet else 1)


_threads: ContextVar[int | None] = ContextVar("cfcourse_threads", default=None)


@contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """Run a block on `n` torch threads, then put torch's setting back; by default the enclosing block's count,
    else thread_count(). The training loops run inside one; see lesson 02."""
    n = n or _threads.get() or thread_count()
    before = torch.get_num_threads()
    token = _threads.set(n)
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        _threads.reset(token)
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
