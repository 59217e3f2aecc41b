"""Named passes and their runner.

The pipeline (:data:`only_train_once.passes.pipeline.PIPELINE`) lists every pass from tracing the model to the
groups the optimizers train, in order; :func:`run_passes` runs a slice of it, logs each pass with its time (debug
level), names the failing pass in the error, and checks the graph after every pass when ``OTO_LINT_PASSES=1``.
"""

from .runner import LINT_ENV, Pass, lint_after_passes, run_passes

__all__ = ["LINT_ENV", "Pass", "lint_after_passes", "run_passes"]
