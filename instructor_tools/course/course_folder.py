"""The course folder and its nbgrader configuration.

Layout of a course folder (the project root; nbgrader's
``{nbgrader_step}/{student_id}/{assignment_id}``, each notebook named like its assignment)::

    nbgrader_config.py                          course id, folders, header, kernel, timeouts
    solutions/header.ipynb                      prepended to every student notebook
    solutions/<assignment>/<assignment>.ipynb   the source: solutions and hidden tests (committed)
    notebooks/<assignment>/<assignment>.ipynb   the release: generated, committed without outputs
    submitted/<student>/<assignment>/...        submissions to grade (never committed)
    autograded/, feedback/, gradebook.db        nbgrader's grading folders (never committed)

nbgrader reads ``nbgrader_config.py`` from the current directory only; every function
here loads it from the course root explicitly, so the kit's commands work from anywhere.
Notebooks run in the profile of the environment (``KIT_PROFILE``) and that profile's
per-cell timeout.

The pipeline built on it, one module per step: :mod:`instructor_tools.course.release` (student
notebooks from ``solutions/``), :mod:`instructor_tools.course.validation`, :mod:`instructor_tools.course.submissions`
(collecting a class), :mod:`instructor_tools.grading.grader` (autograding, grades, feedback),
:mod:`instructor_tools.isolation.sandbox` (where each submission's kernel runs), :mod:`instructor_tools.grading.tamper`
(the static check), :mod:`instructor_tools.course.commands` (the command lines).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from helpers.settings import PROFILES, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from traitlets.config import Config

CONFIG_FILE = "nbgrader_config.py"
HEADER_FILE = "header.ipynb"
KERNEL_NAME = "tl-workshop"  # helpers.kernel.KERNEL_NAME, installed by `make setup`
GRADING_PROFILE = "grading"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- course folder


def find_course_root(start: Path | str | None = None) -> Path:
    """Find the course folder: the first of ``start`` (the current directory) and its parents
    holding ``nbgrader_config.py`` and ``solutions/``, else the project this package belongs to.

    Raises:
        FileNotFoundError: No course folder was found.
    """
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents, PACKAGE_ROOT):
        if (candidate / CONFIG_FILE).is_file() and (candidate / "solutions").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no course folder (with {CONFIG_FILE} and solutions/) at or above {folder}; "
        "run from the project folder or pass --root."
    )


def resolve_root(root: Path | str | None) -> Path:
    """``root`` made absolute, or the course folder found from the current directory."""
    return Path(root).resolve() if root is not None else find_course_root()


def load_config(
    root: Path | str | None = None,
    *,
    profile: str | None = None,
    timeout: int | None = None,
    db_url: str | None = None,
) -> "Config":
    """nbgrader's configuration for a course folder: its ``nbgrader_config.py``, then the kit's choices.

    Args:
        root: Course folder; found with :func:`find_course_root` by default.
        profile: Profile whose ``cell_timeout`` limits each cell; the environment's by default.
        timeout: Seconds per cell, overriding the profile's.
        db_url: Gradebook URL; ``sqlite:///<root>/gradebook.db`` by default.

    Returns:
        A traitlets ``Config`` with the course root, folders, header, kernel and timeout set.
    """
    from traitlets.config.loader import PyFileConfigLoader

    root = resolve_root(root)
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing; every course folder needs its nbgrader config.")
    config = PyFileConfigLoader(CONFIG_FILE, path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    # nbgrader opens the header relative to the current directory: make it absolute.
    header = str(config.IncludeHeaderFooter.get("header", "") or "")
    if header:
        header = header if os.path.isabs(header) else str(root / header)
        if not os.path.isfile(header):
            raise FileNotFoundError(f"the header notebook {header} named in {config_path} does not exist.")
    config.IncludeHeaderFooter.header = header
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}.")
    seconds = timeout if timeout is not None else (
        PROFILES[profile].cell_timeout if profile else load_settings().scale.cell_timeout
    )
    if seconds < 1:
        raise ValueError("the per-cell timeout must be at least 1 second.")
    config.Execute.timeout = int(seconds)
    # Defaults for what a course's config file may leave out.
    if "kernel_name" not in config.Execute:
        config.Execute.kernel_name = KERNEL_NAME
    if "sanitize_preprocessors" not in config.Autograde:
        config.Autograde.sanitize_preprocessors = sanitize_preprocessors()
    if db_url:
        config.CourseDirectory.db_url = db_url
    elif "db_url" not in config.CourseDirectory:
        config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    return config


def course_id(root: Path | str | None = None) -> str:
    """The course id from ``nbgrader_config.py``."""
    return str(load_config(root).CourseDirectory.course_id)


def list_assignments(root: Path | str | None = None) -> list[str]:
    """Every assignment in ``solutions/``: a folder ``<name>/`` holding ``<name>.ipynb``, sorted."""
    solutions = resolve_root(root) / "solutions"
    return sorted(p.name for p in solutions.iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").is_file())


def source_notebook(assignment: str, root: Path | str | None = None) -> Path:
    """``solutions/<assignment>/<assignment>.ipynb``."""
    return resolve_root(root) / "solutions" / assignment / f"{assignment}.ipynb"


def release_notebook(assignment: str, root: Path | str | None = None) -> Path:
    """``notebooks/<assignment>/<assignment>.ipynb``."""
    return resolve_root(root) / "notebooks" / assignment / f"{assignment}.ipynb"


def check_assignments(root: Path, names: Sequence[str] | None) -> list[str]:
    """``names`` checked against the course's assignments (all of them when empty).

    Raises:
        ValueError: An unknown assignment, naming the known ones.
    """
    known = list_assignments(root)
    if not names:
        return known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown assignment(s) {unknown}; the course has {known} (folders in solutions/).")
    return list(names)


@contextlib.contextmanager
def kernel_environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block, then restore them.

    Kernels inherit the environment of the process that starts them, so this is how a
    profile (``KIT_PROFILE``) reaches the notebooks nbgrader executes.
    """
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.cache
def sanitize_preprocessors() -> list[Any]:
    """nbgrader's autograde sanitizing steps, made safe for duplicated cells.

    nbgrader 0.9.6 keeps the last copy of a duplicated graded cell and empties the
    others' nbgrader metadata; with ``OverwriteCells.add_missing_cells`` (which puts
    deleted test cells back) it then fails on those empty entries and the whole
    submission goes ungraded. A step in between drops the empty entries, so the
    earlier copies run as ordinary cells. ``nbgrader_config.py`` uses this list too.
    """
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearOutput,
        DeduplicateIds,
        NbGraderPreprocessor,
        OverwriteCells,
        OverwriteKernelspec,
    )

    class ForgetDuplicateCells(NbGraderPreprocessor):
        """Turn the copies DeduplicateIds emptied into ordinary cells."""

        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
            if cell.metadata.get("nbgrader", None) == {}:
                del cell.metadata["nbgrader"]
            return cell, resources

    return [ClearOutput, DeduplicateIds, ForgetDuplicateCells, OverwriteKernelspec, OverwriteCells, CheckCellMetadata]


def tools_on_path() -> dict[str, str]:
    """PATH with this interpreter's scripts first: nbgrader runs ``alembic`` (from the same
    environment) when it creates a gradebook, and a venv is often used without activating it."""
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {} if path.split(os.pathsep)[0] == scripts else {"PATH": scripts + os.pathsep + path}


def run_converter(converter: Any) -> str:
    """Run an nbgrader converter, returning its log; raise RuntimeError with the log on failure."""
    from nbgrader.utils import capture_log

    with kernel_environment(tools_on_path()):
        result = capture_log(converter)
    if not result["success"]:
        raise RuntimeError(
            f"nbgrader {type(converter).__name__} failed:\n{result.get('log', '')}\n{result.get('error', '')}"
        )
    return result.get("log", "")
