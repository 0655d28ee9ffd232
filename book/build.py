"""Build the course website into _build/html (`bash scripts/site.sh` runs this; see book/README.md).

1. Execute every lesson whose cache key changed (book/executed.py), in a fresh kernel, in the mode CFCOURSE_FAST
   selects; the others come from the cache. `--no-execute` executes nothing and fails if a lesson is not cached.
2. Lay out the book's sources in _build/book: the README as the landing page, the executed lessons, the teaching
   guide and a page per CLI command; links to repository files that are not pages point to the repository.
3. Run Jupyter Book 2 (`jupyter book build --html`) with the course's own site template (book/theme), which
   renders the pages without any download.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import executed  # noqa: E402  (book/executed.py)

ROOT = executed.ROOT
BUILD = ROOT / "_build"
STAGE = BUILD / "book"
HTML = BUILD / "html"
THEME = Path(__file__).resolve().parent / "theme"
PAGES = {"README.md": "README.md", "docs/teaching.md": "docs/teaching.md"}  # repository file -> staged file
MD_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _links():
    """cfcourse/links.py, loaded by its path (standard library only: no torch import)."""
    if "cfcourse_links" not in sys.modules:
        spec = importlib.util.spec_from_file_location("cfcourse_links", ROOT / "cfcourse" / "links.py")
        sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)  # NamedTuple needs it registered
        spec.loader.exec_module(module)
    return sys.modules["cfcourse_links"]


def execute(name: str, key: str, run_mode: str, timeout: int | None) -> float:
    """Run one lesson top to bottom in a fresh kernel and store it in the cache; return its seconds."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(str(ROOT / "lessons" / name), as_version=4)
    runs = Path(os.environ.get("CFCOURSE_RUNS") or BUILD / "runs" / run_mode)
    env_keep = {k: os.environ.get(k) for k in ("CFCOURSE_RUNS", "TQDM_DISABLE")}
    os.environ.update(CFCOURSE_RUNS=str(runs), TQDM_DISABLE="1")  # the kernel inherits them; no progress widgets
    started = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "lessons")}}).execute()
    finally:
        for k, v in env_keep.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - started
    executed.store(notebook, name, key, run_mode, seconds, by="scripts/site.sh")
    return seconds


def execute_stale(run_mode: str, allow: bool, timeout: int | None) -> dict[str, float | None]:
    """Execute the lessons whose key changed (None: taken from the cache); refuse when `allow` is False."""
    keys = executed.keys(run_mode)
    stale = [name for name, key in keys.items() if not executed.is_cached(name, key, run_mode)]
    runs = Path(os.environ.get("CFCOURSE_RUNS") or BUILD / "runs" / run_mode)
    first_lm = next((n for n in keys if n.startswith(executed.CHAINED[0])), None)
    if stale and first_lm and first_lm not in stale and any(n.startswith(executed.CHAINED) for n in stale) \
            and not any(runs.glob("*")):
        stale.insert(0, first_lm)  # 09 or 10 needs 08's models, which are not in the runs folder any more
        stale.sort()
    if stale and not allow:
        raise SystemExit(f"--no-execute: {len(stale)} lesson(s) are not in the {run_mode}-mode cache "
                         f"({executed.CACHE / run_mode}): {', '.join(stale)}")
    seconds: dict[str, float | None] = {name: None for name in keys}
    for name in stale:
        print(f"executing {name} ({run_mode} mode) ...", flush=True)
        seconds[name] = execute(name, keys[name], run_mode, timeout)
        print(f"  {name}: {seconds[name]:.1f} s", flush=True)
    return seconds


def repository_url(path: str, is_dir: bool) -> str:
    """A repository file's address on the repository's web page (from pyproject.toml's one address)."""
    links = _links()
    where = links.address(ROOT / "pyproject.toml")
    return f"{where.repository}/{'tree' if is_dir else 'blob'}/{where.branch or 'HEAD'}/{path}"


def rewrite_links(text: str, source: str, staged: set[str]) -> str:
    """Relative links to repository files that are not pages of the site point to the repository instead."""
    base = Path(source).parent

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(base / path).replace(os.sep, "/")
        if resolved in staged or resolved.startswith(".."):
            return match.group(0)
        url = repository_url(resolved, (ROOT / resolved).is_dir()) + (f"#{anchor}" if anchor else "")
        return f"{match.group(1)}{url}{match.group(3)}"

    return MD_LINK.sub(fix, text)


