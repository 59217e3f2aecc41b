"""Build-time summary: how many units (channels, heads) of each layer kind can be pruned.

A language model user wants to know at once whether attention heads, MLP units and hidden channels are in play
("50% group sparsity" means little if only the MLP is prunable). Groups are sorted into layer kinds by the class
of the module holding their first trainable parameter's layer (``LlamaAttention``, ``LlamaMLP``...); attention
groups count heads.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

from torch import nn

logger = logging.getLogger(__name__)

_ATTENTION_OPS = frozenset({"attention", "multiheadattention"})


@dataclass
class LayerKindCount:
    """Groups and units of one layer kind; ``prunable_*`` count those the optimizer may remove."""

    unit_name: str
    groups: int = 0
    units: int = 0
    prunable_groups: int = 0
    prunable_units: int = 0


def _parent(name: str, modules: Dict[str, nn.Module]) -> Tuple[str, nn.Module]:
    """The module holding module ``name``, skipping containers (ModuleDict, ModuleList)."""
    while name:
        name = name.rpartition(".")[0]
        if not isinstance(modules[name], (nn.ModuleDict, nn.ModuleList)):
            break
    return name, modules[name]


def _layer_kind(group, modules: Dict[str, nn.Module]) -> str:
    """Class name of the block holding the group's first layer (through adapter wrappers such as peft's LoRA
    layers, which hold the original layer as ``base_layer``); "adapter ranks" for an adapter's own units."""
    layer_name = group.trainable_members()[0].name.rpartition(".")[0]
    parent_name, parent = _parent(layer_name, modules)
    wrapped = getattr(parent, "base_layer", None)
    if isinstance(wrapped, nn.Module):
        if wrapped is not modules.get(layer_name):
            return "adapter ranks"
        parent_name, parent = _parent(parent_name, modules)
    return type(parent).__name__


def _is_attention(node) -> bool:
    """An attention call, or eager attention's product of two activations (``query @ key.T``, ``weights @ value``)."""
    return node.op_name in _ATTENTION_OPS or (node.op_name == "matmul" and not node.param_names)


def count_prunable_units(groups: Iterable, model: nn.Module) -> "OrderedDict[str, LayerKindCount]":
    """Per layer kind, the groups and units found and how many of them are prunable (auxiliary groups, which
    follow other groups, and groups without trainable parameters are left out)."""
    modules = dict(model.named_modules())
    counts: "OrderedDict[str, LayerKindCount]" = OrderedDict()
    for group in groups:
        if group.is_auxiliary or not group.trainable_members():
            continue
        heads = any(_is_attention(node) for node in group.nodes.values())
        kind = _layer_kind(group, modules)
        count = counts.setdefault(kind, LayerKindCount("heads" if heads else "units"))
        if heads:
            count.unit_name = "heads"
        count.groups += 1
        count.units += group.num_units
        if group.is_prunable:
            count.prunable_groups += 1
            count.prunable_units += group.num_units
    return counts


def log_prunable_units(groups: Iterable, model: nn.Module) -> None:
    """Log one line per layer kind: prunable units out of all, and in how many groups."""
    for kind, count in count_prunable_units(groups, model).items():
        logger.info("%s: %d of %d %s prunable (%d of %d groups)", kind, count.prunable_units, count.units,
                    count.unit_name, count.prunable_groups, count.groups)
