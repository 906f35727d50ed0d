"""The class roster: one CSV file, read by one reader, for the hub's accounts and the school's grade sheets.

Columns (a header line names them; case and spaces do not matter, blank lines are skipped)::

    username       the hub's Unix user name (required)
    role           instructor or student (empty: student)
    name           the person's name, for the grade sheets
    password       a first password (8 characters or more, no ':'); empty: set at first login
    sis_user_id    the school's id (Canvas "SIS User ID", Moodle "ID number"): needed for the grade sheets
    canvas_id, sis_login_id, section    more of Canvas's columns, copied into its sheet

``classroom/roster.example.csv`` is an example. ``hub start`` (:mod:`instructor_tools.serving.hub`)
creates an account per line; ``export --roster`` (:mod:`instructor_tools.grading.lms_export`)
writes the school's sheets for its students.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROLES = ("instructor", "student")
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_EXAMPLE = "classroom/roster.example.csv"


@dataclass(frozen=True)
class Member:
    """One line of the roster."""

    username: str
    role: str = "student"
    name: str = ""
    password: str = ""
    sis_user_id: str = ""
    canvas_id: str = ""
    sis_login_id: str = ""
    section: str = ""


def read_members(path: Path | str, *, columns: Sequence[str] = ("username",)) -> list[Member]:
    """Every member of a roster CSV, in its order, checked line by line.

    Args:
        path: The roster file.
        columns: Columns the caller needs besides ``username`` (the grade sheets need ``sis_user_id``).

    Raises:
        FileNotFoundError: No such file.
        ValueError: A missing column, an empty or invalid user name, an unknown role, a user or a
            school id listed twice, a password too short or with ':'; the message names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"roster {path} not found: copy {_EXAMPLE} and fill it in.")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [(name or "").strip().lower() for name in reader.fieldnames or []]
        if "username" not in header:
            raise ValueError(f"{path}: the first line must be a header with at least a 'username' column.")
        missing = [name for name in columns if name not in header]
        if missing:
            raise ValueError(f"{path}: the roster needs the column(s) {missing}; see {_EXAMPLE}.")
        members: list[Member] = []
        users: dict[str, int] = {}
        school_ids: dict[str, int] = {}
        for row in reader:
            line = reader.line_num  # the file's own line (blank lines are skipped, but counted)
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
            if not any(row.values()):
                continue
            member = _member(path, line, row)
            if member.username in users:
                raise ValueError(f"{path}, line {line}: {member.username!r} is already listed on line {users[member.username]}.")
            if member.sis_user_id in school_ids:
                raise ValueError(
                    f"{path}, line {line}: the school id {member.sis_user_id!r} is already used on line "
                    f"{school_ids[member.sis_user_id]}."
                )
            users[member.username] = line
            if member.sis_user_id:
                school_ids[member.sis_user_id] = line
            members.append(member)
    return members


def _member(path: Path, line: int, row: dict[str, str]) -> Member:
    """One checked line of the roster."""
    username, role = row.get("username", ""), (row.get("role") or "student").lower()
    if not username:
        raise ValueError(f"{path}, line {line}: the username is empty.")
    if not _USERNAME.match(username):
        raise ValueError(
            f"{path}, line {line}: {username!r} is not a valid Unix user name "
            "(lower-case letters, digits, '_' or '-', starting with a letter or '_', at most 32)."
        )
    if role not in ROLES:
        raise ValueError(f"{path}, line {line}: role {role!r} must be one of {', '.join(ROLES)}.")
    password = row.get("password", "")
    if password and (len(password) < 8 or ":" in password or "\n" in password):
        raise ValueError(f"{path}, line {line}: a password needs 8 characters or more and no ':'.")
    return Member(
        username, role, row.get("name", ""), password, row.get("sis_user_id", ""), row.get("canvas_id", ""),
        row.get("sis_login_id", ""), row.get("section", ""),
    )


def students(members: Sequence[Member]) -> list[Member]:
    """The students of a roster, in its order.

    >>> [m.username for m in students([Member("t", "instructor"), Member("ann")])]
    ['ann']
    """
    return [member for member in members if member.role == "student"]
