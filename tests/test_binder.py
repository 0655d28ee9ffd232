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


# --- the hub on Kubernetes (docs/hub/config.yaml) ----------------------------------------------------------------

HUB = ROOT / "docs" / "hub" / "config.yaml"


def _measured(marker: str, column: int) -> list[float]:
    """One column of a measured table in the teaching guide (between its markers), lesson rows only."""
    doc = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    block = doc.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
    return [float(row.strip().strip("|").split("|")[column]) for row in block.splitlines()
            if row.startswith("| ") and ".ipynb" in row]


def _largest_lesson_peak_mib() -> float:
    """The largest peak RSS of one kernel the teaching guide reports: every lesson in full mode
    (scripts/measure_lessons.py) and the class benchmark's kernels (benchmarks/class_size.py)."""
    lessons, classes = _measured("resources", 3), _measured("class-size", 6)
    assert len(lessons) >= 11 and classes
    return max(lessons + classes)


def _language_model_share_mib() -> float:
    """What a student on lesson 08 holds in the largest class measured: its peak PSS over its size (class_size.py)."""
    doc = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    block = doc.split("<!-- class-size:start -->", 1)[1].split("<!-- class-size:end -->", 1)[0]
    rows = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block.splitlines()
            if row.startswith("| 08_")]
    students, pss = max((int(r[1]), float(r[7])) for r in rows)
    assert students >= 2, "measure a class, not one student"
    return pss / students


def _bytes(quantity: str) -> float:
    """A Kubernetes memory quantity as bytes (2G, 2.5G, 1536M, 2Gi)."""
    units = {"Gi": 2**30, "Mi": 2**20, "G": 1e9, "M": 1e6}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity)


def test_hub_config_gives_each_student_the_measured_memory_and_their_own_runs():
    yaml = pytest.importorskip("yaml")
    single = yaml.safe_load(HUB.read_text())["singleuser"]
    peak = _largest_lesson_peak_mib() * 2**20
    server = 150 * 2**20  # jupyter-server and its extensions, beside the kernel
    limit, guarantee = _bytes(single["memory"]["limit"]), _bytes(single["memory"]["guarantee"])
    assert limit >= peak + server, f"the memory limit must hold the largest lesson ({peak / 2**30:.2f} GiB) and a server"
    assert guarantee <= limit and guarantee >= _language_model_share_mib() * 2**20, \
        "reserve at least what a student holds in a class on the language-model lessons"
    env = single["extraEnv"]
    home = "/home/jovyan"
    assert not env["CFCOURSE_DATA"].startswith(home), "a volume mounted over the home would hide the data"
    assert env["CFCOURSE_RUNS"].startswith(home + "/"), "each student's runs belong in their own home"
    assert env["CFCOURSE_THREADS"] == "1", "a class that starts together must not pick two threads per kernel"
    built_at = re.search(r"--target-repo-dir (\S+)", HUB.read_text()).group(1)
    assert env["CFCOURSE_DATA"] == built_at + "/.cfcourse-data"
    assert '"${REPO_DIR:-$PWD}/.cfcourse-data"' in (BINDER / "postBuild").read_text(), \
        "binder/postBuild must fetch the data where the hub's CFCOURSE_DATA looks"
    lesson = single["defaultUrl"].rsplit("/", 1)[1]
    assert (ROOT / "lessons" / lesson).is_file()
    assert f"{built_at}/lessons" in " ".join(single["lifecycleHooks"]["postStart"]["exec"]["command"])
    culling = single["extraFiles"]["kernel-culling"]["data"]["MappingKernelManager"]
    assert 0 < culling["cull_idle_timeout"] <= 3600
