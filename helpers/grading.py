"""Autograding and grades: each submission graded, scores read back from the gradebook, export, feedback.

Scores are always read back from the gradebook (:class:`nbgrader.api.Gradebook`).
:func:`autograde` always forces the ``grading`` profile for the kernels it starts.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from helpers.course import (
    GRADING_PROFILE,
    check_assignments,
    kernel_environment,
    load_config,
    resolve_root,
    run_converter,
    tools_on_path,
)
from helpers.release import generate_into

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# Submissions graded at once by the autograde command: one per core, at most 2
# (each kernel holds TensorFlow and a model; 2 already use a laptop's cores).
DEFAULT_JOBS = max(1, min(2, os.cpu_count() or 1))


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
    root = resolve_root(root)
    db_url = db_url or str(load_config(root).CourseDirectory.db_url)
    with tempfile.TemporaryDirectory(prefix="kit-register-") as scratch:
        generate_into(root, assignment, Path(scratch), db_url=db_url)


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
            run_converter(converter)
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
    root = resolve_root(root)
    check_assignments(root, [assignment])
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
    with kernel_environment(env | tools_on_path()):
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
    with kernel_environment(tools_on_path()), Gradebook(str(config.CourseDirectory.db_url), str(config.CourseDirectory.course_id)) as gradebook:
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

    root = resolve_root(root)
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
            run_converter(converter)
            written += sorted((root / str(config.CourseDirectory.feedback_directory) / student / name).glob("*.html"))
    return written
