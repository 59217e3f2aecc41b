"""Walk the nested structures models take and return (tensors in tuples, dicts, dataclasses, plain objects)."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, List, Optional

import torch
from torch import nn

# Nesting deeper than this is not a model's input or output but an object graph (a module, a config).
MAX_DEPTH = 8

_SCALARS = (str, bytes, int, float, bool, complex, torch.dtype, torch.device)


def is_key_value_cache(obj: Any) -> bool:
    """Whether ``obj`` is a Hugging Face key/value cache (``transformers.Cache`` and its subclasses).

    A decoder called with ``use_cache=True`` returns its keys and values for the next step. Their head axes are
    state that follows pruning (the compressed model caches fewer heads), not results whose shape must be kept,
    so the capture leaves them out of the model outputs. Recognised by class, without importing transformers.
    """
    return any(cls.__name__ == "Cache" and cls.__module__.startswith("transformers")
               for cls in type(obj).__mro__)


def flatten_tensors(obj: Any, caches: Optional[List[str]] = None) -> List[torch.Tensor]:
    """The tensors of a model input or output, in order: through sequences, sets, dicts, dataclasses and plain
    objects' attributes, each object visited once, at most :data:`MAX_DEPTH` levels deep.

    Key/value caches (:func:`is_key_value_cache`) are skipped, their class names appended to ``caches``: their
    shapes follow the pruned heads.
    """
    found: List[torch.Tensor] = []
    _collect(obj, found, set(), 0, caches)
    return found


def _children(obj: Any) -> List[Any]:
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if dataclasses.is_dataclass(obj):
        return [getattr(obj, f.name, None) for f in dataclasses.fields(obj)]
    if hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, types.ModuleType, type)):
        return list(vars(obj).values())
    return []


def _collect(obj: Any, found: List[torch.Tensor], seen: set, depth: int, caches: Optional[List[str]]) -> None:
    if depth > MAX_DEPTH or id(obj) in seen:
        return
    if isinstance(obj, torch.Tensor):
        found.append(obj)
        return
    if obj is None or isinstance(obj, _SCALARS):
        return
    seen.add(id(obj))
    if is_key_value_cache(obj):
        if caches is not None:
            caches.append(type(obj).__name__)
        return
    for child in _children(obj):
        _collect(child, found, seen, depth + 1, caches)
