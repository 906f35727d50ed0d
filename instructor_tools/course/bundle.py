"""``python -m instructor_tools bundle``: the zip students receive.

It holds what a student needs and nothing an instructor keeps: the student notebooks
(``notebooks/``, generated, without outputs), the students' library (``helpers``), the
environment files, the licence and a student README with the two commands (install, then
open the workshop). Never ``instructor_tools`` (grading, tamper rules, hub), ``solutions/``,
hidden tests, the nbgrader course config, grading folders, tests, benchmarks or slides
sources. The zip is written to a temporary name and renamed when complete, and every
notebook is checked for solutions and hidden tests before anything is written.

The environment files are the project's, cut to the students' library: the zip's
``pyproject.toml`` (:func:`student_pyproject`) has the same dependencies and the ``cpu``,
``gpu`` and ``export`` extras, installs ``helpers`` only and has no ``instructor`` or
``dev`` extra and no instructor's command; its ``environment.yml``
(:func:`student_environment`) leaves out the test and hub packages.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from helpers.files import atomic_path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_NAME = "tl-workshop-student"
ENVIRONMENT_FILES = ("pyproject.toml", "environment.yml", "kit.toml.example")
#: Copied as they are (the two other environment files are cut to the students' library).
COPIED_FILES = ("kit.toml.example", "LICENSE")
#: The extras a student may install (TensorFlow's flavour, exporting a model); ``dev`` (tests) and
#: ``instructor`` (the hub) need the project folder.
STUDENT_EXTRAS = ("cpu", "gpu", "export")
#: The students' library, the only package the zip holds.
STUDENT_PACKAGE = "helpers"
#: Text that must never reach a student: nbgrader's solution and hidden-test markers.
FORBIDDEN_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "BEGIN MARK SCHEME")
# Folders and files inside notebooks/ and helpers/ that are never bundled (caches, run outputs).
_SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints", "logs", ".pytest_cache"}

STUDENT_README = """# Transfer learning on images: the workshop notebooks

You need Python 3.10 to 3.13. In this folder, run these two commands:

```bash
python3 -m venv .venv && .venv/bin/python -m pip install -e ".[cpu]"
.venv/bin/python -m helpers workshop
```

The first installs the kit (TensorFlow, Keras, JupyterLab...) into `.venv` (once; use `".[gpu]"` instead of
`".[cpu]"` on a Linux machine with an NVIDIA GPU). The second downloads the pretrained weights and the
datasets once (or takes them from the folder your instructor gives: see `kit.toml.example`), prints a setup
check and opens JupyterLab on `notebooks/`. Start with `00_setup_check`.

On Windows, use `.venv\\Scripts\\python` instead of `.venv/bin/python`. With conda:
`conda env create -f environment.yml && conda activate tl-workshop`, then `python -m helpers workshop`.

**A slow laptop?** Use the `laptop` profile: `KIT_PROFILE=laptop .venv/bin/python -m helpers workshop`
(the same lessons in less time: about half for notebooks 01-03).

**TensorBoard:** open the Launcher (the `+` tab) and click *TensorBoard*; it shows the training logs the
notebooks write in their `logs/` folders.

Each notebook has a *Validate* button in its toolbar: it runs the notebook's visible tests. Hand in the
notebooks as your instructor tells you.
"""


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in _SKIPPED_PARTS or part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith((".pyc", ".pyo")):
            yield path


def _load_toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 reads TOML with tomli (a dependency there)
        import tomli as tomllib
    return tomllib.loads(text)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[\n" + "".join(f"    {_toml_value(item)},\n" for item in value) + "]" if value else "[]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML: use strings, numbers, lists and tables.")


def _toml(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    """TOML lines of a table of strings, numbers, lists and sub-tables (what a pyproject holds)."""
    scalars = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    lines = []
    if prefix and (scalars or not any(isinstance(v, dict) for v in table.values())):
        lines.append("[" + ".".join(map(_toml_key, prefix)) + "]")
    lines += scalars
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ([""] if lines else []) + _toml(value, (*prefix, key))
    return lines


def _own(target: str) -> bool:
    """Whether an entry point (``module:function``) lives in the students' library."""
    return target.split(":")[0].split(".")[0].strip() == STUDENT_PACKAGE


