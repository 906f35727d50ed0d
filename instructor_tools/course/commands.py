"""The course pipeline's command lines: ``python -m instructor_tools generate|validate|autograde|export|feedback``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

from helpers.settings import PROFILES
from instructor_tools.course.course_folder import list_assignments, release_notebook, resolve_root, source_notebook
from instructor_tools.course.release import generate, release_drift
from instructor_tools.course.submissions import collect_submissions
from instructor_tools.course.validation import validate
from instructor_tools.grading import deadlines, lms_export, similarity
from instructor_tools.grading.grader import (
    DEFAULT_JOBS,
    GradingError,
    UnsandboxedWarning,
    autograde,
    export,
    feedback,
    submission_scores,
)
from instructor_tools.isolation import sandbox


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m helpers {command}", description=description)
    parser.add_argument("--root", type=Path, default=None, help="course folder (default: found from here)")
    return parser


def generate_main(argv: Sequence[str]) -> int:
    """``python -m instructor_tools generate [assignment ...] [--check]``."""
    parser = _parser("generate", "Generate notebooks/ (student versions) from solutions/.")
    parser.add_argument("assignments", nargs="*", help="assignment names (default: all)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if notebooks/ is out of date")
    args = parser.parse_args(list(argv))
    try:
        if args.check:
            problems = release_drift(args.root)
            for problem in problems:
                print(problem)
            print("notebooks/ is up to date." if not problems else f"{len(problems)} problem(s).")
            return 1 if problems else 0
        for path in generate(args.assignments or None, root=args.root):
            print(f"generated {path}")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def validate_main(argv: Sequence[str]) -> int:
    """``python -m instructor_tools validate [assignment-or-notebook ...] [--release] [--invert] [--profile P]``."""
    parser = _parser("validate", "Validate notebooks with nbgrader; exit 1 when any test fails.")
    parser.add_argument("targets", nargs="*", help="assignment names or .ipynb paths (default: every solutions notebook)")
    parser.add_argument("--release", action="store_true", help="validate notebooks/ instead of solutions/")
    parser.add_argument("--invert", action="store_true", help="expect every test to fail (blank release notebooks)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="profile for the kernels (default: KIT_PROFILE)")
    parser.add_argument("--timeout", type=int, help="seconds per cell (default: the profile's)")
    args = parser.parse_args(list(argv))
    try:
        root = resolve_root(args.root)
        locate = release_notebook if (args.release or args.invert) else source_notebook
        paths = [
            Path(t) if t.endswith(".ipynb") else locate(t, root)
            for t in (args.targets or list_assignments(root))
        ]
        results = [validate(p, invert=args.invert, profile=args.profile, timeout=args.timeout) for p in paths]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for result in results:
        print(result.summary())
    return 0 if all(r.ok for r in results) else 1


def _autograde_parser() -> argparse.ArgumentParser:
    """The autograde command's arguments: what to grade, regrading, and the sandbox's limits."""
    parser = _parser("autograde", "Autograde submissions in the grading profile and print the scores.")
    parser.add_argument(
        "submissions", nargs="?",
        help="a folder of submissions to copy into submitted/ first (nbgrader layout, <student>/<assignment>.ipynb "
        "or <student>.ipynb files), or an assignment name; default: everything in submitted/",
    )
    parser.add_argument("--assignment", help="grade only this assignment")
    parser.add_argument("--student", action="append", dest="students", help="grade only this student (repeatable)")
    parser.add_argument(
        "--regrade", action="store_true",
        help="grade --student again (after a fix to the tests or an extension), keeping their manual grades and comments",
    )
    parser.add_argument(
        "--reset-manual", action="store_true", help="with --regrade: clear that student's manual grades and comments"
    )
    parser.add_argument("--timeout", type=int, help="seconds per cell (default: the grading profile's)")
    parser.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS, help=f"submissions graded at once (default {DEFAULT_JOBS})"
    )
    defaults = sandbox.Limits()
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--require-sandbox", action="store_true", help="refuse to grade where no sandbox works")
    where.add_argument("--no-sandbox", action="store_true", help="run kernels unsandboxed (a class you trust)")
    parser.add_argument("--memory", type=int, default=defaults.memory_mb, help=f"MB per kernel (default {defaults.memory_mb})")
    parser.add_argument(
        "--processes", type=int, default=defaults.processes, help=f"processes and threads per kernel (default {defaults.processes})"
    )
    parser.add_argument("--disk", type=int, default=defaults.disk_mb, help=f"MB of private disk per kernel (default {defaults.disk_mb})")
    return parser


def _sandbox_check(sandboxing: str, limits: "sandbox.Limits") -> bool:
    """Say which sandbox grades the kernels (a banner when none does); False when one is required and none works."""
    found = sandbox.probe()
    if sandboxing == "require" and not found.available:
        print(f"error: no sandbox for the submissions' kernels: {found.reason}.", file=sys.stderr)
        return False
    if sandboxing == "off" or not found.available:
        why = "--no-sandbox" if sandboxing == "off" else found.reason
        print(_banner(f"WARNING: grading UNSANDBOXED ({why}). Submissions run with your rights; each in its own "
                      "temporary folder, but absolute paths reach your files. Grade only a class you trust, or "
                      "install bubblewrap (see the instructor guide)."), file=sys.stderr)
    else:
        print(f"sandbox: {sandbox.describe(found, limits)}")
    return True


def _assignments_to_grade(args: argparse.Namespace, root: Path) -> tuple[list[str], int]:
    """The assignments to grade (a folder of submissions collected first) and the status so far; none: said why."""
    assignment = args.assignment
    status = 0
    if args.submissions and args.submissions in list_assignments(root):
        assignment = args.submissions
    elif args.submissions:
        collected = collect_submissions(args.submissions, root, assignment)
        for path, why in collected.skipped:
            print(f"skipped {path}: {why}", file=sys.stderr)
            status = 1
        if not collected.found:
            print(f"error: no submissions found in {args.submissions}", file=sys.stderr)
            return [], 1
    submitted = root / "submitted"
    names = [assignment] if assignment else sorted({p.name for p in submitted.glob("*/*") if p.is_dir()})
    if not names:
        print(f"error: nothing to grade in {submitted}", file=sys.stderr)
        return [], 1
    return names, status


def _grade(
    name: str, args: argparse.Namespace, root: Path, limits: "sandbox.Limits", sandboxing: str
) -> tuple[list, list[str], bool]:
    """Grade one assignment: the scores, the students not graded, and whether grading failed (said on stderr)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnsandboxedWarning)  # said in the banner above
            scores = autograde(
                name, root=root, students=args.students, timeout=args.timeout, jobs=args.jobs,
                limits=limits, sandboxing=sandboxing, regrade=args.regrade, reset_manual=args.reset_manual,
            )
    except GradingError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.graded, list(error.failures), True
    return scores, [], False


