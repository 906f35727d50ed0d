"""The gradebook's pieces on their own, without grading: the late policy, the roster and its sheets, look-alikes."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from instructor_tools.course import commands
from instructor_tools.grading import deadlines, lms_export, similarity
from instructor_tools.grading.grader import SubmissionScore

UTC = datetime.timezone.utc
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize(
    ("policy", "hours_late", "percent"),
    [
        (deadlines.LatePolicy(), 100, 0.0),
        (deadlines.LatePolicy("percent_per_day", 10, 30), 0.1, 10),
        (deadlines.LatePolicy("percent_per_day", 10, 30), 24, 10),
        (deadlines.LatePolicy("percent_per_day", 10, 30), 24.01, 20),
        (deadlines.LatePolicy("percent_per_day", 10, 30), 500, 30),
        (deadlines.LatePolicy("percent_per_day", 10, 30, grace_hours=2), 1.9, 0),
        (deadlines.LatePolicy("zero_after_grace", grace_hours=2), 1.9, 0),
        (deadlines.LatePolicy("zero_after_grace", grace_hours=2), 2.1, 100),
    ],
)
def test_the_late_policy_costs_what_it_says(policy, hours_late, percent):
    assert policy.percent(hours_late * 3600) == pytest.approx(percent)
    assert policy.penalty(8.0, hours_late * 3600) == pytest.approx(8.0 * percent / 100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"deadlines": {"quiz": "2026-12-01T17:00:00"}}, "no time zone"),
        ({"deadlines": {"quiz": "next friday"}}, "not a date"),
        ({"deadlines": {"quiz": datetime.date(2026, 12, 1)}}, "has no time"),
        ({"late_policy": {"method": "halve"}}, "unknown"),
        ({"late_policy": {"method": "percent_per_day"}}, "above 0"),
        ({"late_policy": {"cap_percent": 150}}, "at most 100"),
        ({"late_policy": {"percent": 10}}, "unknown key"),
        ({"extensions": {"ann": {"quiz": 2}}}, "no due date"),
        ({"deadlines": {"quiz": "2026-12-01T17:00:00Z"}, "extensions": {"ann": {"quiz": -1}}}, "at least 0"),
        ({"deadlines": {"quiz": "2026-12-01T17:00:00Z"}, "extensions": {"ann": {"quiz": "2026-11-30T17:00:00Z"}}},
         "before the due date"),
    ],
)
def test_a_bad_course_config_is_refused_with_what_to_write(data, message):
    with pytest.raises((ValueError, TypeError), match=message):
        deadlines.parse_deadlines(data)


def test_deadlines_come_from_kit_toml_and_extensions_move_one_students_date(tmp_path):
    (tmp_path / "kit.toml").write_text(
        '[kit]\nprofile = "grading"\n\n[deadlines]\nquiz = 2026-12-01T17:00:00+01:00\n\n'
        '[late_policy]\nmethod = "zero_after_grace"\ngrace_hours = 0.5\n\n'
        "[extensions]\nann = { quiz = 1.5 }\nbob = { quiz = 2026-12-05T09:00:00Z }\n"
    )
    found = deadlines.load_deadlines(tmp_path)
    due = datetime.datetime(2026, 12, 1, 16, tzinfo=UTC)
    assert found.due == {"quiz": due} and found.policy.method == "zero_after_grace"
    assert found.due_for("ann", "quiz") == due + datetime.timedelta(days=1.5)
    assert found.due_for("bob", "quiz") == datetime.datetime(2026, 12, 5, 9, tzinfo=UTC)
    assert found.due_for("cy", "quiz") == due and found.due_for("cy", "other") is None
    assert found.seconds_late("cy", "quiz", due + datetime.timedelta(hours=3)) == 3 * 3600
    assert found.seconds_late("ann", "quiz", due + datetime.timedelta(hours=3)) == 0
    assert deadlines.load_deadlines(tmp_path / "nowhere", config_file=None).due in ({}, found.due)


def test_the_exchanges_timestamp_is_read_and_a_broken_one_is_refused(tmp_path):
    (tmp_path / "timestamp.txt").write_text("2026-12-06 23:36:54.123456 UTC")
    assert deadlines.read_timestamp(tmp_path) == datetime.datetime(2026, 12, 6, 23, 36, 54, 123456, tzinfo=UTC)
    assert deadlines.read_timestamp(tmp_path / "none") is None
    (tmp_path / "timestamp.txt").write_text("yesterday")
    with pytest.raises(ValueError, match="not a time"):
        deadlines.read_timestamp(tmp_path)


# --------------------------------------------------------------------------- roster and the school's sheets


def _score(student: str, score: float, penalty: float = 0.0, manual: bool = False) -> SubmissionScore:
    from instructor_tools.grading.grader import CellScore

    cells = {"explain": CellScore("explain", 0.0, 1.0, None, manual)}
    return SubmissionScore(student, "quiz", score, 5.0, cells, late_penalty=penalty)


ROSTER = (
    "username,role,name,password,sis_user_id,canvas_id,sis_login_id,section\n"
    "teacher,instructor,Ada Lovelace,,,,,\n"
    "ann,student,Ann A,,S1,11,ann.a,G1\n"
    "bob,,Bob B,,S2,12,bob.b,G2\n"
    "cy,student,Cy C,,,13,cy.c,G1\n"
    "dee,student,Dee D,,S4,14,dee.d,G2\n"
)


def test_the_canvas_and_moodle_sheets_read_back_with_every_score(tmp_path):
    (tmp_path / "roster.csv").write_text(ROSTER)
    roster = lms_export.read_roster(tmp_path / "roster.csv")
    assert [e.username for e in roster] == ["ann", "bob", "cy", "dee"]
    scores = [_score("ann", 4.5, penalty=0.45), _score("bob", 3.0, manual=True), _score("cy", 5.0), _score("zed", 2.0)]
    sheets = lms_export.build(scores, roster)
    paths = lms_export.write(sheets, tmp_path / "out" / "grades.csv")
    canvas = pd.read_csv(paths["canvas"], dtype=str, keep_default_na=False)
    assert list(canvas.columns) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "quiz"]
    assert canvas.iloc[0].tolist() == ["    Points Possible", "", "", "", "", "5"]
    assert canvas.iloc[1:].values.tolist() == [
        ["Ann A", "11", "S1", "ann.a", "G1", "4.05"],
        ["Bob B", "12", "S2", "bob.b", "G2", "3"],
        ["Dee D", "14", "S4", "dee.d", "G2", ""],
    ]
    moodle = pd.read_csv(paths["moodle"], dtype=str, keep_default_na=False)
    assert moodle.values.tolist() == [["S1", "4.05"], ["S2", "3"], ["S4", ""]]
    problems = pd.read_csv(paths["problems"])
    assert sorted(zip(problems["problem"], problems["student"])) == [
        ("no school id", "cy"), ("no submission", "dee"), ("not on the roster", "zed"),
        ("waits for manual grading", "bob"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("username,name\nann,Ann\n", "sis_user_id"),
        ("username,sis_user_id\nann,S1\nann,S2\n", "already listed"),
        ("username,sis_user_id\nann,S1\nbob,S1\n", "already used"),
        ("username,sis_user_id\n,S1\n", "empty"),
    ],
)
def test_a_bad_roster_is_refused_and_nothing_is_written(tmp_path, text, message):
    (tmp_path / "roster.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        lms_export.read_roster(tmp_path / "roster.csv")
    with pytest.raises(FileNotFoundError, match="roster.example.csv"):
        lms_export.read_roster(tmp_path / "missing.csv")
    code = commands.export_main(
        ["--root", str(tmp_path), "--output", str(tmp_path / "grades.csv"), "--roster", str(tmp_path / "roster.csv")]
    )
    assert code == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["roster.csv"]


# --------------------------------------------------------------------------- look-alikes

TEMPLATE = 'def total(values):\n    """Sum of the values."""\n    values = list(values)\n    # YOUR CODE HERE\n    raise NotImplementedError()'
WAYS = [
    "    result = 0\n    for v in values:\n        result += v\n    return result",
    "    return sum(values)",
    "    import functools\n    return functools.reduce(lambda a, b: a + b, values, 0)",
    "    s = 0\n    i = 0\n    while i < len(values):\n        s = s + values[i]\n        i += 1\n    return s",
    "    import math\n    return math.fsum(values) if values else 0",
]


def _notebook(body: str | None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(TEMPLATE if body is None else TEMPLATE.rsplit("\n", 2)[0] + "\n" + body)
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "total"}
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Sums"), cell])


def test_renamed_variables_comments_and_layout_change_nothing():
    original = "total = 0\nfor value in values:  # add up\n    total = total + value\n"
    disguised = "\n# my own work\nacc=0\nfor x in values :\n\n    acc = acc+x   # sum\n"
    assert [line.key for line in similarity.normalise(original)] == [line.key for line in similarity.normalise(disguised)]
    assert [line.key for line in similarity.normalise("print(len(xs.shape), 'a')")] == ["print ( len ( V . shape ) , S )"]
    assert similarity.normalise("x = (1,\n     2)")[0].text == "x = (1,\n     2)"
    assert [line.key for line in similarity.normalise("x = (")] == ["V = ("], "code Python cannot read is compared roughly"


def test_a_copied_pair_is_flagged_and_a_pair_sharing_only_the_template_is_not(tmp_path):
    copied = "    acc = 0  # mine\n    k = 0\n    while k < len(values):\n\n        acc = acc + values[k]\n        k += 1\n    return acc"
    notebooks = {f"st{i}": _notebook(way) for i, way in enumerate(WAYS)}
    notebooks |= {"copier": _notebook(copied), "blank1": _notebook(None), "blank2": _notebook(None)}
    report = similarity.compare(notebooks, _notebook(None), assignment="sums")
    assert [(p.student_a, p.student_b) for p in report.flagged] == [("copier", "st3")]
    top = report.pairs[0]
    assert top.similarity == 1.0 and top.cell_similarity == {"total": 1.0}
    assert ("total", "acc = acc + values[k]", "s = s + values[i]") in top.shared
    assert all("NotImplementedError" not in left and '"""' not in left for _, left, _ in top.shared)
    blank = next(p for p in report.pairs if (p.student_a, p.student_b) == ("blank1", "blank2"))
    assert (blank.similarity, blank.flagged, blank.shared) == (0.0, False, ())
    paths = similarity.write_report(report, tmp_path / "look-alike.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["look-alike.csv", "look-alike.html"]
    table = pd.read_csv(paths["csv"], keep_default_na=False)
    assert len(table) == 8 * 7 // 2 and table.iloc[0][["student_a", "student_b", "flagged"]].tolist() == [
        "copier", "st3", "yes"
    ]
    page = paths["html"].read_text()
    assert "copier and st3" in page and "acc = acc + values[k]" in page and "s = s + values[i]" in page


