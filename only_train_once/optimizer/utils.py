"""Checkpoint helpers (SPEC 5.9): save, load (torch >= 2.6 safe), find the latest."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pickle
import zipfile
from typing import Any, Iterator, Optional, Union

import torch

from ..subnet_construction.integrity import CorruptFileError, write_atomically

logger = logging.getLogger(__name__)


def save_checkpoint(filepath: str, obj: Any) -> None:
    """``torch.save(obj, filepath)``, creating the folder, written atomically (no partial file); logs the path."""
    folder = os.path.dirname(filepath)
    if folder:
        os.makedirs(folder, exist_ok=True)
    write_atomically(filepath, lambda temporary: torch.save(obj, temporary))
    logger.info("saved checkpoint %s", filepath)


def load_checkpoint(filepath: str, device: Union[str, torch.device, None] = None, weights_only: bool = True) -> Any:
    """Load what :func:`save_checkpoint` wrote, onto ``device`` (default: where it was saved).

    Optimizer states and ``GETA.create_checkpoint`` dicts hold tensors and plain Python values only, so the safe
    ``weights_only=True`` loader of torch >= 2.6 reads them. Files holding whole pickled modules (the
    reference's checkpoints, ``torch.save(model)``) need ``weights_only=False``: pass it only for files you trust,
    since unpickling can run arbitrary code.
    """
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"no checkpoint at {filepath}")
    if not zipfile.is_zipfile(filepath):
        raise CorruptFileError(f"{filepath} ({os.path.getsize(filepath)} bytes) is not a torch checkpoint: it is "
                               "empty, truncated or another kind of file")
    try:
        return torch.load(filepath, map_location=device, weights_only=weights_only)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{filepath} holds objects the safe loader refuses ({error}). If you trust the file, "
                         "call load_checkpoint(filepath, device, weights_only=False).") from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise CorruptFileError(f"{filepath} is a damaged torch checkpoint ({type(error).__name__}: {error})") \
            from error


def scan_checkpoint(cp_dir: str, prefix: str) -> Optional[str]:
    """The file ``<cp_dir>/<prefix>*`` whose name ends in the largest ``_<integer>`` (before the first dot).

    Files whose last ``_`` token is not an integer are ignored; returns None when nothing matches.
    """
    best, best_number = None, None
    for path in glob.glob(os.path.join(cp_dir, prefix + "*")):
        token = os.path.basename(path).split(".")[0].split("_")[-1]
        if not token.isdigit():
            continue
        if best_number is None or int(token) > best_number:
            best, best_number = path, int(token)
    if best is not None:
        logger.info("resuming from checkpoint %s", best)
    return best


@contextlib.contextmanager
def safe_open_file(path: str, mode: str = "a") -> Iterator:
    """``open(path, mode)`` after creating its folder; closed on exit."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, mode) as handle:
        yield handle
