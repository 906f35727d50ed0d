"""The instructor's tools for the transfer-learning workshop kit.

Everything a student never needs, grouped by role; each imports the students' library,
:mod:`helpers`, which never imports this package (``tests/test_imports.py`` checks both
rules):

* :mod:`instructor_tools.course` -- the course folder and its nbgrader configuration, the
  student versions generated from ``solutions/``, validation, submissions, the students' zip;
* :mod:`instructor_tools.grading` -- autograding a class, nbgrader's execution steps, the
  tamper check, regrades, deadlines, look-alike submissions, grade sheets for an LMS;
* :mod:`instructor_tools.isolation` -- the grading sandbox and control groups (memory, CPU,
  processes) for the grader and the hub;
* :mod:`instructor_tools.serving` -- the instructor's JupyterLab, the classroom JupyterHub
  and its exchange.

Installed with the kit (``pip install -e ".[instructor]"`` adds what the hub needs);
``python -m instructor_tools`` lists the commands.
"""

__version__ = "0.1.0"
