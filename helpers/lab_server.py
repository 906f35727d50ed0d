"""The student's JupyterLab server, and what every JupyterLab server of the kit shares.

The **student's server** (``make workshop``, ``python -m helpers workshop``) serves
``notebooks/`` with none of nbgrader's instructor tools: no formgrader, no "Create
Assignment" toolbar, no Assignments/Courses tabs (which need an exchange folder a
laptop does not have). The notebook's *Validate* button stays: it is the student's
own check. Kernels left idle (a closed tab keeps its TensorFlow kernel and its memory)
are shut down after ``cull_idle_minutes``.

What the student's server turns off lives in :data:`STUDENT_CONFIG_DIR`, a Jupyter
config folder added to ``JUPYTER_CONFIG_PATH``; a JupyterHub adds the same folder for
its single-user servers. What every server of the kit shares (the instructor's, in
:mod:`instructor_tools.serving.instructor_lab`, too) lives in :data:`COMMON_CONFIG_DIR`:
the Launcher offers one kernel, the kit's ``tl-workshop`` (a notebook cannot start in a
Python without the kit), and JupyterLab's "get notified about official Jupyter news?"
pop-up is off (nothing to fetch in a classroom). Every server opens TensorBoard from the
Launcher (see :mod:`helpers.tensorboard_in_lab`).
"""


from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

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
#: The contents manager of both servers (:mod:`helpers.unmodified_notebooks`): notebooks open unmodified.
CONTENTS_MANAGER = "helpers.unmodified_notebooks.KitContentsManager"


def lab_base(port: int, headless: bool, root_dir: Path) -> list[str]:
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
    return lab_base(port, headless, notebook_dir) + culling_options(cull_idle_minutes)


def other_config_paths(env: Mapping[str, str]) -> list[str]:
    kit = {str(STUDENT_CONFIG_DIR), str(COMMON_CONFIG_DIR)}
    return [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p not in kit]


def student_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the student's server: :data:`STUDENT_CONFIG_DIR` and :data:`COMMON_CONFIG_DIR`
    first on ``JUPYTER_CONFIG_PATH``."""
    env = dict(os.environ if environ is None else environ)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(STUDENT_CONFIG_DIR), str(COMMON_CONFIG_DIR), *other_config_paths(env)])
    return env