def _print_scores(
    name: str, scores: list, failed: list[str], earlier: dict, seconds: float, course_deadlines: "deadlines.Deadlines"
) -> None:
    """Print one assignment's results: each student's score, late penalty, notes and flags, and who was not graded."""
    print(f"{name}: {len(scores)} submission(s) graded in {seconds:.0f} s")
    if name in course_deadlines.due:
        print(f"  due {course_deadlines.due[name]:%Y-%m-%d %H:%M} UTC; {course_deadlines.policy.describe()}")
    for score in scores:
        manual = f"  (to grade by hand: {', '.join(score.needs_manual_grade)})" if score.needs_manual_grade else ""
        before = earlier.get(score.student)
        was = f"  (was {before.score:g})" if before is not None else ""
        print(f"  {score.student:<24} {score.score:g} / {score.max_score:g}{was}{manual}")
        if score.late_penalty:
            print(f"      late: -{score.late_penalty:g} point(s) by the late policy (final {score.final_score:g})")
        for note in score.notes[1:]:  # the first says sandboxed or not: printed above
            print(f"      note: {note}")
        for flag in score.flags:
            print(f"      FLAGGED for review: {flag}")
    flagged = [s.student for s in scores if s.flags]
    if flagged:
        print(f"  {len(flagged)} submission(s) flagged for review (scores unchanged; look at the lines above "
              f"or the 'flags' column of the export): {', '.join(flagged)}")
    for student in failed:
        print(f"  {student:<24} NOT GRADED (see the error above)")


