"""Autograding and grades: each submission graded, scores read back from the gradebook, export, feedback.

Scores are always read back from the gradebook (:class:`nbgrader.api.Gradebook`).
:func:`autograde` always forces the ``grading`` profile for the kernels it starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from helpers.files import atomic_path, atomic_write, swap_folder
from instructor_tools.course.course_folder import (
    GRADING_PROFILE,
    check_assignments,
    kernel_environment,
    load_config,
    resolve_root,
    run_converter,
    tools_on_path,
)
from instructor_tools.course.release import generate_into
from instructor_tools.grading import deadlines, preprocessors, regrading, tamper
from instructor_tools.isolation import sandbox

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# Submissions graded at once by the autograde command: one per core, at most 2
# (each kernel holds TensorFlow and a model; 2 already use a laptop's cores).
DEFAULT_JOBS = max(1, min(2, os.cpu_count() or 1))
SANDBOXING = ("auto", "require", "off")
REPORTS_DIR = "grading_reports"


class UnsandboxedWarning(UserWarning):
    """Submissions are being graded without a sandbox (they run with the grader's rights)."""


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
    """One student's submission of one assignment, as stored in the gradebook.

    Attributes:
        notes: What the grading report says: sandboxed or not, and what happened
            (a kernel that died, output cut).
        flags: The static tamper check's findings, for a person to look at.
        late_penalty: Points the late policy takes off (:mod:`instructor_tools.grading.deadlines`); ``score`` is before it.
    """

    student: str
    assignment: str
    score: float
    max_score: float
    cells: dict[str, CellScore]
    notes: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    late_penalty: float = 0.0

    @property
    def final_score(self) -> float:
        """The score after the late penalty."""
        return max(0.0, self.score - self.late_penalty)

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


def _publish(built: Path, target: Path) -> None:
    """Put a graded folder in the course: copied next to its place, then swapped in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(built, staging / target.name, symlinks=False)
        swap_folder(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def report_path(root: Path, assignment: str, student: str) -> Path:
    """Where the grading report of one submission is kept: ``grading_reports/<assignment>/<student>.json``."""
    return root / REPORTS_DIR / assignment / f"{student}.json"


def _write_report(root: Path, assignment: str, student: str, report: dict) -> None:
    atomic_write(report_path(root, assignment, student), json.dumps(report, indent=1))


def _tamper_findings(notebook: Path) -> list[str]:
    """The static tamper check's findings on a submitted notebook (none when there is no notebook)."""
    import nbformat

    findings: list[str] = []
    if notebook.is_file():
        try:
            findings = [f.describe() for f in tamper.scan_notebook(nbformat.read(notebook, as_version=4))]
        except Exception as error:  # noqa: BLE001 - an unreadable notebook is nbgrader's to report
            findings = [f"the notebook could not be read for the tamper check ({type(error).__name__})"]
    return findings


def _copy_submission(
    course_root: Path, folders: Any, source: Path, private: Path, work: Path, student: str, assignment: str
) -> None:
    """Copy a submission into the private course and the kernel's work folder, with the assignment's other files."""
    sandbox.copy_without_links(source, private / str(folders.submitted_directory) / student / assignment)
    extra = course_root / str(folders.source_directory) / assignment
    sandbox.copy_without_links(source, work)
    for path in extra.rglob("*") if extra.is_dir() else []:
        # nbgrader puts the assignment's own non-notebook files beside the notebook; so does the kit
        if path.is_file() and path.suffix != ".ipynb" and not path.is_symlink():
            for base in (private / str(folders.source_directory) / assignment, work):
                (base / path.relative_to(extra)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, base / path.relative_to(extra))


def _configure_private_course(
    config: Any, private: Path, assignment: str, student: str, key: str, limits: "sandbox.Limits", box: Any
) -> None:
    """Point nbgrader's config at the private course, the kit's grading steps and the sandboxed kernel ``key``."""
    config.CourseDirectory.root = str(private)
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    config.Autograde.autograde_preprocessors = preprocessors.autograde_steps()
    config.GuardedExecute.kernel_manager_class = sandbox.kernel_manager_class()
    config.GuardedExecute.sandbox_id = key
    config.GuardedExecute.max_output_bytes = limits.output_kb * 1024
    config.SandboxedKernelManager.sandbox_id = key
    for name, value in box.kernel_config().items():
        setattr(config.SandboxedKernelManager, name, value)


def _run_autograde(config: Any) -> str | None:
    """Run nbgrader's Autograde on the configured private course; None, or nbgrader's error."""
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory

    converter = Autograde(coursedir=CourseDirectory(config=config), config=config)
    converter.force = True
    converter.create_student = True
    error = None
    with warnings.catch_warnings():
        # nbgrader's own noise on damaged submissions (SQLAlchemy autoflush, cells without ids)
        warnings.filterwarnings("ignore", message=r".*not in session.*")
        warnings.filterwarnings("ignore", message=r"Cell is missing an id field.*")
        try:
            run_converter(converter)
        except RuntimeError as failure:
            error = str(failure)
    return error


def _grade_one(
    root: str,
    assignment: str,
    student: str,
    timeout: int | None,
    db_url: str,
    limits: "sandbox.Limits",
    found: "sandbox.Probe",
) -> str | None:
    """Autograde one submission from a private copy, its kernel sandboxed; None, or why it was not graded.

    Only this (trusted) process opens the gradebook. The submission is copied into a
    private course folder (mode 700, outside the course) and graded there, its kernel
    inside :mod:`instructor_tools.isolation.sandbox`; the graded notebook is then copied into the
    course's ``autograded/``. Module-level so a process pool can run it; the kernel
    environment (``KIT_PROFILE``) is inherited from the caller.
    """
    course_root = Path(root)
    config = load_config(course_root, profile=GRADING_PROFILE, timeout=timeout, db_url=db_url)
    folders = config.CourseDirectory
    source = course_root / str(folders.submitted_directory) / student / assignment
    findings = _tamper_findings(source / f"{assignment}.ipynb")
    with tempfile.TemporaryDirectory(prefix="kit-course-") as scratch:
        private = Path(scratch) / "course"
        work = Path(scratch) / "work"
        _copy_submission(course_root, folders, source, private, work, student, assignment)
        box = sandbox.prepare(work, limits=limits, use_sandbox=found.available, found=found)
        key = box.scratch.name
        sandbox.ACTIVE[key] = box
        for events in (preprocessors.EVENTS, preprocessors.FLAGS, preprocessors.NOT_STARTED):
            events.pop(key, None)
        try:
            _configure_private_course(config, private, assignment, student, key, limits, box)
            error = _run_autograde(config)
            built = private / str(folders.autograded_directory) / student / assignment
            if error is None and built.is_dir():
                _publish(built, course_root / str(folders.autograded_directory) / student / assignment)
            notes = [sandbox.describe(box.probe, limits)] + preprocessors.EVENTS.pop(key, [])
            findings += preprocessors.FLAGS.pop(key, [])
            not_started = preprocessors.NOT_STARTED.pop(key, None)
            if not_started:
                # Never the student's fault: say what happened and what to do, not nbgrader's traceback.
                error = (
                    f"{not_started}. Nothing was scored for {student}; fix the grading setup, then grade this "
                    f"student again (python -m instructor_tools autograde --assignment {assignment} --student {student})"
                )
            peak = box.peak_memory_mb()
        finally:
            sandbox.ACTIVE.pop(key, None)
            box.close()
    _write_report(
        course_root,
        assignment,
        student,
        {
            "sandboxed": box.sandboxed, "notes": notes, "flags": findings, "graded": error is None,
            "not_graded_because": error and ("grader" if not_started else "nbgrader"), "peak_memory_mb": peak,
        },
    )
    return error


_STUDENT_ID = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]*$")