def test_the_thresholds_are_checked():
    with pytest.raises(ValueError, match="min_similarity"):
        similarity.compare({}, min_similarity=0)
    with pytest.raises(ValueError, match="min_shared_lines"):
        similarity.compare({}, min_shared_lines=0)


def test_regrade_needs_a_student_and_reset_needs_regrade(capsys):
    with pytest.raises(SystemExit):
        commands.autograde_main(["quiz", "--regrade"])
    assert "--regrade needs --student" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        commands.autograde_main(["quiz", "--student", "ann", "--reset-manual"])
    assert "--reset-manual goes with --regrade" in capsys.readouterr().err


def test_a_submission_that_is_not_a_notebook_is_listed_not_compared(tmp_path):
    root = tmp_path / "course"
    (root / "notebooks" / "sums").mkdir(parents=True)
    nbformat.write(_notebook(None), root / "notebooks" / "sums" / "sums.ipynb")
    for student, content in {"ann": None, "bob": "not json"}.items():
        folder = root / "submitted" / student / "sums"
        folder.mkdir(parents=True)
        if content is None:
            nbformat.write(_notebook(WAYS[0]), folder / "sums.ipynb")
        else:
            (folder / "sums.ipynb").write_text(content)
    (root / "solutions" / "sums").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    report = similarity.class_report("sums", root=root)
    assert report.students == ["ann"] and list(report.skipped) == ["bob"]


