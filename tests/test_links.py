"""Launch links: every lesson has one in the README, every Binder and nbgitpuller link agrees with the one address
in pyproject.toml, and `scripts/links.py --check` catches a stale block. Offline and fast: nothing is fetched."""
from __future__ import annotations

import email.message
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from cfcourse import links

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "links.py"
BINDER = re.compile(r"https://mybinder\.org/v2/[^\s)\]>\"'`]+")
GIT_PULL = re.compile(r"https?://[^\s)\]>\"'`]+/git-pull\?[^\s)\]>\"'`]+")
BLOCK = re.compile(r"<!-- links:(\w+):start -->.*?<!-- links:\1:end -->", re.S)


def configured(root: Path = ROOT) -> tuple[str, str]:
    """The address and branch as pyproject.toml spells them, read here without cfcourse.links."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return config["project"]["urls"]["Repository"], config["tool"]["cfcourse"]["branch"]


def lessons(root: Path = ROOT) -> list[str]:
    return sorted(p.name for p in (root / "lessons").glob("[0-9][0-9]_*.ipynb"))


def docs(root: Path = ROOT) -> dict[str, str]:
    paths = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in paths}


def binder_lesson(url: str, root: Path = ROOT) -> str:
    """The lesson a Binder URL opens, after checking that it launches the configured repository and branch."""
    repository, branch = configured(root)
    slug = urlsplit(repository).path.strip("/")
    parts = urlsplit(url)
    assert parts.path == f"/v2/gh/{slug}/{branch}", f"{url} does not launch {repository} at {branch}"
    (urlpath,) = parse_qs(parts.query)["urlpath"]
    assert urlpath.startswith("lab/tree/lessons/"), f"{url} opens {urlpath}, not a lesson in JupyterLab"
    return urlpath.removeprefix("lab/tree/lessons/")


def git_pull_lesson(url: str, root: Path = ROOT) -> str:
    """The lesson an nbgitpuller URL opens, after checking its repository, branch and folder."""
    repository, branch = configured(root)
    query = parse_qs(urlsplit(url).query)
    assert query["repo"] == [repository], f"{url} pulls {query['repo']}, not {repository}"
    assert query["branch"] == [branch], f"{url} pulls branch {query['branch']}, not {branch}"
    folder = query.get("targetPath", [repository.rsplit("/", 1)[-1]])[0]
    (urlpath,) = query["urlpath"]
    assert urlpath.startswith(f"lab/tree/{folder}/lessons/"), f"{url} opens {urlpath}, outside the clone {folder}/"
    return urlpath.removeprefix(f"lab/tree/{folder}/lessons/")


def test_every_lesson_has_a_launch_link_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    launched = {binder_lesson(url) for url in BINDER.findall(readme)}
    missing = [name for name in lessons() if name not in launched]
    assert lessons() and not missing, f"no Binder link in README.md for {missing}: run python scripts/links.py"


def test_the_readme_has_a_badge_for_the_course():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    badge = re.search(r"\[!\[[^\]]*\]\(https://mybinder\.org/badge_logo\.svg\)\]\((\S+?)\)", readme)
    assert badge, "README.md has no Binder badge"
    assert binder_lesson(badge.group(1)) == "00_welcome.ipynb"


def test_every_launch_link_in_readme_and_docs_agrees_with_the_address():
    found = {"binder": 0, "git-pull": 0}
    for path, text in docs().items():
        for url in BINDER.findall(text):
            assert binder_lesson(url) in lessons(), f"{path}: {url} opens a lesson that does not exist"
            found["binder"] += 1
        for url in GIT_PULL.findall(text):
            assert git_pull_lesson(url) in lessons(), f"{path}: {url} opens a lesson that does not exist"
            found["git-pull"] += 1
    assert found["binder"] >= len(lessons()) + 2 and found["git-pull"] >= 1, found  # README's links, the guide's


def test_nothing_outside_the_generated_blocks_spells_the_address():
    repository, _ = configured()
    slug = urlsplit(repository).path.strip("/")
    needles = [repository, quote(repository, safe=""), f"gh/{slug}"]
    for path in source_files():
        text = BLOCK.sub("", path.read_text(encoding="utf-8", errors="replace"))
        for needle in needles:
            assert needle not in text, f"{path.relative_to(ROOT)} spells the address by hand ({needle}): " \
                                       "generate it with scripts/links.py"


def source_files() -> list[Path]:
    """The repository's text files except pyproject.toml, without descending into environments and builds."""
    suffixes = {".md", ".py", ".ipynb", ".toml", ".cff", ".txt", ".sh", ".cfg", ".yml", ".yaml"}
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if (not d.startswith(".") or d in {".ci", ".github"})
                   and d not in {"_build", "__pycache__", "node_modules"} and not d.endswith(".egg-info")]
        found += [Path(folder, f) for f in files if Path(f).suffix in suffixes or f in {"postBuild", "run"}]
    found = [p for p in found if p != ROOT / "pyproject.toml" and p.stat().st_size < 2_000_000]
    assert {ROOT / "README.md", ROOT / "docs" / "teaching.md", ROOT / ".ci" / "run"} <= set(found)
    return found