def cli_pages() -> dict[str, str]:
    """A Markdown page per `python -m cfcourse` command: what it does and its --help."""
    from cfcourse import cli

    parser = cli.build_parser(prog="python -m cfcourse")
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help for a in sub._choices_actions}
    pages = {}
    for name, command in sub.choices.items():
        text = command.format_help().replace("```", "'''")
        pages[name] = (f"# `{name}`\n\n{(helps.get(name) or '').rstrip('.').capitalize()}.\n\n"
                       f"```text\n$ python -m cfcourse {name} --help\n{text}```\n")
    return pages


def stage(run_mode: str, folder: Path = STAGE) -> Path:
    """Lay out the book's sources in `folder` (default _build/book) and write its myst.yml; return the folder."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "lessons").mkdir(parents=True)
    names = [p.name for p in executed.lessons()]
    staged = set(PAGES.values()) | {f"lessons/{n}" for n in names}
    for source, target in PAGES.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        (folder / target).write_text(rewrite_links(text, source, staged), encoding="utf-8")
    for name in names:
        shutil.copy2(executed.cached_path(name, run_mode), folder / "lessons" / name)
    commands = cli_pages()
    (folder / "cli").mkdir()
    for name, text in commands.items():
        (folder / "cli" / f"{name}.md").write_text(text, encoding="utf-8")
    (folder / "cli" / "commands.md").write_text(
        "# The command line\n\n`python -m cfcourse` (or `cfcourse`) runs the course's experiments headless, "
        "prints or saves their numbers, and fetches the data. One page per command:\n\n"
        + "".join(f"- [`{n}`]({n}.md)\n" for n in commands), encoding="utf-8")
    toc = ["    - file: README.md",
           "    - title: Lessons", "      children:", *[f"        - file: lessons/{n}" for n in names],
           "    - file: docs/teaching.md",
           "    - file: cli/commands.md", "      children:", *[f"        - file: cli/{n}.md" for n in commands]]
    where = _links().address(ROOT / "pyproject.toml")
    (folder / "myst.yml").write_text("\n".join([
        "# Written by book/build.py: edit that file, not this one.",
        "version: 1",
        "project:",
        "  title: cfcourse",
        f"  github: {where.repository}",
        "  toc:", *toc,
        "site:",
        f"  template: {THEME}",
        "  title: 'cfcourse: catastrophic forgetting, hands on'",
        f"  options:\n    mode: {run_mode}",
        ""]), encoding="utf-8")
    return folder


def jupyter_book(stage_dir: Path, out: Path = HTML) -> None:
    """`jupyter book build --html` in the staged folder, then its _build/html moved to `out`."""
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if not jb:
        raise SystemExit("jupyter-book is not installed: run `bash scripts/setup.sh site` (or `test`)")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CFCOURSE_SITE_PYTHON": sys.executable}
    result = subprocess.run([jb, "build", "--html", "--ci"], cwd=stage_dir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(result.stdout, end="")
    built = stage_dir / "_build" / "html"
    if result.returncode != 0 or not (built / "index.html").is_file():
        raise SystemExit(f"jupyter book build failed (exit {result.returncode}); its output is above")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(built), str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-execute", action="store_true",
                        help="execute nothing: fail unless every lesson is in the cache (CI, after the tests)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run (default 1800)")
    parser.add_argument("--out", type=Path, default=HTML, help="where the site goes (default _build/html)")
    parser.add_argument("--stage", type=Path, default=STAGE,
                        help="where the book's sources are laid out for Jupyter Book (default _build/book)")
    args = parser.parse_args(argv)
    run_mode = executed.mode()
    started = time.perf_counter()
    seconds = execute_stale(run_mode, allow=not args.no_execute, timeout=args.timeout)
    ran = {n: s for n, s in seconds.items() if s is not None}
    print(f"lessons ({run_mode} mode): {len(ran)} executed ({sum(ran.values()):.0f} s), "
          f"{len(seconds) - len(ran)} from the cache {executed.CACHE / run_mode}", flush=True)
    jupyter_book(stage(run_mode, args.stage.resolve()), args.out.resolve())
    print(f"built {args.out} in {time.perf_counter() - started:.0f} s; open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
