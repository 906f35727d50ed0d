"""Due dates, a late policy and extensions: read from the course config, recorded in nbgrader's gradebook.

The course config (``kit.toml``, the file :func:`helpers.settings.find_config_file`
finds from the course folder) holds three optional tables beside ``[kit]``::

    [deadlines]                       # assignment = due date, with its time zone
    01_pretrained_scoring = 2026-12-10T17:00:00+01:00

    [late_policy]
    method = "percent_per_day"        # none | percent_per_day | zero_after_grace
    percent_per_day = 10              # each day or part of a day late costs 10 % of the score...
    cap_percent = 50                  # ...up to 50 %
    grace_hours = 0.25                # late by less than this is on time (a slow upload)

    [extensions]                      # per student: a new due date, or extra days
    alice = { 01_pretrained_scoring = 2026-12-12T17:00:00+01:00 }
    bob = { 01_pretrained_scoring = 2 }

A submission's time is the ``timestamp.txt`` nbgrader's exchange writes beside it (read
by nbgrader when it autogrades). The penalty is computed once, from the submission's
current score, by :meth:`LatePolicy.penalty`, and stored as nbgrader's own
``late_submission_penalty``: the scores stay as graded, the penalty is a column of its
own in the export and a line of the feedback ("Late submission penalty"), and the
formgrader shows the same due date and extension. Taught nowhere (instructor tooling).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from helpers.settings import find_config_file
from instructor_tools.course.course_folder import load_config, resolve_root

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METHODS = ("none", "percent_per_day", "zero_after_grace")
DAY = 86400.0
TIMESTAMP_FILE = "timestamp.txt"  # written by nbgrader's exchange into each submission


@dataclasses.dataclass(frozen=True)
class LatePolicy:
    """What lateness costs.

    Attributes:
        method: ``none``; ``percent_per_day`` (each started day late costs
            ``percent_per_day`` % of the score, at most ``cap_percent`` %); or
            ``zero_after_grace`` (a submission late by more than the grace period scores 0).
        percent_per_day: Percent of the score per day (or part of a day) late.
        cap_percent: The most a late submission loses, in percent of its score.
        grace_hours: Lateness forgiven (a slow upload); the days are counted after it.
    """

    method: str = "none"
    percent_per_day: float = 0.0
    cap_percent: float = 100.0
    grace_hours: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"late_policy method {self.method!r} is unknown; use one of {METHODS}.")
        for name in ("percent_per_day", "cap_percent", "grace_hours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"late_policy {name} must be a number of at least 0, not {value!r}.")
        if self.cap_percent > 100:
            raise ValueError(f"late_policy cap_percent must be at most 100, not {self.cap_percent}.")
        if self.method == "percent_per_day" and self.percent_per_day == 0:
            raise ValueError("late_policy percent_per_day must be above 0 with method 'percent_per_day'.")

    def days_late(self, seconds_late: float) -> int:
        """Days (each started day counts) late after the grace period.

        >>> policy = LatePolicy("percent_per_day", 10, 50, grace_hours=1)
        >>> policy.days_late(0), policy.days_late(3599), policy.days_late(3601), policy.days_late(3600 + 86400)
        (0, 0, 1, 1)
        """
        late = seconds_late - self.grace_hours * 3600
        return 0 if late <= 0 else math.ceil(late / DAY)

    def percent(self, seconds_late: float) -> float:
        """Percent of the score this lateness costs.

        >>> LatePolicy("percent_per_day", 10, 25).percent(3 * 86400)
        25
        >>> LatePolicy("zero_after_grace", grace_hours=2).percent(3 * 3600)
        100.0
        >>> LatePolicy().percent(10 * 86400)
        0.0
        """
        days = self.days_late(seconds_late)
        if self.method == "none" or days == 0:
            return 0.0
        if self.method == "zero_after_grace":
            return 100.0
        return min(self.cap_percent, self.percent_per_day * days)

    def penalty(self, score: float, seconds_late: float) -> float:
        """Points taken off a score for this lateness (never more than the score).

        >>> LatePolicy("percent_per_day", 10, 50).penalty(8.0, 2 * 86400 - 5)
        1.6
        >>> LatePolicy("zero_after_grace").penalty(8.0, 1)
        8.0
        """
        return round(max(0.0, score) * self.percent(seconds_late) / 100.0, 4)

    def describe(self) -> str:
        """One line for the instructor."""
        grace = f" after {self.grace_hours:g} h of grace" if self.grace_hours else ""
        if self.method == "none":
            return "no late penalty"
        if self.method == "zero_after_grace":
            return f"a late submission scores 0{grace}"
        return f"{self.percent_per_day:g} % per day late (or part of a day){grace}, at most {self.cap_percent:g} %"


@dataclasses.dataclass(frozen=True)
class Deadlines:
    """The course's due dates (aware datetimes), extensions and late policy.

    Attributes:
        configured: The course config has any of the three tables; without them the kit
            leaves the gradebook's due dates and penalties (nbgrader's own) alone.
    """

    due: Mapping[str, datetime.datetime] = dataclasses.field(default_factory=dict)
    extensions: Mapping[tuple[str, str], datetime.datetime] = dataclasses.field(default_factory=dict)
    policy: LatePolicy = LatePolicy()
    configured: bool = False

    def due_for(self, student: str, assignment: str) -> datetime.datetime | None:
        """The student's due date: their extension, else the assignment's (None: no due date)."""
        return self.extensions.get((student, assignment), self.due.get(assignment))

    def seconds_late(self, student: str, assignment: str, submitted: datetime.datetime | None) -> float:
        """Seconds after the student's due date (0 when on time, undated or without a due date).

        >>> utc = datetime.timezone.utc
        >>> deadlines = parse_deadlines({"deadlines": {"hw": "2026-12-01T12:00:00Z"},
        ...                              "extensions": {"ann": {"hw": 1}}})
        >>> deadlines.seconds_late("bob", "hw", datetime.datetime(2026, 12, 1, 13, tzinfo=utc))
        3600.0
        >>> deadlines.seconds_late("ann", "hw", datetime.datetime(2026, 12, 1, 13, tzinfo=utc))
        0.0
        """
        due = self.due_for(student, assignment)
        if due is None or submitted is None:
            return 0.0
        return max(0.0, (_as_utc(submitted) - due).total_seconds())


def _as_utc(moment: datetime.datetime) -> datetime.datetime:
    """Aware UTC; a naive datetime is UTC (how nbgrader stores times)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _moment(value: Any, where: str) -> datetime.datetime:
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not a date; write it as 2026-12-10T17:00:00+01:00.") from None
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        raise ValueError(f"{where}: {value} has no time; write the time and zone too, as 2026-12-10T17:00:00+01:00.")
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"{where}: expected a date and time such as 2026-12-10T17:00:00+01:00, not {value!r}.")
    if value.tzinfo is None:
        raise ValueError(f"{where}: {value} has no time zone; add one (+01:00, or Z for UTC) so nobody is an hour late.")
    return _as_utc(value)


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise TypeError(f"[{name}] must be a table, not {type(table).__name__}.")
    return table


