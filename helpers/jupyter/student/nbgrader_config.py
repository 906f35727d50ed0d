"""nbgrader settings of the student's server (its notebook toolbar's Validate button).

Found on the Jupyter config path (``helpers.lab_server.STUDENT_CONFIG_DIR``), so Validate
gives each cell the time its profile allows (nbgrader's default, 30 s, would stop the
training cells) wherever the server was started.
"""

from helpers.kernel import KERNEL_NAME
from helpers.settings import load_settings

c = get_config()  # noqa: F821 - injected by nbgrader's (traitlets') config loader

c.Execute.kernel_name = KERNEL_NAME
c.Execute.timeout = load_settings().scale.cell_timeout
c.Execute.interrupt_on_timeout = True
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
