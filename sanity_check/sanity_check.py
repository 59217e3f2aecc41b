"""Reference-style entry point: ``python sanity_check/sanity_check.py [names] [--modes ...]``.

Same as ``python -m sanity_check`` from the repository root.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sanity_check.runner import main  # noqa: E402  (the path is set up first)

if __name__ == "__main__":
    sys.exit(main())
