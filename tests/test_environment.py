"""The pip requirements (pyproject.toml) and the conda environment (environment.yml) agree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

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


def test_conda_pip_section_matches_pyproject(pyproject, conda_pip_lines):
    _, lines = conda_pip_lines
    project = pyproject["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["cpu"] + project["optional-dependencies"]["dev"]
    wanted = {_key(Requirement(line)) for line in expected}
    found = {_key(Requirement(line)) for line in lines if not line.startswith("-e")}
    assert found == wanted, f"only in environment.yml: {found - wanted}; only in pyproject.toml: {wanted - found}"


def test_both_install_helpers_editable(conda_pip_lines):
    _, lines = conda_pip_lines
    assert "-e ." in lines, "environment.yml must install the helpers package with `-e .`"
    makefile = (ROOT / "Makefile").read_text()
    assert 'pip install --quiet -e ".[$(TF_EXTRA),dev]"' in makefile


def test_python_versions_agree(pyproject, conda_pip_lines):
    environment, _ = conda_pip_lines
    python = next(d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = python.split("=")[1]
    assert version in SpecifierSet(pyproject["project"]["requires-python"])
    for minor in ("3.10", "3.11", "3.12", "3.13"):
        assert minor in SpecifierSet(pyproject["project"]["requires-python"])


def test_tensorflow_choice_covers_every_platform(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    platforms = [
        {"sys_platform": "linux", "platform_machine": "x86_64"},
        {"sys_platform": "linux", "platform_machine": "aarch64"},
        {"sys_platform": "darwin", "platform_machine": "arm64"},
    ]
    for env in platforms:
        chosen = [Requirement(r).name for r in extras["cpu"] if Requirement(r).marker.evaluate(env)]
        assert len(chosen) == 1, f"cpu extra must pick exactly one TensorFlow on {env}: {chosen}"
        assert chosen == (["tensorflow-cpu"] if env == platforms[0] else ["tensorflow"])
    gpu = [Requirement(r) for r in extras["gpu"]]
    assert [r.name for r in gpu] == ["tensorflow"] and "and-cuda" in gpu[0].extras
    versions = {str(Requirement(r).specifier) for r in extras["cpu"] + extras["gpu"]}
    assert versions == {"==2.21.0"}, "every TensorFlow line must pin the same version"


def test_nbgrader_is_pinned_exactly(pyproject):
    nbgrader = [Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("nbgrader")]
    assert [str(r.specifier) for r in nbgrader] == ["==0.9.6"]
