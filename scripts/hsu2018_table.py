"""Put the table of `python -m cfcourse reproduce hsu2018 --json` into the README, cell for cell.

    .venv/bin/python -m cfcourse reproduce hsu2018 --seeds 3 --json > docs/results/hsu2018.json
    .venv/bin/python scripts/hsu2018_table.py docs/results/hsu2018.json          # rewrites README.md's table

The table goes between the README's two marker lines; tests/test_readme.py checks that it is the rendering of the
committed JSON, so the README never carries a number the command did not print.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cfcourse.reproduce import Cell, markdown_table  # noqa: E402

BEGIN, END = "<!-- hsu2018 table: scripts/hsu2018_table.py writes it -->", "<!-- end of hsu2018 table -->"


def render(record: dict) -> str:
    """The README block for one JSON record of `reproduce --json`: the table, then how it was made."""
    cells = [Cell.from_dict(c) for c in record["cells"]]
    made = (f"Made by `python -m cfcourse reproduce hsu2018 --seeds {record['seeds']}"
            f"{' --fast' if record['fast'] else ''}` in {record['wall_s'] / 60:.0f} minutes on "
            f"{record['threads']} thread(s).")
    return f"{BEGIN}\n{markdown_table(cells)}\n\n{made}\n{END}"


def replace_block(text: str, block: str) -> str:
    """`text` with the block between the markers replaced (the markers must be there, once each)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"the README must hold the marker lines once each:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN)
    return head + block + rest.split(END, 1)[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("record", help="the JSON printed by `python -m cfcourse reproduce hsu2018 --json`")
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    args = p.parse_args()
    record = json.loads(Path(args.record).read_text(encoding="utf-8"))
    readme = Path(args.readme)
    readme.write_text(replace_block(readme.read_text(encoding="utf-8"), render(record)), encoding="utf-8")
    print(f"wrote the table of {len(record['cells'])} cells into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
