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
  the gradebook exists and lists every graded assignment (an ungraded notebook, the
  setup check 00 or notebook 05, is no assignment: see :func:`list_graded_assignments_only`), the course's
  exchange folder exists (release and collect work on a single laptop, no alarm on the
  formgrader's page), and the server runs in the course folder, where nbgrader reads
  ``nbgrader_config.py``.

What the student's server turns off lives in :data:`STUDENT_CONFIG_DIR`, a Jupyter
config folder added to ``JUPYTER_CONFIG_PATH``; a JupyterHub can add the same folder
for its single-user servers. What both servers share lives in :data:`COMMON_CONFIG_DIR`:
the Launcher offers one kernel, the kit's ``tl-workshop`` (a notebook cannot start in a
Python without the kit), and JupyterLab's "get notified about official Jupyter news?"
pop-up is off (nothing to fetch in a classroom). Both servers open TensorBoard from the
Launcher (see :mod:`helpers.tensorboard_proxy`).
"""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Mapping

from helpers import course, grading, kernel

ROOT = Path(__file__).resolve().parents[1]
#: Jupyter config folder of the student's server (server extensions and JupyterLab plugins turned off).
STUDENT_CONFIG_DIR = Path(__file__).resolve().parent / "jupyter" / "student"
#: Jupyter config folder of both servers: the kit's kernel only, no news pop-up.
COMMON_CONFIG_DIR = Path(__file__).resolve().parent / "jupyter" / "common"
#: JupyterLab's plugin that asks "Would you like to get notified about official Jupyter news?".
NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"
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


def _other_config_paths(env: Mapping[str, str]) -> list[str]:
    kit = {str(STUDENT_CONFIG_DIR), str(COMMON_CONFIG_DIR)}
    return [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p not in kit]


def student_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the student's server: :data:`STUDENT_CONFIG_DIR` and :data:`COMMON_CONFIG_DIR`
    first on ``JUPYTER_CONFIG_PATH``."""
    env = dict(os.environ if environ is None else environ)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(STUDENT_CONFIG_DIR), str(COMMON_CONFIG_DIR), *_other_config_paths(env)])
    return env


def instructor_command(port: int, headless: bool, course_root: Path) -> list[str]:
    """The instructor's JupyterLab command line (run it in ``course_root`` with :func:`instructor_environment`)."""
    return _lab_base(port, headless, course_root) + [f"--ServerApp.contents_manager_class={CONTENTS_MANAGER}"]


def instructor_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the instructor's server: this environment's ``bin/`` first on ``PATH``,
    :data:`COMMON_CONFIG_DIR` first on ``JUPYTER_CONFIG_PATH`` (and no student config)."""
    env = dict(os.environ if environ is None else environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts]])
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(COMMON_CONFIG_DIR), *_other_config_paths(env)])
    return env


# --------------------------------------------------------------------------- graded assignments only


@functools.lru_cache(maxsize=64)
def _notebook_is_graded(path: str, mtime_ns: int, size: int) -> bool:
    with open(path, encoding="utf-8") as stream:
        cells = json.load(stream).get("cells", [])
    return any(
        isinstance(meta := cell.get("metadata", {}).get("nbgrader"), dict) and (meta.get("grade") or meta.get("task"))
        for cell in cells
    )


def is_graded(folder: Path | str) -> bool:
    """Whether an assignment's source folder holds a graded cell (a test or a task with points).

    Notebooks 00 (the setup check) and 05 (your own images) have none: they are released
    to the students like the others, and never graded.
    """
    found = False
    for notebook in sorted(Path(folder).glob("*.ipynb")):
        try:
            info = notebook.stat()
            found = _notebook_is_graded(str(notebook), info.st_mtime_ns, info.st_size)
        except (OSError, ValueError):
            found = True  # a notebook nbgrader cannot read either: listed, so that its error shows
        if found:
            break
    return found


def graded_assignments(root: Path | str | None = None) -> list[str]:
    """The course's assignments that have something to grade (all but notebooks 00 and 05), sorted."""
    root = course.resolve_root(root)
    return [name for name in course.list_assignments(root) if is_graded(root / "solutions" / name)]


