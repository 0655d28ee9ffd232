"""The site's execution cache: each lesson executed once per mode, kept as a notebook with its outputs.

A cached lesson is `_build/executed/<mode>/<lesson>.ipynb`, valid while its key is the same: the key hashes the
lesson's cells, the mode, and the cfcourse package's source (lessons 09 and 10 also the key of the lesson before,
since they reuse the models lesson 08 saves). `bash scripts/site.sh` executes only the lessons whose key changed;
`bash scripts/test.sh` stores here the lessons nbval has just executed (tests/conftest.py), so that CI builds the
site without executing any lesson twice. Standard library and nbformat only: tests/conftest.py loads this file
by its path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "_build" / "executed"
CHAINED = ("08_", "09_", "10_")  # 09 and 10 start from the models 08 saves: a change to one re-keys the next
META = "cfcourse_execution"


def mode() -> str:
    """'fast' when CFCOURSE_FAST is set to anything but an explicit no (as cfcourse.config reads it), else 'full'."""
    return "fast" if os.environ.get("CFCOURSE_FAST", "").strip().lower() not in ("", "0", "false", "no") else "full"


def lessons(root: Path = ROOT) -> list[Path]:
    """The lesson notebooks, in order."""
    return sorted((root / "lessons").glob("[0-9][0-9]_*.ipynb"))


def package_digest(root: Path = ROOT) -> str:
    """sha256 of the cfcourse package's source and data files (what every lesson imports)."""
    h = hashlib.sha256()
    for path in sorted((root / "cfcourse").rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cells_digest(notebook: dict) -> str:
    """sha256 of what a lesson runs and says: each cell's type and source (not its outputs or ids)."""
    cells = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
             for c in notebook["cells"]]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def keys(run_mode: str, root: Path = ROOT) -> dict[str, str]:
    """Every lesson's cache key in `run_mode`, by notebook name."""
    package = package_digest(root)
    found, previous = {}, ""
    for path in lessons(root):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        chained = previous if path.name.startswith(CHAINED[1:]) else ""
        key = hashlib.sha256(f"{run_mode}\0{package}\0{cells_digest(notebook)}\0{chained}".encode()).hexdigest()
        found[path.name] = key
        if path.name.startswith(CHAINED):
            previous = key
    return found


def cached_path(name: str, run_mode: str, cache: Path = CACHE) -> Path:
    return cache / run_mode / name


def is_cached(name: str, key: str, run_mode: str, cache: Path = CACHE) -> bool:
    """True when the cache holds `name` executed under this key."""
    path = cached_path(name, run_mode, cache)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))["metadata"].get(META, {})
    except (OSError, ValueError, KeyError):
        return False
    return meta.get("key") == key


def store(notebook, name: str, key: str, run_mode: str, seconds: float, by: str, cache: Path = CACHE) -> Path:
    """Write an executed notebook (an nbformat NotebookNode) into the cache, marked with its key."""
    import nbformat

    notebook.metadata[META] = {"key": key, "mode": run_mode, "seconds": round(seconds, 1), "executed_by": by}
    path = cached_path(name, run_mode, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, str(tmp))
    tmp.replace(path)
    return path
