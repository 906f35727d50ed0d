"""The instructor's gradebook beyond nbgrader, on a simulated class: deadlines, a regrade, look-alikes, LMS sheets.

The tests write their own tiny course (two functions to write and one written answer,
no TensorFlow), release it, and hand in a class of 30: most answers written each in its
own way, a pair where one student copied the other with renamed variables, a pair that
handed in the template untouched, late submissions (one within the grace period, one
with an extension), a student missing from the roster and one on the roster who never
submitted. The whole course goes through autograde, one regrade, the look-alike report
and the Canvas and Moodle sheets in one test; every number is checked against what it
must be. A smaller class checks the sandboxed regrade through the command line.
"""

from __future__ import annotations

import datetime
import hashlib
import random
import shutil
import time
import warnings
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from instructor_tools.course import commands, course_folder, release, submissions
from instructor_tools.grading import grader, similarity
from instructor_tools.isolation import sandbox

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "quiz"
TIMEOUT = 20  # seconds per cell
LIMITS = sandbox.Limits(memory_mb=512, processes=64, disk_mb=64, open_files=256, output_kb=256)

MEAN = '''def mean_of(values):
    """The average of a list of numbers."""
    values = list(values)
    ### BEGIN SOLUTION
    return sum(values) / len(values)
    ### END SOLUTION'''
COUNT = '''def count_words(text):
    """How many times each word of a text appears, in lower case."""
    ### BEGIN SOLUTION
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts
    ### END SOLUTION'''
TEST_MEAN = '''"""mean_of averages a list."""
assert mean_of([1, 2, 3]) == 2, "mean_of([1, 2, 3]) should be 2: the sum divided by the count"
### BEGIN HIDDEN TESTS
assert mean_of([0.5, 1.5]) == 1.0, "mean_of must work with floats"
### END HIDDEN TESTS'''
TEST_COUNT = '''"""count_words counts each word once per appearance, in lower case."""
assert count_words("a b a") == {"a": 2, "b": 1}, "count_words('a b a') should be {'a': 2, 'b': 1}"
### BEGIN HIDDEN TESTS
assert count_words("The the THE") == {"the": 3}, "count_words must put words in lower case"
### END HIDDEN TESTS'''
EXPLAIN = "Why is the mean of an empty list undefined?\n\n=== BEGIN MARK SCHEME ===\nDivision by zero.\n=== END MARK SCHEME ==="


def _cell(kind: str, source: str, **nbgrader) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "locked": False, **nbgrader}
    return cell


