"""Autograding throughput (section 5): a realistic class of submissions, graded in the grading profile.

A scratch course folder gets the kit's ``nbgrader_config.py``, the header and one
assignment; its release is generated and a class hands in the kinds of submission
an instructor meets. For notebook 01 (the default) that is :data:`REALISTIC_MIX`:
complete, half-right (top-k without the threshold), blank, a duplicated test cell, a
deleted test cell and an infinite loop. Other assignments get :data:`GENERIC_MIX`,
and the tiny run a toy assignment without TensorFlow and :data:`TOY_MIX`.

The timer covers :func:`instructor_tools.grading.grader.autograde` as the ``autograde`` command runs
it (``jobs=instructor_tools.grading.grader.DEFAULT_JOBS``; the tiny run grades one at a time), recording
the assignment in the gradebook included. Every autograded cell of every submission is then checked against what
its kind must score; any other score is listed as unexpected, and the budget then
counts as not met. With N submissions other than 30 the kinds are shared out in
proportion (at least one solution); the projection to 30 scales the whole time,
fixed costs included, so it errs on the slow side.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from benchmarks.common import ROOT, Context, now

CLASS_SIZE = 30
BUDGET_S = 600.0  # 30 submissions in 10 minutes on 2 cores
DEFAULT_ASSIGNMENT = "01_pretrained_scoring"
TOY_ASSIGNMENT = "toy"
# Notebook 01's top-k without its minimum probability: what a half-right student hands in.
NO_THRESHOLD = '''def top_k_with_threshold(probabilities, class_names, k=5, min_probability=0.1):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")[:k]
    return {class_names[i]: float(probabilities[i]) for i in order}'''


@dataclasses.dataclass(frozen=True)
class Material:
    """What every kind of submission is made from.

    Attributes:
        solution: The release answered as the solutions do.
        blank: The release as handed out.
        answers: grade_id -> the solution code of each answer cell (without the solution markers).
        points: grade_id -> points of each autograded test cell, in notebook order.
    """

    solution: Any
    blank: Any
    answers: dict[str, str]
    points: dict[str, float]

    @property
    def tests(self) -> list[str]:
        """grade_ids of the autograded test cells, in notebook order."""
        return list(self.points)


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of submission in a simulated class.

    Attributes:
        name: Short name; the students are ``<name>_00``, ``<name>_01``...
        share: How many of a class of 30 hand this kind in.
        description: What the student did, for the report.
        build: Material -> the submitted notebook.
        fails: Material -> grade_ids of the autograded test cells this kind must fail
            (every other one must get full points); None: every one must score 0.
    """

    name: str
    share: int
    description: str
    build: Callable[[Material], Any]
    fails: Callable[[Material], frozenset[str]] | None


def _edit(material: Material, source: Any = None, **changes: Any) -> Any:
    from instructor_tools.course import submissions

    return submissions.edit_submission(material.solution if source is None else source, **changes)


def _no_threshold(material: Material) -> Any:
    return _edit(material, replace={"top_k_with_threshold": NO_THRESHOLD})


def _fixed(*grade_ids: str) -> Callable[[Material], frozenset[str]]:
    return lambda material: frozenset(grade_ids)


_SOLUTION = Kind("solution", 12, "the solution", lambda m: m.solution, _fixed())
_BLANK = Kind("blank", 6, "the release handed back unanswered", lambda m: m.blank, None)

REALISTIC_MIX: tuple[Kind, ...] = (
    _SOLUTION,
    Kind("no_threshold", 8, "half right: top-k without the minimum probability", _no_threshold, _fixed("test_top_k_threshold")),
    _BLANK,
    Kind(
        "duplicated_test", 2, "the solution with a test cell duplicated",
        lambda m: _edit(m, duplicate=["test_preprocess"]), _fixed(),
    ),
    Kind(
        "deleted_test", 1, "half right, and the test cell it fails deleted",
        lambda m: _edit(m, _no_threshold(m), delete=["test_top_k_threshold"]), _fixed("test_top_k_threshold"),
    ),
    Kind(
        "infinite_loop", 1, "an infinite loop in the results-table answer",
        lambda m: _edit(m, replace={"results_table": "while True:\n    pass\n" + m.answers["results_table"]}),
        _fixed("test_results_table"),
    ),
)
GENERIC_MIX: tuple[Kind, ...] = (
    dataclasses.replace(_SOLUTION, share=22),
    _BLANK,
    Kind("duplicated_test", 1, "the solution with its first test cell duplicated", lambda m: _edit(m, duplicate=m.tests[:1]), _fixed()),
    Kind("deleted_test", 1, "the solution with its last test cell deleted", lambda m: _edit(m, delete=m.tests[-1:]), _fixed()),
)
TOY_MIX: tuple[Kind, ...] = (dataclasses.replace(_SOLUTION, share=15), dataclasses.replace(_BLANK, share=15))
MIXES: dict[str, tuple[Kind, ...]] = {DEFAULT_ASSIGNMENT: REALISTIC_MIX, TOY_ASSIGNMENT: TOY_MIX}


