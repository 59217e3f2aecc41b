"""Make ``from backends import ...`` work in the sanity tests, from the repository root or from sanity_check/."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
