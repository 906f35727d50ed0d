"""A hostile class: submissions that attack the grader, graded together with honest ones.

The tests write their own course (three small exercises on numpy, no TensorFlow, so a
class of nineteen grades in about two minutes) and their own hostile submissions: read the
solutions and another student's work, rewrite the gradebook, overwrite other
submissions, patch numpy or IPython to pass, kill the kernel, exceed the memory limit,
fork many processes, fill the disk, connect to a server the test starts on 127.0.0.1,
sleep forever, print megabytes, break the kernel so that it never answers again. Every
honest score must be exact, the whole class graded, every attack checked *from outside*
to have failed, and each hostile submission scored only for what its honest part
deserves, or flagged for a person.

With bubblewrap (``apt-get install bubblewrap``) the class is graded sandboxed; the
same course graded without a sandbox checks the loud warning and that each submission
still runs in its own temporary folder, so relative paths reach nothing.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
import warnings
from pathlib import Path

import nbformat
import pytest

from instructor_tools.course import commands, course_folder, release, submissions
from instructor_tools.grading import grader
from instructor_tools.isolation import sandbox

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "hostile"
TIMEOUT = 10  # seconds per cell: the sleeping submission costs this much
LIMITS = sandbox.Limits(memory_mb=512, processes=64, disk_mb=128, open_files=256, output_kb=256)

SETUP = "import numpy as np"
ANSWERS = {
    "add": "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
    "scale": "def scale(x):\n    ### BEGIN SOLUTION\n    return np.asarray(x) * 2\n    ### END SOLUTION",
    "mean": "def mean(values):\n    ### BEGIN SOLUTION\n    return sum(values) / len(values)\n    ### END SOLUTION",
}
TESTS = {
    "test_add": '"""add sums two numbers."""\nassert add(1, 2) == 3, "add(1, 2) should be 3: return a + b"\n'
    "### BEGIN HIDDEN TESTS\n"
    'assert add(-2, 2) == 0, "add must work with negative numbers"\n'
    "### END HIDDEN TESTS",
    # The hidden check compares plain Python floats: patching numpy cannot make it pass.
    "test_scale": '"""scale doubles every value."""\n'
    'assert np.allclose(scale(np.array([1.0, 2.0])), [2.0, 4.0]), "scale should double each value"\n'
    "### BEGIN HIDDEN TESTS\n"
    'assert [float(v) for v in scale(np.array([0.5, -3.0]))] == [1.0, -6.0], "scale must double fractions and negatives"\n'
    "### END HIDDEN TESTS",
    "test_mean": '"""mean averages a list."""\nassert mean([1, 2, 3]) == 2, "mean([1, 2, 3]) should be 2"\n'
    "### BEGIN HIDDEN TESTS\n"
    'assert mean([2.0, 4.0]) == 3.0, "mean must work with floats"\n'
    "### END HIDDEN TESTS",
}
POINTS = {"test_add": 2.0, "test_scale": 2.0, "test_mean": 2.0}
HIDDEN_MARK = "scale must double fractions and negatives"  # only in the hidden test (and its message)


def _source_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    cells = [nbformat.v4.new_markdown_cell("# Three small exercises")]
    cells.append(nbformat.v4.new_code_cell(SETUP))
    cells[-1].metadata["nbgrader"] = {
        "grade": False, "solution": False, "locked": True, "grade_id": "setup", "schema_version": 3,
    }
    for (name, answer), (test, code) in zip(ANSWERS.items(), TESTS.items()):
        cells.append(nbformat.v4.new_code_cell(answer))
        cells[-1].metadata["nbgrader"] = {
            "grade": False, "solution": True, "locked": False, "grade_id": name, "schema_version": 3,
        }
        cells.append(nbformat.v4.new_code_cell(code))
        cells[-1].metadata["nbgrader"] = {
            "grade": True, "solution": False, "locked": True, "grade_id": test, "points": POINTS[test],
            "schema_version": 3,
        }
    for index, cell in enumerate(cells):
        cell.id = f"hostile-{index}"
    notebook.cells = cells
    return notebook


def _make_course(root: Path) -> Path:
    (root / "solutions" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    nbformat.write(_source_notebook(), course_folder.source_notebook(ASSIGNMENT, root))
    release.generate(root=root)
    return root


def _with_extra_cell(notebook: nbformat.NotebookNode, after: str, source: str) -> nbformat.NotebookNode:
    """A copy with a cell the student added after the cell ``after`` (no nbgrader metadata)."""
    edited = submissions.edit_submission(notebook)
    index = next(i for i, c in enumerate(edited.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == after)
    extra = nbformat.v4.new_code_cell(source)
    extra.id = f"extra-{uuid.uuid4().hex[:8]}"
    edited.cells.insert(index + 1, extra)
    return edited


def _write(root: Path, student: str, notebook: nbformat.NotebookNode) -> Path:
    target = root / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    return target


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CountingServer:
    """A TCP server on 127.0.0.1 that counts the connections it accepts (it must stay at 0)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.socket.close()


