"""The course pipeline: nbgrader from ``solutions/`` to ``notebooks/``, validation, autograding, grades, feedback.

Layout of a course folder (the project root; nbgrader's
``{nbgrader_step}/{student_id}/{assignment_id}``, each notebook named like its assignment)::

    nbgrader_config.py                          course id, folders, header, kernel, timeouts
    solutions/header.ipynb                      prepended to every student notebook
    solutions/<assignment>/<assignment>.ipynb   the source: solutions and hidden tests (committed)
    notebooks/<assignment>/<assignment>.ipynb   the release: generated, committed without outputs
    submitted/<student>/<assignment>/...        submissions to grade (never committed)
    autograded/, feedback/, gradebook.db        nbgrader's grading folders (never committed)

nbgrader reads ``nbgrader_config.py`` from the current directory only; every function
here loads it from the course root explicitly, so they work from anywhere. Validation
uses nbgrader's Python API (:class:`nbgrader.validator.Validator`) because the
``nbgrader validate`` command exits 0 even when tests fail. Scores are always read back
from the gradebook (:class:`nbgrader.api.Gradebook`).

Notebooks run in the profile of the environment (``KIT_PROFILE``) and that profile's
per-cell timeout; :func:`autograde` always forces the ``grading`` profile for the
kernels it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import filecmp
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from helpers.settings import PROFILES, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from traitlets.config import Config

CONFIG_FILE = "nbgrader_config.py"
HEADER_FILE = "header.ipynb"
KERNEL_NAME = "python3"
GRADING_PROFILE = "grading"
# Submissions graded at once by the autograde command: one per core, at most 2
# (each kernel holds TensorFlow and a model; 2 already use a laptop's cores).
DEFAULT_JOBS = max(1, min(2, os.cpu_count() or 1))
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


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


def _root(root: Path | str | None) -> Path:
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

    root = _root(root)
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
        PROFILES[profile].cell_timeout if profile else load_settings().run.cell_timeout
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
    solutions = _root(root) / "solutions"
    return sorted(p.name for p in solutions.iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").is_file())


def source_notebook(assignment: str, root: Path | str | None = None) -> Path:
    """``solutions/<assignment>/<assignment>.ipynb``."""
    return _root(root) / "solutions" / assignment / f"{assignment}.ipynb"


def release_notebook(assignment: str, root: Path | str | None = None) -> Path:
    """``notebooks/<assignment>/<assignment>.ipynb``."""
    return _root(root) / "notebooks" / assignment / f"{assignment}.ipynb"


def _check_assignments(root: Path, names: Sequence[str] | None) -> list[str]:
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


def _tools_on_path() -> dict[str, str]:
    """PATH with this interpreter's scripts first: nbgrader runs ``alembic`` (from the same
    environment) when it creates a gradebook, and a venv is often used without activating it."""
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {} if path.split(os.pathsep)[0] == scripts else {"PATH": scripts + os.pathsep + path}


def _run_converter(converter: Any) -> str:
    """Run an nbgrader converter, returning its log; raise RuntimeError with the log on failure."""
    from nbgrader.utils import capture_log

    with kernel_environment(_tools_on_path()):
        result = capture_log(converter)
    if not result["success"]:
        raise RuntimeError(
            f"nbgrader {type(converter).__name__} failed:\n{result.get('log', '')}\n{result.get('error', '')}"
        )
    return result.get("log", "")


# --------------------------------------------------------------------------- generate


def _normalize_release(path: Path) -> None:
    """Make a generated notebook byte-stable: no outputs, counts or run metadata; fixed JSON layout."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            cell.metadata.pop(key, None)
    notebook.metadata.pop("widgets", None)
    text = nbformat.writes(notebook, version=4)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    path.chmod(0o644)


def _generate_into(root: Path, assignment: str, output: Path, db_url: str | None) -> str:
    """Generate one assignment's release into ``output/<assignment>/``; return nbgrader's log."""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    config = load_config(root, db_url=db_url)
    config.CourseDirectory.release_directory = str(output)
    config.CourseDirectory.assignment_id = assignment
    if db_url is None:  # generating files only: leave no gradebook behind
        config.GenerateAssignment.no_database = True
        config.SaveCells.enabled = False
    coursedir = CourseDirectory(config=config)
    converter = GenerateAssignment(coursedir=coursedir, config=config)
    converter.force = True
    log = _run_converter(converter)
    for notebook in (output / assignment).glob("*.ipynb"):
        _normalize_release(notebook)
    return log