def source_notebook(test_mean: str = TEST_MEAN) -> nbformat.NotebookNode:
    """Two functions to write (2 points of tests each) and a written answer graded by hand (1 point)."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    notebook.cells = [
        _cell("markdown", "# A tiny quiz"),
        _cell("code", MEAN, grade=False, solution=True, grade_id="mean_of"),
        _cell("code", test_mean, grade=True, solution=False, locked=True, grade_id="test_mean_of", points=2),
        _cell("code", COUNT, grade=False, solution=True, grade_id="count_words"),
        _cell("code", TEST_COUNT, grade=True, solution=False, locked=True, grade_id="test_count_words", points=2),
        _cell("markdown", "Why is the mean of an empty list undefined?", grade=False, solution=False, locked=True,
              grade_id="explain_question"),
        _cell("markdown", "The answer: ### BEGIN SOLUTION\nDivision by zero.\n### END SOLUTION", grade=True,
              solution=True, grade_id="explain", points=1),
    ]
    for index, cell in enumerate(notebook.cells):
        cell.id = f"quiz-{index}"
    return notebook


def make_course(root: Path, test_mean: str = TEST_MEAN) -> Path:
    """A released course folder with the kit's nbgrader config and header and the quiz."""
    (root / "solutions" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    nbformat.write(source_notebook(test_mean), course_folder.source_notebook(ASSIGNMENT, root))
    release.generate(root=root)
    return root


# Ways to write each function: a class where everyone writes their own code.
MEANS = [
    "    return sum(values) / len(values)",
    "    total = 0\n    for value in values:\n        total = total + value\n    return total / len(values)",
    "    import statistics\n    return statistics.mean(values)",
    "    acc = 0.0\n    n = 0\n    for v in values:\n        acc += v\n        n += 1\n    return acc / n",
    "    from functools import reduce\n    return reduce(lambda a, b: a + b, values) / len(values)",
    "    return sum(v for v in values) / len(values)",
    "    i = 0\n    s = 0\n    while i < len(values):\n        s += values[i]\n        i += 1\n    return s / i",
    "    if not values:\n        raise ValueError('empty')\n    return float(sum(values)) / float(len(values))",
]
COUNTS = [
    "    out = {}\n    for w in text.lower().split():\n        out[w] = out.get(w, 0) + 1\n    return out",
    "    from collections import Counter\n    return dict(Counter(text.lower().split()))",
    "    seen = {}\n    for w in text.lower().split():\n        seen.setdefault(w, 0)\n        seen[w] += 1\n    return seen",
    "    words = text.lower().split()\n    return {w: words.count(w) for w in set(words)}",
    "    from collections import defaultdict\n    d = defaultdict(int)\n    for w in text.split():\n        d[w.lower()] += 1\n    return dict(d)",
    "    result = {}\n    for w in text.lower().split():\n        try:\n            result[w] += 1\n        except KeyError:\n            result[w] = 1\n    return result",
    "    import itertools\n    words = sorted(text.lower().split())\n    return {k: len(list(g)) for k, g in itertools.groupby(words)}",
]
MEAN_TOUCHES = [
    "    if len(values) == 0:\n        return 0.0",
    "    values = [float(v) for v in values]",
    '    assert all(isinstance(v, (int, float)) for v in values), "numbers only"',
    "    values = sorted(values)",
    "    size = len(values)\n    if size > 1000000:\n        print('a long list')",
]
COUNT_TOUCHES = [
    "    text = text.strip()",
    '    if not isinstance(text, str):\n        raise TypeError("text must be a string")',
    '    text = " ".join(text.split())',
    "    assert text is not None",
    "    text = text.replace(',', ' ')",
]
# Which touches each student makes: a different set for everyone, in each cell.
MEAN_MASKS = random.Random(1).sample(range(2 ** len(MEAN_TOUCHES)), 31)
COUNT_MASKS = random.Random(2).sample(range(2 ** len(COUNT_TOUCHES)), 31)
WRONG_COUNT = "    return {w: 1 for w in text.split()}"  # forgets repeats and case: fails test_count_words
COPIED = (  # what "s19" hands in: s07's code with other names, comments and layout
    "    # my own loop\n    accumulated = 0.0\n    howmany = 0\n    for x in values:  # go through\n"
    "        accumulated += x\n        howmany += 1\n    return accumulated / howmany",
    "    # count them\n    my_dict = {}\n    for token in text.lower().split():\n"
    "        my_dict.setdefault(token, 0)\n        my_dict[token] += 1\n    return my_dict",
)
DUE = datetime.datetime(2026, 12, 1, 17, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
KIT_TOML = """
[deadlines]
quiz = 2026-12-01T17:00:00+01:00

[late_policy]
method = "percent_per_day"
percent_per_day = 10
cap_percent = 30
grace_hours = 1

[extensions]
{extensions}
"""
# student -> hours after the due date they handed in (everyone else: 2 to 60 hours early)
LATE_HOURS = {"s03": 36.0, "s04": 130.0, "s06": 20.0, "s08": 0.5}
EXTENSIONS = {"s06": 2}  # days


def _student(index: int) -> str:
    return f"s{index:02d}"


def _answers(student: str) -> tuple[str, str] | None:
    """Bodies of mean_of and count_words a student writes; None: hands in the template untouched."""
    index = int(student[1:])
    if student in {"s28", "s29"}:
        return None
    if student == "s19":
        return COPIED
    if student == "s07":  # the original s19 copied
        return MEANS[3], COUNTS[2]
    mean, count = MEANS[index % len(MEANS)], COUNTS[index % len(COUNTS)]
    # Each student's own touches (checks, clean-ups), as a class writes them: what makes honest code individual.
    mean = "".join(t + "\n" for bit, t in enumerate(MEAN_TOUCHES) if MEAN_MASKS[index] >> bit & 1) + mean
    count = "".join(t + "\n" for bit, t in enumerate(COUNT_TOUCHES) if COUNT_MASKS[index] >> bit & 1) + count
    return mean, WRONG_COUNT if student == "s05" else count


def _submission(released: nbformat.NotebookNode, student: str) -> nbformat.NotebookNode:
    answers = _answers(student)
    if answers is None:
        return submissions.edit_submission(released)
    header = {"mean_of": MEAN.split("    ### BEGIN")[0], "count_words": COUNT.split("    ### BEGIN")[0]}
    return submissions.edit_submission(
        released,
        replace={
            "mean_of": header["mean_of"] + answers[0],
            "count_words": header["count_words"] + answers[1],
            "explain": f"Dividing by a count of zero ({student}).",
        },
    )


def hand_in(root: Path, students: list[str]) -> dict[str, Path]:
    """Each student's submission in nbgrader's layout, with the timestamp the exchange writes."""
    released = nbformat.read(course_folder.release_notebook(ASSIGNMENT, root), as_version=4)
    paths = {}
    for student in students:
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(_submission(released, student), folder / f"{ASSIGNMENT}.ipynb")
        hours = LATE_HOURS.get(student, -2.0 - int(student[1:]) * 2)
        moment = DUE.astimezone(datetime.timezone.utc) + datetime.timedelta(hours=hours)
        (folder / "timestamp.txt").write_text(moment.strftime("%Y-%m-%d %H:%M:%S.%f %Z"))
        paths[student] = folder
    return paths


def expected_auto(student: str) -> float:
    """Points the tests give: 4, but 2 with the wrong count and 0 for the untouched template."""
    return {"s05": 2.0, "s28": 0.0, "s29": 0.0}.get(student, 4.0)


def gradebook_cells(root: Path) -> dict[tuple[str, str], tuple]:
    """(student, grade_id) -> every stored value of that cell (scores, flags, comments, late penalty)."""
    from nbgrader.api import Gradebook

    config = course_folder.load_config(root)
    found = {}
    with Gradebook(str(config.CourseDirectory.db_url), str(config.CourseDirectory.course_id)) as gradebook:
        for submission in gradebook.assignment_submissions(ASSIGNMENT):
            for notebook in submission.notebooks:
                comments = {c.name: (c.auto_comment, c.manual_comment) for c in notebook.comments}
                for grade in notebook.grades:
                    found[(submission.student.id, grade.name)] = (
                        grade.auto_score, grade.manual_score, grade.extra_credit, grade.needs_manual_grade,
                        comments.get(grade.name), notebook.late_submission_penalty,
                        str(submission.timestamp), str(submission.extension),
                    )
    return found


def give_manual_grade(root: Path, student: str, score: float, comment: str) -> None:
    from nbgrader.api import Gradebook

    config = course_folder.load_config(root)
    with Gradebook(str(config.CourseDirectory.db_url), str(config.CourseDirectory.course_id)) as gradebook:
        grade = gradebook.find_grade("explain", ASSIGNMENT, ASSIGNMENT, student)
        grade.manual_score = score
        grade.needs_manual_grade = False
        gradebook.find_comment("explain", ASSIGNMENT, ASSIGNMENT, student).manual_comment = comment
        gradebook.db.commit()


def digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


ROSTER = "username,role,name,password,sis_user_id,canvas_id,sis_login_id,section\nteacher,instructor,Ada Lovelace,,,,,\n" + "".join(
    f"s{i:02d},student,Student {i},,{'' if i == 29 else f'SIS{1000 + i}'},{500 + i},login{i},{'A' if i % 2 else 'B'}\n"
    for i in [*range(1, 30), 31]  # s30 hands in without being on the roster; s31 never hands in; s29 has no school id
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_class_of_30_goes_from_release_to_the_schools_grade_sheets(tmp_path, capsys):
    """Release, late and on-time submissions, autograde, one regrade, look-alikes, Canvas and Moodle: every number."""
    began = time.perf_counter()
    root = make_course(tmp_path / "course")
    (root / "kit.toml").write_text(KIT_TOML.format(extensions="s06 = { quiz = 2 }\n"))
    students = [_student(i) for i in range(1, 31)]
    hand_in(root, students)
    assert commands.deadlines_main([ASSIGNMENT, "--root", str(root)]) == 0
    late_list = capsys.readouterr().out
    assert "late by 130.0 h, -30 %" in late_list and "late by 36.0 h, -20 %" in late_list
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grader.UnsandboxedWarning)  # where bubblewrap is missing
        scores = {s.student: s for s in grader.autograde(ASSIGNMENT, root=root, jobs=2, timeout=TIMEOUT, limits=LIMITS)}
    graded_at = time.perf_counter()

    # Every score, before any manual grading; the late policy applied to the score as graded.
    assert sorted(scores) == students
    late = {"s03": 0.8, "s04": 1.2}  # 35 h after the grace hour: 2 days, 20 %; 129 h: 6 days, capped at 30 %
    for student, score in scores.items():
        assert (score.score, score.max_score) == (expected_auto(student), 5.0), (student, score.cells)
        assert score.late_penalty == pytest.approx(late.get(student, 0.0)), student  # s06 extended, s08 in grace
        assert score.needs_manual_grade == ([] if student in {"s28", "s29"} else ["explain"]), student

    # A person grades two written answers; then s03 is given an extension and regraded alone.
    give_manual_grade(root, "s02", 0.5, "Half right: say why.")
    give_manual_grade(root, "s03", 1.0, "Exactly.")
    before = gradebook_cells(root)
    others = [s for s in students if s != "s03"]
    files_before = {s: digests(root / "autograded" / s) for s in others}
    reports_before = {s: (root / "grading_reports" / ASSIGNMENT / f"{s}.json").read_bytes() for s in others}
    (root / "kit.toml").write_text(KIT_TOML.format(extensions="s06 = { quiz = 2 }\ns03 = { quiz = 3 }\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grader.UnsandboxedWarning)
        regraded = grader.autograde(
            ASSIGNMENT, root=root, students=["s03"], regrade=True, jobs=2, timeout=TIMEOUT, limits=LIMITS
        )
    assert [(s.student, s.score, s.late_penalty, s.needs_manual_grade) for s in regraded] == [("s03", 5.0, 0.0, [])]
    after = gradebook_cells(root)
    assert {k: v for k, v in after.items() if k[0] != "s03"} == {k: v for k, v in before.items() if k[0] != "s03"}
    for key in [k for k in before if k[0] == "s03"]:
        kept = before[key][1:5] if key[1] == "explain" else before[key][:5]
        assert (after[key][1:5] if key[1] == "explain" else after[key][:5]) == kept, key
    assert after[("s03", "explain")][1] == 1.0 and after[("s03", "explain")][4] == (None, "Exactly.")
    assert after[("s03", "explain")][5] is None, "the extension removed the late penalty"
    for student in others:
        assert digests(root / "autograded" / student) == files_before[student], f"{student}'s graded files changed"
        assert (root / "grading_reports" / ASSIGNMENT / f"{student}.json").read_bytes() == reports_before[student]

    # Look-alike report: the copied pair is flagged, the pair that shares only the template is not.
    report = similarity.class_report(ASSIGNMENT, root=root)
    assert [(p.student_a, p.student_b) for p in report.flagged] == [("s07", "s19")]
    top = report.pairs[0]
    blank = next(p for p in report.pairs if (p.student_a, p.student_b) == ("s28", "s29"))
    assert blank.similarity == 0.0 and not blank.flagged and not blank.shared
    paths = similarity.write_report(report, tmp_path / "out" / "look-alike")
    pairs = pd.read_csv(paths["csv"])
    assert len(pairs) == 30 * 29 // 2 and tuple(pairs.iloc[0][["student_a", "student_b"]]) == ("s07", "s19")
    assert pairs["flagged"].eq("yes").sum() == 1
    page = paths["html"].read_text()
    assert "accumulated += x" in page and "acc += v" in page and "NotImplementedError" not in page

    # The exports: the kit's table, Canvas and Moodle, every score read back; export twice changes nothing.
    output = tmp_path / "out" / "grades.csv"
    arguments = ["--root", str(root), "--output", str(output), "--roster", str(tmp_path / "roster.csv")]
    (tmp_path / "roster.csv").write_text(ROSTER)
    capsys.readouterr()
    assert commands.export_main(arguments) == 0
    printed = capsys.readouterr().out
    first = {path.name: path.read_bytes() for path in output.parent.glob("grades*.csv")}
    assert commands.export_main(arguments) == 0
    assert {path.name: path.read_bytes() for path in output.parent.glob("grades*.csv")} == first
    manual = {"s02": 0.5, "s03": 1.0}
    final = {s: expected_auto(s) + manual.get(s, 0.0) - (1.2 if s == "s04" else 0.0) for s in students}
    table = pd.read_csv(output).set_index("student")
    for student in students:
        row = table.loc[student]
        assert row["final_score"] == pytest.approx(final[student]), student
        assert row["late_penalty"] == pytest.approx(1.2 if student == "s04" else 0.0), student
        assert row["score"] == pytest.approx(row["final_score"] + row["late_penalty"]), student
    canvas = pd.read_csv(output.with_name("grades-canvas.csv"), dtype=str, keep_default_na=False)
    assert list(canvas.columns) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", ASSIGNMENT]
    assert canvas.iloc[0]["Student"].strip() == "Points Possible" and float(canvas.iloc[0][ASSIGNMENT]) == 5.0
    rows = canvas.iloc[1:].set_index("SIS User ID")
    on_roster = [s for s in students if s not in {"s29", "s30"}]
    assert sorted(rows.index) == sorted([f"SIS{1000 + int(s[1:])}" for s in on_roster] + ["SIS1031"])
    for student in on_roster:
        row = rows.loc[f"SIS{1000 + int(student[1:])}"]
        assert float(row[ASSIGNMENT]) == pytest.approx(final[student]), student
        assert (row["ID"], row["Section"]) == (str(500 + int(student[1:])), "A" if int(student[1:]) % 2 else "B")
    assert rows.loc["SIS1031"][ASSIGNMENT] == "", "no submission is an empty cell, never a zero"
    moodle = pd.read_csv(output.with_name("grades-moodle.csv"), dtype={"ID number": str}).set_index("ID number")
    for student in on_roster:
        assert moodle.loc[f"SIS{1000 + int(student[1:])}", ASSIGNMENT] == pytest.approx(final[student]), student
    assert pd.isna(moodle.loc["SIS1031", ASSIGNMENT])
    problems = pd.read_csv(output.with_name("grades-roster-problems.csv"), keep_default_na=False)
    listed = {(p, s) for p, s in zip(problems["problem"], problems["student"])}
    assert {("not on the roster", "s30"), ("no submission", "s31"), ("no school id", "s29")} <= listed
    waiting = {s for p, s in listed if p == "waits for manual grading"}
    assert waiting == set(on_roster) - {"s02", "s03", "s28"}
    assert "not on the roster: s30 / quiz" in printed and "no submission: s31 / quiz" in printed

    # The feedback shows the late penalty.
    written = grader.feedback(ASSIGNMENT, root=root, students=["s04"])
    assert "Late submission penalty" in written[0].read_text()
    elapsed = time.perf_counter() - began
    print(
        f"\nclass of 30: graded in {graded_at - began:.0f} s, whole test {elapsed:.0f} s; "
        f"top pair {top.student_a}/{top.student_b} {top.similarity:.2f}; canvas row: "
        + ",".join(canvas.iloc[2].tolist())
    )


BUGGY_TEST_MEAN = TEST_MEAN.replace("mean_of([1, 2, 3]) == 2,", "mean_of([1, 2, 3]) == 3,")  # the instructor's slip


@pytest.mark.timeout(600)
def test_a_sandboxed_regrade_after_a_fix_to_the_tests_keeps_what_a_person_graded(tmp_path, capsys):
    """``autograde --student s01 --regrade`` after fixing a test; ``--reset-manual`` clears a manual grade."""
    found = sandbox.probe()
    if not found.available:
        pytest.skip(f"no sandbox here: {found.reason}")
    root = make_course(tmp_path / "course", test_mean=BUGGY_TEST_MEAN)
    hand_in(root, ["s01", "s05"])
    (root / "kit.toml").write_text(KIT_TOML.format(extensions=""))  # both handed in on time
    common = ["--root", str(root), "--require-sandbox", "--timeout", str(TIMEOUT), "--jobs", "2", "--memory", "512"]
    assert commands.autograde_main([ASSIGNMENT, *common]) == 0
    assert "due 2026-12-01 16:00 UTC; 10 % per day late (or part of a day) after 1 h of grace, at most 30 %" in (
        capsys.readouterr().out
    )
    first = {s.student: s for s in grader.submission_scores(ASSIGNMENT, root=root)}
    assert {s: score.score for s, score in first.items()} == {"s01": 2.0, "s05": 0.0}, "the slip fails everyone"
    assert all(score.notes[0].startswith("sandboxed") for score in first.values())
    give_manual_grade(root, "s01", 1.0, "Well put.")
    give_manual_grade(root, "s05", 0.5, "Partly.")
    before = gradebook_cells(root)
    files = digests(root / "autograded" / "s05")

    nbformat.write(source_notebook(TEST_MEAN), course_folder.source_notebook(ASSIGNMENT, root))  # the fix
    release.generate(root=root)
    capsys.readouterr()
    assert commands.autograde_main([ASSIGNMENT, *common, "--student", "s01", "--regrade"]) == 0
    printed = capsys.readouterr().out
    assert "s01" in printed and "5 / 5  (was 3)" in printed and "test_mean_of: automatic score 0 -> 2" in printed
    after = gradebook_cells(root)
    assert {k: v for k, v in after.items() if k[0] != "s01"} == {k: v for k, v in before.items() if k[0] != "s01"}
    assert digests(root / "autograded" / "s05") == files
    assert after[("s01", "explain")][1:5] == (1.0, None, False, (None, "Well put."))
    assert after[("s01", "test_mean_of")][0] == 2.0

    assert commands.autograde_main([ASSIGNMENT, *common, "--student", "s05", "--regrade", "--reset-manual"]) == 0
    reset = gradebook_cells(root)
    assert reset[("s05", "explain")][1:5] == (None, None, True, (None, None)), "the manual grade and comment are gone"
    assert reset[("s05", "test_mean_of")][0] == 2.0
    assert {k: v for k, v in reset.items() if k[0] == "s01"} == {k: v for k, v in after.items() if k[0] == "s01"}
