"""``python -m saveload_lessons``: check that this machine is ready for the lessons
(``environment_check``)."""

import sys

from saveload_lessons.environment_check import main

sys.exit(main())
