"""``python -m mailcoach_server`` is ``mailcoach``."""

import sys

from .cli import main

sys.exit(main())