def _hostile_class(root: Path, server_port: int, secret_leaks: list[Path]) -> dict[str, nbformat.NotebookNode]:
    """Honest, half-right and blank submissions, and one of each kind of attack."""
    solution = submissions.solution_submission(ASSIGNMENT, root)
    blank = nbformat.read(course_folder.release_notebook(ASSIGNMENT, root), as_version=4)
    wrong_scale = submissions.edit_submission(solution, replace={"scale": "def scale(x):\n    return np.asarray(x) * 3"})
    solutions_file = course_folder.source_notebook(ASSIGNMENT, root)
    victim = root / "submitted" / "honest" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    gradebook = root / "gradebook.db"
    leak_in_course, leak_in_tmp = secret_leaks
    mean_answer = "def mean(values):\n    return sum(values) / len(values)"
    return {
        "honest": solution,
        "half_right": wrong_scale,
        "blank": blank,
        "read_secrets": _with_extra_cell(solution, "add", (
            "stolen = ''\n"
            f"for path in [{str(solutions_file)!r}, {str(victim)!r}, {str(ROOT / 'solutions')!r}]:\n"
            "    try:\n"
            "        stolen += open(path).read()\n"
            "    except OSError as error:\n"
            "        print('refused:', type(error).__name__)\n"
            f"for leak in [{str(leak_in_course)!r}, {str(leak_in_tmp)!r}]:\n"
            "    try:\n"
            "        open(leak, 'w').write(stolen or 'nothing')\n"
            "    except OSError as error:\n"
            "        print('refused:', type(error).__name__)\n"
            "print('BEGIN' + ' SOLUTION' in stolen)"
        )),
        "rewrite_gradebook": _with_extra_cell(solution, "add", (
            "import sqlite3\n"
            f"for path in ['../../../gradebook.db', '../../gradebook.db', {str(gradebook)!r}]:\n"
            "    try:\n"
            "        db = sqlite3.connect(path)\n"
            "        db.execute('UPDATE grade_cells SET max_score = 0')\n"
            "        db.execute('DELETE FROM solution_cells')\n"
            "        db.commit()\n"
            "    except Exception as error:\n"
            "        print('refused:', type(error).__name__)"
        )),
        "overwrite_others": _with_extra_cell(solution, "add", (
            "import glob, json\n"
            "empty = json.dumps({'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5})\n"
            f"targets = [{str(victim)!r}, '../../honest/{ASSIGNMENT}/{ASSIGNMENT}.ipynb']\n"
            f"targets += glob.glob('../../../submitted/*/{ASSIGNMENT}/*.ipynb')\n"
            "for path in targets:\n"
            "    try:\n"
            "        open(path, 'w').write(empty)\n"
            "    except OSError as error:\n"
            "        print('refused:', type(error).__name__)"
        )),
        "patch_numpy": _with_extra_cell(wrong_scale, "scale", (
            "np.allclose = lambda *args, **kwargs: True\nnp.array_equal = lambda *args, **kwargs: True"
        )),
        "hide_errors": _with_extra_cell(wrong_scale, "scale", (
            "get_ipython().showtraceback = lambda *args, **kwargs: None"
        )),
        "kill_kernel": submissions.edit_submission(solution, replace={"mean": "import os\nos._exit(0)\n" + mean_answer}),
        "exceed_memory": submissions.edit_submission(solution, replace={
            "mean": "hog = bytearray(2 * 1024 ** 3)  # 2 GB, zero-filled\n" + mean_answer,
        }),
        "fork_bomb": _with_extra_cell(solution, "test_mean", (  # last: a kernel out of threads fails what follows
            "import os, time\n"
            "children = 0\n"
            "try:\n"
            "    for _ in range(400):\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(120)\n"
            "            os._exit(0)\n"
            "        children += 1\n"
            "finally:\n"
            "    print('children started:', children)"
        )),
        "fill_disk": _with_extra_cell(solution, "add", (
            "import os, tempfile\n"
            "block = b'x' * (16 * 1024 * 1024)\n"
            "written = 0\n"
            "for folder in [tempfile.gettempdir(), os.path.expanduser('~'), '.']:\n"
            "    try:\n"
            "        with open(os.path.join(folder, 'filler.bin'), 'wb') as handle:\n"
            "            for _ in range(256):  # up to 4 GB each\n"
            "                handle.write(block)\n"
            "                written += len(block)\n"
            "    except OSError as error:\n"
            "        print('stopped:', type(error).__name__)\n"
            "print('written MB:', written // 2 ** 20)"
        )),
        "network": _with_extra_cell(solution, "add", (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {server_port}), timeout=3).close()\n"
            "    print('connected')\n"
            "except OSError as error:\n"
            "    print('refused:', type(error).__name__)"
        )),
        "sleep_forever": submissions.edit_submission(solution, replace={
            "mean": "import time\ntime.sleep(10 ** 6)\n" + mean_answer,
        }),
        "print_megabytes": _with_extra_cell(solution, "add", "print('x' * (30 * 2 ** 20))"),
        # Four ways to break the kernel's own machinery after test_add has passed: the kernel
        # stays alive but never answers again (graded like a dead kernel, and flagged).
        "break_replies": _with_extra_cell(solution, "test_add", (
            "import json\njson.dumps = lambda *args, **kwargs: 1 / 0  # every reply the kernel serialises fails"
        )),
        "drop_requests": _with_extra_cell(solution, "test_add", (
            "kernel = get_ipython().kernel\n"
            "kernel.shell_handlers['execute_request'] = lambda *args, **kwargs: None"
        )),
        "stop_itself": _with_extra_cell(solution, "test_add", (
            "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)"
        )),
        "ignore_interrupts": _with_extra_cell(solution, "test_add", (
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
        )),
    }


