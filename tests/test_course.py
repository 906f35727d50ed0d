"""The course pipeline: nbgrader config, generation of notebooks/, validation, a simulated class.

Fast tests check the configuration, that ``notebooks/`` is exactly what generation
from ``solutions/`` produces, and that the release leaks no solution, hidden test or
output. Slow tests execute notebooks (MobileNet, smoke profile): every solutions
notebook passes its own tests, every release notebook fails all of them, and a class
of simulated students is autograded end to end in the grading profile, every score
read back from the gradebook. They iterate over every assignment in ``solutions/``.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import re
import shutil
from pathlib import Path

import alternative_answers  # tests/alternative_answers.py, beside this file
import nbformat
import pytest

from helpers import kernel, clean_outputs, timing
from helpers.settings import PROFILES
from instructor_tools.course import commands, course_folder, release, submissions, validation
from instructor_tools.grading import grader

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = course_folder.list_assignments(ROOT)


def _nbgrader(cell) -> dict:
    return dict(cell.metadata.get("nbgrader", {}))


def _points(path: Path) -> dict[str, float]:
    """grade_id -> points of every graded cell of a notebook."""
    notebook = nbformat.read(path, as_version=4)
    return {_nbgrader(c)["grade_id"]: float(_nbgrader(c)["points"]) for c in notebook.cells if _nbgrader(c).get("grade")}


def _autograded(path: Path) -> dict[str, float]:
    """grade_id -> points of the autograded test cells only."""
    notebook = nbformat.read(path, as_version=4)
    return {
        _nbgrader(c)["grade_id"]: float(_nbgrader(c)["points"])
        for c in notebook.cells
        if _nbgrader(c).get("grade") and not _nbgrader(c).get("solution")
    }


GRADED = [a for a in ASSIGNMENTS if _autograded(course_folder.source_notebook(a, ROOT))]


def _release(assignment: str, root: Path = ROOT) -> Path:
    path = course_folder.release_notebook(assignment, root)
    assert path.is_file(), f"{path} is missing: run `python -m instructor_tools generate` after editing solutions/"
    return path


def _without_trailing_code(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop the ungraded code cells after the last autograded test: they cannot change any grade."""
    tests = [i for i, c in enumerate(notebook.cells) if _nbgrader(c).get("grade") and not _nbgrader(c).get("solution")]
    if tests:
        last = tests[-1]
        notebook.cells = notebook.cells[: last + 1] + [
            c for c in notebook.cells[last + 1 :] if c.cell_type != "code" or _nbgrader(c)
        ]
    return notebook


# --------------------------------------------------------------------------- a toy course (no TensorFlow)

TOY_ANSWER = "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION"
TOY_TEST = (
    '"""Checks add."""\nassert add(1, 2) == 3, "add(1, 2) should be 3"\n'
    '### BEGIN HIDDEN TESTS\nassert add(-2, 2) == 0, "add must work with negative numbers"\n### END HIDDEN TESTS'
)


def _toy_notebook(answer: str = TOY_ANSWER, extra: str | None = None) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    cells = [nbformat.v4.new_markdown_cell("# Toy")]
    if extra is not None:
        cells.append(nbformat.v4.new_code_cell(extra))
    cells.append(nbformat.v4.new_code_cell(answer))
    cells[-1].metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": "add", "schema_version": 3}
    cells.append(nbformat.v4.new_code_cell(TOY_TEST))
    cells[-1].metadata["nbgrader"] = {
        "grade": True, "solution": False, "locked": True, "grade_id": "test_add", "points": 2, "schema_version": 3,
    }
    for index, cell in enumerate(cells):
        cell.id = f"toy-{index}"
    notebook.cells = cells
    return notebook


@pytest.fixture
def toy_course(tmp_path: Path) -> Path:
    """A course folder with the kit's nbgrader config and header and one tiny assignment."""
    root = tmp_path / "course"
    (root / "solutions" / "toy").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    nbformat.write(_toy_notebook(), root / "solutions" / "toy" / "toy.ipynb")
    return root


# --------------------------------------------------------------------------- configuration


