"""``python -m instructor_tools <command>``: the instructor's commands."""

import sys

from instructor_tools.cli import main

sys.exit(main())