# What each submission deserves for its honest part.
FULL = dict(POINTS)
EXPECTED = {
    "honest": FULL,
    "half_right": FULL | {"test_scale": 0.0},
    "blank": {g: 0.0 for g in POINTS},
    "read_secrets": FULL,
    "rewrite_gradebook": FULL,
    "overwrite_others": FULL,
    "patch_numpy": FULL | {"test_scale": 0.0},
    "hide_errors": FULL | {"test_scale": 0.0},
    "kill_kernel": FULL | {"test_mean": 0.0},
    "exceed_memory": FULL | {"test_mean": 0.0},
    "fork_bomb": FULL,
    "fill_disk": FULL,
    "network": FULL,
    "sleep_forever": FULL | {"test_mean": 0.0},
    "print_megabytes": FULL,
    "break_replies": {"test_add": 2.0, "test_scale": 0.0, "test_mean": 0.0},
    "drop_requests": {"test_add": 2.0, "test_scale": 0.0, "test_mean": 0.0},
    "stop_itself": {"test_add": 2.0, "test_scale": 0.0, "test_mean": 0.0},
    "ignore_interrupts": {"test_add": 2.0, "test_scale": 0.0, "test_mean": 0.0},
}
# The submissions whose kernel stops answering: graded like a dead kernel, flagged with the reason.
HUNG = ("break_replies", "drop_requests", "stop_itself", "ignore_interrupts")
FLAGGED = {
    "read_secrets": "outside", "rewrite_gradebook": "outside", "overwrite_others": "outside",
    "patch_numpy": "patches", "hide_errors": "patches", "kill_kernel": "exits", "fork_bomb": "exits",
    "network": "outside",
}
HOSTILE_KINDS = sorted(set(EXPECTED) - {"honest", "half_right", "blank"})


