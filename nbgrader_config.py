"""nbgrader configuration of the kit's course ("tl-workshop").

nbgrader reads this file from the current directory only, so plain ``nbgrader ...``
commands must run from the project root. The kit's own commands
(``python -m instructor_tools generate|validate|autograde|export|feedback``, or the Make
targets) load this file from the project root wherever they are started, then
set the course root, the gradebook and the per-cell timeout of the profile they
run in (autograde always runs the ``grading`` profile).

Layout (nbgrader's ``{nbgrader_step}/{student_id}/{assignment_id}``; the notebook
file is named like its assignment):

- ``solutions/<assignment>/<assignment>.ipynb``: the source, with solutions and
  hidden tests (``solutions/header.ipynb`` is prepended to every student notebook);
- ``notebooks/<assignment>/<assignment>.ipynb``: the release (student version),
  generated, committed without outputs, never edited by hand;
- ``submitted/<student>/<assignment>/``, ``autograded/``, ``feedback/`` and
  ``gradebook.db``: the instructor's grading folders (never committed).

Kernel: notebooks run in the kit's named kernel ``tl-workshop`` (this environment's
Python, installed by ``make setup`` through ``python -m helpers kernel``; see
:mod:`helpers.kernel`), the kernel every notebook's metadata asks for.
"""

import os

from helpers.settings import load_settings
from instructor_tools.course.course_folder import sanitize_preprocessors
from instructor_tools.course.release import keep_release_on_failure
from instructor_tools.grading.preprocessors import feedback_steps, with_comparisons
from instructor_tools.serving.instructor_lab import list_graded_assignments_only

c = get_config()  # noqa: F821 - injected by nbgrader's (traitlets') config loader

ROOT = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "tl-workshop"
c.CourseDirectory.root = ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
# nbgrader's own Generate (command line, formgrader) deletes a release it fails to
# regenerate; this nbgrader process keeps the previous one instead.
keep_release_on_failure()
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
# The formgrader lists the assignments with something to grade: notebooks 00 and 05 (ungraded)
# are released to the students from solutions/ like the others, but are no assignments.
list_graded_assignments_only()

# A single laptop's exchange (release, fetch, submit, collect): inside the course folder,
# git-ignored, created by `python -m instructor_tools instructor`. The classroom hub sets its own
# (classroom/jupyter/instructor/nbgrader_config.py).
c.Exchange.root = os.path.join(ROOT, "exchange")

# "Restart the kernel and run all cells" + NAME/COLLABORATORS, prepended to every student notebook.
c.IncludeHeaderFooter.header = os.path.join(ROOT, "solutions", "header.ipynb")

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Kernel and per-cell timeout. nbgrader's default (30 s) kills the kit's training
# cells; each profile says how long one cell may take (smoke 120 s, grading 60 s,
# workshop 300 s, full 3600 s). A timed-out cell is interrupted and marked as an
# error, so an infinite loop in a submission costs that cell, not the whole class.
c.Execute.kernel_name = "tl-workshop"  # helpers.kernel.KERNEL_NAME
c.Execute.timeout = load_settings().scale.cell_timeout
c.Execute.interrupt_on_timeout = True
# Keep the kernels' own start-up notices (TCP without encryption...) out of the grading log, and
# let every kernel of the course's nbgrader (the formgrader's too) import the hidden tests'
# comparisons before the first cell, so a submission that rebinds numpy's cannot fool them.
c.Execute.extra_arguments = with_comparisons(["--IPKernelApp.log_level=ERROR"])

# A deleted test cell is put back (and run) when autograding: deleting a failing
# test never earns its points. A duplicated graded cell counts once (its last copy);
# sanitize_preprocessors() works around nbgrader 0.9.6 failing on such copies.
c.OverwriteCells.add_missing_cells = True
c.Autograde.sanitize_preprocessors = sanitize_preprocessors()

# Feedback shows each test's result, points and assertion message, never its code
# (the hidden tests stay hidden); the kit's `feedback --show-tests` shows them.
c.GenerateFeedback.preprocessors = feedback_steps()