def autograde_main(argv: Sequence[str]) -> int:
    """``python -m instructor_tools autograde [SUBMISSIONS|ASSIGNMENT] [--assignment A] [--student S ...]``."""
    parser = _autograde_parser()
    args = parser.parse_args(list(argv))
    if args.regrade and not args.students:
        parser.error("--regrade needs --student NAME (it regrades named students only, never the whole class)")
    if args.reset_manual and not args.regrade:
        parser.error("--reset-manual goes with --regrade")
    defaults = sandbox.Limits()
    try:
        limits = sandbox.Limits(
            memory_mb=args.memory, processes=args.processes, disk_mb=args.disk,
            open_files=defaults.open_files, output_kb=defaults.output_kb,
        )
        sandboxing = "require" if args.require_sandbox else "off" if args.no_sandbox else "auto"
        if not _sandbox_check(sandboxing, limits):
            return 2
        root = resolve_root(args.root)
        names, status = _assignments_to_grade(args, root)
        if not names:
            return status
        course_deadlines = deadlines.load_deadlines(root)
        if args.regrade and len(names) > 1:
            print("error: --regrade needs the assignment (--assignment A) when several were submitted", file=sys.stderr)
            return 1
        for name in names:
            began = time.perf_counter()
            earlier = {s.student: s for s in submission_scores(name, root=root)} if args.regrade else {}
            scores, failed, broke = _grade(name, args, root, limits, sandboxing)
            if broke:
                status = 1
            _print_scores(name, scores, failed, earlier, time.perf_counter() - began, course_deadlines)
    except (FileNotFoundError, ValueError, sandbox.SandboxUnavailable, sandbox.KernelCannotStart) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return status


def _banner(text: str) -> str:
    line = "!" * 78
    return f"{line}\n{text}\n{line}"


