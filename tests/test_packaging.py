"""pyproject.toml declares exactly what the package imports, with loose ranges; constraints.txt pins every package
at the version CI tested, inside those ranges; the setup scripts and Binder install with it."""
from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Declared but never imported by cfcourse, each for a reason.
USED_WITHOUT_IMPORT = {"gguf": "transformers reads the course's GGUF model with it (gguf_file=)"}


def requirements(extra: str | None = None) -> dict[str, Requirement]:
    lines = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in lines}


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"constraints.txt must pin exact versions: {line}"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def third_party_imports() -> dict[str, list[str]]:
    """Top-level modules outside the standard library that cfcourse imports -> the files that import them."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "cfcourse").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "cfcourse":
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_dependencies_are_exactly_what_the_package_imports():
    providers = md.packages_distributions()
    imported = {}
    for module, files in third_party_imports().items():
        dists = providers.get(module)
        assert dists, f"{module} (imported in {files[0]}) is not installed, so no package provides it"
        imported[canonicalize_name(dists[0])] = files[0]
    declared = set(requirements())
    missing = sorted(set(imported) - declared)
    assert not missing, "imported but not declared in pyproject.toml: " + ", ".join(
        f"{name} (in {imported[name]})" for name in missing)
    unused = sorted(declared - set(imported) - set(USED_WITHOUT_IMPORT))
    assert not unused, f"declared in pyproject.toml but never imported by cfcourse: {', '.join(unused)}"


def test_ranges_stay_loose():
    for extra in (None, *PROJECT["optional-dependencies"]):
        for name, req in requirements(extra).items():
            caps = [s for s in req.specifier if s.operator in ("<", "<=", "==", "~=", "===")]
            assert not caps, f"{req} caps {name}; cap a dependency only for a known break, and say which"


def test_the_learner_gets_no_test_tools():
    lab, test = set(requirements("lab")), set(requirements("test"))
    assert {"jupyterlab", "ipykernel"} <= lab and not lab & test
    assert {"pytest", "pytest-xdist", "nbval"} <= test


def test_constraints_pin_every_dependency_inside_its_range():
    pins = constraints()
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
    for extra in (None, *PROJECT["optional-dependencies"]):
        for name, req in requirements(extra).items():
            assert name in pins, f"{name} is a dependency but constraints.txt does not pin it"
            assert req.specifier.contains(pins[name]), f"constraints.txt pins {name}=={pins[name]}, outside {req}"


def test_the_environment_is_the_one_constraints_describe():
    """Whoever runs the tests runs them on the pinned versions (CI installs with -c constraints.txt)."""
    stale = []
    for name, pinned in constraints().items():
        try:
            installed = Version(md.version(name))
        except md.PackageNotFoundError:
            continue  # not needed here (e.g. the nvidia-* packages beside a CPU-only torch)
        if installed.public != pinned.public:  # torch 2.14.1+cpu is torch 2.14.1
            stale.append(f"{name} {installed} (pinned {pinned})")
    assert not stale, ("installed versions differ from constraints.txt: " + ", ".join(stale)
                       + "; reinstall with `bash scripts/setup.sh test`, or refresh constraints.txt (see its header)")


@pytest.mark.parametrize("path", ["scripts/setup.sh", "binder/requirements.txt", "binder/postBuild"])
def test_setup_and_binder_install_with_the_constraints(path):
    assert "constraints.txt" in (ROOT / path).read_text()


def test_version_has_one_source():
    import cfcourse
    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["dynamic"]["version"] == {"attr": "cfcourse.__version__"}
    Version(cfcourse.__version__)  # a valid version string