def _printed(root: Path, student: str) -> str:
    """Everything a graded submission printed."""
    graded = root / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    cells = nbformat.read(graded, as_version=4).cells
    return "".join(str(o.get("text", "")) for c in cells if c.cell_type == "code" for o in c.get("outputs", []))


def _stray_processes(marker: str) -> list[str]:
    result = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if marker in line and "ps -eo" not in line]


@pytest.fixture(scope="module")
def sandboxed_class(tmp_path_factory):
    found = sandbox.probe()
    if not found.available:
        pytest.skip(f"no sandbox here: {found.reason}")
    root = _make_course(tmp_path_factory.mktemp("hostile") / "course")
    leaks = [root / "leaked.txt", Path("/tmp") / f"kit-leak-{uuid.uuid4().hex}.txt"]
    # The grader's private folders go here, so that what is left behind is this run's alone.
    scratch = tmp_path_factory.mktemp("grader-tmp")
    server = CountingServer()
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    try:
        students = _hostile_class(root, server.port, leaks)
        paths = {student: _write(root, student, notebook) for student, notebook in students.items()}
        digests = {student: _digest(path) for student, path in paths.items()}
        os.environ["TMPDIR"], tempfile.tempdir = str(scratch), str(scratch)
        scores = grader.autograde(
            ASSIGNMENT, root=root, timeout=TIMEOUT, jobs=2, limits=LIMITS, sandboxing="require",
        )
    finally:
        server.close()
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
    yield {
        "root": root, "scores": {s.student: s for s in scores}, "paths": paths, "digests": digests,
        "leaks": leaks, "server": server, "scratch": scratch,
    }
    for leak in leaks:
        leak.unlink(missing_ok=True)


def _cells(score: grader.SubmissionScore) -> dict[str, float]:
    return {grade_id: cell.score for grade_id, cell in score.cells.items()}


@pytest.mark.timeout(600)
def test_the_whole_class_is_graded_and_every_honest_score_is_exact(sandboxed_class):
    scores = sandboxed_class["scores"]
    assert set(scores) == set(EXPECTED), "every submission is graded, none NOT GRADED"
    for student in ("honest", "half_right", "blank"):
        assert _cells(scores[student]) == EXPECTED[student], student
        assert not scores[student].flags, f"{student} is honest and must not be flagged: {scores[student].flags}"
        assert scores[student].notes[0].startswith("sandboxed"), scores[student].notes


@pytest.mark.timeout(600)
@pytest.mark.parametrize("student", HOSTILE_KINDS)
def test_a_hostile_submission_scores_only_its_honest_part(sandboxed_class, student):
    score = sandboxed_class["scores"][student]
    assert _cells(score) == EXPECTED[student], f"{student}: {score.notes}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("student", sorted(FLAGGED))
def test_attacks_in_the_code_are_flagged_for_a_person(sandboxed_class, student):
    flags = sandboxed_class["scores"][student].flags
    assert any(flag.startswith(f"[{FLAGGED[student]}] cell ") for flag in flags), flags


@pytest.mark.timeout(600)
def test_nothing_was_read_or_leaked(sandboxed_class):
    for leak in sandboxed_class["leaks"]:
        assert not leak.exists(), f"{leak} was written by a submission"
    outputs = _printed(sandboxed_class["root"], "read_secrets")
    assert "refused: FileNotFoundError" in outputs and "True" not in outputs, outputs[:500]


@pytest.mark.timeout(600)
def test_no_submission_was_overwritten(sandboxed_class):
    for student, path in sandboxed_class["paths"].items():
        assert _digest(path) == sandboxed_class["digests"][student], f"{student}'s submission was changed"


@pytest.mark.timeout(600)
def test_the_gradebook_still_grades_the_assignment(sandboxed_class):
    """Regrading an honest submission after the class works: the gradebook's cells were not rewritten."""
    root = sandboxed_class["root"]
    again = grader.autograde(ASSIGNMENT, root=root, students=["honest"], timeout=TIMEOUT, limits=LIMITS)
    assert _cells(again[0]) == FULL


@pytest.mark.timeout(600)
def test_the_connection_was_refused(sandboxed_class):
    assert sandboxed_class["server"].accepted == 0
    assert "refused:" in _printed(sandboxed_class["root"], "network")


