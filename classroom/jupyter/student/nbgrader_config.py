"""nbgrader settings of a student's server on the classroom hub (found on JUPYTER_CONFIG_PATH).

The hub's spawner sets ``KIT_EXCHANGE_ROOT`` and ``KIT_COURSE_ID`` (see
``classroom/jupyterhub_config.py``). Submissions go through
:class:`helpers.private_submissions.PrivateSubmit`, which leaves them readable by the student and
the instructor only.
"""

import os

from helpers.settings import load_settings

c = get_config()  # noqa: F821 - injected by nbgrader's (traitlets') config loader

c.CourseDirectory.course_id = os.environ.get("KIT_COURSE_ID", "tl-workshop")
c.Exchange.root = os.environ.get("KIT_EXCHANGE_ROOT", "/srv/nbgrader/exchange")
c.ExchangeFactory.submit = "helpers.private_submissions.PrivateSubmit"

# The notebook toolbar's Validate button: each cell gets the time its profile allows.
c.Execute.kernel_name = "tl-workshop"
c.Execute.timeout = load_settings().scale.cell_timeout
c.Execute.interrupt_on_timeout = True
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