def autograde(
    assignment: str,
    *,
    root: Path | str | None = None,
    students: Sequence[str] | None = None,
    timeout: int | None = None,
    db_url: str | None = None,
    environment: Mapping[str, str | None] | None = None,
    jobs: int = 1,
    limits: "sandbox.Limits | None" = None,
    sandboxing: str = "auto",
    regrade: bool = False,
    reset_manual: bool = False,
) -> list[SubmissionScore]:
    """Autograde submissions in ``<root>/submitted/<student>/<assignment>/`` in the grading profile.

    The assignment is (re)recorded in the gradebook first. Each submission is graded on
    its own, from a private copy, its kernel in a sandbox (:mod:`instructor_tools.isolation.sandbox`):
    locked and test cells are restored from the source, deleted test cells are put
    back, a duplicated cell counts once, a cell that runs past the timeout is
    interrupted and counts as failed, and a kernel that dies costs only the cells that
    had not run, so one broken or hostile submission never stops the class. Only this
    process writes the gradebook and ``autograded/``. Each submission's report
    (sandboxed or not, what happened, the static tamper check's findings) is written to
    ``grading_reports/<assignment>/<student>.json`` and comes back in
    :attr:`SubmissionScore.notes` and :attr:`SubmissionScore.flags`.

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
        limits: Memory, processes, disk and output of each kernel
            (:class:`instructor_tools.isolation.sandbox.Limits`; defaults fit a 2-core, 8 GB laptop).
        sandboxing: ``"auto"`` (sandbox where bubblewrap works, else grade unsandboxed
            with a :class:`UnsandboxedWarning`), ``"require"`` (refuse without a sandbox)
            or ``"off"``.
        regrade: Grade ``students`` again (after a fix to the tests, or an extension) keeping
            the manual scores and comments a person gave them (:mod:`instructor_tools.grading.regrading`); what
            changed is in :attr:`SubmissionScore.notes`. Nobody else is touched.
        reset_manual: With ``regrade``, clear those manual scores and comments instead.

    The course config's due dates, extensions and late policy (:mod:`instructor_tools.grading.deadlines`) are
    applied to the graded submissions afterwards, as :attr:`SubmissionScore.late_penalty`.

    Returns:
        Every graded submission's scores, read back from the gradebook.

    Raises:
        GradingError: nbgrader could not grade some submissions (a file that is not a
            notebook...); the others are graded first and listed in the error.
        instructor_tools.isolation.sandbox.SandboxUnavailable: ``sandboxing="require"`` and no sandbox works here.
        instructor_tools.isolation.sandbox.KernelCannotStart: The course's kernel does not start for grading
            (checked once, before any submission is touched).
    """
    root = resolve_root(root)
    check_assignments(root, [assignment])
    _check_grading_request(jobs, sandboxing, students, regrade, reset_manual)
    course_deadlines = deadlines.load_deadlines(root)  # a bad config fails before any grading
    limits = limits or sandbox.Limits()
    found = _sandbox_for(sandboxing)
    config = load_config(root, profile=GRADING_PROFILE, timeout=timeout, db_url=db_url)
    db_url = str(config.CourseDirectory.db_url)
    students = _students_to_grade(root / str(config.CourseDirectory.submitted_directory), assignment, students)
    register_assignment(assignment, root, db_url)
    course = str(config.CourseDirectory.course_id)
    kept = {s: regrading.before(db_url, course, assignment, s, reset=reset_manual) for s in students} if regrade else {}
    env = dict(environment or {}) | {"KIT_PROFILE": GRADING_PROFILE}
    with kernel_environment(env | tools_on_path()):
        failures = _grade_each(root, assignment, students, jobs, (timeout, db_url, limits, found))
    changes = {s: regrading.after(db_url, course, assignment, s, work) for s, work in kept.items()}
    deadlines.record_penalties(db_url, course, course_deadlines, assignment, [s for s in students if s not in failures])
    return _graded_scores(root, db_url, assignment, students, failures, changes)


