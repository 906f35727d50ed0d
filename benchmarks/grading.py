"""Autograding throughput: N simulated submissions of one notebook, graded in the grading profile.

A scratch course folder gets the kit's ``nbgrader_config.py``, the header and one
assignment; the release is generated and N students submit the solution (what a
perfect student hands in, :func:`helpers.course.solution_submission`). The timer
covers :func:`helpers.course.autograde` as the ``autograde`` command runs it
(``jobs=helpers.course.DEFAULT_JOBS``), recording the assignment in the gradebook
included. The projection to 30 submissions scales the whole time, fixed costs
included, so it errs on the slow side.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Context, now

CLASS_SIZE = 30
BUDGET_S = 600.0  # 30 submissions in 10 minutes on 2 cores
DEFAULT_ASSIGNMENT = "01_pretrained_scoring"
TOY_ASSIGNMENT = "toy"


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


def run(context: Context, submissions: int, assignment: str | None = None) -> dict[str, Any]:
    """Autograde ``submissions`` copies of the solution of ``assignment`` and time it (section 5).

    Args:
        context: Course data and scratch folder.
        submissions: How many simulated students.
        assignment: Assignment folder of ``solutions/``; the toy assignment in the tiny
            run, ``01_pretrained_scoring`` otherwise.

    Returns:
        Seconds in all and per submission, the projection to 30, and whether every
        autograded cell of every submission got full marks.
    """
    import nbformat

    from helpers import course

    if submissions < 1:
        raise ValueError("submissions must be at least 1.")
    toy = context.size.toy_notebooks and assignment is None
    assignment = TOY_ASSIGNMENT if toy else (assignment or DEFAULT_ASSIGNMENT)
    folder = context.scratch / "grading"
    root = _course(folder, assignment, toy)
    course.generate(root=root)
    solution = course.solution_submission(assignment, root)
    students = [f"student_{i:02d}" for i in range(submissions)]
    for student in students:
        target = root / "submitted" / student / assignment / f"{assignment}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(solution, target)
    environment = context.kernel_environment("grading", folder / "cache")
    print(f"  autograding {submissions} submissions of {assignment} (jobs={course.DEFAULT_JOBS}) ...", flush=True)
    began = time.perf_counter()
    scores = course.autograde(assignment, root=root, environment=environment, jobs=course.DEFAULT_JOBS)
    seconds = time.perf_counter() - began
    full_marks = len(scores) == submissions and all(
        cell.score == cell.max_score for s in scores for cell in s.cells.values() if not cell.needs_manual_grade
    )
    projected = seconds * CLASS_SIZE / submissions
    return {
        "date": now(),
        "assignment": assignment,
        "submissions": submissions,
        "jobs": course.DEFAULT_JOBS,
        "seconds": round(seconds, 2),
        "seconds_per_submission": round(seconds / submissions, 2),
        "projected_class_s": round(projected, 1),
        "class_size": CLASS_SIZE,
        "budget_s": BUDGET_S,
        "budget_met": projected <= BUDGET_S and full_marks,
        "all_full_marks": full_marks,
        "ratio_budget_to_projected": round(BUDGET_S / projected, 3) if projected > 0 else float("nan"),
    }
