"""nbgrader's exchange on a shared server, with submissions private to their student.

It runs in the student's server (the Assignments tab's Submit), so it belongs to the
students' library: the classroom hub's student servers cannot import the instructor's
package (``python -m instructor_tools hub start`` closes it to them).

nbgrader's own ``submit`` leaves each submission world-readable (files 0644, its folder
0777 in the exchange's ``inbound/``) and relies on a random suffix in the folder's name
to hide it. On the classroom hub every student has a private Unix group of their own
(the default of ``useradd``) and the instructor is a member of each of those groups
(``python -m instructor_tools hub start`` adds them), so :class:`PrivateSubmit` can close the
submission to everyone else: folder 0770 and files 0640, owned by the student and
their private group. The instructor still collects (reads) and can tidy up (write);
another student can neither list ``inbound/`` (nbgrader makes it 0733) nor read a
submission even with its full name.

Enabled for the students' servers by ``classroom/jupyter/student/nbgrader_config.py``::

    c.ExchangeFactory.submit = "helpers.private_submissions.PrivateSubmit"
"""

from __future__ import annotations

import os
import stat

from nbgrader.exchange.default.submit import ExchangeSubmit

#: Modes of a submitted folder (and its sub-folders) and of its files.
SUBMISSION_DIR_MODE = stat.S_IRWXU | stat.S_IRWXG  # 0770: the student and the instructor (group member)
SUBMISSION_SUBDIR_MODE = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP  # 0750
SUBMISSION_FILE_MODE = stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP  # 0640


class PrivateSubmit(ExchangeSubmit):
    """nbgrader's submit, then the submission closed to other students (see the module docstring).

    Used by the classroom hub's student servers (their Assignments tab), not by a notebook.
    """

    def copy_files(self) -> None:
        super().copy_files()
        destination = os.path.join(self.inbound_path, self.assignment_filename)
        self.set_perms(destination, fileperms=SUBMISSION_FILE_MODE, dirperms=SUBMISSION_SUBDIR_MODE)
        os.chmod(destination, SUBMISSION_DIR_MODE)
        self.log.info("Submission readable by you and the instructor only: %s", destination)