def _check_grading_request(
    jobs: int, sandboxing: str, students: Sequence[str] | None, regrade: bool, reset_manual: bool
) -> None:
    """Refuse jobs, sandboxing or regrading options :func:`autograde` cannot honour."""
    if jobs < 1:
        raise ValueError("jobs must be at least 1.")
    if sandboxing not in SANDBOXING:
        raise ValueError(f"sandboxing must be one of {SANDBOXING}, not {sandboxing!r}.")
    if regrade and not students:
        raise ValueError("regrade needs the students to grade again (--student NAME); it never regrades a whole class.")
    if reset_manual and not regrade:
        raise ValueError("reset_manual (--reset-manual) only goes with regrade (--regrade).")


def _sandbox_for(sandboxing: str) -> "sandbox.Probe":
    """The sandbox the kernels run in; without one, a warning and a check that the kernel starts at all."""
    found = sandbox.probe() if sandboxing != "off" else sandbox.Probe(False, "sandbox turned off", None, "rlimit")
    if sandboxing == "require" and not found.available:
        raise sandbox.SandboxUnavailable(f"no sandbox for the submissions' kernels: {found.reason}.")
    if not found.available:
        warnings.warn(
            f"grading UNSANDBOXED ({found.reason}): submissions run with the grader's rights (each in its own "
            "temporary folder); grade only a class you trust.",
            UnsandboxedWarning,
            stacklevel=3,  # autograde's caller
        )
        # The sandboxed probe started the real kernel already; without it, check once here,
        # before any submission is touched, that the kernel starts at all.
        problem = sandbox.check_kernel(found)
        if problem:
            raise sandbox.KernelCannotStart(problem)
    return found


