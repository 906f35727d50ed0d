"""Grading works wherever the course and its Python live, and says why when the kernel cannot start.

The sandbox replaces ``/tmp`` and its own home (``/home/student``) with private folders.
These tests build, themselves, the layouts that used to vanish under them: the kernel's
virtual environment under ``/tmp`` (where CI runners and new users put clones), under
the sandbox's home, and a base Python installation copied under ``/tmp`` (outside
``/usr``, as pyenv or conda put it); each grades a small class sandboxed. A kernel
whose Python is missing is reported by the probe, in plain words, before any
submission is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import nbformat
import pytest

from helpers.kernel import KERNEL_NAME
from instructor_tools.course import commands, course_folder, release, submissions
from instructor_tools.grading import grader
from instructor_tools.isolation import sandbox

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "layout"
LIMITS = sandbox.Limits(memory_mb=512, processes=64, disk_mb=64, open_files=256, output_kb=64)


def _course(root: Path) -> Path:
    """A one-exercise course (no TensorFlow) in ``root``."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": KERNEL_NAME, "language": "python", "display_name": "kit"}}
    answer = nbformat.v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION")
    answer.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": "double",
                                   "schema_version": 3}
    test = nbformat.v4.new_code_cell('"""double doubles."""\nassert double(4) == 8, "double(4) should be 8"')
    test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "test_double",
                                 "points": 1.0, "schema_version": 3}
    notebook.cells = [nbformat.v4.new_markdown_cell("# Double"), answer, test]
    for index, cell in enumerate(notebook.cells):
        cell.id = f"layout-{index}"
    (root / "solutions" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    nbformat.write(notebook, course_folder.source_notebook(ASSIGNMENT, root))
    release.generate(root=root)
    for student, graded in (("honest", submissions.solution_submission(ASSIGNMENT, root)),
                            ("blank", nbformat.read(course_folder.release_notebook(ASSIGNMENT, root), as_version=4))):
        target = root / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(graded, target)
    return root


def _environment(folder: Path, python: str) -> Path:
    """A virtual environment made by ``python`` in ``folder`` that sees this environment's packages, and
    the course kernel installed in it; returns its ``share/jupyter`` (for ``JUPYTER_PATH``)."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    inner = Path(subprocess.run(
        [str(folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    # addsitedir also runs this environment's .pth files (the kit's editable install).
    (inner / "kit-test.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    subprocess.run([str(folder / "bin" / "python"), "-m", "helpers", "kernel"], check=True, capture_output=True)
    return folder / "share" / "jupyter"


def _copied_base_python(target: Path) -> str:
    """This Python's base installation (interpreter, shared library, standard library) copied to ``target``."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (target / "bin").mkdir(parents=True)
    shutil.copy2(Path(sys._base_executable).resolve(), target / "bin" / version)
    (target / "lib").mkdir()
    for library in (base / "lib").glob(f"lib{version}*"):
        shutil.copy2(library, target / "lib" / library.name)
    shutil.copytree(
        base / "lib" / version, target / "lib" / version, symlinks=True,
        ignore=shutil.ignore_patterns("site-packages", "test", "tests", "idlelib", "tkinter", "__pycache__"),
    )
    return str(target / "bin" / version)


@pytest.fixture
def kernel_from(monkeypatch):
    """Make the grader use the course kernel of another environment (``JUPYTER_PATH``), probe afresh."""

    def use(share: Path) -> None:
        monkeypatch.setenv("JUPYTER_PATH", str(share))
        sandbox.probe.cache_clear()

    yield use
    sandbox.probe.cache_clear()


def _needs_bubblewrap() -> None:
    if not shutil.which("bwrap") or not sys.platform.startswith("linux"):
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap): the sandbox cannot be tested here")


def _grade_sandboxed(root: Path) -> dict[str, float]:
    scores = grader.autograde(ASSIGNMENT, root=root, limits=LIMITS, sandboxing="require", timeout=30)
    for score in scores:
        assert score.notes[0].startswith("sandboxed"), score.notes
    return {score.student: score.score for score in scores}


@pytest.mark.timeout(300)
def test_grading_with_the_course_and_its_environment_under_tmp(tmp_path, kernel_from):
    """The layout of a clone under /tmp: the private /tmp must not hide the kernel's environment."""
    _needs_bubblewrap()
    assert str(tmp_path).startswith("/tmp/"), "pytest's folders are under /tmp here"
    kernel_from(_environment(tmp_path / "clone" / ".venv", sys._base_executable))
    assert sandbox.probe().available, sandbox.probe().reason
    assert _grade_sandboxed(_course(tmp_path / "clone" / "course")) == {"honest": 1.0, "blank": 0.0}