@pytest.mark.timeout(600)
def test_a_dying_kernel_is_reported_and_costs_only_the_cells_left(sandboxed_class):
    scores = sandboxed_class["scores"]
    assert any("kernel died" in note for note in scores["kill_kernel"].notes), scores["kill_kernel"].notes
    assert any("memory limit of 512 MB" in note for note in scores["exceed_memory"].notes), scores["exceed_memory"].notes


@pytest.mark.timeout(600)
@pytest.mark.parametrize("student", HUNG)
def test_a_kernel_that_stops_answering_is_graded_and_flagged(sandboxed_class, student):
    """The cells before the break keep their marks, the rest score 0, and a person is told why."""
    score = sandboxed_class["scores"][student]
    assert any("stopped answering" in flag for flag in score.flags), f"{student} must be flagged: {score.flags}"
    assert any("stopped answering" in note and "score 0" in note for note in score.notes), score.notes
    graded = sandboxed_class["root"] / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    errors = [o for c in nbformat.read(graded, as_version=4).cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert any(o.get("ename") == "KernelStoppedAnswering" for o in errors), "the cell it hung in says so"


@pytest.mark.timeout(600)
def test_limits_held_and_nothing_is_left_behind(sandboxed_class):
    scores = sandboxed_class["scores"]
    assert any("printed more than 256 KB" in note for note in scores["print_megabytes"].notes)
    graded = sandboxed_class["root"] / "autograded" / "print_megabytes" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert graded.stat().st_size < 2 * 2**20
    written = int(_printed(sandboxed_class["root"], "fill_disk").split("written MB:")[1].split()[0])
    assert written <= LIMITS.disk_mb * 3, f"the private disk let {written} MB through"
    children = _printed(sandboxed_class["root"], "fork_bomb").split("children started:")[1].split()[0]
    assert int(children) < LIMITS.processes
    scratch = sandboxed_class["scratch"]
    assert list(scratch.iterdir()) == [], "every private folder is removed"
    assert _stray_processes(str(scratch)) == [], "no kernel or forked child outlives grading"


@pytest.mark.timeout(600)
def test_feedback_shows_results_and_messages_but_not_the_hidden_tests(sandboxed_class):
    root = sandboxed_class["root"]
    pages = grader.feedback(ASSIGNMENT, root=root, students=["half_right", "patch_numpy", "honest"])
    text = {page.parent.parent.name: page.read_text() for page in pages}
    assert "scale should double each value" in text["half_right"], "the failing assertion's message is shown"
    assert HIDDEN_MARK in text["patch_numpy"], "a failing hidden test shows its message, not its code"
    for student, page in text.items():
        seen = _visible(page)
        assert "BEGIN HIDDEN TESTS" not in seen and "[0.5, -3.0]" not in seen, f"{student}'s feedback holds a hidden test"
        assert "add sums two numbers." in seen, "each test's docstring says what it checks"
    shown = grader.feedback(ASSIGNMENT, root=root, students=["half_right"], show_tests=True)
    assert "[0.5, -3.0]" in _visible(shown[0].read_text()), "the option shows the tests' code"


def _visible(page: str) -> str:
    """The text a browser shows of an HTML page (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.mark.timeout(600)
def test_export_lists_each_flagged_submission(sandboxed_class, tmp_path):
    table = grader.grades_table(ASSIGNMENT, root=sandboxed_class["root"])
    flagged = set(table.loc[table["flags"] != "", "student"])
    assert set(FLAGGED) <= flagged
    assert not {"honest", "half_right", "blank"} & flagged
    row = table.set_index("student").loc["patch_numpy", "flags"]
    assert "np.allclose" in row and "line 1" in row


# --------------------------------------------------------------------------- without a sandbox


@pytest.fixture(scope="module")
def unsandboxed_class(tmp_path_factory):
    root = _make_course(tmp_path_factory.mktemp("unsandboxed") / "course")
    solution = submissions.solution_submission(ASSIGNMENT, root)
    relative = _with_extra_cell(solution, "add", (
        "import glob, json, sqlite3\n"
        "for path in ['../../../gradebook.db', '../../gradebook.db', '../../../../gradebook.db']:\n"
        "    db = sqlite3.connect(path)\n"
        "    try:\n"
        "        db.execute('UPDATE grade_cells SET max_score = 0')\n"
        "        db.commit()\n"
        "    except sqlite3.Error as error:\n"
        "        print('no gradebook there:', error)\n"
        "empty = json.dumps({'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5})\n"
        f"others = glob.glob('../../*/{ASSIGNMENT}/*.ipynb') + glob.glob('../../../submitted/*/{ASSIGNMENT}/*.ipynb')\n"
        "for path in others:\n"
        "    open(path, 'w').write(empty)\n"
        "print('overwrote', len(others))"
    ))
    students = {
        "honest": solution,
        "blank": nbformat.read(course_folder.release_notebook(ASSIGNMENT, root), as_version=4),
        "relative_paths": relative,
    }
    paths = {student: _write(root, student, notebook) for student, notebook in students.items()}
    digests = {student: _digest(path) for student, path in paths.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = grader.autograde(ASSIGNMENT, root=root, timeout=TIMEOUT, jobs=1, sandboxing="off")
    return {"root": root, "scores": {s.student: s for s in scores}, "paths": paths, "digests": digests,
            "warnings": [w for w in caught if issubclass(w.category, grader.UnsandboxedWarning)]}


@pytest.mark.timeout(300)
def test_without_a_sandbox_grading_warns_loudly(unsandboxed_class):
    assert unsandboxed_class["warnings"], "an UnsandboxedWarning is raised"
    assert "UNSANDBOXED" in str(unsandboxed_class["warnings"][0].message)
    for score in unsandboxed_class["scores"].values():
        assert score.notes[0].startswith("UNSANDBOXED"), score.notes


@pytest.mark.timeout(300)
def test_without_a_sandbox_each_submission_still_has_its_own_folder(unsandboxed_class):
    scores = unsandboxed_class["scores"]
    assert _cells(scores["honest"]) == FULL
    assert _cells(scores["blank"]) == {g: 0.0 for g in POINTS}
    assert _cells(scores["relative_paths"]) == FULL
    for student, path in unsandboxed_class["paths"].items():
        assert _digest(path) == unsandboxed_class["digests"][student], f"{student}'s submission was changed"
    text = _printed(unsandboxed_class["root"], "relative_paths")
    assert "overwrote" in text, text  # only its own copies, in its private course folder (the digests above)
    again = grader.autograde(ASSIGNMENT, root=unsandboxed_class["root"], students=["honest"], sandboxing="off")
    assert _cells(again[0]) == FULL, "the gradebook was not reached"


def test_require_sandbox_refuses_where_none_works(monkeypatch, tmp_path, capsys):
    root = _make_course(tmp_path / "course")
    _write(root, "honest", submissions.solution_submission(ASSIGNMENT, root))
    missing = sandbox.Probe(False, "bubblewrap is not installed", None, "rlimit")
    monkeypatch.setattr(sandbox, "probe", lambda: missing)
    with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap is not installed"):
        grader.autograde(ASSIGNMENT, root=root, sandboxing="require")
    assert commands.autograde_main([ASSIGNMENT, "--root", str(root), "--require-sandbox"]) == 2
    assert "no sandbox" in capsys.readouterr().err
    assert not (root / "autograded").exists()


def test_limits_are_validated():
    with pytest.raises(ValueError, match="memory_mb must be at least 1"):
        sandbox.Limits(memory_mb=0)
    with pytest.raises(TypeError, match="processes must be an int"):
        sandbox.Limits(processes=2.5)  # type: ignore[arg-type]


def test_student_ids_that_are_paths_are_refused(tmp_path):
    root = _make_course(tmp_path / "course")
    with pytest.raises(ValueError, match="not plain names"):
        grader.autograde(ASSIGNMENT, root=root, students=["../honest"])


def test_sandbox_is_usable_in_ci():
    """Where CI installs bubblewrap (.ci/run), the sandbox must work: a missing one is a failure, not a skip."""
    if os.environ.get("CI") != "true" or not shutil.which("bwrap"):
        pytest.skip("only checked in CI with bubblewrap installed")
    assert sandbox.probe().available, sandbox.probe().reason
