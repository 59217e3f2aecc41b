"""Arguments kept for compatibility with the reference's scripts that have no effect here: one warning each."""

from __future__ import annotations

import warnings
from typing import Set, Tuple


class IgnoredArgumentWarning(UserWarning):
    """An argument was accepted for compatibility but has no effect."""


# (owner, argument) pairs already warned about in this process: a training script calls ``geta`` once per run, a
# sweep hundreds of times, and the warning says nothing new the second time.
_WARNED: Set[Tuple[str, str]] = set()


def warn_ignored(owner: str, argument: str, reason: str, stacklevel: int = 2) -> None:
    """Warn, once per process for each ``owner``/``argument`` pair, that ``argument`` of ``owner`` is ignored.

    ``stacklevel`` counts from the caller of this function (2: the line that called the caller)."""
    if (owner, argument) in _WARNED:
        return
    _WARNED.add((owner, argument))
    warnings.warn(f"{owner}: {argument} is accepted for compatibility and ignored ({reason})", IgnoredArgumentWarning,
                  stacklevel=stacklevel + 1)