def test_course_config_names_the_kit_layout():
    config = course_folder.load_config(ROOT)
    assert config.CourseDirectory.course_id == "tl-workshop"
    assert config.CourseDirectory.source_directory == "solutions"
    assert config.CourseDirectory.release_directory == "notebooks"
    assert config.CourseDirectory.root == str(ROOT)
    assert Path(config.IncludeHeaderFooter.header) == ROOT / "solutions" / "header.ipynb"
    assert config.Execute.kernel_name == course_folder.KERNEL_NAME == kernel.KERNEL_NAME == "tl-workshop"
    assert config.OverwriteCells.add_missing_cells is True
    assert config.CourseDirectory.db_url == f"sqlite:///{ROOT / 'gradebook.db'}"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_cell_timeout_comes_from_the_profile(profile):
    assert course_folder.load_config(ROOT, profile=profile).Execute.timeout == PROFILES[profile].cell_timeout
    assert course_folder.load_config(ROOT, profile=profile, timeout=7).Execute.timeout == 7


def test_nbgrader_reads_the_same_config_from_the_project_root(monkeypatch):
    """Plain `nbgrader ...` run from the root loads nbgrader_config.py with the environment's profile."""
    from traitlets.config.loader import PyFileConfigLoader

    monkeypatch.setenv("KIT_PROFILE", "grading")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert config.CourseDirectory.course_id == course_folder.course_id(ROOT)
    assert config.CourseDirectory.root == str(ROOT)
    assert config.Execute.timeout == PROFILES["grading"].cell_timeout
    assert config.IncludeHeaderFooter.header == str(ROOT / "solutions" / "header.ipynb")
    assert len(config.Autograde.sanitize_preprocessors) == len(course_folder.sanitize_preprocessors())


def test_bad_profile_and_timeout_are_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        course_folder.load_config(ROOT, profile="huge")
    with pytest.raises(ValueError, match="at least 1 second"):
        course_folder.load_config(ROOT, timeout=0)


def test_course_root_is_found_from_a_subfolder_and_elsewhere(tmp_path, monkeypatch):
    assert course_folder.find_course_root(ROOT / "solutions" / "01_pretrained_scoring") == ROOT
    monkeypatch.chdir(tmp_path)
    assert course_folder.find_course_root() == ROOT  # falls back to the project this package belongs to


def test_assignments_are_the_folders_of_solutions():
    names = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").is_file())
    assert ASSIGNMENTS == names
    assert {"00_setup_check", "01_pretrained_scoring"} <= set(ASSIGNMENTS)
    with pytest.raises(ValueError, match="unknown assignment"):
        release.generate(["99_nothing"], root=ROOT, output_dir=ROOT / "build" / "never")


def test_kernel_environment_is_restored(monkeypatch):
    monkeypatch.setenv("KIT_PROFILE", "smoke")
    monkeypatch.delenv("KIT_TEST_ONLY", raising=False)
    with course_folder.kernel_environment({"KIT_PROFILE": "grading", "KIT_TEST_ONLY": "1"}):
        assert os.environ["KIT_PROFILE"] == "grading" and os.environ["KIT_TEST_ONLY"] == "1"
    assert os.environ["KIT_PROFILE"] == "smoke" and "KIT_TEST_ONLY" not in os.environ


# --------------------------------------------------------------------------- generation


def test_notebooks_folder_is_exactly_what_generation_produces():
    problems = release.release_drift(ROOT)
    assert not problems, "notebooks/ is out of date; run `python -m instructor_tools generate`:\n" + "\n".join(problems)


