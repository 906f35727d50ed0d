"""The instructor's JupyterLab server: the course folder with nbgrader's formgrader ready.

``make instructor`` / ``python -m instructor_tools instructor`` serves the course folder
with the formgrader working from the first click: the environment's ``bin/`` comes first
on ``PATH`` (nbgrader runs ``alembic`` from there), the gradebook exists and lists every
graded assignment (an ungraded notebook, the setup check 00 or notebook 05, is no
assignment: see :func:`list_graded_assignments_only`), the course's exchange folder
exists (release and collect work on a single laptop, no alarm on the formgrader's page),
and the server runs in the course folder, where nbgrader reads ``nbgrader_config.py``.
It shares the student's server's base (:mod:`helpers.lab_server`): one kernel, no news
pop-up, TensorBoard in the Launcher, notebooks that open unmodified.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Mapping

from helpers import kernel
from helpers.lab_server import COMMON_CONFIG_DIR, CONTENTS_MANAGER, lab_base, other_config_paths
from instructor_tools.course import course_folder
from instructor_tools.grading import grader


def instructor_command(port: int, headless: bool, course_root: Path) -> list[str]:
    """The instructor's JupyterLab command line (run it in ``course_root`` with :func:`instructor_environment`)."""
    return lab_base(port, headless, course_root) + [f"--ServerApp.contents_manager_class={CONTENTS_MANAGER}"]


def instructor_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the instructor's server: this environment's ``bin/`` first on ``PATH``,
    :data:`COMMON_CONFIG_DIR` first on ``JUPYTER_CONFIG_PATH`` (and no student config)."""
    env = dict(os.environ if environ is None else environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts]])
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(COMMON_CONFIG_DIR), *other_config_paths(env)])
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
    root = course_folder.resolve_root(root)
    return [name for name in course_folder.list_assignments(root) if is_graded(root / "solutions" / name)]


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
    root = course_folder.find_course_root(root)
    config = course_folder.load_config(root)
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

    root = course_folder.find_course_root(root)
    config = course_folder.load_config(root)
    db_url = str(config.CourseDirectory.db_url)
    graded = graded_assignments(root)
    ungraded = set(course_folder.list_assignments(root)) - set(graded)
    with course_folder.kernel_environment(course_folder.tools_on_path()):
        with Gradebook(db_url, config.CourseDirectory.course_id) as gradebook:
            known = {assignment.name for assignment in gradebook.assignments}
            for name in sorted(ungraded & known):
                if not gradebook.find_assignment(name).submissions:
                    gradebook.remove_assignment(name)
        missing = [name for name in graded if name not in known]
        for name in missing:
            grader.register_assignment(name, root=root, db_url=db_url)
    return missing


def instructor_main(argv: list[str] | None = None) -> int:
    """``python -m instructor_tools instructor``: prepare the gradebook, then JupyterLab on the course folder."""
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(
        prog="python -m instructor_tools instructor",
        description="JupyterLab on the course folder with nbgrader's formgrader ready (gradebook, tools on PATH).",
    )
    parser.add_argument("--port", type=int, default=8889, help="port for JupyterLab (default 8889)")
    parser.add_argument("--headless", action="store_true", help="do not open a browser (servers, CI)")
    parser.add_argument("--root", type=Path, default=None, help="course folder (default: the one holding nbgrader_config.py)")
    args = parser.parse_args(list(argv or []))

    root = course_folder.find_course_root(args.root)
    recorded = prepare_gradebook(root)
    print(f"== Gradebook {course_folder.load_config(root).CourseDirectory.db_url}: "
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