def student_pyproject(text: str) -> str:
    """The zip's ``pyproject.toml``: the project's, installing the students' library only.

    Same build system, name, version, Python versions, dependencies and the
    :data:`STUDENT_EXTRAS`; the scripts and entry points of ``helpers`` only; no ``dev`` or
    ``instructor`` extra; setuptools finds ``helpers`` and its package data, nothing else.

    >>> text = student_pyproject('''
    ... [build-system]
    ... requires = ["setuptools>=77"]
    ... build-backend = "setuptools.build_meta"
    ... [project]
    ... name = "kit"
    ... version = "1"
    ... dependencies = ["numpy"]
    ... [project.optional-dependencies]
    ... cpu = ["tensorflow-cpu"]
    ... gpu = ["tensorflow"]
    ... export = ["tf2onnx"]
    ... instructor = ["jupyterhub"]
    ... [project.scripts]
    ... tlkit = "helpers.cli:main"
    ... tlkit-instructor = "instructor_tools.cli:main"
    ... [tool.setuptools.packages.find]
    ... include = ["helpers*", "instructor_tools*"]
    ... ''')
    >>> "instructor" in text, "tlkit = \\"helpers.cli:main\\"" in text, 'include = [\\n    "helpers*",\\n]' in text
    (False, True, True)

    Raises:
        ValueError: the project's ``pyproject.toml`` lacks a ``[project]`` table, its
            dependencies or one of the :data:`STUDENT_EXTRAS`.
    """
    data = _load_toml(text)
    project = data.get("project")
    if not isinstance(project, dict) or "dependencies" not in project:
        raise ValueError("pyproject.toml has no [project] table with dependencies: the bundle cannot describe the kit.")
    extras = project.get("optional-dependencies", {})
    missing = [name for name in STUDENT_EXTRAS if name not in extras]
    if missing:
        raise ValueError(f"pyproject.toml lacks the extras {missing}: students install the kit with them (add them back).")
    student_project = {k: v for k, v in project.items() if k not in ("optional-dependencies", "scripts", "entry-points")}
    student_project["description"] = (
        "The transfer-learning workshop's notebooks and the students' library (helpers: settings, device setup, "
        "weights cache, backbones, data, training, evaluation and plots)."
    )
    student_project["optional-dependencies"] = {name: extras[name] for name in STUDENT_EXTRAS}
    student_project["scripts"] = {k: v for k, v in project.get("scripts", {}).items() if _own(v)}
    entry_points = {
        group: {k: v for k, v in points.items() if _own(v)} for group, points in project.get("entry-points", {}).items()
    }
    if any(entry_points.values()):
        student_project["entry-points"] = {group: points for group, points in entry_points.items() if points}
    setuptools = data.get("tool", {}).get("setuptools", {})
    student_setuptools: dict[str, Any] = {"packages": {"find": {"include": [f"{STUDENT_PACKAGE}*"]}}}
    if STUDENT_PACKAGE in setuptools.get("package-data", {}):
        student_setuptools["package-data"] = {STUDENT_PACKAGE: setuptools["package-data"][STUDENT_PACKAGE]}
    student = {
        "build-system": data["build-system"],
        "project": student_project,
        "tool": {"setuptools": student_setuptools},
    }
    header = [
        "# The workshop kit for students: the notebooks and the students' library (helpers).",
        '# Install: pip install -e ".[cpu]" (".[gpu]" on Linux with an NVIDIA GPU; add ",export" to export models',
        "# as TFLite and ONNX). Written from the course's pyproject.toml when the course made this zip.",
        "",
    ]
    return "\n".join(header + _toml(student)) + "\n"