def test_generation_is_deterministic(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    release.generate(root=ROOT, output_dir=first)
    release.generate(root=ROOT, output_dir=second)
    files = sorted(p.relative_to(first) for p in first.rglob("*.ipynb"))
    assert [str(p) for p in files] == [f"{a}/{a}.ipynb" for a in ASSIGNMENTS]
    for name in files:
        assert filecmp.cmp(first / name, second / name, shallow=False), f"{name} differs between two generations"
    assert not [p for p in first.iterdir() if p.name.startswith(".")], "staging folders were left behind"


def _region_lines(text: str, begin: str, end: str) -> tuple[set[str], set[str]]:
    """(lines inside begin..end regions, lines outside them), stripped, without blanks and markers."""
    inside, outside, within = set(), set(), False
    for raw in text.splitlines():
        line = raw.strip()
        if line == begin:
            within = True
        elif line == end:
            within = False
        elif line:
            (inside if within else outside).add(line)
    return inside, outside


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_has_no_solution_hidden_test_or_output(assignment):
    source = nbformat.read(course_folder.source_notebook(assignment, ROOT), as_version=4)
    release = nbformat.read(_release(assignment), as_version=4)
    text = json.dumps(release.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "BEGIN MARK SCHEME"):
        assert marker not in text, f"{assignment}: '{marker}' left in the release"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in release.cells if c.cell_type == "code")
    released = {_nbgrader(c).get("grade_id"): c for c in release.cells if _nbgrader(c)}
    for cell in source.cells:
        meta = _nbgrader(cell)
        if not meta:
            continue
        twin = released[meta["grade_id"]]
        if meta.get("solution") and cell.cell_type == "markdown":
            assert twin.source == "YOUR ANSWER HERE", f"{meta['grade_id']}: the model answer leaked"
            continue
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            secret, public = _region_lines(cell.source, begin, end)
            leaked = (secret - public) & {line.strip() for line in twin.source.splitlines()}
            assert not leaked, f"{assignment}/{meta['grade_id']}: lines from {begin} leaked: {sorted(leaked)}"
        if meta.get("solution"):
            assert "raise NotImplementedError()" in twin.source, f"{meta['grade_id']}: the stub is missing"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_starts_with_the_header_and_locks_tests(assignment):
    header = nbformat.read(ROOT / "solutions" / "header.ipynb", as_version=4)
    source = nbformat.read(course_folder.source_notebook(assignment, ROOT), as_version=4)
    release = nbformat.read(_release(assignment), as_version=4)
    count = len(header.cells)
    assert [c.source for c in release.cells[:count]] == [c.source for c in header.cells]
    assert "restart the kernel and run all cells" in release.cells[0].source.lower()
    assert "NAME" in release.cells[1].source
    assert [c.cell_type for c in release.cells[count:]] == [c.cell_type for c in source.cells]
    assert release.metadata["kernelspec"]["name"] == course_folder.KERNEL_NAME
    for cell in release.cells:
        meta = _nbgrader(cell)
        if meta.get("grade") and not meta.get("solution"):
            assert meta["locked"] and meta.get("checksum"), f"{meta['grade_id']}: test cells must be locked"
            assert cell.metadata.get("editable") is False and cell.metadata.get("deletable") is False


def test_generate_replaces_a_release_only_when_generation_succeeds(toy_course):
    released = release.generate(root=toy_course)
    assert released == [toy_course / "notebooks" / "toy" / "toy.ipynb"]
    before = released[0].read_bytes()
    (toy_course / "solutions" / "toy" / "toy.ipynb").write_text("{ this is not a notebook")
    with pytest.raises(RuntimeError, match="GenerateAssignment failed"):
        release.generate(root=toy_course)
    assert released[0].read_bytes() == before, "a failed generation must leave the previous release untouched"
    assert sorted(p.name for p in (toy_course / "notebooks").iterdir()) == ["toy"], "no staging folder left behind"
    assert not (toy_course / "gradebook.db").exists(), "generating files must not create a gradebook"


@pytest.mark.parametrize("how", ["command line", "formgrader API"])
def test_nbgrader_own_generate_keeps_the_release_when_it_fails(toy_course, how):
    """``nbgrader generate_assignment --force`` (or the formgrader's Generate) on a broken source keeps the release."""
    import subprocess
    import sys

    released = release.generate(root=toy_course)[0]
    before = released.read_bytes()
    broken = _toy_notebook(answer="def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b")  # no END SOLUTION
    nbformat.write(broken, toy_course / "solutions" / "toy" / "toy.ipynb")
    if how == "command line":
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "toy", "--force"],
                             cwd=toy_course, env=env, capture_output=True, text=True, timeout=180)
        log = run.stdout + run.stderr
        assert run.returncode != 0, "nbgrader should report the broken source"
        assert "previous release is kept" in log, log[-2000:]
    else:
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        config = course_folder.load_config(toy_course)
        result = NbGraderAPI(CourseDirectory(config=config), config=config).generate_assignment("toy", force=True)
        assert not result["success"], "the formgrader should report the broken source"
    assert released.read_bytes() == before, f"nbgrader's own generate ({how}) deleted or changed the release"
    assert sorted(p.name for p in (toy_course / "notebooks").iterdir()) == ["toy"], "no backup folder left behind"