def class_mix(mix: Sequence[Kind], submissions: int) -> dict[str, int]:
    """How many submissions of each kind a class of ``submissions`` hands in.

    The shares of a class of 30 are scaled to ``submissions`` by largest remainders
    (ties to the kind listed first); at least one submission is the solution.

    Args:
        mix: The kinds; the first must be the solution.
        submissions: Size of the class.

    Returns:
        kind name -> count (zero counts included), summing to ``submissions``.

    Raises:
        ValueError: ``submissions`` below 1, or a mix that does not start with the solution.
    """
    if submissions < 1:
        raise ValueError("submissions must be at least 1.")
    if not mix or mix[0].name != "solution":
        raise ValueError("a class mix must start with the solution kind.")
    total = sum(kind.share for kind in mix)
    exact = [submissions * kind.share / total for kind in mix]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(mix)), key=lambda i: (counts[i] - exact[i], i))
    for index in by_remainder[: submissions - sum(counts)]:
        counts[index] += 1
    if counts[0] == 0:  # a class must show that a perfect submission gets full marks
        counts[counts.index(max(counts))] -= 1
        counts[0] = 1
    return {kind.name: count for kind, count in zip(mix, counts)}


def graded_points(notebook: Any) -> dict[str, float]:
    """grade_id -> points of every autograded test cell (graded, not a written answer), in order."""
    points = {}
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            points[meta["grade_id"]] = float(meta.get("points", 0))
    return points


def unexpected_scores(
    scores: Sequence[Any], expected: Mapping[str, frozenset[str] | None], points: Mapping[str, float]
) -> list[str]:
    """Every autograded cell whose score differs from what its submission's kind must get.

    Args:
        scores: :class:`instructor_tools.grading.grader.SubmissionScore` of each graded submission.
        expected: student -> grade_ids that student must fail (None: every one).
        points: grade_id -> points of each autograded test cell.

    Returns:
        ``"student/grade_id: got X, expected Y"`` lines; a student not graded at all is
        listed as such. Empty when every score is as expected.
    """
    found = {score.student: score for score in scores}
    wrong = [f"{student}: not graded" for student in expected if student not in found]
    for student, score in sorted(found.items()):
        if student not in expected:
            wrong.append(f"{student}: graded, but not one of the simulated class")
            continue
        fails = expected[student]
        for grade_id, full in points.items():
            want = 0.0 if fails is None or grade_id in fails else full
            cell = score.cells.get(grade_id)
            got = None if cell is None else float(cell.score)
            if got != want:
                wrong.append(f"{student}/{grade_id}: got {got}, expected {want}")
    return wrong