def _requirement_name(line: str) -> str | None:
    """The normalised distribution name a requirement (or a conda pip line) starts with."""
    match = re.match(r"\s*(?:-\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else None


def student_environment(text: str, pyproject: str) -> str:
    """The zip's ``environment.yml``: the project's, without the packages of the ``dev`` and ``instructor`` extras.

    A pip line stays when the students' install needs it (a dependency, or the TensorFlow of
    the ``cpu`` extra); the leading comment becomes the students'.

    >>> pyproject = '''
    ... [project]
    ... dependencies = ["numpy"]
    ... [project.optional-dependencies]
    ... cpu = ["tensorflow-cpu"]
    ... dev = ["pytest"]
    ... instructor = ["jupyterhub"]
    ... '''
    >>> print(student_environment("# old\\nname: kit\\ndependencies:\\n  - pip:\\n"
    ...       "      - numpy\\n      - pytest\\n      - jupyterhub\\n      - -e .\\n", pyproject).split("name:")[1])
     kit
    dependencies:
      - pip:
          - numpy
          - -e .
    <BLANKLINE>
    """
    project = _load_toml(pyproject).get("project", {})
    extras = project.get("optional-dependencies", {})
    keep = {_requirement_name(r) for r in project.get("dependencies", [])}
    keep |= {_requirement_name(r) for name in STUDENT_EXTRAS for r in extras.get(name, [])}
    drop = {_requirement_name(r) for name in ("dev", "instructor") for r in extras.get(name, [])} - keep
    lines = text.splitlines()
    body = lines[next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines)):]
    header = [
        "# Conda environment for the workshop's notebooks and the students' library:",
        "# conda env create -f environment.yml && conda activate tl-workshop, then python -m helpers workshop.",
    ]
    kept = [
        line for line in body
        if not (line.lstrip().startswith("- ") and _requirement_name(line.lstrip()[2:]) in drop)
    ]
    return "\n".join(header + kept) + "\n"


def bundle_members(root: Path | str | None = None) -> dict[str, Path]:
    """What the bundle copies: path inside the zip -> file on disk (see :func:`written_members` for the rest).

    Raises:
        FileNotFoundError: ``notebooks/`` or ``helpers/`` is missing.
        ValueError: A notebook holds a solution or a hidden test (generate the release again).
    """
    root = Path(root or ROOT).resolve()
    members: dict[str, Path] = {}
    for folder in ("notebooks", STUDENT_PACKAGE):
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"{root / folder} is missing: the bundle needs it (run `python -m instructor_tools generate`).")
        for path in _files(root / folder):
            members[f"{BUNDLE_NAME}/{path.relative_to(root).as_posix()}"] = path
    for name in COPIED_FILES:
        if (root / name).is_file():
            members[f"{BUNDLE_NAME}/{name}"] = root / name
    leaks = [
        f"{name}: {marker}"
        for name, path in members.items()
        if path.suffix == ".ipynb"
        for marker in FORBIDDEN_MARKERS
        if marker in path.read_text(encoding="utf-8", errors="replace")
    ]
    if leaks:
        raise ValueError(
            "refusing to bundle solutions or hidden tests (regenerate notebooks/ with `python -m instructor_tools generate`): "
            + "; ".join(leaks)
        )
    return members


def written_members(root: Path | str | None = None) -> dict[str, str]:
    """What the bundle writes rather than copies: path inside the zip -> text (README and environment files).

    Raises:
        FileNotFoundError: the project has no ``pyproject.toml``.
        ValueError: see :func:`student_pyproject`.
    """
    root = Path(root or ROOT).resolve()
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{root / 'pyproject.toml'} is missing: the bundle derives the students' install from it.")
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    written = {f"{BUNDLE_NAME}/README.md": STUDENT_README, f"{BUNDLE_NAME}/pyproject.toml": student_pyproject(pyproject)}
    if (root / "environment.yml").is_file():
        environment = (root / "environment.yml").read_text(encoding="utf-8")
        written[f"{BUNDLE_NAME}/environment.yml"] = student_environment(environment, pyproject)
    return written


def build_bundle(output: Path | str | None = None, root: Path | str | None = None) -> Path:
    """Write the student zip (``dist/tl-workshop-student.zip`` by default) and return its path."""
    root = Path(root or ROOT).resolve()
    output = Path(output) if output else root / "dist" / f"{BUNDLE_NAME}.zip"
    members = bundle_members(root)
    written = written_members(root)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in sorted(written.items()):
            archive.writestr(name, text)
        for name, path in sorted(members.items()):
            archive.write(path, name)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Build the bundle and say what is in it."""
    parser = argparse.ArgumentParser(prog="python -m instructor_tools bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help=f"zip to write (default dist/{BUNDLE_NAME}.zip)")
    args = parser.parse_args(list(argv or []))
    path = build_bundle(args.output)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    notebooks = sorted(n for n in names if n.endswith(".ipynb"))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(names)} files): {len(notebooks)} notebooks, "
          "the students' library (helpers), the environment files and README.md. Hand this zip to the students.")
    return 0
