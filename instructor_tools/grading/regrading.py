"""Regrading one submission (``autograde --student NAME --regrade``): what a person graded stays.

nbgrader's autograde, run again on a submission, keeps the grader's manual scores and
comments but marks every cell that has a manual score "needs manual grade" again, so a
written answer already graded by hand shows up as ungraded in the formgrader. Around a
regrade, :func:`before` notes (or, with ``reset``, clears) the manual scores, extra credit
and comments of that one submission, and :func:`after` puts back what was kept, review
flags included, and says what the autograder changed. Nothing of any other submission is
read or written. Taught nowhere (instructor tooling).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ManualWork:
    """What a person gave one submission.

    Attributes:
        grades: ``(notebook, grade_id) -> (manual_score, extra_credit, needs_manual_grade)``.
        comments: ``(notebook, comment_id) -> manual_comment``.
        auto_scores: ``(notebook, grade_id) -> auto_score`` before the regrade.
        reset: The manual work was cleared (``--reset-manual``), not kept.
    """

    grades: dict[tuple[str, str], tuple[float | None, float | None, bool]]
    comments: dict[tuple[str, str], str | None]
    auto_scores: dict[tuple[str, str], float | None]
    reset: bool = False


def _submission(gradebook, assignment: str, student: str):
    from nbgrader.api import MissingEntry

    try:
        return gradebook.find_submission(assignment, student)
    except MissingEntry:
        return None


def before(db_url: str, course_id: str, assignment: str, student: str, *, reset: bool = False) -> ManualWork:
    """Note one submission's manual work before it is autograded again; with ``reset``, clear it.

    Args:
        db_url: The gradebook.
        course_id: The course id.
        assignment: The assignment.
        student: The student whose submission is regraded.
        reset: Clear the manual scores, extra credit and comments (they are returned, not kept).

    Returns:
        The manual work (empty when the submission was never graded).
    """
    from nbgrader.api import Gradebook

    grades: dict[tuple[str, str], tuple[float | None, float | None, bool]] = {}
    comments: dict[tuple[str, str], str | None] = {}
    autos: dict[tuple[str, str], float | None] = {}
    with Gradebook(db_url, course_id) as gradebook:
        submission = _submission(gradebook, assignment, student)
        for notebook in submission.notebooks if submission is not None else []:
            for grade in notebook.grades:
                key = (notebook.name, grade.name)
                grades[key] = (grade.manual_score, grade.extra_credit, bool(grade.needs_manual_grade))
                autos[key] = grade.auto_score
                if reset:
                    grade.manual_score = None
                    grade.extra_credit = None
            for comment in notebook.comments:
                comments[(notebook.name, comment.name)] = comment.manual_comment
                if reset:
                    comment.manual_comment = None
        gradebook.db.commit()
    return ManualWork(grades, comments, autos, reset)


def after(db_url: str, course_id: str, assignment: str, student: str, work: ManualWork) -> list[str]:
    """Put back what :func:`before` kept, and say what the regrade changed.

    Manual scores, extra credit and comments are written back as they were, and a cell a
    person had already graded is not marked "needs manual grade" again. After a reset,
    nbgrader's own marks stand (every written answer waits for a person).

    Returns:
        One line per change: a test whose automatic score moved, a manual score kept over a
        new automatic one.
    """
    from nbgrader.api import Gradebook

    lines: list[str] = []
    with Gradebook(db_url, course_id) as gradebook:
        submission = _submission(gradebook, assignment, student)
        for notebook in submission.notebooks if submission is not None else []:
            for grade in notebook.grades:
                key = (notebook.name, grade.name)
                old_auto = work.auto_scores.get(key)
                if key in work.auto_scores and old_auto != grade.auto_score:
                    lines.append(f"{grade.name}: automatic score {_points(old_auto)} -> {_points(grade.auto_score)}")
                if work.reset or key not in work.grades:
                    continue
                manual, extra, needs = work.grades[key]
                grade.manual_score, grade.extra_credit = manual, extra
                if manual is not None:
                    grade.needs_manual_grade = needs
                    if grade.auto_score is not None and grade.auto_score != manual:
                        lines.append(f"{grade.name}: the manual score {manual:g} is kept (automatic: {grade.auto_score:g})")
            for comment in notebook.comments:
                key = (notebook.name, comment.name)
                if not work.reset and key in work.comments:
                    comment.manual_comment = work.comments[key]
        gradebook.db.commit()
    return lines


def _points(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"