def parse_deadlines(data: Mapping[str, Any], origin: str = "the course config") -> Deadlines:
    """Deadlines from the parsed TOML of a course config (its ``deadlines``, ``late_policy`` and
    ``extensions`` tables; everything else is ignored).

    Raises:
        ValueError, TypeError: A date without a time zone, an unknown policy or key, an
            extension for an assignment without a due date; the message says what to write.

    >>> deadlines = parse_deadlines({"deadlines": {"hw": "2026-12-01T12:00:00+01:00"},
    ...                              "late_policy": {"method": "zero_after_grace", "grace_hours": 1},
    ...                              "extensions": {"ann": {"hw": "2026-12-03T12:00:00+01:00"}, "bo": {"hw": 0.5}}})
    >>> str(deadlines.due["hw"]), str(deadlines.due_for("ann", "hw")), str(deadlines.due_for("bo", "hw"))
    ('2026-12-01 11:00:00+00:00', '2026-12-03 11:00:00+00:00', '2026-12-01 23:00:00+00:00')
    >>> parse_deadlines({"deadlines": {"hw": "2026-12-01T12:00:00"}})
    Traceback (most recent call last):
    ...
    ValueError: the course config [deadlines] hw: 2026-12-01 12:00:00 has no time zone; add one (+01:00, or Z for UTC) so nobody is an hour late.
    """
    due = {str(name): _moment(value, f"{origin} [deadlines] {name}") for name, value in _table(data, "deadlines").items()}
    raw_policy = dict(_table(data, "late_policy"))
    known = {field.name for field in dataclasses.fields(LatePolicy)}
    unknown = sorted(set(raw_policy) - known)
    if unknown:
        raise ValueError(f"{origin} [late_policy]: unknown key(s) {unknown}; known keys are {sorted(known)}.")
    try:
        policy = LatePolicy(**raw_policy)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{origin}: {error}") from None
    extensions: dict[tuple[str, str], datetime.datetime] = {}
    for student, granted in _table(data, "extensions").items():
        if not isinstance(granted, Mapping):
            raise TypeError(f"{origin} [extensions] {student}: write {{ assignment = new due date or extra days }}.")
        for assignment, value in granted.items():
            where = f"{origin} [extensions] {student}.{assignment}"
            if assignment not in due:
                raise ValueError(f"{where}: {assignment!r} has no due date in [deadlines]; add one first.")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"{where}: extra days must be a number of at least 0, not {value!r}.")
                extensions[(str(student), str(assignment))] = due[assignment] + datetime.timedelta(days=value)
            else:
                extensions[(str(student), str(assignment))] = _moment(value, where)
                if extensions[(str(student), str(assignment))] < due[assignment]:
                    raise ValueError(f"{where}: an extension cannot end before the due date {due[assignment]}.")
    configured = any(name in data for name in ("deadlines", "late_policy", "extensions"))
    return Deadlines(due, extensions, policy, configured)