def test_the_module_builds_the_links_the_docs_hold():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    assert links.repository() == configured()[0]
    assert f"({links.binder_url('05_rehearsal')})" in readme
    assert links.nbgitpuller_url("HUB") in guide


def test_links_escape_and_place_what_they_carry():
    where = links.Address("https://github.com/someone/forgetting-course", "spring-2027")
    assert links.binder_url("02_permuted_mnist", where=where) == (
        "https://mybinder.org/v2/gh/someone/forgetting-course/spring-2027"
        "?urlpath=lab/tree/lessons/02_permuted_mnist.ipynb")
    url = links.nbgitpuller_url("https://hub.example.org/", "cf", "05_rehearsal.ipynb", where=where)
    assert url == ("https://hub.example.org/hub/user-redirect/git-pull?repo=https%3A%2F%2Fgithub.com%2Fsomeone%2F"
                   "forgetting-course&branch=spring-2027&targetPath=cf&urlpath=lab/tree/cf/lessons/05_rehearsal.ipynb")
    assert links.nbgitpuller_url("hub.example.org", where=where).startswith("https://hub.example.org/hub/")
    other = links.Address("https://gitlab.com/someone/course.git", None)  # no branch: the default one
    assert links.binder_url(where=other).startswith("https://mybinder.org/v2/git/https%3A%2F%2Fgitlab.com%2F"
                                                    "someone%2Fcourse.git/HEAD?urlpath=")
    assert "branch=" not in links.nbgitpuller_url("HUB", where=other)


@pytest.mark.parametrize("bad", ["welcome", "lessons/../setup.sh", "2_permuted_mnist.ipynb"])
def test_a_lesson_that_is_not_one_is_refused(bad):
    with pytest.raises(ValueError, match="02_permuted_mnist.ipynb"):
        links.binder_url(bad)


def test_an_installed_copy_reads_the_address_from_its_metadata(monkeypatch, tmp_path):
    meta = email.message.Message()
    meta["Project-URL"] = "Repository, https://github.com/someone/forgetting-course"
    monkeypatch.setattr(links, "PYPROJECT", tmp_path / "absent.toml")
    monkeypatch.setattr(links.importlib.metadata, "metadata", lambda name: meta)
    assert links.address() == links.Address("https://github.com/someone/forgetting-course", None)
    assert "/forgetting-course/HEAD?" in links.binder_url()
    with pytest.raises(FileNotFoundError, match="not cfcourse's pyproject.toml"):
        links.address(tmp_path / "absent.toml")


def copy_of_the_course(tmp_path: Path) -> Path:
    """What scripts/links.py reads and writes, copied; the lessons as empty files (only their names count)."""
    for name in ["pyproject.toml", "README.md", "docs/teaching.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "lessons").mkdir()
    for name in lessons():
        (tmp_path / "lessons" / name).touch()
    return tmp_path


def run_script(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_committed_blocks_are_up_to_date():
    result = run_script(ROOT, "--check")
    assert result.returncode == 0, result.stderr


def test_changing_the_address_is_one_line_and_one_command(tmp_path):
    root = copy_of_the_course(tmp_path)
    old, _ = configured()
    pyproject = root / "pyproject.toml"
    line = f'Repository = "{old}"'
    assert pyproject.read_text().count(line) == 1
    new = 'Repository = "https://github.com/someone/forgetting-course"'
    pyproject.write_text(pyproject.read_text().replace(line, new))

    stale = run_script(root, "--check")
    assert stale.returncode == 1
    assert "README.md" in stale.stderr and "docs/teaching.md" in stale.stderr
    assert "run python scripts/links.py" in stale.stderr
    assert run_script(root).returncode == 0
    assert run_script(root, "--check").returncode == 0

    for path, text in docs(root).items():
        assert old not in text and quote(old, safe="") not in text, f"{path} still holds the old address"
        for url in BINDER.findall(text):
            binder_lesson(url, root)
        for url in GIT_PULL.findall(text):
            assert git_pull_lesson(url, root).endswith(".ipynb")
    readme = (root / "README.md").read_text()
    assert readme.count("/v2/gh/someone/forgetting-course/main?") == len(lessons()) + 1


def test_a_lesson_without_a_link_is_caught(tmp_path):
    root = copy_of_the_course(tmp_path)
    (root / "lessons" / "11_new_lesson.ipynb").touch()
    assert run_script(root, "--check").returncode == 1
    run_script(root)
    assert "urlpath=lab/tree/lessons/11_new_lesson.ipynb" in (root / "README.md").read_text()


def test_a_missing_block_is_named(tmp_path):
    root = copy_of_the_course(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("<!-- links:badge:end -->", ""))
    result = run_script(root, "--check")
    assert result.returncode == 1 and "README.md has no <!-- links:badge:start -->" in result.stderr