def _toy_source(path: Path) -> None:
    """A one-exercise assignment without TensorFlow (the tiny run)."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    answer = nbformat.v4.new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION")
    answer.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": "add", "schema_version": 3}
    test = nbformat.v4.new_code_cell('"""Checks add."""\nassert add(1, 2) == 3, "add(1, 2) should be 3"')
    test.metadata["nbgrader"] = {
        "grade": True, "solution": False, "locked": True, "grade_id": "test_add", "points": 1, "schema_version": 3,
    }
    notebook.cells = [nbformat.v4.new_markdown_cell("# Toy"), answer, test]
    for index, cell in enumerate(notebook.cells):
        cell.id = f"toy-{index}"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def _course(folder: Path, assignment: str, toy: bool) -> Path:
    root = folder / "course"
    (root / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    if toy:
        _toy_source(root / "solutions" / assignment / f"{assignment}.ipynb")
    else:
        source = ROOT / "solutions" / assignment
        if not source.is_dir():
            raise ValueError(f"no assignment {assignment!r} in {ROOT / 'solutions'}; pass one of its folder names.")
        shutil.copytree(source, root / "solutions" / assignment)
    return root


def _material(assignment: str, root: Path) -> Material:
    import nbformat

    from instructor_tools.course import course_folder, submissions

    solution = submissions.solution_submission(assignment, root)
    source = nbformat.read(course_folder.source_notebook(assignment, root), as_version=4)
    answers = {
        cell.metadata["nbgrader"]["grade_id"]: cell.source
        for cell in solution.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    return Material(
        solution=solution,
        blank=nbformat.read(course_folder.release_notebook(assignment, root), as_version=4),
        answers=answers,
        points=graded_points(source),
    )


def run(
    context: Context, submissions: int, assignment: str | None = None, *, folder_name: str = "grading"
) -> dict[str, Any]:
    """Autograde a simulated class of ``assignment`` and time it (section 5).

    Args:
        context: Course data and scratch folder.
        submissions: Size of the class (the kinds are shared out in proportion).
        assignment: Assignment folder of ``solutions/``; the toy assignment in the tiny
            run, ``01_pretrained_scoring`` otherwise.

    Returns:
        Seconds in all and per submission, the projection to 30, each kind with its
        expected and measured scores, the unexpected scores, and whether the budget
        was met (in time, every score as expected).
    """
    import nbformat

    from helpers.settings import PROFILES
    from instructor_tools.course import course_folder, release
    from instructor_tools.grading import grader
    from instructor_tools.isolation import sandbox

    if submissions < 1:
        raise ValueError("submissions must be at least 1.")
    toy = context.size.toy_notebooks and assignment is None
    assignment = TOY_ASSIGNMENT if toy else (assignment or DEFAULT_ASSIGNMENT)
    mix = MIXES.get(assignment, GENERIC_MIX)
    counts = class_mix(mix, submissions)
    folder = context.scratch / folder_name
    root = _course(folder, assignment, toy)
    release.generate(root=root)
    material = _material(assignment, root)
    points = material.points
    expected: dict[str, frozenset[str] | None] = {}  # student -> the cells they must fail
    fails_of: dict[str, frozenset[str] | None] = {}
    students_of: dict[str, list[str]] = {}
    for kind in mix:
        if not counts[kind.name]:
            continue
        notebook = kind.build(material)
        fails_of[kind.name] = None if kind.fails is None else kind.fails(material)
        students_of[kind.name] = [f"{kind.name}_{number:02d}" for number in range(counts[kind.name])]
        for student in students_of[kind.name]:
            target = root / "submitted" / student / assignment / f"{assignment}.ipynb"
            target.parent.mkdir(parents=True)
            nbformat.write(notebook, target)
            expected[student] = fails_of[kind.name]
    environment = context.kernel_environment(course_folder.GRADING_PROFILE, folder / "cache")
    jobs = context.size.grading_jobs or grader.DEFAULT_JOBS
    mix_text = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    print(f"  autograding {submissions} submissions of {assignment} ({mix_text}; jobs={jobs}) ...", flush=True)
    began = time.perf_counter()
    scores = grader.autograde(assignment, root=root, environment=environment, jobs=jobs)
    seconds = time.perf_counter() - began
    unexpected = unexpected_scores(scores, expected, points)
    totals = {s.student: sum(float(s.cells[g].score) for g in points if g in s.cells) for s in scores}
    wrong_students = [line.split("/", 1)[0].split(":", 1)[0] for line in unexpected]
    kinds = []
    for kind in mix:
        if kind.name not in students_of:
            continue
        fails, students = fails_of[kind.name], students_of[kind.name]
        kinds.append({
            "kind": kind.name,
            "description": kind.description,
            "submissions": len(students),
            "expected_points": 0.0 if fails is None else sum(p for g, p in points.items() if g not in fails),
            "scores": sorted(totals.get(student, float("nan")) for student in students),
            "unexpected_cells": sum(student in students for student in wrong_students),
        })
    projected = seconds * CLASS_SIZE / submissions
    return {
        "date": now(),
        "assignment": assignment,
        "sandbox": sandbox.describe(sandbox.probe(), sandbox.Limits()),
        "submissions": submissions,
        "jobs": jobs,
        "cell_timeout_s": PROFILES[course_folder.GRADING_PROFILE].cell_timeout,
        "max_points": sum(points.values()),
        "kinds": kinds,
        "seconds": round(seconds, 2),
        "seconds_per_submission": round(seconds / submissions, 2),
        "projected_class_s": round(projected, 1),
        "class_size": CLASS_SIZE,
        "budget_s": BUDGET_S,
        "unexpected": unexpected,
        "budget_met": projected <= BUDGET_S and not unexpected,
        "ratio_budget_to_projected": round(BUDGET_S / projected, 3) if projected > 0 else float("nan"),
    }


def _graded_assignments(context: Context) -> list[str | None]:
    """Every assignment with autograded tests (the toy one in the tiny run)."""
    import nbformat

    from instructor_tools.course import course_folder

    if context.size.toy_notebooks:
        return [None]
    return [
        name for name in course_folder.list_assignments(ROOT)
        if graded_points(nbformat.read(course_folder.source_notebook(name, ROOT), as_version=4))
    ]


def sandbox_overhead(context: Context, submissions: int, repetitions: int) -> dict[str, Any]:
    """The sandbox's cost per submission: the same solutions graded sandboxed and not, alternating.

    Both sides grade ``submissions`` copies of the solution of notebook 01 (the toy
    assignment in the tiny run) one at a time, ``repetitions`` times each, in one
    process; the ratio is of the medians of seconds per submission.
    """
    import statistics

    import nbformat

    from instructor_tools.course import course_folder, release
    from instructor_tools.course import submissions as rehearsal
    from instructor_tools.grading import grader
    from instructor_tools.isolation import sandbox

    found = sandbox.probe()
    if not found.available:
        return {"date": now(), "skipped": f"no sandbox here: {found.reason}"}
    toy = context.size.toy_notebooks
    assignment = TOY_ASSIGNMENT if toy else DEFAULT_ASSIGNMENT
    folder = context.scratch / "sandbox-overhead"
    root = _course(folder, assignment, toy)
    release.generate(root=root)
    solution = rehearsal.solution_submission(assignment, root)
    students = [f"solution_{number:02d}" for number in range(submissions)]
    for student in students:
        target = root / "submitted" / student / assignment / f"{assignment}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(solution, target)
    environment = context.kernel_environment(course_folder.GRADING_PROFILE, folder / "cache")
    times: dict[str, list[float]] = {"sandboxed": [], "unsandboxed": []}
    print(f"  sandbox overhead: {submissions} solutions of {assignment}, {repetitions} repetitions per side ...", flush=True)
    import warnings

    def grade(mode: str, who: list[str]) -> float:
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", grader.UnsandboxedWarning)
            grader.autograde(assignment, root=root, students=who, environment=environment, jobs=1, sandboxing=mode)
        return time.perf_counter() - began

    for mode in ("require", "off"):  # untimed warm-up of each side: imports, the gradebook, the probe
        grade(mode, students[:1])
    for _ in range(repetitions):
        for side, mode in (("sandboxed", "require"), ("unsandboxed", "off")):
            times[side].append(grade(mode, students) / submissions)
    sandboxed, unsandboxed = statistics.median(times["sandboxed"]), statistics.median(times["unsandboxed"])
    return {
        "date": now(),
        "assignment": assignment,
        "submissions": submissions,
        "repetitions": repetitions,
        "seconds_per_submission": {side: [round(v, 3) for v in values] for side, values in times.items()},
        "sandboxed_s": round(sandboxed, 3),
        "unsandboxed_s": round(unsandboxed, 3),
        "ratio": round(sandboxed / unsandboxed, 3),
        "extra_s": round(sandboxed - unsandboxed, 3),
        "sandbox": sandbox.describe(found, sandbox.Limits()),
    }


def run_every_notebook(context: Context, submissions: int) -> dict[str, Any]:
    """Section 9: a class of ``submissions`` for every graded notebook, sandboxed, and the sandbox's overhead."""
    classes = []
    for assignment in _graded_assignments(context):
        classes.append(run(context, submissions, assignment, folder_name=f"sandboxed-{assignment or 'toy'}"))
    overhead = sandbox_overhead(context, 2 if context.size.toy_notebooks else 4, 1 if context.size.toy_notebooks else 2)
    return {
        "date": now(),
        "classes": classes,
        "overhead": overhead,
        "budget_met": all(c["budget_met"] for c in classes),
    }
