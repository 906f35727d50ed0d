"""The class roster (instructor_tools.course.roster): one reader for the hub's accounts and the school's sheets."""

from __future__ import annotations

import pytest

from instructor_tools.course import roster
from instructor_tools.grading import lms_export
from instructor_tools.serving import hub

TEXT = (
    "Username, Role ,Name,Password,SIS_User_ID,canvas_id,sis_login_id,section\n"
    "teacher,instructor,Ada Lovelace,,,,,\n"
    "\n"
    "ann,,Ann A,first-pass-1,S1,11,ann.a,G1\n"
    "bob,STUDENT,Bob B,,S2,12,bob.b,G2\n"
)


def test_the_hub_and_the_grade_sheets_read_the_same_members(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text(TEXT)
    members = roster.read_members(path)
    assert members == hub.read_roster(path)
    assert lms_export.read_roster(path) == roster.students(members) == members[1:]
    assert members[1] == roster.Member("ann", "student", "Ann A", "first-pass-1", "S1", "11", "ann.a", "G1")


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("username,sis_user_id\nann,S1\nbob,S1\n", ("username",), "line 3: the school id 'S1' is already used on line 2"),
        ("username,name\nann,Ann\n", ("username", "sis_user_id"), "needs the column(s) ['sis_user_id']"),
        ("username\nann\n\nann\n", ("username",), "line 4: 'ann' is already listed on line 2"),
        ("username,role\n,student\n", ("username",), "line 2: the username is empty"),
    ],
)
def test_a_bad_roster_names_the_line_and_what_to_fix(tmp_path, text, columns, message):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        roster.read_members(path, columns=columns)