def export_main(argv: Sequence[str]) -> int:
    """``python -m instructor_tools export [--output grades.csv] [--assignment A] [--cells] [--roster roster.csv]``."""
    parser = _parser("export", "Export grades from the gradebook to CSV (and Canvas and Moodle sheets with --roster).")
    parser.add_argument("--output", type=Path, default=Path("grades.csv"), help="CSV file (default grades.csv)")
    parser.add_argument("--assignment", help="only this assignment")
    parser.add_argument("--cells", action="store_true", help="one row per graded cell instead of per submission")
    parser.add_argument(
        "--roster", type=Path,
        help="roster CSV mapping user names to the school's ids (username, sis_user_id, ...): also write "
        "<output>-canvas.csv, <output>-moodle.csv and <output>-roster-problems.csv",
    )
    args = parser.parse_args(list(argv))
    try:
        roster = lms_export.read_roster(args.roster) if args.roster else None  # a bad roster: nothing written
        root = resolve_root(args.root)
        deadlines.refresh_penalties(root, args.assignment)  # from today's scores: manual grades count
        path = export(args.output, assignment=args.assignment, root=root, per_cell=args.cells)
        print(f"wrote {path}")
        if roster is not None:
            names = [args.assignment] if args.assignment else None
            sheets = lms_export.build(submission_scores(args.assignment, root=root), roster, names)
            for written in lms_export.write(sheets, args.output).values():
                print(f"wrote {written}")
            for problem, student, assignment, what in sheets.problems:
                print(f"  {problem}: {student}{' / ' + assignment if assignment else ''}: {what}")
            if sheets.problems:
                print(f"  {len(sheets.problems)} line(s) to look at before importing (also in the roster-problems file).")
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def deadlines_main(argv: Sequence[str]) -> int:
    """``python -m instructor_tools deadlines ASSIGNMENT``: who handed in when, against their due date."""
    parser = _parser("deadlines", "List an assignment's submissions against their due dates and the late policy.")
    parser.add_argument("assignment", help="the assignment whose submissions (submitted/) are listed")
    args = parser.parse_args(list(argv))
    try:
        root = resolve_root(args.root)
        course_deadlines = deadlines.load_deadlines(root)
        rows = deadlines.handed_in(args.assignment, root)
        known = list_assignments(root)
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name in sorted(set(course_deadlines.due) - set(known)):
        print(f"warning: [deadlines] dates {name!r}, which is not an assignment of this course {known}: a typo?",
              file=sys.stderr)
    print(f"{args.assignment}: {len(rows)} submission(s); late policy: {course_deadlines.policy.describe()}")
    for row in rows:
        when = row.submitted.strftime("%Y-%m-%d %H:%M UTC") if row.submitted else "no timestamp"
        due = row.due.strftime("%Y-%m-%d %H:%M UTC") if row.due else "no due date"
        late = f"late by {row.seconds_late / 3600:.1f} h, -{row.percent:g} %" if row.seconds_late else "on time"
        print(f"  {row.student:<24} {when:<22} due {due:<22} {late}{'  ' + row.problem if row.problem else ''}")
    return 1 if any(row.problem for row in rows) else 0


def similarity_main(argv: Sequence[str]) -> int:
    """``python -m instructor_tools similarity ASSIGNMENT [--output look-alike] [--min-similarity 0.7]``."""
    parser = _parser("similarity", "Report pairs of submissions whose answer cells look alike (HTML and CSV).")
    parser.add_argument("assignment", help="the assignment whose submissions (submitted/) are compared")
    parser.add_argument(
        "--output", type=Path, help="report path without extension (default: look-alike-<assignment>, here)"
    )
    parser.add_argument("--min-similarity", type=float, default=0.7, help="flag pairs from this similarity (0-1; default 0.7)")
    parser.add_argument("--min-shared-lines", type=int, default=2, help="lines a flagged pair must share (default 2)")
    args = parser.parse_args(list(argv))
    try:
        root = resolve_root(args.root)
        report = similarity.class_report(
            args.assignment, root=root, min_similarity=args.min_similarity, min_shared_lines=args.min_shared_lines
        )
        paths = similarity.write_report(report, args.output or Path(f"look-alike-{args.assignment}"))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for student, why in report.skipped.items():
        print(f"not compared: {student}: {why}", file=sys.stderr)
    print(f"{args.assignment}: {len(report.students)} submissions, {len(report.flagged)} pair(s) flagged for a person to look at")
    for pair in report.flagged:
        print(f"  {pair.student_a} / {pair.student_b}: similarity {pair.similarity:.2f}, {len(pair.shared)} shared line(s)")
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def feedback_main(argv: Sequence[str]) -> int:
    """``python -m instructor_tools feedback [ASSIGNMENT] [--student S ...]``."""
    parser = _parser("feedback", "Generate feedback HTML for autograded submissions.")
    parser.add_argument("assignment", nargs="?", help="assignment (default: every autograded one)")
    parser.add_argument("--student", action="append", dest="students", help="only this student (repeatable)")
    parser.add_argument(
        "--show-tests", action="store_true", help="show the tests' code, hidden tests included (off by default)"
    )
    args = parser.parse_args(list(argv))
    try:
        deadlines.refresh_penalties(resolve_root(args.root), args.assignment)  # the feedback shows the late penalty
        paths = feedback(args.assignment, root=args.root, students=args.students, show_tests=args.show_tests)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0
