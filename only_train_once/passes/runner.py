"""The pass runner: run named passes in order, log each with its time, name the failing one, lint in between."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, MutableMapping, Optional

logger = logging.getLogger(__name__)

#: Set to ``1`` to check the graph's invariants (:meth:`Graph.lint`) after every pass (the test suite does).
LINT_ENV = "OTO_LINT_PASSES"


@dataclass(frozen=True)
class Pass:
    """One named step of the pipeline.

    ``run(target)`` does the work on ``target`` (a :class:`~only_train_once.graph.Graph`, a ``SpaceAnalysis`` or an
    ``OTO``, as ``stage`` says) and returns its result (None when the pass only rewrites the target).
    """

    name: str
    run: Callable[[Any], Any]
    stage: str = ""
    summary: str = ""


def lint_after_passes() -> bool:
    """Whether :func:`run_passes` lints after every pass (the ``OTO_LINT_PASSES`` environment variable)."""
    return os.environ.get(LINT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _name_pass(error: BaseException, note: str) -> None:
    """Attach ``note`` to ``error`` so its traceback names the pass; the exception's type and message are kept,
    so callers catching the library's own exceptions still catch them (Python < 3.11 has no notes)."""
    if hasattr(error, "add_note"):
        error.add_note(note)


def run_passes(passes: Iterable[Pass], target: Any, results: Optional[MutableMapping[str, Any]] = None,
               lint: Optional[Callable[[], None]] = None) -> MutableMapping[str, Any]:
    """Run ``passes`` in order on ``target``; returns ``results`` (pass name -> what the pass returned).

    Each pass's result is stored in ``results`` as soon as it returns, so later passes can read it. With
    :func:`lint_after_passes` on, ``lint()`` runs after every pass. An exception raised by a pass, or by the lint
    after it, propagates unchanged with a note naming the pass.
    """
    results = {} if results is None else results
    check = lint if lint is not None and lint_after_passes() else None
    for step in passes:
        start = time.perf_counter()
        try:
            results[step.name] = step.run(target)
        except Exception as error:
            _name_pass(error, f"raised in the pass '{step.name}' ({step.stage or 'pipeline'} stage)")
            raise
        logger.debug("pass %s: %.1f ms", step.name, (time.perf_counter() - start) * 1e3)
        if check is not None:
            try:
                check()
            except Exception as error:
                _name_pass(error, f"the graph is inconsistent after the pass '{step.name}'")
                raise
    return results

