"""Model inputs: private copies for every run, and fresh inputs of the same structure for verification.

A forward may mutate its inputs: a Hugging Face cache in ``past_key_values`` grows by one step on every call, so
running the model twice on the user's object gives two different computations. Every run the library makes
(trace, verification) therefore works on a deep copy.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Optional

import torch


def _copy_tensor(tensor: torch.Tensor) -> torch.Tensor:
    copied = tensor.detach().clone()
    return copied.requires_grad_(tensor.requires_grad) if copied.is_floating_point() else copied


def copy_input(value: Any) -> Any:
    """A deep copy of a model input that shares no tensor or container with ``value``.

    ``copy.deepcopy`` refuses tensors that are not graph leaves (an input computed with autograd on); those are
    copied detached, keeping ``requires_grad``.
    """
    try:
        return copy.deepcopy(value)
    except Exception:  # non-leaf tensors, or objects that refuse copying (locks, generators): copy what we can
        return map_tensors(value, _copy_tensor)


def map_tensors(value: Any, function, depth: int = 0) -> Any:
    """``value`` with every tensor ``t`` inside tensors, lists, tuples, dicts and dataclasses replaced by
    ``function(t)``; other objects are deep-copied where they allow it."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if depth > 8:
        return _copied_if_possible(value)
    if isinstance(value, dict):
        items = {k: map_tensors(v, function, depth + 1) for k, v in value.items()}
        return items if type(value) is dict else _rebuild_mapping(value, items)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(map_tensors(v, function, depth + 1) for v in value)
    if isinstance(value, tuple):  # named tuple
        return type(value)(*(map_tensors(v, function, depth + 1) for v in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: map_tensors(getattr(value, f.name), function, depth + 1)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return _copied_if_possible(value)


def _copied_if_possible(value: Any) -> Any:
    """A deep copy of ``value``, or ``value`` itself when it cannot be copied (it is then shared)."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def _rebuild_mapping(original: dict, items: dict) -> dict:
    try:
        return type(original)(**items)
    except TypeError:
        return items


def fresh_input_like(value: Any, generator: Optional[torch.Generator] = None) -> Any:
    """An input with ``value``'s structure, shapes and dtypes and new random contents.

    Floating tensors: normal draws with the mean and spread of the original tensor; integer tensors (token ids,
    indices): uniform draws in the original's value range; boolean tensors (masks) and non-tensor leaves are kept.
    """
    return map_tensors(value, lambda tensor: _fresh_tensor(tensor, generator))


def _fresh_tensor(tensor: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    if tensor.is_meta or tensor.numel() == 0 or tensor.dtype == torch.bool or tensor.is_complex():
        return _copy_tensor(tensor)
    source = tensor.detach()
    if source.is_floating_point():
        reference = source.double()
        mean = float(reference.mean())
        spread = float(reference.std()) if source.numel() > 1 else 0.0
        spread = spread if spread > 0 else max(abs(mean), 1.0)
        draw = torch.randn(source.shape, generator=generator, dtype=torch.float64) * spread + mean
        return draw.to(device=source.device, dtype=source.dtype).requires_grad_(tensor.requires_grad)
    low, high = int(source.min()), int(source.max())
    draw = torch.randint(low, high + 1, source.shape, generator=generator, dtype=torch.int64)
    return draw.to(device=source.device, dtype=source.dtype)
