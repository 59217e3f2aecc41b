"""Low-rank adapters (``peft`` LoRA layers) in the pruning groups.

A LoRA layer computes ``base(x) + B(A(x)) * scaling``: ``B``'s rows join the base layer's output channels and
``A``'s columns its input channels, so adapters are pruned with the base weights by the ordinary analysis. Two
things the analysis cannot know are settled here:

* the rank ``r`` (``A``'s rows) is an adapter setting, one value per adapter in peft's configuration: it is kept;
* peft freezes the base weights. The optimizer only zeroes trainable tensors, so a group whose frozen base rows
  would stay non-zero is not zero-invariant: it is left unprunable, with the fix in its reason.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

from torch import nn

RANK_REASON = "LoRA rank: an adapter keeps its rank r (peft stores one rank per adapter)"
FROZEN_REASON = ("frozen base weights (peft freezes them): unfreeze them (requires_grad_(True)) before OTO(...) so "
                 "that the optimizer can zero whole units")


def is_lora_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a peft LoRA layer (``peft.tuners.lora.LoraLayer``), recognised without importing peft."""
    return any(cls.__name__ == "LoraLayer" and cls.__module__.startswith("peft") for cls in type(module).__mro__)


def lora_layers(model: nn.Module) -> Dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if is_lora_layer(module)}


def _adapter_down_weights(layers: Dict[str, nn.Module]) -> List[object]:
    """The ``A`` (down-projection) weights of every adapter of ``layers``."""
    weights = []
    for layer in layers.values():
        for down in getattr(layer, "lora_A", {}).values():
            weights.append(down.weight)
    return weights


def settle_adapter_groups(groups: Iterable, model: nn.Module) -> None:
    """Keep LoRA ranks and leave groups with frozen pruned members unprunable (see module docstring)."""
    layers = lora_layers(model)
    if not layers:
        return
    down = {id(weight) for weight in _adapter_down_weights(layers)}
    for group in groups:
        pruned = [m for m in group.members if m.axis is not None and m.is_parameter]
        if group.is_auxiliary or not pruned or not group.trainable_members():
            continue
        if all(id(m.tensor) in down and m.axis == 0 for m in pruned):
            group.mark_unprunable(RANK_REASON)
        elif any(not m.tensor.requires_grad for m in pruned):
            group.mark_unprunable(FROZEN_REASON)  # the zero-flow check may have said why already: this says the fix
