"""Write the launch links (Binder, nbgitpuller) into README.md and docs/teaching.md from pyproject.toml's address.

    python scripts/links.py            # rewrite every <!-- links:NAME:start --> ... <!-- links:NAME:end --> block
    python scripts/links.py --check    # exit 1 if a block is not what the address gives
    python scripts/links.py --hub hub.example.org [--folder DIR] [--lesson 02_permuted_mnist]   # print one link

Standard library only: it loads cfcourse/links.py by its path, without importing the package (and PyTorch).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_links():
    spec = importlib.util.spec_from_file_location("cfcourse_links", ROOT / "cfcourse" / "links.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NamedTuple needs its module registered
    spec.loader.exec_module(module)
    return module


links = _load_links()


def lessons(root: Path) -> list[str]:
    """The lesson notebooks' names, in order."""
    return sorted(p.name for p in (root / "lessons").glob("[0-9][0-9]_*.ipynb"))


def blocks(root: Path) -> dict[str, dict[str, str]]:
    """What each generated block holds, by file and block name."""
    where = links.address(root / "pyproject.toml")
    badge = "[![Launch the course on Binder](https://mybinder.org/badge_logo.svg)]"
    per_lesson = " ·\n".join(f"[{name[:2]}]({links.binder_url(name, where=where)})" for name in lessons(root))
    return {
        "README.md": {
            "badge": f"{badge}({links.binder_url(where=where)})",
            "lessons": f"Launch on Binder:\n{per_lesson}",
        },
        "docs/teaching.md": {
            "binder": f"```\n{links.binder_url(where=where)}\n```",
            "nbgitpuller": f"```\n{links.nbgitpuller_url('HUB', where=where)}\n```",
        },
    }


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"^([ \t]*)(<!-- links:{name}:start -->\n).*?^[ \t]*(<!-- links:{name}:end -->)$", re.M | re.S)


def fill(text: str, name: str, content: str, path: str) -> str:
    """`text` with block `name` holding `content`, indented as its start marker is."""
    pattern = _pattern(name)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no <!-- links:{name}:start --> ... <!-- links:{name}:end --> block")

    def replace(match: re.Match) -> str:
        indent = match.group(1)
        body = "\n".join(indent + line if line else line for line in content.splitlines())
        return f"{indent}{match.group(2)}{body}\n{indent}{match.group(3)}"

    return pattern.sub(replace, text, count=1)


def stale(root: Path, write: bool) -> list[str]:
    """The files whose blocks differ from what the address gives; with `write`, rewrite them."""
    changed = []
    for path, named in blocks(root).items():
        old = (root / path).read_text(encoding="utf-8")
        new = old
        for name, content in named.items():
            new = fill(new, name, content, path)
        if new != old:
            changed.append(path)
            if write:
                (root / path).write_text(new, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to work on (default: this one)")
    parser.add_argument("--hub", help="print the nbgitpuller link for this JupyterHub and exit")
    parser.add_argument("--folder", help="with --hub: the folder to clone into (default: the repository's name)")
    parser.add_argument("--lesson", help="with --hub: the lesson it opens (default: 00_welcome)")
    args = parser.parse_args(argv)
    if args.hub:
        where = links.address(args.root / "pyproject.toml")
        print(links.nbgitpuller_url(args.hub, args.folder, args.lesson, where=where))
        return 0
    changed = stale(args.root, write=not args.check)
    if args.check and changed:
        print(f"launch links are stale in {', '.join(changed)}: run python scripts/links.py", file=sys.stderr)
        return 1
    print(f"rewrote the launch links in {', '.join(changed)}" if changed else "launch links are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