def _students_to_grade(submitted: Path, assignment: str, students: Sequence[str] | None) -> list[str]:
    """The students to grade (by default everyone who submitted ``assignment``), their ids checked."""
    if students is None:
        students = sorted(p.parent.name for p in submitted.glob(f"*/{assignment}") if p.is_dir())
    students = list(students)
    bad = [s for s in students if not _STUDENT_ID.match(s)]
    if bad:
        raise ValueError(f"student ids {bad} are not plain names (letters, digits, _ . @ + -); rename their folders.")
    return students


def _grade_each(root: Path, assignment: str, students: list[str], jobs: int, arguments: tuple) -> dict[str, str]:
    """Grade every submission (``jobs`` at a time, the failed ones again on their own); student -> why not graded."""
    failures: dict[str, str] = {}
    pending = students
    if jobs > 1 and len(students) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        results: dict[str, str | None] = {}
        try:
            with ProcessPoolExecutor(max_workers=min(jobs, len(students)), mp_context=context) as pool:
                futures = {s: pool.submit(_grade_one, str(root), assignment, s, *arguments) for s in students}
                for student, future in futures.items():
                    results[student] = future.result()
        except BrokenProcessPool:
            pass  # workers could not start (e.g. an interactive __main__): grade the rest here
        pending = [s for s in students if results.get(s, "not graded") is not None]
    for student in pending:
        error = _grade_one(str(root), assignment, student, *arguments)
        if error is not None:
            failures[student] = error
    return failures


def _graded_scores(
    root: Path, db_url: str, assignment: str, students: list[str], failures: dict[str, str],
    changes: dict[str, list[str]],
) -> list[SubmissionScore]:
    """The graded students' scores from the gradebook, with what a regrade changed; GradingError when some failed."""
    graded = [
        s for s in submission_scores(assignment, root=root, db_url=db_url) if s.student in set(students) - set(failures)
    ]
    if failures:
        raise GradingError(graded, failures)
    if changes:
        graded = [
            dataclasses.replace(s, notes=s.notes + tuple(f"regraded: {line}" for line in changes.get(s.student, [])))
            for s in graded
        ]
    return graded


def _read_report(root: Path, assignment: str, student: str) -> dict:
    path = report_path(root, assignment, student)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


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
    course_root = Path(str(config.CourseDirectory.root))
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
                report = _read_report(course_root, entry.name, submission.student.id)
                scores.append(
                    SubmissionScore(
                        submission.student.id,
                        entry.name,
                        float(submission.score),
                        float(submission.max_score),
                        dict(sorted(cells.items())),
                        tuple(str(n) for n in report.get("notes", [])),
                        tuple(str(f) for f in report.get("flags", [])),
                        float(submission.late_submission_penalty or 0.0),
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
    late_penalty and final_score (:mod:`instructor_tools.grading.deadlines`), needs_manual_grade, flags: the tamper check's findings, notes: the grading report),
    or with ``per_cell`` one row per graded cell."""
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
                    "late_penalty": submission.late_penalty,
                    "final_score": submission.final_score,
                    "needs_manual_grade": ", ".join(submission.needs_manual_grade),
                    "flags": "; ".join(submission.flags),
                    "notes": "; ".join(submission.notes),
                }
            )
    columns = (
        ["student", "assignment", "grade_id", "score", "max_score", "auto_score", "needs_manual_grade"]
        if per_cell
        else [
            "student", "assignment", "score", "max_score", "late_penalty", "final_score", "needs_manual_grade", "flags",
            "notes",
        ]
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
    with atomic_path(output) as temporary:
        table.to_csv(temporary, index=False)
    return output


def feedback(
    assignment: str | None = None,
    *,
    root: Path | str | None = None,
    students: Sequence[str] | None = None,
    db_url: str | None = None,
    show_tests: bool = False,
) -> list[Path]:
    """Write feedback HTML (``feedback/<student>/<assignment>/<notebook>.html``) for graded submissions.

    Students see, per graded cell, passed or failed, the points and the assertion
    message; the tests' code (hidden tests included) is not shown unless ``show_tests``.

    Args:
        assignment: Assignment name; every autograded assignment by default.
        root: Course folder.
        students: Student ids; every autograded student by default.
        db_url: Gradebook URL.
        show_tests: Show the tests' code and full tracebacks (hands out the hidden tests).

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
            student_config.GenerateFeedback.preprocessors = preprocessors.feedback_steps(show_tests)
            converter = GenerateFeedback(coursedir=CourseDirectory(config=student_config), config=student_config)
            converter.force = True
            run_converter(converter)
            written += sorted((root / str(config.CourseDirectory.feedback_directory) / student / name).glob("*.html"))
    return written