def test_the_examples_shipped_with_the_kit_read_as_they_say():
    """kit.toml.example's grading tables, uncommented, parse; the example roster serves the hub and the sheets."""
    import tomllib

    from instructor_tools.serving import hub

    lines = (ROOT / "kit.toml.example").read_text().splitlines()
    start = lines.index("# [deadlines]")
    text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines[start:])
    found = deadlines.parse_deadlines(tomllib.loads(text))
    assert found.policy.describe() == "10 % per day late (or part of a day) after 1 h of grace, at most 30 %"
    assert found.due_for("alice", "01_pretrained_scoring") - found.due["01_pretrained_scoring"] == datetime.timedelta(days=2)
    roster = ROOT / "classroom" / "roster.example.csv"
    assert [e.sis_user_id for e in lms_export.read_roster(roster)] == ["S1001", "S1002", "S1003"]
    assert [m.username for m in hub.read_roster(roster)] == ["teacher", "alice", "bob", "carol"]


def test_the_late_list_before_grading_dates_each_submission(tmp_path, capsys):
    """``python -m instructor_tools deadlines quiz``: timestamps against due dates and extensions; a broken one is named."""
    root = tmp_path / "course"
    (root / "solutions" / "quiz").mkdir(parents=True)
    (root / "solutions" / "quiz" / "quiz.ipynb").write_text("{}")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    (root / "kit.toml").write_text(
        '[deadlines]\nquiz = 2026-12-01T16:00:00Z\nquizz = 2026-12-01T16:00:00Z\n[late_policy]\nmethod = "percent_per_day"\npercent_per_day = 25\n'
        "[extensions]\nbob = { quiz = 1 }\n"
    )
    times = {"ann": "2026-12-01 15:00:00.000000 UTC", "bob": "2026-12-02 10:00:00.000000 UTC",
             "cy": "2026-12-03 10:00:00.000000 UTC", "dee": None, "eve": "soon"}
    for student, stamp in times.items():
        folder = root / "submitted" / student / "quiz"
        folder.mkdir(parents=True)
        if stamp:
            (folder / "timestamp.txt").write_text(stamp)
    rows = {row.student: row for row in deadlines.handed_in("quiz", root)}
    assert {s: (r.seconds_late / 3600, r.percent) for s, r in rows.items()} == {
        "ann": (0, 0), "bob": (0, 0), "cy": (42, 50), "dee": (0, 0), "eve": (0, 0),
    }
    assert "not a time" in rows["eve"].problem and rows["dee"].submitted is None
    assert commands.deadlines_main(["quiz", "--root", str(root)]) == 1, "a broken timestamp is an error"
    printed, warned = capsys.readouterr()
    assert "'quizz', which is not an assignment of this course ['quiz']: a typo?" in warned
    assert "late policy: 25 % per day late" in printed and "cy" in printed and "late by 42.0 h, -50 %" in printed
    assert deadlines.parse_deadlines({}).configured is False
    assert deadlines.parse_deadlines({"late_policy": {"method": "none"}}).configured is True