def load_deadlines(root: Path | str | None = None, config_file: Path | str | None = None) -> Deadlines:
    """The deadlines of the course config found from ``root`` (``KIT_CONFIG``, else ``kit.toml`` in
    ``root`` or a parent); no due date and no penalty when there is none."""
    path = Path(config_file) if config_file is not None else find_config_file(Path(root) if root else None)
    if path is None:
        return Deadlines()
    with path.open("rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from error
    return parse_deadlines(data, str(path))


def read_timestamp(folder: Path | str) -> datetime.datetime | None:
    """When a submission was handed in: the ``timestamp.txt`` nbgrader's exchange writes in its folder
    (aware UTC), or None when there is none.

    Raises:
        ValueError: The file exists but holds no readable time.
    """
    from nbgrader.utils import parse_utc

    path = Path(folder) / TIMESTAMP_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        return _as_utc(parse_utc(text))
    except (ValueError, OverflowError):
        raise ValueError(f"{path} holds {text[:40]!r}, not a time such as '2026-12-10 16:00:00.000000 UTC'.") from None


@dataclasses.dataclass(frozen=True)
class Lateness:
    """One submission against its due date, and what the policy took off."""

    student: str
    assignment: str
    submitted: datetime.datetime | None
    due: datetime.datetime | None
    seconds_late: float
    score: float
    penalty: float


def record_penalties(
    db_url: str,
    course_id: str,
    deadlines: Deadlines,
    assignment: str | None = None,
    students: Sequence[str] | None = None,
) -> list[Lateness]:
    """Write due dates, extensions and each submission's late penalty into nbgrader's gradebook.

    The penalty is computed from the submission's score as it is now (manual grades
    included) and replaces the one stored before, so running this again never
    penalises twice. A course config without deadline tables changes nothing (a
    penalty from nbgrader's own late-submission plugin stands).

    Args:
        db_url: The gradebook.
        course_id: The course id.
        deadlines: From :func:`load_deadlines`.
        assignment: Only this assignment; every one by default.
        students: Only these students; every submission by default.

    Returns:
        Every submission looked at.
    """
    from nbgrader.api import Gradebook

    if not deadlines.configured:
        return []
    found: list[Lateness] = []
    wanted = None if students is None else set(students)
    with Gradebook(db_url, course_id) as gradebook:
        for entry in gradebook.assignments:
            if assignment is not None and entry.name != assignment:
                continue
            # The course config owns an assignment it dates (its extensions too); otherwise what the
            # formgrader or `nbgrader db` recorded stands.
            owned = entry.name in deadlines.due
            if owned:
                entry.duedate = deadlines.due[entry.name].replace(tzinfo=None)  # nbgrader stores naive UTC
            for submission in entry.submissions:
                student = submission.student.id
                if wanted is not None and student not in wanted:
                    continue
                if owned:
                    own = deadlines.due_for(student, entry.name)
                    base = deadlines.due[entry.name]
                    submission.extension = own - base if own is not None and own > base else None
                due = None if submission.duedate is None else _as_utc(submission.duedate)
                submitted = None if submission.timestamp is None else _as_utc(submission.timestamp)
                late = 0.0 if due is None or submitted is None else max(0.0, (submitted - due).total_seconds())
                total = 0.0
                for notebook in submission.notebooks:
                    penalty = deadlines.policy.penalty(float(notebook.score), late) if late else 0.0
                    notebook.late_submission_penalty = penalty or None
                    total += penalty
                found.append(Lateness(student, entry.name, submitted, due, late, float(submission.score), total))
            gradebook.db.commit()
    return sorted(found, key=lambda x: (x.assignment, x.student))


def refresh_penalties(root: Path | str | None = None, assignment: str | None = None) -> list[Lateness]:
    """:func:`record_penalties` for a course folder, with its config and gradebook (``export`` and
    ``feedback`` run it first, so a manual grade given since autograding is penalised as it is now)."""
    root = resolve_root(root)
    config = load_config(root)
    db_url = str(config.CourseDirectory.db_url)
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).is_file():
        return []  # nothing graded yet: leave no empty gradebook behind
    return record_penalties(db_url, str(config.CourseDirectory.course_id), load_deadlines(root), assignment)


