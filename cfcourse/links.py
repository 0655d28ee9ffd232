"""Launch links (Binder, nbgitpuller) built from the one repository address in pyproject.toml.

The address is `[project.urls] Repository`, the branch `[tool.cfcourse] branch`; `python scripts/links.py`
writes the links into README.md and docs/teaching.md. Standard library only, and no network.
"""
from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, urlsplit

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
FIRST_LESSON = "00_welcome.ipynb"
_LESSON = re.compile(r"\d\d_[a-z0-9_]+\.ipynb")


class Address(NamedTuple):
    """Where the course lives: the repository's URL and the branch to launch (None: its default branch)."""

    repository: str
    branch: str | None


def address(pyproject: Path | None = None) -> Address:
    """The configured address: from `pyproject` (default: the checkout's), else from the installed metadata."""
    path = PYPROJECT if pyproject is None else Path(pyproject)
    if path.is_file():
        config = tomllib.loads(path.read_text(encoding="utf-8"))
        if config.get("project", {}).get("name") == "cfcourse":
            return _from_pyproject(config, path)
    if pyproject is not None:
        raise FileNotFoundError(f"{path} is not cfcourse's pyproject.toml")
    return _from_metadata()


def _from_pyproject(config: dict, path: Path) -> Address:
    repository = config["project"].get("urls", {}).get("Repository")
    if not repository:
        raise ValueError(f"{path} has no [project.urls] Repository: add the repository's address there")
    return Address(repository.rstrip("/"), config.get("tool", {}).get("cfcourse", {}).get("branch"))


def _from_metadata() -> Address:
    """An installed copy without its pyproject.toml: the Project-URL its metadata keeps (no branch there)."""
    for entry in importlib.metadata.metadata("cfcourse").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip() == "Repository":
            return Address(url.strip().rstrip("/"), None)
    raise LookupError("cfcourse's metadata has no Repository URL: reinstall it from a checkout")


def repository(pyproject: Path | None = None) -> str:
    """The repository's URL, e.g. for `git clone`."""
    return address(pyproject).repository


def lesson_path(lesson: str | None = None) -> str:
    """A lesson's notebook path inside the repository, e.g. 'lessons/02_permuted_mnist.ipynb'."""
    name = FIRST_LESSON if lesson is None else Path(lesson).name
    if not name.endswith(".ipynb"):
        name += ".ipynb"
    if not _LESSON.fullmatch(name):
        raise ValueError(f"a lesson is named like '02_permuted_mnist.ipynb', got {lesson!r}")
    return f"lessons/{name}"


def binder_url(lesson: str | None = None, *, where: Address | None = None) -> str:
    """A mybinder.org link that opens `lesson` (default: lesson 00) in JupyterLab."""
    where = address() if where is None else where
    ref = where.branch or "HEAD"  # HEAD: Binder's name for the default branch
    parts = urlsplit(where.repository)
    if parts.netloc == "github.com":
        spec = f"gh/{parts.path.strip('/').removesuffix('.git')}/{quote(ref, safe='')}"
    else:
        spec = f"git/{quote(where.repository, safe='')}/{quote(ref, safe='')}"
    return f"https://mybinder.org/v2/{spec}?urlpath=lab/tree/{lesson_path(lesson)}"


def nbgitpuller_url(hub: str, folder: str | None = None, lesson: str | None = None, *,
                    where: Address | None = None) -> str:
    """A JupyterHub link for nbgitpuller that clones (first click) or updates the course, then opens `lesson`.

    It clones into `folder` in the student's home (default: the repository's name, nbgitpuller's own default).
    """
    where = address() if where is None else where
    hub = hub.rstrip("/") if "://" in hub else f"https://{hub.rstrip('/')}"
    query = f"repo={quote(where.repository, safe='')}"
    if where.branch:
        query += f"&branch={quote(where.branch, safe='')}"
    default = urlsplit(where.repository).path.rstrip("/").rsplit("/", 1)[-1]
    if folder and folder.strip("/") != default:
        query += f"&targetPath={quote(folder.strip('/'), safe='')}"
    folder = folder.strip("/") if folder else default
    return f"{hub}/hub/user-redirect/git-pull?{query}&urlpath=lab/tree/{folder}/{lesson_path(lesson)}"