def generate(
    assignments: Sequence[str] | None = None,
    *,
    root: Path | str | None = None,
    output_dir: Path | str | None = None,
) -> list[Path]:
    """Generate the student notebooks (nbgrader's release) from ``solutions/``.

    Solutions become ``# YOUR CODE HERE`` / ``YOUR ANSWER HERE`` stubs, hidden tests and
    outputs are removed, graded and locked cells get checksums and the header is
    prepended. Each assignment is built in a temporary folder and then swapped into
    place, so an interrupted run never leaves a half-written assignment. The result is
    deterministic: generating twice gives identical bytes.

    Args:
        assignments: Assignment names; every assignment in ``solutions/`` by default.
        root: Course folder.
        output_dir: Release folder; ``<root>/notebooks`` by default.

    Returns:
        The generated notebooks.
    """
    root = _root(root)
    names = _check_assignments(root, assignments)
    output = Path(output_dir).resolve() if output_dir else root / "notebooks"
    output.mkdir(parents=True, exist_ok=True)
    generated = []
    for assignment in names:
        staging = Path(tempfile.mkdtemp(prefix=f".{assignment}.", dir=output))
        try:
            _generate_into(root, assignment, staging, db_url=None)
            target = output / assignment
            retired = output / f".{assignment}.old"
            shutil.rmtree(retired, ignore_errors=True)
            if target.exists():
                os.replace(target, retired)
            os.replace(staging / assignment, target)
            shutil.rmtree(retired, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        generated += sorted(target.glob("*.ipynb"))
    return generated


def release_drift(root: Path | str | None = None) -> list[str]:
    """Differences between ``notebooks/`` and what :func:`generate` produces now (empty: no drift).

    Returns:
        One sentence per differing, missing or extra file.
    """
    root = _root(root)
    released = root / "notebooks"
    problems = []
    with tempfile.TemporaryDirectory(prefix="kit-generate-") as scratch:
        fresh = Path(scratch)
        generate(root=root, output_dir=fresh)

        def files(folder: Path) -> set[str]:
            if not folder.is_dir():
                return set()
            return {
                str(p.relative_to(folder))
                for p in folder.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            }

        expected, actual = files(fresh), files(released)
        problems += [f"notebooks/{name} is missing (run: python -m helpers generate)" for name in sorted(expected - actual)]
        problems += [f"notebooks/{name} is not generated from solutions/ (remove it)" for name in sorted(actual - expected)]
        for name in sorted(expected & actual):
            if not filecmp.cmp(fresh / name, released / name, shallow=False):
                problems.append(f"notebooks/{name} differs from solutions/ (run: python -m helpers generate)")
    return problems


# --------------------------------------------------------------------------- validate


@dataclasses.dataclass
class ValidationResult:
    """What validating one notebook found.

    Attributes:
        notebook: The notebook validated.
        invert: True when every graded test was expected to *fail* (a release notebook).
        profile: The profile the kernel ran in.
        results: nbgrader's own result (keys ``failed``, ``passed``, ``changed``, ``type_changed``).
        graded: grade_id -> (score, max points) of every autograded test cell.
        errors: ``"cell N (grade_id): Error: message"`` for every code cell that raised.
        seconds: Wall time of the run.
    """

    notebook: Path
    invert: bool
    profile: str
    results: dict[str, list[dict[str, str]]]
    graded: dict[str, tuple[float, float]]
    errors: list[str]
    seconds: float

    @property
    def failed(self) -> list[str]:
        """grade_ids of test cells that did not earn full points."""
        return [gid for gid, (score, points) in self.graded.items() if score < points]

    @property
    def passed(self) -> list[str]:
        """grade_ids of test cells that earned full points."""
        return [gid for gid, (score, points) in self.graded.items() if score >= points]

    @property
    def ok(self) -> bool:
        """Solutions: every test passes and no cell raised. Inverted: no test passes."""
        if self.results.get("changed") or self.results.get("type_changed"):
            return False
        if self.invert:
            return not self.results.get("passed") and not self.passed
        return not self.results.get("failed") and not self.failed and not self.errors

    def summary(self) -> str:
        """One line for humans, plus the details of what went wrong."""
        verdict = "ok" if self.ok else "FAILED"
        what = "tests failing as expected" if self.invert else "tests passing"
        count = len(self.failed) if self.invert else len(self.passed)
        lines = [
            f"{verdict:6} {self.notebook} [{self.profile}]: {count}/{len(self.graded)} {what}, {self.seconds:.0f} s"
        ]
        if self.results.get("changed"):
            lines.append(f"  {len(self.results['changed'])} locked cell(s) were changed")
        if self.results.get("type_changed"):
            lines.append(f"  {len(self.results['type_changed'])} cell(s) changed type")
        if self.invert:
            lines += [f"  passes without an answer: {gid}" for gid in self.passed]
        else:
            lines += [f"  fails: {gid}" for gid in self.failed]
            lines += [f"  error: {error}" for error in self.errors]
        return "\n".join(lines)


def _cell_errors(notebook: Any) -> list[str]:
    errors = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
                label = f"cell {index}" + (f" ({grade_id})" if grade_id else "")
                errors.append(f"{label}: {output.get('ename')}: {str(output.get('evalue', ''))[:300]}")
                break
    return errors


def _graded_scores(notebook: Any) -> dict[str, tuple[float, float]]:
    from nbgrader import utils

    graded = {}
    for cell in notebook.cells:
        if utils.is_grade(cell) and not utils.is_solution(cell) and cell.cell_type == "code":
            score, points = utils.determine_grade(cell)
            graded[cell.metadata.nbgrader["grade_id"]] = (float(score), float(points))
    return graded


def validate(
    notebook: Path | str,
    *,
    invert: bool = False,
    profile: str | None = None,
    timeout: int | None = None,
    environment: Mapping[str, str | None] | None = None,
) -> ValidationResult:
    """Execute a notebook with nbgrader's validator and report every graded test.

    Args:
        notebook: The ``.ipynb`` to validate (a solutions notebook, a release, a submission).
        invert: Expect every graded test to fail (checks that a release does not pass blank).
        profile: Profile for the kernel (``KIT_PROFILE``); the environment's by default.
        timeout: Seconds per cell; the profile's ``cell_timeout`` by default.
        environment: Extra environment variables for the kernel.

    Returns:
        A :class:`ValidationResult`; ``result.ok`` says whether it passed.
    """
    from nbgrader.validator import Validator

    class RecordingValidator(Validator):
        """nbgrader's validator that keeps the executed notebook for the error report."""

        executed: Any = None

        def _preprocess(self, nb: Any) -> Any:
            nb = super()._preprocess(nb)
            self.executed = nb
            return nb

    path = Path(notebook).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    env = dict(environment or {})
    if profile is not None:
        env["KIT_PROFILE"] = profile
    with kernel_environment(env):
        profile_name = load_settings().profile
        config = load_config(find_course_root(path.parent), profile=profile_name, timeout=timeout)
        validator = RecordingValidator(config=config)
        validator.invert = invert
        began = time.perf_counter()
        results = validator.validate(str(path))
        seconds = time.perf_counter() - began
    executed = validator.executed
    if executed is None:  # cell types changed: nbgrader stops before executing
        return ValidationResult(path, invert, profile_name, results, {}, [], seconds)
    return ValidationResult(
        path, invert, profile_name, results, _graded_scores(executed), _cell_errors(executed), seconds
    )


# --------------------------------------------------------------------------- autograde and grades


@dataclasses.dataclass(frozen=True)
class CellScore:
    """One graded cell of one submission, as stored in the gradebook."""

    grade_id: str
    score: float
    max_score: float
    auto_score: float | None
    needs_manual_grade: bool


@dataclasses.dataclass(frozen=True)
class SubmissionScore:
    """One student's submission of one assignment, as stored in the gradebook."""

    student: str
    assignment: str
    score: float
    max_score: float
    cells: dict[str, CellScore]

    @property
    def needs_manual_grade(self) -> list[str]:
        """grade_ids still waiting for a human (written answers)."""
        return [cell.grade_id for cell in self.cells.values() if cell.needs_manual_grade]


def register_assignment(assignment: str, root: Path | str | None = None, db_url: str | None = None) -> None:
    """Record an assignment's cells in the gradebook (what ``nbgrader generate_assignment`` does).

    The release is written to a scratch folder, so ``notebooks/`` is not touched.
    """
    root = _root(root)
    db_url = db_url or str(load_config(root).CourseDirectory.db_url)
    with tempfile.TemporaryDirectory(prefix="kit-register-") as scratch:
        _generate_into(root, assignment, Path(scratch), db_url=db_url)


def _notebook_grade_ids(path: Path) -> set[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        for cell in data.get("cells", [])
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    }


def _guess_assignment(path: Path, root: Path) -> str:
    """The assignment a loose submission belongs to: the one sharing most graded cells with it.

    Raises:
        ValueError: The file is not a readable notebook, or has no graded cell of any assignment.
    """
    try:
        ids = _notebook_grade_ids(path)
    except (ValueError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"not a readable notebook ({type(error).__name__}); pass --assignment to grade it anyway") from None
    best = max(list_assignments(root), key=lambda a: len(ids & _notebook_grade_ids(source_notebook(a, root))))
    if not ids & _notebook_grade_ids(source_notebook(best, root)):
        raise ValueError("has no graded cell of any assignment; pass --assignment")
    return best


def solution_submission(assignment: str, root: Path | str | None = None) -> Any:
    """The release notebook answered as the solutions do: what a perfect student submits.

    Every answer cell of the release gets its source cell's code without the
    ``### BEGIN/END SOLUTION`` lines; written answers get the model answer. Locked and
    test cells are left as released. For checking the grading setup end to end.

    Returns:
        An ``nbformat`` notebook.
    """
    import nbformat

    root = _root(root)
    source = nbformat.read(source_notebook(assignment, root), as_version=4)
    answers = {
        cell.metadata["nbgrader"]["grade_id"]: cell.source
        for cell in source.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    released = release_notebook(assignment, root)
    if not released.is_file():
        raise FileNotFoundError(f"{released} is missing; run: python -m helpers generate {assignment}")
    submission = nbformat.read(released, as_version=4)
    for cell in submission.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            lines = answers[grade_id].splitlines()
            cell.source = "\n".join(
                line for line in lines if line.strip() not in {"### BEGIN SOLUTION", "### END SOLUTION"}
            )
    return submission


def edit_submission(
    notebook: Any,
    *,
    replace: Mapping[str, str] | None = None,
    delete: Sequence[str] = (),
    duplicate: Sequence[str] = (),
) -> Any:
    """A copy of a submission with cells changed as students do, to rehearse grading.

    Args:
        notebook: An ``nbformat`` notebook (for example :func:`solution_submission`).
        replace: grade_id -> new source of that cell.
        delete: grade_ids of cells to delete.
        duplicate: grade_ids of cells to copy (the copy follows the original, with a new cell id).

    Returns:
        The edited copy; ``notebook`` is unchanged.
    """
    import copy

    replace = dict(replace or {})
    edited = copy.deepcopy(notebook)
    known = {cell.metadata.get("nbgrader", {}).get("grade_id") for cell in edited.cells}
    unknown = sorted((set(replace) | set(delete) | set(duplicate)) - known)
    if unknown:
        raise ValueError(f"no cell with grade_id {unknown} in this notebook.")
    cells = []
    for cell in edited.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in delete:
            continue
        if grade_id in replace:
            cell.source = replace[grade_id]
        cells.append(cell)
        if grade_id in duplicate:
            twin = copy.deepcopy(cell)
            twin.id = f"{cell.get('id', grade_id)}-copy"[:64]
            cells.append(twin)
    edited.cells = cells
    return edited


@dataclasses.dataclass
class Collected:
    """What :func:`collect_submissions` copied into ``submitted/``.

    Attributes:
        found: assignment -> students.
        skipped: ``(file, why)`` for each notebook that could not be placed.
    """

    found: dict[str, list[str]]
    skipped: list[tuple[str, str]]


def collect_submissions(
    folder: Path | str,
    root: Path | str | None = None,
    assignment: str | None = None,
) -> Collected:
    """Copy a folder of submissions into the course's ``submitted/`` folder (nbgrader's layout).

    Accepts nbgrader's layout (``<student>/<assignment>/<assignment>.ipynb``),
    ``<student>/<assignment>.ipynb``, or loose ``<student>.ipynb`` files (their assignment
    is ``assignment`` or the one whose graded cells they contain). Each file is copied to
    a temporary name, then renamed. A loose file whose assignment cannot be told is
    skipped (and listed), never guessed.

    Returns:
        A :class:`Collected`.
    """
    root = _root(root)
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"submissions folder {folder} does not exist.")
    if assignment is not None:
        _check_assignments(root, [assignment])
    known = list_assignments(root)
    found: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []

    def place(source: Path, student: str, name: str) -> None:
        target = root / "submitted" / student / name / f"{name}.ipynb"
        if source.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(suffix=".part", dir=target.parent)
            os.close(handle)
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        found.setdefault(name, []).append(student)

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            try:
                place(entry, entry.stem, assignment or _guess_assignment(entry, root))
            except ValueError as error:
                skipped.append((str(entry), str(error)))
        elif entry.is_dir():
            for name in known:
                if assignment and name != assignment:
                    continue
                for candidate in (entry / name / f"{name}.ipynb", entry / f"{name}.ipynb"):
                    if candidate.is_file():
                        place(candidate, entry.name, name)
                        break
    return Collected({name: sorted(set(students)) for name, students in found.items()}, skipped)


class GradingError(RuntimeError):
    """Some submissions could not be graded.

    Attributes:
        graded: Scores of the submissions that were graded.
        failures: student -> nbgrader's log of what went wrong.
    """

    def __init__(self, graded: list["SubmissionScore"], failures: dict[str, str]) -> None:
        self.graded = graded
        self.failures = failures
        details = "\n".join(f"--- {student}:\n{log}" for student, log in failures.items())
        super().__init__(f"could not grade {', '.join(failures)}:\n{details}")


def _grade_one(root: str, assignment: str, student: str, timeout: int | None, db_url: str) -> str | None:
    """Autograde one submission (in this process); return None, or why it could not be graded.

    Module-level so a process pool can run it; the kernel environment (``KIT_PROFILE``)
    is inherited from the caller.
    """
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory

    config = load_config(root, profile=GRADING_PROFILE, timeout=timeout, db_url=db_url)
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    converter = Autograde(coursedir=CourseDirectory(config=config), config=config)
    converter.force = True
    converter.create_student = True
    with warnings.catch_warnings():
        # nbgrader's own noise on damaged submissions (SQLAlchemy autoflush, cells without ids)
        warnings.filterwarnings("ignore", message=r".*not in session.*")
        warnings.filterwarnings("ignore", message=r"Cell is missing an id field.*")
        try:
            _run_converter(converter)
        except RuntimeError as error:
            return str(error)
    return None


def autograde(
    assignment: str,
    *,
    root: Path | str | None = None,
    students: Sequence[str] | None = None,
    timeout: int | None = None,
    db_url: str | None = None,
    environment: Mapping[str, str | None] | None = None,
    jobs: int = 1,
) -> list[SubmissionScore]:
    """Autograde submissions in ``<root>/submitted/<student>/<assignment>/`` in the grading profile.

    The assignment is (re)recorded in the gradebook first. Each submission is graded on
    its own: locked and test cells are restored from the source, deleted test cells are
    put back, a duplicated cell counts once, and a cell that runs past the timeout is
    interrupted and counts as failed, so one broken submission never stops the class.

    Args:
        assignment: Assignment name.
        root: Course folder.
        students: Student ids; every student who submitted this assignment by default.
        timeout: Seconds per cell; the grading profile's ``cell_timeout`` by default.
        db_url: Gradebook URL; ``sqlite:///<root>/gradebook.db`` by default.
        environment: Extra environment variables for the kernels (``KIT_PROFILE`` is
            always ``grading``).
        jobs: Submissions graded at the same time, each in its own process (2 on a
            2-core laptop grades a class about 1.5x faster). A submission that fails in
            parallel (for example on a busy gradebook) is graded again on its own.

    Returns:
        Every graded submission's scores, read back from the gradebook.

    Raises:
        GradingError: nbgrader could not grade some submissions (a file that is not a
            notebook...); the others are graded first and listed in the error.
    """
    root = _root(root)
    _check_assignments(root, [assignment])
    if jobs < 1:
        raise ValueError("jobs must be at least 1.")
    config = load_config(root, profile=GRADING_PROFILE, timeout=timeout, db_url=db_url)
    db_url = str(config.CourseDirectory.db_url)
    submitted = root / str(config.CourseDirectory.submitted_directory)
    if students is None:
        students = sorted(p.parent.name for p in submitted.glob(f"*/{assignment}") if p.is_dir())
    students = list(students)
    register_assignment(assignment, root, db_url)
    env = dict(environment or {}) | {"KIT_PROFILE": GRADING_PROFILE}
    failures: dict[str, str] = {}
    with kernel_environment(env | _tools_on_path()):
        pending = students
        if jobs > 1 and len(students) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures.process import BrokenProcessPool

            context = multiprocessing.get_context("spawn")  # no fork of a process with threads
            results: dict[str, str | None] = {}
            try:
                with ProcessPoolExecutor(max_workers=min(jobs, len(students)), mp_context=context) as pool:
                    futures = {s: pool.submit(_grade_one, str(root), assignment, s, timeout, db_url) for s in students}
                    for student, future in futures.items():
                        results[student] = future.result()
            except BrokenProcessPool:
                pass  # workers could not start (e.g. an interactive __main__): grade the rest here
            pending = [s for s in students if results.get(s, "not graded") is not None]
        for student in pending:
            error = _grade_one(str(root), assignment, student, timeout, db_url)
            if error is not None:
                failures[student] = error
    graded = [
        s for s in submission_scores(assignment, root=root, db_url=db_url) if s.student in set(students) - set(failures)
    ]
    if failures:
        raise GradingError(graded, failures)
    return graded


def submission_scores(
    assignment: str | None = None,
    *,
    root: Path | str | None = None,
    db_url: str | None = None,
) -> list[SubmissionScore]:
    """Every submission's scores, per graded cell, read from the gradebook.

    Args:
        assignment: Only this assignment; all by default.
        root: Course folder (for the default gradebook and course id).
        db_url: Gradebook URL.
    """
    from nbgrader.api import Gradebook

    config = load_config(root, db_url=db_url)
    scores = []
    with kernel_environment(_tools_on_path()), Gradebook(str(config.CourseDirectory.db_url), str(config.CourseDirectory.course_id)) as gradebook:
        for entry in gradebook.assignments:
            if assignment is not None and entry.name != assignment:
                continue
            for submission in entry.submissions:
                cells = {}
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        cells[grade.name] = CellScore(
                            grade.name,
                            float(grade.score),
                            float(grade.max_score),
                            None if grade.auto_score is None else float(grade.auto_score),
                            bool(grade.needs_manual_grade),
                        )
                scores.append(
                    SubmissionScore(
                        submission.student.id,
                        entry.name,
                        float(submission.score),
                        float(submission.max_score),
                        dict(sorted(cells.items())),
                    )
                )
    return sorted(scores, key=lambda s: (s.assignment, s.student))


def grades_table(
    assignment: str | None = None,
    *,
    root: Path | str | None = None,
    db_url: str | None = None,
    per_cell: bool = False,
) -> "pd.DataFrame":
    """Grades as a table: one row per submission (student, assignment, score, max_score,
    needs_manual_grade), or with ``per_cell`` one row per graded cell."""
    import pandas as pd

    rows = []
    for submission in submission_scores(assignment, root=root, db_url=db_url):
        if per_cell:
            rows += [
                {"student": submission.student, "assignment": submission.assignment} | dataclasses.asdict(cell)
                for cell in submission.cells.values()
            ]
        else:
            rows.append(
                {
                    "student": submission.student,
                    "assignment": submission.assignment,
                    "score": submission.score,
                    "max_score": submission.max_score,
                    "needs_manual_grade": ", ".join(submission.needs_manual_grade),
                }
            )
    columns = (
        ["student", "assignment", "grade_id", "score", "max_score", "auto_score", "needs_manual_grade"]
        if per_cell
        else ["student", "assignment", "score", "max_score", "needs_manual_grade"]
    )
    return pd.DataFrame(rows, columns=columns)


def export(
    output: Path | str,
    *,
    assignment: str | None = None,
    root: Path | str | None = None,
    db_url: str | None = None,
    per_cell: bool = False,
) -> Path:
    """Write the grades table to CSV (temporary file, then rename).

    Returns:
        The CSV written.
    """
    table = grades_table(assignment, root=root, db_url=db_url, per_cell=per_cell)
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    os.close(handle)
    try:
        table.to_csv(temporary, index=False)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return output


def feedback(
    assignment: str | None = None,
    *,
    root: Path | str | None = None,
    students: Sequence[str] | None = None,
    db_url: str | None = None,
) -> list[Path]:
    """Write feedback HTML (``feedback/<student>/<assignment>/<notebook>.html``) for graded submissions.

    Args:
        assignment: Assignment name; every autograded assignment by default.
        root: Course folder.
        students: Student ids; every autograded student by default.
        db_url: Gradebook URL.

    Returns:
        The HTML files written.
    """
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

    root = _root(root)
    config = load_config(root, db_url=db_url)
    autograded = root / str(config.CourseDirectory.autograded_directory)
    names = [assignment] if assignment else sorted({p.name for p in autograded.glob("*/*") if p.is_dir()})
    written: list[Path] = []
    for name in names:
        for student in students or sorted(p.parent.name for p in autograded.glob(f"*/{name}") if p.is_dir()):
            student_config = config.copy()
            student_config.CourseDirectory.assignment_id = name
            student_config.CourseDirectory.student_id = student
            student_config.HTMLExporter.template_name = "feedback"
            converter = GenerateFeedback(coursedir=CourseDirectory(config=student_config), config=student_config)
            converter.force = True
            _run_converter(converter)
            written += sorted((root / str(config.CourseDirectory.feedback_directory) / student / name).glob("*.html"))
    return written


# --------------------------------------------------------------------------- timing prediction

@dataclasses.dataclass(frozen=True)
class NotebookCost:
    """How long one notebook takes, as a function of its data and the backbone's speed.

    ``seconds = fixed_seconds + passes_per_image * images * seconds_per_image``, where
    ``images`` is the number of images of its datasets in the profile and
    ``seconds_per_image`` the backbone's measured speed (the timing probe of notebook 00).

    Attributes:
        datasets: The course datasets it processes.
        fixed_seconds: Start-up and work that does not grow with the data (kernel,
            TensorFlow import, model loading), on the 2-core reference machine.
        passes_per_image: Everything else per image (decoding, the backbone, training,
            scikit-learn, plots), in backbone passes.
    """

    datasets: tuple[str, ...]
    fixed_seconds: float
    passes_per_image: float


# Fitted to each notebook's measured wall time in the smoke and workshop profiles with
# MobileNet a0.75 on the 2-core reference machine, shared with other work at the time
# (notebook 00's timing probe: ~36 images/s); epochs are folded into the per-image
# work, so this is a rough guide for planning a class, not a promise.
NOTEBOOK_COSTS: dict[str, NotebookCost] = {
    "00_setup_check": NotebookCost((), 18.0, 0.0),
    "01_pretrained_scoring": NotebookCost(("photos", "simpsons"), 21.0, 1.5),
    "02_retrain_simpsons": NotebookCost(("simpsons",), 45.0, 3.0),
    "03_features_classic_ml": NotebookCost(("simpsons",), 41.0, 5.6),
    "04_photo_vs_drawing": NotebookCost(("photo_vs_drawing",), 88.0, 7.2),
}


def predict_notebook_seconds(
    seconds_per_image: float,
    counts: Mapping[str, int],
    costs: Mapping[str, NotebookCost] | None = None,
) -> dict[str, float]:
    """Predicted wall time of each notebook on this machine, from a measured backbone speed.

    Args:
        seconds_per_image: Measured seconds per image through the backbone (batched).
        counts: Images per course dataset in the profile (``photos``, ``simpsons``,
            ``photo_vs_drawing``); a missing dataset counts as 0.
        costs: The cost model; :data:`NOTEBOOK_COSTS` by default.

    Returns:
        assignment -> seconds.
    """
    if seconds_per_image <= 0:
        raise ValueError("seconds_per_image must be positive; time a batch of images first.")
    costs = NOTEBOOK_COSTS if costs is None else costs
    return {
        name: cost.fixed_seconds
        + cost.passes_per_image * sum(int(counts.get(d, 0)) for d in cost.datasets) * seconds_per_image
        for name, cost in costs.items()
    }


# --------------------------------------------------------------------------- command line


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m helpers {command}", description=description)
    parser.add_argument("--root", type=Path, default=None, help="course folder (default: found from here)")
    return parser


def generate_main(argv: Sequence[str]) -> int:
    """``python -m helpers generate [assignment ...] [--check]``."""
    parser = _parser("generate", "Generate notebooks/ (student versions) from solutions/.")
    parser.add_argument("assignments", nargs="*", help="assignment names (default: all)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if notebooks/ is out of date")
    args = parser.parse_args(list(argv))
    try:
        if args.check:
            problems = release_drift(args.root)
            for problem in problems:
                print(problem)
            print("notebooks/ is up to date." if not problems else f"{len(problems)} problem(s).")
            return 1 if problems else 0
        for path in generate(args.assignments or None, root=args.root):
            print(f"generated {path}")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def validate_main(argv: Sequence[str]) -> int:
    """``python -m helpers validate [assignment-or-notebook ...] [--release] [--invert] [--profile P]``."""
    parser = _parser("validate", "Validate notebooks with nbgrader; exit 1 when any test fails.")
    parser.add_argument("targets", nargs="*", help="assignment names or .ipynb paths (default: every solutions notebook)")
    parser.add_argument("--release", action="store_true", help="validate notebooks/ instead of solutions/")
    parser.add_argument("--invert", action="store_true", help="expect every test to fail (blank release notebooks)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="profile for the kernels (default: KIT_PROFILE)")
    parser.add_argument("--timeout", type=int, help="seconds per cell (default: the profile's)")
    args = parser.parse_args(list(argv))
    try:
        root = _root(args.root)
        locate = release_notebook if (args.release or args.invert) else source_notebook
        paths = [
            Path(t) if t.endswith(".ipynb") else locate(t, root)
            for t in (args.targets or list_assignments(root))
        ]
        results = [validate(p, invert=args.invert, profile=args.profile, timeout=args.timeout) for p in paths]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for result in results:
        print(result.summary())
    return 0 if all(r.ok for r in results) else 1


def autograde_main(argv: Sequence[str]) -> int:
    """``python -m helpers autograde [SUBMISSIONS|ASSIGNMENT] [--assignment A] [--student S ...]``."""
    parser = _parser("autograde", "Autograde submissions in the grading profile and print the scores.")
    parser.add_argument(
        "submissions", nargs="?",
        help="a folder of submissions to copy into submitted/ first (nbgrader layout, <student>/<assignment>.ipynb "
        "or <student>.ipynb files), or an assignment name; default: everything in submitted/",
    )
    parser.add_argument("--assignment", help="grade only this assignment")
    parser.add_argument("--student", action="append", dest="students", help="grade only this student (repeatable)")
    parser.add_argument("--timeout", type=int, help="seconds per cell (default: the grading profile's)")
    parser.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS, help=f"submissions graded at once (default {DEFAULT_JOBS})"
    )
    args = parser.parse_args(list(argv))
    try:
        root = _root(args.root)
        assignment = args.assignment
        status = 0
        if args.submissions and args.submissions in list_assignments(root):
            assignment = args.submissions
        elif args.submissions:
            collected = collect_submissions(args.submissions, root, assignment)
            for path, why in collected.skipped:
                print(f"skipped {path}: {why}", file=sys.stderr)
                status = 1
            if not collected.found:
                print(f"error: no submissions found in {args.submissions}", file=sys.stderr)
                return 1
        submitted = root / "submitted"
        names = [assignment] if assignment else sorted({p.name for p in submitted.glob("*/*") if p.is_dir()})
        if not names:
            print(f"error: nothing to grade in {submitted}", file=sys.stderr)
            return 1
        for name in names:
            began = time.perf_counter()
            failed: list[str] = []
            try:
                scores = autograde(name, root=root, students=args.students, timeout=args.timeout, jobs=args.jobs)
            except GradingError as error:
                print(f"error: {error}", file=sys.stderr)
                scores, failed, status = error.graded, list(error.failures), 1
            print(f"{name}: {len(scores)} submission(s) graded in {time.perf_counter() - began:.0f} s")
            for score in scores:
                manual = f"  (to grade by hand: {', '.join(score.needs_manual_grade)})" if score.needs_manual_grade else ""
                print(f"  {score.student:<24} {score.score:g} / {score.max_score:g}{manual}")
            for student in failed:
                print(f"  {student:<24} NOT GRADED (see the error above)")
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return status


def export_main(argv: Sequence[str]) -> int:
    """``python -m helpers export [--output grades.csv] [--assignment A] [--cells]``."""
    parser = _parser("export", "Export grades from the gradebook to CSV.")
    parser.add_argument("--output", type=Path, default=Path("grades.csv"), help="CSV file (default grades.csv)")
    parser.add_argument("--assignment", help="only this assignment")
    parser.add_argument("--cells", action="store_true", help="one row per graded cell instead of per submission")
    args = parser.parse_args(list(argv))
    try:
        path = export(args.output, assignment=args.assignment, root=args.root, per_cell=args.cells)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def feedback_main(argv: Sequence[str]) -> int:
    """``python -m helpers feedback [ASSIGNMENT] [--student S ...]``."""
    parser = _parser("feedback", "Generate feedback HTML for autograded submissions.")
    parser.add_argument("assignment", nargs="?", help="assignment (default: every autograded one)")
    parser.add_argument("--student", action="append", dest="students", help="only this student (repeatable)")
    args = parser.parse_args(list(argv))
    try:
        paths = feedback(args.assignment, root=args.root, students=args.students)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0
