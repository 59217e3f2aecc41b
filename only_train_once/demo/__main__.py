"""``python -m only_train_once.demo``: see only_train_once.demo.pipeline."""

import sys

from .pipeline import main

sys.exit(main())
