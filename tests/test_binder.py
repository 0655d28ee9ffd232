"""The Binder configuration agrees with pyproject.toml and constraints.txt and caches the data at build time."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from test_packaging import constraints

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def binder_pins() -> dict[str, str]:
    pins = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"binder pins must be exact: {line}"
            pins[req.name] = spec.version
    return pins


def project_requirements() -> dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in meta["dependencies"]}


def test_binder_pins_torch_and_torchvision_cpu_builds():
    pins = binder_pins()
    assert pins["torch"].endswith("+cpu") and pins["torchvision"].endswith("+cpu")


def test_binder_pins_fall_inside_pyproject_ranges():
    reqs = project_requirements()
    for name, version in binder_pins().items():
        assert name in reqs, f"{name} is pinned for Binder but is not a dependency in pyproject.toml"
        assert reqs[name].specifier.contains(version), f"{name}=={version} is outside pyproject's {reqs[name]}"


def test_binder_pins_are_the_tested_versions():
    """The CPU builds Binder pins are the versions in constraints.txt, and the constraints apply to the rest."""
    tested = constraints()
    for name, version in binder_pins().items():
        assert Version(version).public == tested[name].public, f"binder pins {name}=={version}, CI tested {tested[name]}"
    assert "-c ../constraints.txt" in (BINDER / "requirements.txt").read_text().splitlines()
    assert "-c constraints.txt" in (BINDER / "postBuild").read_text()


def test_runtime_matches_requires_python():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    version = re.fullmatch(r"python-(\d+\.\d+)", runtime).group(1)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(version + ".0")


def test_postbuild_installs_the_package_and_caches_the_data():
    post = BINDER / "postBuild"
    text = post.read_text()
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
    assert re.search(r"^set -e", text, re.M), "postBuild must stop at the first failing step (set -e)"
    assert "pip install" in text and "-m cfcourse fetch" in text


def test_repo2docker_plans_the_build_we_expect():
    """repo2docker's own dry run (no Docker engine needed) reads binder/ as intended."""
    exe = Path(sys.executable).parent / "repo2docker"
    if not exe.exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but repo2docker is missing: pip install -e '.[test]'")
        pytest.skip("repo2docker is not installed (pip install -e '.[test]')")
    proc = subprocess.run([str(exe), "--no-build", "--debug", str(ROOT)], capture_output=True, text=True, timeout=120)
    plan = proc.stdout + proc.stderr
    assert proc.returncode == 0, plan[-2000:]
    runtime = (BINDER / "runtime.txt").read_text().strip().removeprefix("python-")
    assert f"python={runtime}" in plan
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in plan
    assert "./binder/postBuild" in plan
