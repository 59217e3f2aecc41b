"""``python -m sanity_check``: run the sanity suite over the backbone zoo (see sanity_check.runner)."""

import sys

from .runner import main

sys.exit(main())
