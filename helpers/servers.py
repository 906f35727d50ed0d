"""The kit's two JupyterLab servers: the student's and the instructor's.

- The **student's server** (``make workshop``, ``python -m helpers workshop``) serves
  ``notebooks/`` with none of nbgrader's instructor tools: no formgrader, no "Create
  Assignment" toolbar, no Assignments/Courses tabs (which need an exchange folder a
  laptop does not have). The notebook's *Validate* button stays: it is the student's
  own check. Kernels left idle (a closed tab keeps its TensorFlow kernel and its memory)
  are shut down after ``cull_idle_minutes``.
- The **instructor's server** (``make instructor``, ``python -m helpers instructor``)
  serves the course folder with the formgrader working from the first click: the
  environment's ``bin/`` comes first on ``PATH`` (nbgrader runs ``alembic`` from there),
  the gradebook exists and lists every assignment, and the server runs in the course
  folder, where nbgrader reads ``nbgrader_config.py``.

What the student's server turns off lives in :data:`STUDENT_CONFIG_DIR`, a Jupyter
config folder added to ``JUPYTER_CONFIG_PATH``; a JupyterHub can add the same folder
for its single-user servers. Both servers open TensorBoard from the Launcher (see
:mod:`helpers.tensorboard_proxy`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from helpers import course, grading

ROOT = Path(__file__).resolve().parents[1]
#: Jupyter config folder of the student's server (server extensions and JupyterLab plugins turned off).
STUDENT_CONFIG_DIR = Path(__file__).resolve().parent / "jupyter" / "student"
#: nbgrader's JupyterLab plugins that only an instructor (or a course with an exchange) uses.
INSTRUCTOR_PLUGINS = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:assignment-list",
    "@jupyter/nbgrader:course-list",
    "@jupyter/nbgrader:menu",
)
#: nbgrader's server extensions that only an instructor (or a course with an exchange) uses.
INSTRUCTOR_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
)
DEFAULT_CULL_IDLE_MINUTES = 30.0
#: The contents manager of both servers (:mod:`helpers.contents`): notebooks open unmodified.
CONTENTS_MANAGER = "helpers.contents.KitContentsManager"


def _lab_base(port: int, headless: bool, root_dir: Path) -> list[str]:
    command = [
        sys.executable, "-m", "jupyter", "lab",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
    ]
    if headless:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI run as root; Jupyter refuses otherwise
    return command


def culling_options(cull_idle_minutes: float) -> list[str]:
    """Command-line options that shut down kernels idle for ``cull_idle_minutes`` (0 = never).

    A kernel is culled only when no browser tab is connected to it, so a student thinking
    in front of an open notebook keeps theirs.

    >>> culling_options(20)[:1]
    ['--MappingKernelManager.cull_idle_timeout=1200']
    >>> culling_options(0)
    []
    """
    if isinstance(cull_idle_minutes, bool) or not isinstance(cull_idle_minutes, (int, float)) or cull_idle_minutes < 0:
        raise ValueError(f"cull_idle_minutes must be a number of minutes >= 0 (0 = never), not {cull_idle_minutes!r}.")
    if cull_idle_minutes == 0:
        return []
    seconds = max(1, round(cull_idle_minutes * 60))
    return [
        f"--MappingKernelManager.cull_idle_timeout={seconds}",
        f"--MappingKernelManager.cull_interval={max(1, min(60, seconds // 2))}",
        "--MappingKernelManager.cull_connected=False",
    ]


def student_command(
    port: int,
    headless: bool,
    notebook_dir: Path,
    cull_idle_minutes: float = DEFAULT_CULL_IDLE_MINUTES,
) -> list[str]:
    """The student's JupyterLab command line (run it with :func:`student_environment`)."""
    return _lab_base(port, headless, notebook_dir) + culling_options(cull_idle_minutes)


def student_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the student's server: :data:`STUDENT_CONFIG_DIR` first on ``JUPYTER_CONFIG_PATH``."""
    env = dict(os.environ if environ is None else environ)
    paths = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p != str(STUDENT_CONFIG_DIR)]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(STUDENT_CONFIG_DIR), *paths])
    return env


def instructor_command(port: int, headless: bool, course_root: Path) -> list[str]:
    """The instructor's JupyterLab command line (run it in ``course_root`` with :func:`instructor_environment`)."""
    return _lab_base(port, headless, course_root) + [f"--ServerApp.contents_manager_class={CONTENTS_MANAGER}"]


def instructor_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the instructor's server: this environment's ``bin/`` first on ``PATH``, no student config."""
    env = dict(os.environ if environ is None else environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts]])
    paths = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p != str(STUDENT_CONFIG_DIR)]
    if paths:
        env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths)
    else:
        env.pop("JUPYTER_CONFIG_PATH", None)
    return env


def prepare_gradebook(root: Path | str | None = None) -> list[str]:
    """Create the course's gradebook if needed and record every assignment not yet in it.

    This is what the formgrader needs before its first page: without it, the formgrader
    creates the database itself and fails where ``alembic`` is not on ``PATH``.

    Returns:
        The assignments recorded now (empty when the gradebook already had them all).
    """
    from nbgrader.api import Gradebook

    root = course.find_course_root(root)
    config = course.load_config(root)
    db_url = str(config.CourseDirectory.db_url)
    with course.kernel_environment(course.tools_on_path()):
        with Gradebook(db_url, config.CourseDirectory.course_id) as gradebook:
            known = {assignment.name for assignment in gradebook.assignments}
        missing = [name for name in course.list_assignments(root) if name not in known]
        for name in missing:
            grading.register_assignment(name, root=root, db_url=db_url)
    return missing


def instructor_main(argv: list[str] | None = None) -> int:
    """``python -m helpers instructor``: prepare the gradebook, then JupyterLab on the course folder."""
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(
        prog="python -m helpers instructor",
        description="JupyterLab on the course folder with nbgrader's formgrader ready (gradebook, tools on PATH).",
    )
    parser.add_argument("--port", type=int, default=8889, help="port for JupyterLab (default 8889)")
    parser.add_argument("--headless", action="store_true", help="do not open a browser (servers, CI)")
    parser.add_argument("--root", type=Path, default=None, help="course folder (default: the one holding nbgrader_config.py)")
    args = parser.parse_args(list(argv or []))

    root = course.find_course_root(args.root)
    recorded = prepare_gradebook(root)
    print(f"== Gradebook {course.load_config(root).CourseDirectory.db_url}: "
          + (f"recorded {', '.join(recorded)}" if recorded else "every assignment already recorded"))
    headless = args.headless or not (os.environ.get("DISPLAY") or sys.platform == "darwin" or os.name == "nt")
    print(f"== Launching the instructor's JupyterLab on {root} at http://127.0.0.1:{args.port}/lab "
          "(Nbgrader menu > Formgrader; Ctrl-C to stop)")
    try:
        return subprocess.call(instructor_command(args.port, headless, root), cwd=root, env=instructor_environment())
    except KeyboardInterrupt:
        return 0