@dataclasses.dataclass(frozen=True)
class HandedIn:
    """One submission in ``submitted/`` against its due date, before grading."""

    student: str
    submitted: datetime.datetime | None
    due: datetime.datetime | None
    seconds_late: float
    percent: float
    problem: str = ""


def handed_in(assignment: str, root: Path | str | None = None) -> list[HandedIn]:
    """Every submission of an assignment in ``submitted/``, dated by its ``timestamp.txt``, against
    the student's due date, with the percent the late policy will take off (``python -m helpers
    deadlines``: check the late list and grant extensions before grading).

    A missing timestamp is never late; an unreadable one is reported in ``problem``.
    """
    root = resolve_root(root)
    config = load_config(root)
    course_deadlines = load_deadlines(root)
    submitted = root / str(config.CourseDirectory.submitted_directory)
    rows = []
    for folder in sorted(p for p in submitted.glob(f"*/{assignment}") if p.is_dir()):
        student = folder.parent.name
        problem = ""
        try:
            moment = read_timestamp(folder)
        except ValueError as error:
            moment, problem = None, str(error)
        late = course_deadlines.seconds_late(student, assignment, moment)
        rows.append(
            HandedIn(student, moment, course_deadlines.due_for(student, assignment), late,
                     course_deadlines.policy.percent(late), problem)
        )
    return rows
