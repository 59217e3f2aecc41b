"""Test-suite settings shared by tests/ and sanity_check/."""

import os

from only_train_once.passes import LINT_ENV

# Check the graph IR's invariants after every pass of every graph the tests build (Graph.lint()).
os.environ.setdefault(LINT_ENV, "1")
