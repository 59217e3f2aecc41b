"""``python -m only_train_once.demo``: see only_train_once.demo.run."""

import sys

from .run import main

sys.exit(main())
