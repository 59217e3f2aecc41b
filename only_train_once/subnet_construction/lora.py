"""LoRA adapters after pruning: merged into the pruned base weights, or kept separate and consistent.

The analysis prunes an adapter's ``B`` rows with its base layer's output channels and its ``A`` columns with the
input channels (see :mod:`only_train_once.dependency_graph.adapters`), so after :func:`apply_plan` every adapter
already fits its pruned base layer; ``B @ A`` has the pruned base weight's shape. What is left is bookkeeping on the
peft wrappers (their ``in_features`` / ``out_features``) and, for ``merge_lora_to_base``, peft's own merge.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..dependency_graph.adapters import lora_layers

logger = logging.getLogger(__name__)


class LoraMergeError(ValueError):
    """merge_lora_to_base / unmerge_lora_to_base asked of a model without peft LoRA adapters."""


def refresh_adapter_sizes(model: nn.Module) -> int:
    """Set every peft LoRA wrapper's ``in_features`` / ``out_features`` to its pruned base layer's; returns how many
    wrappers there are."""
    layers = lora_layers(model)
    for layer in layers.values():
        wrapper: Any = layer  # a peft LoRA layer, whose methods nn.Module does not type
        base = wrapper.get_base_layer()
        for name in ("in_features", "out_features"):
            if hasattr(layer, name) and hasattr(base, name):
                setattr(layer, name, getattr(base, name))
    return len(layers)


def require_adapters(model: nn.Module) -> None:
    if not lora_layers(model):
        raise LoraMergeError("merge_lora_to_base / unmerge_lora_to_base need a model with peft LoRA adapters "
                             "(peft.get_peft_model); this model has none")


def merge_adapters(model: nn.Module) -> nn.Module:
    """Merge every LoRA adapter into its pruned base weight and remove the wrappers; returns the base model
    (``PeftModel.merge_and_unload``), which the caller saves instead of ``model``."""
    merge = getattr(model, "merge_and_unload", None)
    if merge is None:
        raise LoraMergeError(f"merge_lora_to_base needs a peft.PeftModel (with merge_and_unload), got "
                             f"{type(model).__name__}")
    merged = merge()
    logger.info("merged the LoRA adapters into the pruned base weights (%s)", type(merged).__name__)
    return merged