def test_generate_check_command_reports_drift(toy_course, capsys):
    assert commands.generate_main(["--root", str(toy_course)]) == 0
    assert commands.generate_main(["--root", str(toy_course), "--check"]) == 0
    release = toy_course / "notebooks" / "toy" / "toy.ipynb"
    release.write_text(release.read_text().replace("# Toy", "# Edited by hand"))
    assert commands.generate_main(["--root", str(toy_course), "--check"]) == 1
    assert "notebooks/toy/toy.ipynb differs" in capsys.readouterr().out


# --------------------------------------------------------------------------- validation and grading (toy)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_validate_fails_when_a_test_or_a_cell_fails(toy_course, capsys):
    """The kit's validate exits 1 on a failing test (nbgrader's CLI exits 0) and reports raising cells."""
    release.generate(root=toy_course)
    good = validation.validate(toy_course / "solutions" / "toy" / "toy.ipynb", profile="smoke")
    assert good.ok and good.graded == {"test_add": (2.0, 2.0)} and not good.errors
    blank = validation.validate(course_folder.release_notebook("toy", toy_course), invert=True, profile="smoke")
    assert blank.ok and blank.failed == ["test_add"]

    broken = toy_course / "wrong.ipynb"
    nbformat.write(_toy_notebook("def add(a, b):\n    return a - b", extra="1 / 0"), broken)
    result = validation.validate(broken, profile="smoke")
    assert not result.ok and result.failed == ["test_add"]
    assert len(result.errors) == 2 and "ZeroDivisionError" in result.errors[0]
    assert commands.validate_main(["--root", str(toy_course), str(broken)]) == 1
    assert "fails: test_add" in capsys.readouterr().out
    assert commands.validate_main(["--root", str(toy_course), "toy"]) == 0


