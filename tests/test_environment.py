"""The pip requirements (pyproject.toml), what ``make setup`` installs, the conda environment
(environment.yml) and the environment the tests run in agree with each other.

No version number is written here: the declarations are compared with each other and with
what is installed, so a bump made in one place and not the other fails, and a bump made
everywhere passes.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _key(requirement: Requirement) -> tuple[str, str, str]:
    return requirement.name.lower(), str(requirement.specifier), str(requirement.marker or "")


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def conda_pip_lines():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return environment, pip_sections[0]


def _make_setup_install(extra: str) -> tuple[str, list[str]]:
    """What ``make setup`` installs for the TensorFlow flavour ``extra``: the project and its extras,
    read from make's dry run (nothing is executed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed here; the Makefile's install line cannot be read")
    result = subprocess.run(
        ["make", "-n", "-B", "setup", f"TF_EXTRA={extra}", "VENV=/nonexistent/venv"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if words[1:4] == ["-m", "pip", "install"] and "-e" in words:
            target = words[words.index("-e") + 1]
            match = re.fullmatch(r"(\.)(?:\[([^\]]*)\])?", target)
            assert match, f"make setup installs {target!r}, not the project folder"
            return match.group(1), [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    pytest.fail(f"make setup installs nothing editable:\n{result.stdout}")


def test_make_setup_installs_the_project_editable_with_its_tensorflow_and_dev_extras(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    for flavour in ("cpu", "gpu"):
        target, chosen = _make_setup_install(flavour)
        assert target == "." and flavour in chosen and "dev" in chosen, (flavour, target, chosen)
        assert set(chosen) <= set(extras), f"make setup asks for extras pyproject.toml lacks: {set(chosen) - set(extras)}"


def test_conda_pip_section_matches_what_make_setup_installs(pyproject, conda_pip_lines):
    """Same packages, same bounds, same markers as ``make setup`` on a machine without a GPU."""
    _, lines = conda_pip_lines
    project = pyproject["project"]
    _, chosen = _make_setup_install("cpu")
    expected = project["dependencies"] + [line for extra in chosen for line in project["optional-dependencies"][extra]]
    wanted = {_key(Requirement(line)) for line in expected}
    found = {_key(Requirement(line)) for line in lines if not line.startswith("-e")}
    assert found == wanted, f"only in environment.yml: {found - wanted}; only in pyproject.toml: {wanted - found}"
    assert "-e ." in lines, "environment.yml installs the kit's package editable, as make setup does (`-e .`)"


def test_the_test_environment_is_the_declared_one(pyproject):
    """Every declared package that applies to this machine is installed within its bounds (one
    TensorFlow flavour, the dev tools); an optional extra's packages, where installed, too."""
    extras = pyproject["project"]["optional-dependencies"]

    def problems(lines: list[str], required: bool) -> list[str]:
        found = []
        for requirement in map(Requirement, lines):
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            try:
                version = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                found += [f"{requirement.name} is not installed"] if required else []
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                found.append(f"{requirement.name} {version} is outside {requirement.specifier}")
        return found

    assert problems(pyproject["project"]["dependencies"] + extras["dev"], True) == []
    flavours = {name: problems(extras[name], True) for name in ("cpu", "gpu")}
    assert [] in flavours.values(), f"neither TensorFlow flavour is installed as declared: {flavours}"
    optional = [line for name, lines in extras.items() if name not in {"cpu", "gpu", "dev"} for line in lines]
    assert problems(optional, False) == []


def test_python_versions_agree(pyproject, conda_pip_lines):
    """The conda Python, the running one and the README's stated range all fall in requires-python."""
    supported = SpecifierSet(pyproject["project"]["requires-python"])
    environment, _ = conda_pip_lines
    python = next(d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.split("=")[1] in supported
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in supported
    stated = re.search(r"Python (3)\.(\d+)\s*[–-]\s*3\.(\d+)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert stated, "the README states the supported Python range (Python 3.x-3.y)"
    low, high = int(stated.group(2)), int(stated.group(3))
    for minor in range(low - 1, high + 2):
        inside = low <= minor <= high
        assert (Version(f"3.{minor}") in supported) == inside, (
            f"the README's range 3.{low}-3.{high} and requires-python {supported} disagree on 3.{minor}"
        )


def test_tensorflow_choice_covers_every_platform(pyproject):
    """Each platform gets exactly one TensorFlow distribution, every TensorFlow line the same exact version."""
    extras = pyproject["project"]["optional-dependencies"]
    platforms = [
        {"sys_platform": "linux", "platform_machine": "x86_64"},
        {"sys_platform": "linux", "platform_machine": "aarch64"},
        {"sys_platform": "darwin", "platform_machine": "arm64"},
    ]
    for env in platforms:
        chosen = [Requirement(r).name for r in extras["cpu"] if Requirement(r).marker.evaluate(env)]
        assert len(chosen) == 1, f"cpu extra must pick exactly one TensorFlow on {env}: {chosen}"
        # tensorflow-cpu has wheels for Linux x86_64 only; elsewhere the plain package is the CPU build
        assert chosen == (["tensorflow-cpu"] if env == platforms[0] else ["tensorflow"])
    gpu = [Requirement(r) for r in extras["gpu"]]
    assert [r.name for r in gpu] == ["tensorflow"] and "and-cuda" in gpu[0].extras
    specifiers = {str(Requirement(r).specifier) for r in extras["cpu"] + extras["gpu"]}
    assert len(specifiers) == 1, f"the TensorFlow lines name different versions: {specifiers}"
    assert next(iter(specifiers)).startswith("=="), "TensorFlow is pinned to one version (notebooks are tested on it)"


def test_nbgrader_is_pinned_to_one_version(pyproject):
    """The course pipeline uses nbgrader's Python API, which changes between releases: one version only."""
    nbgrader = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "nbgrader"]
    assert len(nbgrader) == 1 and [s.operator for s in nbgrader[0].specifier] == ["=="], nbgrader
