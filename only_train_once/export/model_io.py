"""Calling a model the way the deployment exports do: inputs, flattened outputs, a second input shape.

Inputs follow OTO's convention (a tensor, a tuple of positional inputs, or a dict of keyword inputs). Hugging Face
models are called with ``use_cache=False``: a cache is an output that neither ONNX nor a comparison can use, and
with it the exporters trace the cache object instead of the logits.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from ..utils import eval_mode

__all__ = ["input_items", "call", "named_outputs", "second_input", "ExportWrapper", "uses_cache"]


def input_items(inputs: Any) -> List[Tuple[str, Tensor]]:
    """``[(name, tensor)]`` of ``inputs``: dict keys, else ``input_<i>``."""
    if isinstance(inputs, dict):
        return list(inputs.items())
    values = inputs if isinstance(inputs, tuple) else (inputs,)
    return [(f"input_{i}", value) for i, value in enumerate(values)]


def uses_cache(model: nn.Module) -> bool:
    """True for models whose config has a ``use_cache`` switch (Hugging Face)."""
    return hasattr(getattr(model, "config", None), "use_cache")


def call(model: nn.Module, inputs: Any) -> Any:
    """Run ``model`` on ``inputs`` (dict values by keyword), caches off where the model has them."""
    extra = {"use_cache": False} if uses_cache(model) else {}
    if isinstance(inputs, dict):
        return model(**inputs, **extra)
    if isinstance(inputs, tuple):
        return model(*inputs, **extra)
    return model(inputs, **extra)


def _flatten(value: Any, prefix: str, found: List[Tuple[str, Tensor]]) -> None:
    if isinstance(value, Tensor):
        found.append((prefix or "output", value))
    elif isinstance(value, dict):  # Hugging Face ModelOutput is a dict
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), found)
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}.{index}" if prefix else f"output_{index}", found)


def named_outputs(model: nn.Module, inputs: Any) -> List[Tuple[str, Tensor]]:
    """``[(name, tensor)]`` of the model's outputs in eval mode without gradients (names from dict keys)."""
    found: List[Tuple[str, Tensor]] = []
    with eval_mode(model), torch.no_grad():
        _flatten(call(model, inputs), "", found)
    return found


def _batch_size(items: List[Tuple[str, Tensor]]) -> int:
    return items[0][1].shape[0] if items and items[0][1].dim() else 1


def second_input(inputs: Any, seed: int = 0) -> Any:
    """An input of another batch size (``b + 2``) and, for token inputs (integer, 2-D or more), a sequence one
    shorter: float tensors drawn with the dummy's mean and spread, integer tensors the dummy's rows cycled."""
    items = input_items(inputs)
    batch = _batch_size(items)
    new_batch = batch + 2
    generator = torch.Generator().manual_seed(seed)
    changed: Dict[str, Tensor] = {}
    for name, tensor in items:
        rows = torch.arange(new_batch) % batch
        value = tensor.index_select(0, rows.to(tensor.device))
        if tensor.is_floating_point():
            spread = tensor.float().std() if tensor.numel() > 1 else torch.tensor(1.0)
            noise = torch.randn(value.shape, generator=generator) * spread + tensor.float().mean()
            value = noise.to(device=tensor.device, dtype=tensor.dtype)
        elif tensor.dim() >= 2 and tensor.shape[1] > 2:
            value = value[:, :-1]
        changed[name] = value
    if isinstance(inputs, dict):
        return changed
    values = tuple(changed[name] for name, _ in items)
    return values if isinstance(inputs, tuple) else values[0]


class ExportWrapper(nn.Module):
    """Positional tensors in, flat tuple of output tensors out: what the ONNX exporters need.

    Keyword inputs are passed by keyword (a dict given positionally would put the attention mask into the next
    positional slot, e.g. a cache), caches are off.
    """

    def __init__(self, model: nn.Module, inputs: Any):
        super().__init__()
        self.model = model
        self.keywords = list(inputs) if isinstance(inputs, dict) else None

    def forward(self, *tensors: Tensor):
        inputs: Any = dict(zip(self.keywords, tensors)) if self.keywords is not None else tuple(tensors)
        found: List[Tuple[str, Tensor]] = []
        _flatten(call(self.model, inputs), "", found)
        return tuple(tensor for _, tensor in found)
