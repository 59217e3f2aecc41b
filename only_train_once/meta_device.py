"""Models on the meta device (shapes without data): what needs real tensors says so clearly.

A model built under ``torch.device("meta")`` (or loaded with ``low_cpu_mem_usage``/``device_map="meta"``) traces
and analyses fine, but zeroing groups, training and building the subnet read and write tensor values.
"""

from __future__ import annotations

from typing import Iterable

import torch


class MetaDeviceError(RuntimeError):
    """An operation needs tensor values but the model's parameters live on the meta device."""


def check_materialized(tensors: Iterable[torch.Tensor], operation: str) -> None:
    """Raise :class:`MetaDeviceError` naming ``operation`` if any tensor is on the meta device."""
    if any(tensor.is_meta for tensor in tensors):
        raise MetaDeviceError(
            f"{operation} needs real tensor values, but the model's parameters are on the meta device. Materialise "
            "the model first, e.g. model.to_empty(device='cpu') and then load its weights (load_state_dict / "
            "from_pretrained without device_map='meta'); OTO(model, dummy_input) itself can be built on meta.")
