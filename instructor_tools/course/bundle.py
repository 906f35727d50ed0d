"""``python -m instructor_tools bundle``: the zip students receive.

It holds what a student needs and nothing an instructor keeps: the student notebooks
(``notebooks/``, generated, without outputs), the ``helpers`` package, the environment
files (``pyproject.toml``, ``environment.yml``, ``kit.toml.example``) and a student
README with the two commands (install, then open the workshop). Never ``solutions/``,
hidden tests, the nbgrader course config, grading folders, tests, benchmarks or slides
sources. The zip is written to a temporary name and renamed when complete, and every
notebook is checked for solutions and hidden tests before anything is written.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

from helpers.files import atomic_path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_NAME = "tl-workshop-student"
ENVIRONMENT_FILES = ("pyproject.toml", "environment.yml", "kit.toml.example")
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


def bundle_members(root: Path | str | None = None) -> dict[str, Path]:
    """What the bundle holds: path inside the zip -> file on disk (the README is added apart).

    Raises:
        FileNotFoundError: ``notebooks/`` or ``helpers/`` is missing.
        ValueError: A notebook holds a solution or a hidden test (generate the release again).
    """
    root = Path(root or ROOT).resolve()
    members: dict[str, Path] = {}
    for folder in ("notebooks", "helpers"):
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"{root / folder} is missing: the bundle needs it (run `python -m instructor_tools generate`).")
        for path in _files(root / folder):
            members[f"{BUNDLE_NAME}/{path.relative_to(root).as_posix()}"] = path
    for name in ENVIRONMENT_FILES:
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


def build_bundle(output: Path | str | None = None, root: Path | str | None = None) -> Path:
    """Write the student zip (``dist/tl-workshop-student.zip`` by default) and return its path."""
    root = Path(root or ROOT).resolve()
    output = Path(output) if output else root / "dist" / f"{BUNDLE_NAME}.zip"
    members = bundle_members(root)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{BUNDLE_NAME}/README.md", STUDENT_README)
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
          "the helpers package, the environment files and README.md. Hand this zip to the students.")
    return 0
