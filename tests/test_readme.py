"""The README's front door: prerequisites, the install's cost, a troubleshooting table whose messages are the ones
the code really prints, the pip-only path, and a citation file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import cfcourse

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SOURCES = "\n".join(p.read_text(encoding="utf-8") for p in [*(ROOT / "cfcourse").rglob("*.py"),
                                                             *(ROOT / "scripts").glob("*.sh")])


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"the README has no section '## {title}'"
    return match.group(1)


def test_start_names_the_prerequisites_and_what_the_install_costs():
    start = section("Start")
    assert "Python 3.11 or newer" in start and "PyTorch" in start
    assert "bash scripts/lab.sh" in start and "constraints.txt" in start
    assert "| PyTorch | when | download | `.venv` on disk | first run |" in start
    assert "@@" not in README, "a measurement is missing from the README"


# Each message the troubleshooting table quotes, as the code prints it (a part without the variable bits).
MESSAGES = [
    "cfcourse needs Python 3.11 or newer",
    "PyTorch's CPU-only wheels are out of reach",
    "could not get {asset.filename}",
    "failed its sha256 check",
    "is not done yet",
    "is not right yet",
    "CFCOURSE_THREADS must be a whole number >= 1",
    "CFCOURSE_SEED must be a whole number from 0 to {SEED_LIMIT - 1}",
    "unknown device {name!r}",
    "lm-sweep fine-tunes lesson 08's medical model, and could not load it",
]


@pytest.mark.parametrize("message", MESSAGES)
def test_troubleshooting_quotes_what_the_code_prints(message):
    assert message in SOURCES, f"no code prints {message!r} any more: update the README's troubleshooting table"
    shown = (message.replace("{asset.filename}", "mnist.pkl.gz").replace("{name!r}", "'tpu'")
             .replace("{SEED_LIMIT - 1}", "4294967295"))
    assert shown in section("Troubleshooting")


def test_the_toolkit_installs_with_pip_alone():
    text = section("Use the toolkit without the course")
    assert "pip install" in text and "constraints.txt" in text and "[lab]" in text
    assert "CITATION.cff" in text


def test_citation_names_the_same_version():
    text = (ROOT / "CITATION.cff").read_text()
    assert text.startswith("cff-version: 1.2.0") and "\ntitle:" in text and "\nauthors:" in text
    assert f'\nversion: "{cfcourse.__version__}"' in text


def test_the_hsu2018_table_is_the_commands_own_output():
    """The README's table is the rendering of the committed JSON of `reproduce hsu2018 --json`, or empty."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("hsu2018_table", ROOT / "scripts" / "hsu2018_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = ROOT / "docs" / "results" / "hsu2018.json"
    block = README[README.index(script.BEGIN): README.index(script.END) + len(script.END)]
    if record.exists():
        import json
        assert block == script.render(json.loads(record.read_text(encoding="utf-8")))
    else:
        assert block == f"{script.BEGIN}\n{script.END}", "a table in the README without its JSON record"
    assert script.replace_block(f"a\n{script.BEGIN}\nold\n{script.END}\nb", "NEW") == "a\nNEW\nb"
