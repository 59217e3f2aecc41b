"""Attention modules whose attributes follow pruning: constant slices of a fused projection, head counts.

Phi-3's attention projects queries, keys and values with one ``qkv_proj`` and cuts its output with
``qkv[..., :q]``, ``qkv[..., q:q + kv]``, ``qkv[..., q + kv:]``, where ``q = config.num_attention_heads *
head_dim`` and ``kv = num_key_value_heads * head_dim``. Read as plain numbers these slices would pin the heads;
for a module registered here the analyzer treats each slice as one segment of the sliced axis (like a ``split``),
and after pruning :func:`sliced_module_attributes` gives the attribute values that make the slices cut the kept
rows. Hugging Face attentions with separate projections get their ``num_key_value_groups`` (query heads per
key/value head) from the kept projections. An attribute ``"config.<field>"`` is set on a private copy of the
module's ``config`` (Hugging Face shares one config between all layers, and pruning may keep different head
counts per layer).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict

from torch import nn

#: ``update(module) -> {attribute: value}``, called after the module's tensors were shrunk
SlicedModuleUpdate = Callable[[nn.Module], Dict[str, Any]]

#: module class name -> how its attributes follow its shrunk tensors
SLICED_MODULES: Dict[str, SlicedModuleUpdate] = {}


def register_sliced_module(class_name: str, update: SlicedModuleUpdate) -> None:
    """Let constant slices inside modules of class ``class_name`` (matched by name, so no import is needed) be
    pruned as segments; ``update(module)`` returns the attributes that make the slices follow the pruning."""
    if not isinstance(class_name, str) or not class_name:
        raise ValueError("register_sliced_module needs a module class name, e.g. 'Phi3Attention'")
    if not callable(update):
        raise TypeError("update must be a function update(module) -> {attribute: value}")
    SLICED_MODULES[class_name] = update


def slices_follow_pruning(module: nn.Module) -> bool:
    return type(module).__name__ in SLICED_MODULES


def sliced_module_attributes(module: nn.Module) -> Dict[str, Any]:
    """The attribute values that make ``module`` follow its (already shrunk) tensors: its registered slice rule,
    and for a Hugging Face attention with separate projections, its query heads per key/value head."""
    update = SLICED_MODULES.get(type(module).__name__)
    return update(module) if update is not None else _key_value_groups(module)


def follows_pruning(module: nn.Module) -> bool:
    """Whether :func:`sliced_module_attributes` has something to say about ``module``."""
    return slices_follow_pruning(module) or isinstance(getattr(module, "num_key_value_groups", None), int)


def _key_value_groups(module: nn.Module) -> Dict[str, Any]:
    """``num_key_value_groups`` (query heads per key/value head), which Hugging Face reads to repeat the keys and
    values when decoding: whole-group pruning keeps it, pruning query heads of multi-query attention lowers it."""
    query, key = getattr(module, "q_proj", None), getattr(module, "k_proj", None)
    if query is None or key is None:
        return {}
    return {"num_key_value_groups": query.weight.shape[0] // key.weight.shape[0]}


def set_module_attribute(module: nn.Module, name: str, value: Any) -> None:
    """``setattr``, where ``"config.<field>"`` first gives the module its own copy of the shared config."""
    owner_name, _, field = name.rpartition(".")
    if owner_name != "config":
        setattr(module, name, value)
        return
    private = copy.copy(module.config)
    setattr(private, field, value)
    module.config = private


def _phi3_attention(module: nn.Module) -> Dict[str, Any]:
    """Heads kept by Phi-3's fused ``qkv_proj``: ``o_proj`` reads the query heads; the rest are keys and values."""
    attention: Any = module  # a Hugging Face Phi-3 attention: its attributes are not typed on nn.Module
    head_dim = attention.head_dim
    query_heads = attention.o_proj.weight.shape[1] // head_dim
    key_value_heads = (attention.qkv_proj.weight.shape[0] // head_dim - query_heads) // 2
    return {"num_key_value_heads": key_value_heads, "num_key_value_groups": query_heads // key_value_heads,
            "config.num_attention_heads": query_heads}


register_sliced_module("Phi3Attention", _phi3_attention)