def test_collect_submissions_accepts_three_layouts(toy_course, tmp_path):
    release.generate(root=toy_course)
    blank = course_folder.release_notebook("toy", toy_course)
    inbox = tmp_path / "inbox"
    (inbox / "ana" / "toy").mkdir(parents=True)
    shutil.copy(blank, inbox / "ana" / "toy" / "toy.ipynb")  # nbgrader's layout
    (inbox / "ben").mkdir()
    shutil.copy(blank, inbox / "ben" / "toy.ipynb")  # <student>/<assignment>.ipynb
    shutil.copy(blank, inbox / "carla.ipynb")  # loose file: assignment found by its graded cells
    (inbox / "notes.txt").write_text("not a submission")
    nbformat.write(nbformat.v4.new_notebook(), inbox / "dan.ipynb")  # no graded cell: which assignment?
    (inbox / "eve.ipynb").write_text("{ half a notebook")
    collected = submissions.collect_submissions(inbox, toy_course)
    assert collected.found == {"toy": ["ana", "ben", "carla"]}
    assert [(Path(path).name, why.split(";")[0]) for path, why in collected.skipped] == [
        ("dan.ipynb", "has no graded cell of any assignment"),
        ("eve.ipynb", "not a readable notebook (JSONDecodeError)"),
    ]
    for student in ("ana", "ben", "carla"):
        assert (toy_course / "submitted" / student / "toy" / "toy.ipynb").read_bytes() == blank.read_bytes()
    assert not (toy_course / "submitted" / "dan").exists() and not (toy_course / "submitted" / "eve").exists()
    with pytest.raises(ValueError, match="unknown assignment"):
        submissions.collect_submissions(inbox, toy_course, assignment="tyo")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_autograde_command_grades_a_folder_then_exports_and_gives_feedback(toy_course, tmp_path, capsys):
    release.generate(root=toy_course)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    blank = nbformat.read(course_folder.release_notebook("toy", toy_course), as_version=4)
    nbformat.write(blank, inbox / "blank.ipynb")
    nbformat.write(submissions.solution_submission("toy", toy_course), inbox / "good.ipynb")
    assert commands.autograde_main([str(inbox), "--root", str(toy_course), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "toy: 2 submission(s) graded" in out and "blank" in out and "good" in out
    scores = {s.student: s.score for s in grader.submission_scores("toy", root=toy_course)}
    assert scores == {"blank": 0.0, "good": 2.0}

    # a file nbgrader cannot read: the others are graded, the command exits 1 and says who
    (inbox / "mangled.ipynb").write_text("{ not json")
    assert commands.autograde_main([str(inbox), "--root", str(toy_course), "--assignment", "toy", "--jobs", "2"]) == 1
    captured = capsys.readouterr()
    assert "could not grade mangled" in captured.err and "NotJSONError" in captured.err
    assert "toy: 2 submission(s) graded" in captured.out and "mangled                  NOT GRADED" in captured.out
    with pytest.raises(grader.GradingError) as caught:
        grader.autograde("toy", root=toy_course, students=["good", "mangled"])
    assert [s.student for s in caught.value.graded] == ["good"] and list(caught.value.failures) == ["mangled"]

    target = tmp_path / "grades.csv"
    assert commands.export_main(["--root", str(toy_course), "--output", str(target)]) == 0
    with target.open() as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    assert {name: float(row["score"]) for name, row in rows.items()} == scores | {"mangled": 0.0}
    assert all(float(row["max_score"]) == 2.0 for row in rows.values())
    assert rows["mangled"]["needs_manual_grade"] == "test_add", "an ungradable file stays flagged for a person"
    assert commands.feedback_main(["toy", "--root", str(toy_course), "--student", "blank", "--student", "good"]) == 0
    for student in scores:
        page = toy_course / "feedback" / student / "toy" / "toy.html"
        assert page.is_file() and "test_add" in page.read_text()


# --------------------------------------------------------------------------- timing prediction


def test_predicted_times_grow_with_images_and_slower_backbones():
    counts = {"photos": 3, "simpsons": 48, "photo_vs_drawing": 48}
    fast = timing.predict_notebook_seconds(0.01, counts)
    slow = timing.predict_notebook_seconds(0.04, counts)
    more = timing.predict_notebook_seconds(0.01, {k: 10 * v for k, v in counts.items()})
    assert set(ASSIGNMENTS) <= set(fast), "every assignment needs an entry in timing.NOTEBOOK_COSTS"
    for name, cost in timing.NOTEBOOK_COSTS.items():
        assert fast[name] >= cost.fixed_seconds > 0
        assert slow[name] >= fast[name] and more[name] >= fast[name]
        assert set(cost.datasets) <= set(counts)
    assert more["01_pretrained_scoring"] > fast["01_pretrained_scoring"]
    assert timing.predict_notebook_seconds(0.01, {})["01_pretrained_scoring"] == timing.NOTEBOOK_COSTS[
        "01_pretrained_scoring"
    ].fixed_seconds
    with pytest.raises(ValueError, match="positive"):
        timing.predict_notebook_seconds(0, counts)


# --------------------------------------------------------------------------- notebooks (slow: execute them)


@pytest.fixture(scope="session")
def kernel_env(kit_settings, shared_data) -> dict[str, str]:
    """What the kernels need: MobileNet a0.75 from the shared mirror, the shared datasets, the test cache."""
    return {
        "KIT_BACKBONE": "mobilenet",
        "KIT_ALPHA": "0.75",
        "KIT_CACHE_DIR": str(kit_settings.cache_dir),
        "KIT_WEIGHTS_MIRROR": str(shared_data / "keras_home" / "models"),
        "KIT_DATA_DIR": str(shared_data / "datasets"),
    }


def _copy_for_run(path: Path, tmp_path: Path) -> Path:
    """Run a copy in a scratch folder, so a notebook's files never land in the repository."""
    target = tmp_path / path.parent.name / path.name
    target.parent.mkdir(parents=True)
    shutil.copy(path, target)
    return target


@pytest.fixture
def executed_notebooks(monkeypatch) -> list:
    """Every notebook nbgrader's validator executes during the test, with its outputs."""
    from nbgrader.validator import Validator

    executed: list = []
    original = Validator._preprocess

    def recording(self, nb):
        nb = original(self, nb)
        executed.append(nb)
        return nb

    monkeypatch.setattr(Validator, "_preprocess", recording)
    return executed


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solutions_notebook_runs_and_passes_every_test(assignment, kernel_env, tmp_path, executed_notebooks):
    """Every solutions notebook runs top to bottom (smoke), passes its tests, and shows no warning or stderr."""
    notebook = _copy_for_run(course_folder.source_notebook(assignment, ROOT), tmp_path)
    _use_alternative_answers(notebook, assignment)
    result = validation.validate(notebook, profile="smoke", environment=kernel_env)
    assert result.profile == "smoke"
    assert not result.errors, f"{assignment} raised in the smoke profile:\n" + "\n".join(result.errors)
    assert result.ok, result.summary()
    assert set(result.graded) == set(_autograded(course_folder.source_notebook(assignment, ROOT)))
    assert len(executed_notebooks) == 1, "the validator executed the notebook once"
    noise = clean_outputs.noise(executed_notebooks[0])
    assert noise == [], f"{assignment} shows warnings or stderr a student would see:\n" + "\n".join(noise)
    for name in alternative_answers.USED_DOWNSTREAM.get(assignment, []):
        assert name in _answers_used_downstream(executed_notebooks[0]), (
            f"{assignment}: no cell after the exercises calls the student's {name}; the notebook must use the "
            "student's answer where it needs it, not the kit's"
        )
    if assignment == "02_retrain_simpsons":  # TensorBoard's step axis: phase 2 continues where phase 1 stopped
        runs = sorted((notebook.parent / "logs").glob("simpsons-*"))
        assert len(runs) == 1, f"notebook 02 logs one TensorBoard run beside itself, not {runs}"
        phase1, phase2 = (_epoch_steps(runs[0] / phase) for phase in ("phase 1", "phase 2"))
        assert phase1 == list(range(len(phase1))) and phase2 and phase2[0] == len(phase1), (
            f"TensorBoard's phase 2 must start at the epoch where phase 1 stopped (fit(..., initial_epoch=...)): "
            f"phase 1 logged epochs {phase1}, phase 2 {phase2}"
        )
    for needle, expected in EXPECTED_OUTPUTS.get(assignment, []):
        text = _printed(executed_notebooks[0], needle)
        assert expected.search(text), f"{assignment}: the cell with {needle!r} printed {text!r}, expected {expected.pattern!r}"


# Outputs the smoke run must show: (text of the cell's source, a pattern its printed output matches).
EXPECTED_OUTPUTS = {
    "02_retrain_simpsons": [  # the learning-rate finder before phase 1; the label form's retrain command
        ("lr_finder.find_learning_rate(", re.compile(r"Suggested: \d\.\de[-+]\d\d \(steepest descent\), .*phase 1 uses 0\.001")),
        ("top_losses.LabelMarker(", re.compile(r"retrain --images \S+ --labels simpsons_labels_marked\.csv")),
    ],
    "04_photo_vs_drawing": [  # leave one drawing style out: one head per style, each a line
        ("for style in datasets.PACS_DRAWING_DOMAINS", re.compile(r"art_painting left out.*\n.*cartoon left out.*\n.*sketch left out")),
        ("top_losses.top_losses(", re.compile(r"Hardest style when left out: (art_painting|cartoon|sketch), ")),
    ],
    "05_your_own_images": [  # the export, checked on the test split
        ("export.export_model(", re.compile(r"exported to \S+; checked on \d+ images of the test split")),
    ],
}


def _printed(notebook: nbformat.NotebookNode, needle: str) -> str:
    """The printed output (stdout) of the one code cell whose source contains ``needle``."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and needle in c.source]
    assert len(cells) == 1, f"expected one cell with {needle!r}, found {len(cells)}"
    return "".join(o.get("text", "") for o in cells[0].get("outputs", []) if o.get("output_type") == "stream")


def _epoch_steps(run: Path) -> list[int]:
    """The epochs of a Keras TensorBoard run's ``epoch_loss`` curve, read from its event files (no TensorFlow)."""
    import struct

    from tensorboard.compat.proto import event_pb2

    steps = set()
    for path in (run / "train").glob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at + 12 <= len(data):  # TFRecords: length (8 bytes), its CRC (4), the event, its CRC (4)
            (length,) = struct.unpack_from("<Q", data, at)
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                steps.add(event.step)
    return sorted(steps)


def _use_alternative_answers(path: Path, assignment: str) -> None:
    """Put tests/alternative_answers.py's answers in place of the reference solutions (cheap: same run)."""
    answers = alternative_answers.ANSWERS.get(assignment, {})
    notebook = nbformat.read(path, as_version=4)
    replaced = set()
    for cell in notebook.cells:
        grade_id = _nbgrader(cell).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id].strip("\n")
            replaced.add(grade_id)
    assert replaced == set(answers), f"{assignment}: no answer cell for {sorted(set(answers) - replaced)}"
    nbformat.write(notebook, path)


def _answers_used_downstream(notebook: nbformat.NotebookNode) -> set[str]:
    """Names of the alternative answers called by a cell that is neither an answer cell nor a test cell."""
    used: set[str] = set()
    for cell in notebook.cells:
        if cell.cell_type != "code" or _nbgrader(cell).get("solution") or _nbgrader(cell).get("grade"):
            continue
        for output in cell.get("outputs", []):
            for line in str(output.get("text", "")).splitlines():
                if line.startswith(alternative_answers.MARKER + " "):
                    used.add(line.split()[1])
    return used


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("assignment", GRADED)
def test_release_notebook_fails_every_graded_test(assignment, kernel_env, tmp_path):
    """Run without the ungraded code after the last test (it cannot change a grade), to save time."""
    notebook = tmp_path / f"{assignment}.ipynb"
    nbformat.write(_without_trailing_code(nbformat.read(_release(assignment), as_version=4)), notebook)
    result = validation.validate(notebook, invert=True, profile="smoke", environment=kernel_env)
    assert result.ok, result.summary()
    assert sorted(result.failed) == sorted(_autograded(course_folder.source_notebook(assignment, ROOT)))


# --------------------------------------------------------------------------- the simulated class

CLASS_ASSIGNMENT = "01_pretrained_scoring"
NO_THRESHOLD = '''def top_k_with_threshold(probabilities, class_names, k=5, min_probability=0.1):
    """Forgets the threshold: the k most probable labels, whatever their probability."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities)[:k]
    return {class_names[i]: float(probabilities[i]) for i in order}'''
LOOP_TIMEOUT = 30  # seconds per cell for this test: the grading profile's cell_timeout is longer


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory, kernel_env):
    """A course with assignment 01, six simulated students autograded in the grading profile.

    The assignment is notebook 01 with every graded cell (and everything before the last
    test) as it is in solutions/; only the ungraded demonstration cells after the last
    test are left out, so the class grades faster with identical checks.
    """
    root = tmp_path_factory.mktemp("class")
    (root / "solutions" / CLASS_ASSIGNMENT).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    notebook = nbformat.read(course_folder.source_notebook(CLASS_ASSIGNMENT, ROOT), as_version=4)
    nbformat.write(_without_trailing_code(notebook), course_folder.source_notebook(CLASS_ASSIGNMENT, root))
    release.generate(root=root)
    solution = submissions.solution_submission(CLASS_ASSIGNMENT, root)
    answers = {_nbgrader(c).get("grade_id"): c.source for c in solution.cells}
    wrong = submissions.edit_submission(solution, replace={"top_k_with_threshold": NO_THRESHOLD})
    students = {
        "solution": solution,
        "blank": nbformat.read(course_folder.release_notebook(CLASS_ASSIGNMENT, root), as_version=4),
        "no_threshold": wrong,
        "deleted_test": submissions.edit_submission(wrong, delete=["test_top_k_threshold"]),
        "duplicated_test": submissions.edit_submission(solution, duplicate=["test_preprocess"]),
        "infinite_loop": submissions.edit_submission(
            solution, replace={"results_table": "while True:\n    pass\n" + answers["results_table"]}
        ),
    }
    for student, notebook in students.items():
        target = root / "submitted" / student / CLASS_ASSIGNMENT / f"{CLASS_ASSIGNMENT}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(notebook, target)
    scores = grader.autograde(CLASS_ASSIGNMENT, root=root, timeout=LOOP_TIMEOUT, environment=kernel_env, jobs=2)
    return root, {s.student: s for s in scores}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_simulated_class_scores_exactly(graded_class):
    root, scores = graded_class
    points = _points(course_folder.source_notebook(CLASS_ASSIGNMENT, root))
    assert points == _points(course_folder.source_notebook(CLASS_ASSIGNMENT, ROOT)), "the class grades 01's own cells"
    auto = _autograded(course_folder.source_notebook(CLASS_ASSIGNMENT, root))
    written = sorted(set(points) - set(auto))
    assert written, "assignment 01 has a written answer graded by hand"

    def cells(student: str) -> dict[str, float]:
        return {grade_id: cell.score for grade_id, cell in scores[student].cells.items()}

    assert set(scores) == {"solution", "blank", "no_threshold", "deleted_test", "duplicated_test", "infinite_loop"}
    for student, score in scores.items():
        assert set(score.cells) == set(points), f"{student}: one grade per graded cell, none missing, none twice"
        assert score.max_score == sum(points.values())

    # the solution earns every autograded point; its written answer waits for the instructor
    assert cells("solution") == auto | {w: 0.0 for w in written}
    assert scores["solution"].needs_manual_grade == written
    # the blank release: 0 everywhere, and an untouched written answer is not even sent to the instructor
    assert cells("blank") == {grade_id: 0.0 for grade_id in points}
    assert scores["blank"].needs_manual_grade == []
    # forgetting the threshold loses exactly the cell that checks it
    lost = {"test_top_k_threshold"}
    assert cells("no_threshold") == {g: (0.0 if g in lost else p) for g, p in auto.items()} | {w: 0.0 for w in written}
    # deleting the failing test does not help: it is put back and run
    assert cells("deleted_test") == cells("no_threshold")
    # a duplicated test cell counts once
    assert cells("duplicated_test") == cells("solution")
    # an infinite loop in an answer is interrupted after the timeout; only that exercise is lost
    assert cells("infinite_loop") == {g: (0.0 if g == "test_results_table" else p) for g, p in auto.items()} | {
        w: 0.0 for w in written
    }


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_simulated_class_manual_grade_export_and_feedback(graded_class, tmp_path):
    from nbgrader.api import Gradebook

    root, scores = graded_class
    points = _points(course_folder.source_notebook(CLASS_ASSIGNMENT, root))
    written = scores["solution"].needs_manual_grade
    config = course_folder.load_config(root)
    with Gradebook(config.CourseDirectory.db_url, config.CourseDirectory.course_id) as gradebook:
        for grade_id in written:
            grade = gradebook.find_grade(grade_id, CLASS_ASSIGNMENT, CLASS_ASSIGNMENT, "solution")
            grade.manual_score = points[grade_id]
            grade.needs_manual_grade = False
        gradebook.db.commit()
    after = {s.student: s for s in grader.submission_scores(CLASS_ASSIGNMENT, root=root)}
    assert after["solution"].score == after["solution"].max_score == sum(points.values())
    assert after["solution"].needs_manual_grade == []

    table = grader.grades_table(CLASS_ASSIGNMENT, root=root, per_cell=True)
    assert len(table) == len(scores) * len(points)
    exported = grader.export(tmp_path / "grades.csv", root=root)
    with exported.open() as handle:
        rows = {row["student"]: float(row["score"]) for row in csv.DictReader(handle)}
    assert rows == {student: score.score for student, score in after.items()}
    pages = grader.feedback(CLASS_ASSIGNMENT, root=root, students=["solution", "blank"])
    assert [p.parent.parent.name for p in pages] == ["solution", "blank"]
    assert all("test_top_k_threshold" in p.read_text() for p in pages)
