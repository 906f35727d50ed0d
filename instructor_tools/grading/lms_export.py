"""Grade sheets a school imports: Canvas's gradebook CSV and a Moodle grade-import CSV, from a roster.

The roster maps the hub's user names (nbgrader's student ids) to the school's ids; it is
the classroom roster (``classroom/roster.example.csv``) with more columns::

    username,role,name,password,sis_user_id,canvas_id,sis_login_id,section
    teacher,instructor,Ada Lovelace,,,,,
    alice,student,Alice Liddell,,S1001,52,aliddell,Group A

Only ``username`` and ``sis_user_id`` are required; instructors are skipped. Each
assignment's grade is its score after the late penalty (:mod:`instructor_tools.grading.deadlines`).

- Canvas: ``Student, ID, SIS User ID, SIS Login ID, Section``, one column per
  assignment, and the ``Points Possible`` row under the header (the layout of Canvas's own
  gradebook export, which its import reads back). A student without a submission gets an
  empty cell (ungraded), never a zero.
- Moodle: ``ID number`` (the school's id; map it to the user field "ID number" when
  importing) and one grade column per assignment.

Nobody is dropped in silence: students of the roster who did not submit, submissions from
names the roster does not list, students without a school id and submissions still waiting
for manual grading are listed (:attr:`LmsExport.problems`), printed by ``export`` and
written beside the sheets. Taught nowhere (instructor tooling).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from helpers.files import atomic_path
from instructor_tools.course.roster import Member, read_members, students

if TYPE_CHECKING:  # pragma: no cover
    from instructor_tools.grading.grader import SubmissionScore

POINTS_POSSIBLE = "    Points Possible"  # Canvas's label, leading spaces included
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_ID = "ID number"
PROBLEM_COLUMNS = ("problem", "student", "assignment", "what to do")


def read_roster(path: Path | str) -> list[Member]:
    """The students of the class roster, in its order; the grade sheets need their school ids (``sis_user_id``).

    One reader for the hub and the sheets: :func:`instructor_tools.course.roster.read_members`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: No ``username`` or ``sis_user_id`` column, or a bad line (the message names it).
    """
    return students(read_members(path, columns=("username", "sis_user_id")))


@dataclasses.dataclass
class LmsExport:
    """The sheets built from the gradebook and a roster.

    Attributes:
        assignments: Assignment names, in column order.
        points: assignment -> points possible.
        rows: One row per roster student with a school id: the roster entry and
            assignment -> grade (None: no submission).
        problems: ``(problem, student, assignment, what to do)`` for everyone not exported as is.
    """

    assignments: list[str]
    points: dict[str, float]
    rows: list[tuple[Member, dict[str, float | None]]]
    problems: list[tuple[str, str, str, str]]

    def canvas_rows(self) -> list[list[str]]:
        """The Canvas CSV, header and Points Possible row first."""
        table = [[*CANVAS_COLUMNS, *self.assignments]]
        table.append([POINTS_POSSIBLE, "", "", "", "", *(_number(self.points[a]) for a in self.assignments)])
        for entry, grades in self.rows:
            table.append(
                [entry.name or entry.username, entry.canvas_id, entry.sis_user_id, entry.sis_login_id, entry.section,
                 *(_number(grades[a]) for a in self.assignments)]
            )
        return table

    def moodle_rows(self) -> list[list[str]]:
        """The Moodle CSV: the school's id, then one grade per assignment."""
        return [[MOODLE_ID, *self.assignments]] + [
            [entry.sis_user_id, *(_number(grades[a]) for a in self.assignments)] for entry, grades in self.rows
        ]


def _number(value: float | None) -> str:
    """A grade as Canvas and Moodle read it: empty when there is none, no trailing zeros.

    >>> _number(None), _number(7.0), _number(6.25), _number(1 / 3)
    ('', '7', '6.25', '0.33')
    """
    return "" if value is None else f"{round(value, 2):g}"


def build(scores: Sequence["SubmissionScore"], roster: Sequence[Member], assignments: Sequence[str] | None = None) -> LmsExport:
    """Match the gradebook's submissions to the roster.

    Args:
        scores: Every submission (:func:`instructor_tools.grading.grader.submission_scores`).
        roster: From :func:`read_roster`.
        assignments: The columns; the assignments of ``scores`` by default.

    Returns:
        The sheets' content and the list of problems.
    """
    names = list(assignments) if assignments is not None else sorted({s.assignment for s in scores})
    points = {a: max((s.max_score for s in scores if s.assignment == a), default=0.0) for a in names}
    by_student: dict[str, dict[str, "SubmissionScore"]] = {}
    for score in scores:
        if score.assignment in points:
            by_student.setdefault(score.student, {})[score.assignment] = score
    known = {entry.username for entry in roster}
    problems: list[tuple[str, str, str, str]] = []
    for student in sorted(set(by_student) - known):
        for assignment in sorted(by_student[student]):
            problems.append((
                "not on the roster", student, assignment,
                "add this user name to the roster with the school's id (or check for a typo), then export again",
            ))
    rows: list[tuple[Member, dict[str, float | None]]] = []
    for entry in roster:
        submitted = by_student.get(entry.username, {})
        grades = {a: (submitted[a].final_score if a in submitted else None) for a in names}
        if not entry.sis_user_id:
            problems.append((
                "no school id", entry.username, "", "fill in sis_user_id in the roster; this student is not in the sheets",
            ))
            continue
        for assignment in names:
            if assignment not in submitted:
                problems.append((
                    "no submission", entry.username, assignment, "left empty in the sheets (not a zero): grade it or enter 0 by hand",
                ))
            elif submitted[assignment].needs_manual_grade:
                problems.append((
                    "waits for manual grading", entry.username, assignment,
                    f"exported without {', '.join(submitted[assignment].needs_manual_grade)}: grade them in the "
                    "formgrader and export again",
                ))
        rows.append((entry, grades))
    return LmsExport(names, points, rows, problems)


def _write_csv(path: Path, rows: Sequence[Sequence[str]]) -> None:
    with atomic_path(path) as temporary:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)


def sheet_paths(output: Path | str) -> dict[str, Path]:
    """Where the sheets go, beside the kit's export: ``<stem>-canvas.csv``, ``<stem>-moodle.csv``,
    ``<stem>-roster-problems.csv``.

    >>> {k: v.name for k, v in sheet_paths("out/grades.csv").items()}
    {'canvas': 'grades-canvas.csv', 'moodle': 'grades-moodle.csv', 'problems': 'grades-roster-problems.csv'}
    """
    output = Path(output)
    return {
        kind: output.with_name(f"{output.stem}-{suffix}.csv")
        for kind, suffix in (("canvas", "canvas"), ("moodle", "moodle"), ("problems", "roster-problems"))
    }


def write(export: LmsExport, output: Path | str) -> dict[str, Path]:
    """Write the Canvas and Moodle sheets and the problems list beside ``output`` (see :func:`sheet_paths`).

    Each file is written to a temporary name and renamed, so none is ever half-written.

    Returns:
        kind -> path written.
    """
    paths = sheet_paths(Path(output).resolve())
    _write_csv(paths["canvas"], export.canvas_rows())
    _write_csv(paths["moodle"], export.moodle_rows())
    _write_csv(paths["problems"], [list(PROBLEM_COLUMNS), *map(list, export.problems)])
    return paths