@pytest.mark.timeout(300)
def test_grading_with_the_environment_under_the_sandboxs_own_home(tmp_path, kernel_from):
    """An environment under /home/student, the folder the sandbox replaces with the student's private home."""
    _needs_bubblewrap()
    home = Path(sandbox.HOME)
    made_home = not home.exists()
    if made_home and os.geteuid() != 0:
        pytest.skip(f"{home} does not exist and only root may create it")
    folder = home / f".kit-test-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True)
        kernel_from(_environment(folder / "venv", sys._base_executable))
        assert sandbox.probe().available, sandbox.probe().reason
        assert _grade_sandboxed(_course(tmp_path / "course")) == {"honest": 1.0, "blank": 0.0}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if made_home:
            shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(300)
def test_grading_with_a_base_python_outside_usr_under_tmp(tmp_path, kernel_from):
    """A Python installation of its own (as pyenv or conda put it), here under the private /tmp."""
    _needs_bubblewrap()
    python = _copied_base_python(tmp_path / "opt" / "python")
    kernel_from(_environment(tmp_path / "venv", python))
    paths = sandbox._python_paths(str(tmp_path / "venv" / "bin" / "python"))
    assert (tmp_path / "opt" / "python").resolve() in paths, f"the base installation is bound: {paths}"
    assert sandbox.probe().available, sandbox.probe().reason
    assert _grade_sandboxed(_course(tmp_path / "course")) == {"honest": 1.0, "blank": 0.0}


@pytest.mark.timeout(300)
def test_the_probe_says_why_when_the_kernels_python_is_missing(tmp_path, kernel_from, capsys):
    """A kernel whose base Python was removed: the probe fails with the kernel's own words, nothing is graded."""
    _needs_bubblewrap()
    python = _copied_base_python(tmp_path / "opt" / "python")
    kernel_from(_environment(tmp_path / "venv", python))
    shutil.rmtree(tmp_path / "opt")  # the installation the environment links to is gone
    found = sandbox.probe()
    assert not found.available
    assert f"the kernel {KERNEL_NAME!r} does not start inside the grading sandbox" in found.reason, found.reason
    assert "not found" in found.reason or "No such file" in found.reason, f"the failed exec is quoted: {found.reason}"
    assert "then grade again" in found.reason, "the message says what to do"
    root = _course(tmp_path / "course")
    assert commands.autograde_main([ASSIGNMENT, "--root", str(root), "--require-sandbox"]) == 2
    assert "does not start inside the grading sandbox" in capsys.readouterr().err
    with pytest.raises(sandbox.KernelCannotStart, match="does not start for grading"):
        grader.autograde(ASSIGNMENT, root=root, sandboxing="off")
    assert not (root / "autograded").exists(), "no submission was touched"


def test_a_bind_over_the_sandboxs_own_home_is_refused_with_the_reason():
    """A mount that would hide the private home is a clear error, not a kernel that cannot start."""
    mounts = [("/home", ["--ro-bind", "/srv/env", "/home"]), ("/tmp", ["--tmpfs", "/tmp"])]
    with pytest.raises(sandbox.SandboxUnavailable, match="over the sandbox's own /home/student"):
        sandbox._ordered_mounts(mounts)


def test_mounts_go_from_the_root_down_whatever_order_they_come_in():
    """A private /tmp comes before an environment bound under it, so the environment shows through."""
    mounts = [
        ("/tmp/clone/.venv", ["--ro-bind", "/tmp/clone/.venv", "/tmp/clone/.venv"]),
        ("/tmp", ["--size", "1", "--tmpfs", "/tmp"]),
        ("/home/student/.pyenv", ["--ro-bind", "/home/student/.pyenv", "/home/student/.pyenv"]),
        ("/home/student", ["--size", "1", "--tmpfs", "/home/student"]),
    ]
    words = sandbox._ordered_mounts(mounts)
    assert words.index("/tmp") < words.index("/tmp/clone/.venv")
    assert words.index("/home/student") < words.index("/home/student/.pyenv")
    assert words[words.index("--tmpfs") - 2] == "--size", "a tmpfs keeps its size right before it"
