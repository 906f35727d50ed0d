"""The instructor's command line: ``python -m instructor_tools <command>`` (also installed as ``tlkit-instructor``).

The course pipeline (generate, validate), grading (autograde, deadlines, similarity,
export, feedback), the servers (the instructor's JupyterLab, the classroom hub) and the
zip students receive. The students' commands are ``python -m helpers <command>``.
"""

from __future__ import annotations

import sys
from typing import Sequence

from helpers.cli import run_command

# command -> (module:function, one-line help), as in helpers.cli.COMMANDS.
COMMANDS: dict[str, tuple[str, str]] = {
    "instructor": ("instructor_tools.serving.instructor_lab:instructor_main", "Launch the instructor's JupyterLab on the course folder (formgrader ready)."),
    "bundle": ("instructor_tools.course.bundle:main", "Build the zip students receive (notebooks, helpers, environment; no solutions)."),
    "hub": ("instructor_tools.serving.hub:main", "The classroom JupyterHub: hub start --roster roster.csv | hub stop | hub status (as root)."),
    "generate": ("instructor_tools.course.commands:generate_main", "Generate notebooks/ (student versions) from solutions/."),
    "validate": ("instructor_tools.course.commands:validate_main", "Validate notebooks with nbgrader (fails when a test fails)."),
    "autograde": ("instructor_tools.course.commands:autograde_main", "Autograde a folder of submissions in the grading profile."),
    "export": ("instructor_tools.course.commands:export_main", "Export grades to CSV (Canvas and Moodle sheets with --roster)."),
    "deadlines": ("instructor_tools.course.commands:deadlines_main", "List an assignment's submissions against their due dates."),
    "similarity": ("instructor_tools.course.commands:similarity_main", "Report look-alike submissions of an assignment (HTML and CSV)."),
    "feedback": ("instructor_tools.course.commands:feedback_main", "Generate feedback HTML for graded submissions."),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_command(COMMANDS, sys.argv[1:] if argv is None else argv, "python -m instructor_tools")