def list_graded_assignments_only() -> None:
    """Make nbgrader's formgrader (and its API) list only the assignments with a graded cell.

    nbgrader lists every folder of ``solutions/`` as an assignment; notebooks 00 and 05
    (ungraded, but released to the students from the same folder) would show as drafts to
    release and collect. ``nbgrader_config.py`` calls this, so every nbgrader process of the
    course (the formgrader included, which reads that file) leaves ungraded folders out; on a
    hub, ``nbgrader release_assignment 05_your_own_images`` still releases one. Calling it
    again does nothing.
    """
    from nbgrader.apps.api import NbGraderAPI

    if getattr(NbGraderAPI.get_source_assignments, "graded_only", False):
        return
    list_sources = NbGraderAPI.get_source_assignments

    def get_source_assignments(self: Any) -> set[str]:
        def folder(name: str) -> str:
            return self.coursedir.format_path(self.coursedir.source_directory, ".", name)

        return {name for name in list_sources(self) if is_graded(folder(name))}

    get_source_assignments.graded_only = True  # type: ignore[attr-defined]
    NbGraderAPI.get_source_assignments = get_source_assignments


def prepare_exchange(root: Path | str | None = None) -> Path:
    """Create the course's exchange folder (``Exchange.root`` of ``nbgrader_config.py``) if it is missing.

    The kit's ``nbgrader_config.py`` puts it inside the course folder (``exchange/``,
    git-ignored), so that release, fetch, submit and collect work on a single laptop and
    the formgrader shows no "exchange directory does not exist" alarm; on the classroom
    hub it is the hub's shared folder. It is made writable by all, as nbgrader's own
    release makes it (students submit into it).

    Returns:
        The exchange folder.

    Raises:
        OSError: It is missing and cannot be created (a hub's folder needs the hub's setup).
    """
    root = course.find_course_root(root)
    config = course.load_config(root)
    folder = Path(str(config.Exchange.get("root", "") or "/usr/local/share/nbgrader/exchange"))
    folder = folder if folder.is_absolute() else root / folder
    if not folder.is_dir():
        folder.mkdir(parents=True)
        mode = 0o777 | (stat.S_ISGID | stat.S_ISVTX if config.CourseDirectory.get("groupshared", False) else 0)
        folder.chmod(mode)  # what nbgrader's release sets (it would change it, with a warning)
    return folder


def prepare_gradebook(root: Path | str | None = None) -> list[str]:
    """Create the course's gradebook if needed and record every graded assignment not yet in it.

    This is what the formgrader needs before its first page: without it, the formgrader
    creates the database itself and fails where ``alembic`` is not on ``PATH``. An ungraded
    assignment (notebooks 00 and 05) is not recorded, and one that an earlier version of the
    kit recorded is removed from the gradebook while nobody has submitted it.

    Returns:
        The assignments recorded now (empty when the gradebook already had them all).
    """
    from nbgrader.api import Gradebook

    root = course.find_course_root(root)
    config = course.load_config(root)
    db_url = str(config.CourseDirectory.db_url)
    graded = graded_assignments(root)
    ungraded = set(course.list_assignments(root)) - set(graded)
    with course.kernel_environment(course.tools_on_path()):
        with Gradebook(db_url, config.CourseDirectory.course_id) as gradebook:
            known = {assignment.name for assignment in gradebook.assignments}
            for name in sorted(ungraded & known):
                if not gradebook.find_assignment(name).submissions:
                    gradebook.remove_assignment(name)
        missing = [name for name in graded if name not in known]
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
    try:
        print(f"== Exchange {prepare_exchange(root)} (release and collect)")
    except OSError as error:
        print(f"== No exchange folder ({error}): release and collect need one (on the classroom hub, the hub's); "
              "grading works without it.")
    if kernel.installed() is None:  # the only kernel the servers offer
        print(f"Installing the notebooks' kernel {kernel.KERNEL_NAME!r} into {kernel.install()}")
    headless = args.headless or not (os.environ.get("DISPLAY") or sys.platform == "darwin" or os.name == "nt")
    print(f"== Launching the instructor's JupyterLab on {root} at http://127.0.0.1:{args.port}/lab "
          "(Nbgrader menu > Formgrader; Ctrl-C to stop)")
    try:
        return subprocess.call(instructor_command(args.port, headless, root), cwd=root, env=instructor_environment())
    except KeyboardInterrupt:
        return 0
