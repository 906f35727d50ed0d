"""nbgrader settings of the instructor's server on the classroom hub (found on JUPYTER_CONFIG_PATH).

The course folder (``KIT_COURSE_DIR``, set by the hub's spawner) keeps its own
``nbgrader_config.py`` (the kit's: layout, header, timeouts); it is loaded first, so the
formgrader, the Assignments tab and ``nbgrader`` commands started anywhere in the
instructor's server see the same course. The exchange is the hub's (``KIT_EXCHANGE_ROOT``).
"""

import os

c = get_config()  # noqa: F821 - injected by nbgrader's (traitlets') config loader

course = os.environ.get("KIT_COURSE_DIR")
if course and os.path.isfile(os.path.join(course, "nbgrader_config.py")):
    load_subconfig(os.path.join(course, "nbgrader_config.py"))  # noqa: F821 - injected like get_config
    c.CourseDirectory.root = course
c.CourseDirectory.course_id = os.environ.get("KIT_COURSE_ID", "tl-workshop")
c.Exchange.root = os.environ.get("KIT_EXCHANGE_ROOT", "/srv/nbgrader/exchange")
