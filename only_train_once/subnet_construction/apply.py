"""Apply a pruning plan to a model in place: shrink tensors, update module attributes, log every change.

The change log (:class:`SubnetSpec`) is what it takes to rebuild the compressed architecture from a fresh
instance of the original model class, so a weights-only checkpoint of the compressed model can be loaded
without pickling modules (see :func:`only_train_once.subnet_construction.io.load_compressed_weights`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

import torch
from torch import nn

from ..graph.pruning_axis import flattened, is_flattened, length
from ..operation.registry import MODULE_SHRINKS, ModuleReplace, ModuleShrink
from ..operation.sliced_modules import follows_pruning, set_module_attribute, sliced_module_attributes
from .constant_folding import add_folded_biases, folded_contributions
from .modules import PrunedMultiheadAttention, StandardisedConv2d
from .plan import MaskLookup, PruningPlan, kept_size


@dataclass
class SubnetSpec:
    """New tensor shapes and module attribute values of a compressed model (JSON-serialisable)."""

    shapes: Dict[str, List[int]] = field(default_factory=dict)
    attributes: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    replaced_modules: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: layers given a bias they did not have (module name -> its size), holding folded constant channels
    added_biases: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": "only_train_once.subnet/1", "shapes": self.shapes, "attributes": self.attributes,
                "replaced_modules": self.replaced_modules, "added_biases": self.added_biases}

    @classmethod
    def from_dict(cls, data: dict) -> "SubnetSpec":
        if data.get("format") != "only_train_once.subnet/1":
            raise ValueError("not an only_train_once subnet description (missing format 'only_train_once.subnet/1')")
        return cls({k: list(v) for k, v in data["shapes"].items()}, dict(data["attributes"]),
                   dict(data.get("replaced_modules", {})), {k: int(v) for k, v in data.get("added_biases", {}).items()})


def _set_attribute(spec: SubnetSpec, module_name: str, module: nn.Module, name: str, value: Any) -> None:
    element = _ELEMENT.fullmatch(name)
    if element is not None:  # one int of a tuple/list attribute ("split_indices[1]"): rewrite the whole attribute
        name, index = element.group(1), int(element.group(2))
        current = getattr(module, name)
        value = type(current)(value if k == index else v for k, v in enumerate(current))
    if _get_attribute(module, name) != value:
        set_module_attribute(module, name, value)
        spec.attributes.setdefault(module_name, {})[name] = list(value) if isinstance(value, tuple) else value


def _get_attribute(module: nn.Module, name: str) -> Any:
    """``getattr`` through dotted names (``"config.num_attention_heads"``); None where absent."""
    value: Any = module
    for part in name.split("."):
        value = getattr(value, part, None)
    return value


def _update_attention_sizes(model: nn.Module, plan: PruningPlan, spec: SubnetSpec) -> None:
    """Attention modules get the head counts of their kept projections (the slices of Phi-3's fused ``qkv_proj``,
    query heads per key/value head), see :mod:`only_train_once.operation.sliced_modules`."""
    for module_name, module in model.named_modules():
        if not follows_pruning(module):
            continue
        prefix = module_name + "." if module_name else ""
        if any(name.startswith(prefix) for name in plan.keep):
            for name, value in sliced_module_attributes(module).items():
                _set_attribute(spec, module_name, module, name, value)


def _replace_tensors(model: nn.Module, plan: PruningPlan, spec: SubnetSpec,
                     on_replaced: Optional[Callable[[torch.Tensor], None]] = None) -> None:
    """Shrink the planned tensors one at a time: each replacement is put in place (in every module holding the
    tensor: tied weights) before the next is made, so the old tensor can be freed at once and pruning holds at most
    one extra tensor, not a second copy of the model. ``on_replaced(old)`` lets other holders of the old tensor
    let go of it."""
    holders = _tensor_holders(model)
    for name, axes in plan.keep.items():
        old = _named_tensor(model, name)
        data = old.detach()
        # Plain axes first: their numbers refer to the tensor's own dims, which flattening two of them renumbers.
        for axis, kept in sorted(axes.items(), key=lambda item: is_flattened(item[0])):
            data, dim = flattened(data, axis)
            data = data.index_select(dim, kept.to(data.device))
        if not axes:  # index_select copies; only a tensor it did not touch needs its own copy
            data = data.clone()
        new = nn.Parameter(data, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else data
        for store, key in holders.pop(id(old)):
            store[key] = new
        if on_replaced is not None:
            on_replaced(old)
        spec.shapes[name] = list(new.shape)
        del old, data, new  # no reference to the full tensor survives into the next one's allocation


def _tensor_holders(model: nn.Module) -> Dict[int, List[Tuple[Dict[str, Any], str]]]:
    """``id(tensor)`` -> every ``(module._parameters or module._buffers, key)`` that holds it (no tensor is kept)."""
    holders: Dict[int, List[Tuple[Dict[str, Any], str]]] = {}
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for key, tensor in store.items():
                if tensor is not None:
                    holders.setdefault(id(tensor), []).append((store, key))
    return holders


def _named_tensor(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    tensor = module._parameters.get(attribute)
    return tensor if tensor is not None else cast(torch.Tensor, module._buffers[attribute])


def _stored_weight(module) -> torch.Tensor:
    """The weight as stored. Hook-based spectral and weight normalisation keep it in ``weight_orig`` /
    ``weight_v`` and recompute ``weight`` before each forward, so right after pruning ``weight`` is stale."""
    for name in ("weight_orig", "weight_v"):
        stored = module._parameters.get(name)
        if stored is not None:
            return stored
    return module.weight


_ELEMENT = re.compile(r"(\w+)\[(\d+)\]")


# Module attribute updates of the built-in layers, by node op name (see operation.registry.ModuleShrink).
def _update_conv(module, node, kept_in: int) -> Dict[str, Any]:
    weight = _stored_weight(module)
    if module.transposed:
        return {"in_channels": weight.shape[0], "out_channels": weight.shape[1] * module.groups}
    groups = kept_in // weight.shape[1]
    return {"in_channels": kept_in, "out_channels": weight.shape[0], "groups": groups}


def _update_linear(module, node, kept_in: int) -> Dict[str, Any]:
    weight = _stored_weight(module)
    return {"in_features": weight.shape[1], "out_features": weight.shape[0]}


def _update_norm(module, node, kept_in: int) -> Dict[str, Any]:
    return {"num_features": kept_in}


def _update_group_norm(module, node, kept_in: int) -> Dict[str, Any]:
    return {"num_channels": kept_in, "num_groups": module.num_groups * kept_in // module.num_channels}


def _update_embedding(module, node, kept_in: int) -> Dict[str, Any]:
    return {"num_embeddings": module.weight.shape[0], "embedding_dim": module.weight.shape[1]}


def _update_prelu(module, node, kept_in: int) -> Dict[str, Any]:
    return {"num_parameters": module.weight.numel()}


for _op_name, _shrink in {
    "conv": ModuleShrink(nn.modules.conv._ConvNd, _update_conv),
    "convtranspose": ModuleShrink(nn.modules.conv._ConvNd, _update_conv),
    "linear": ModuleShrink(nn.Linear, _update_linear, input_channel_axis=-1),
    "batchnorm": ModuleShrink(nn.modules.batchnorm._NormBase, _update_norm),
    "instancenorm": ModuleShrink(nn.modules.batchnorm._NormBase, _update_norm),
    "groupnorm": ModuleShrink(nn.GroupNorm, _update_group_norm),
    "embedding": ModuleShrink(nn.Embedding, _update_embedding, input_channel_axis=-1),
    "prelu": ModuleShrink(nn.PReLU, _update_prelu),
}.items():
    MODULE_SHRINKS.setdefault(_op_name, _shrink)


def apply_plan(graph, model: nn.Module, plan: PruningPlan,
               on_replaced: Optional[Callable[[torch.Tensor], None]] = None) -> SubnetSpec:
    """Shrink ``model`` in place following ``plan``; returns the log of every shape and attribute change.

    ``model`` is the traced model or a deep copy of it (modules and tensors are found by name). Tensors are
    replaced one at a time; ``on_replaced(old tensor)`` is called after each (see :func:`_replace_tensors`).
    """
    spec = SubnetSpec()
    if plan.is_empty:
        return spec
    _bake_standardised_convs(graph, model, plan, spec)
    modules = dict(model.named_modules())  # ``model`` may be a copy of the traced model: find modules by name
    attention_head_dims = {name: m.embed_dim // m.num_heads for name, m in model.named_modules()
                           if isinstance(m, nn.MultiheadAttention)}
    removed = MaskLookup(plan.pruned_units)
    folded = folded_contributions(graph, model, removed)
    old_attributes = {}
    for node in graph.nodes.values():
        shrink = MODULE_SHRINKS.get(node.op_name)
        module_name = graph.module_names.get(id(node.call.module))
        # None only for a call outside the model, which no shrink rule applies to
        module = cast(nn.Module, modules.get(module_name))
        if shrink is None or not shrink.applies_to(module) or not node.inputs:
            continue
        channel_axis = shrink.input_channel_axis % len(graph.shape(node.inputs[0]))
        old_attributes[id(module)] = (node, module_name, module,
                                      kept_size(graph, removed, node.inputs[0], channel_axis),
                                      _full_pruned_size(module, module_name, plan))
    _replace_tensors(model, plan, spec, on_replaced)
    add_folded_biases(model, folded, plan, spec.added_biases)
    for node, module_name, module, kept_in, full_size in old_attributes.values():
        shrink = MODULE_SHRINKS[node.op_name]
        for name, value in shrink.update(module, node, kept_in).items():
            _set_attribute(spec, module_name, module, name, value)
        if shrink.replace is not None and full_size is not None:
            set_submodule(model, module_name, shrink.replace(module, full_size))
            spec.replaced_modules[module_name] = {"class": "registered", "op_name": node.op_name,
                                                  "full_size": full_size}
        _restructure(model, module_name, module, node.op_name, plan, spec)
    _replace_attention_modules(model, plan, spec, attention_head_dims)
    _update_attention_sizes(model, plan, spec)
    modules = dict(model.named_modules())
    for update in graph.analysis.literal_updates:
        size = kept_size(graph, removed, update.value_id, update.axis)
        _set_attribute(spec, update.module_name, modules[update.module_name], update.attribute, size)
    return spec


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at dotted path ``name`` (``nn.Module.set_submodule`` only exists from torch 2.5)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _full_pruned_size(module: nn.Module, module_name: str, plan: PruningPlan) -> Optional[int]:
    """Size before pruning of the first pruned axis of ``module``'s own parameters (None if none is pruned)."""
    for name, tensor in module._parameters.items():
        axes = plan.keep.get(f"{module_name}.{name}" if module_name else name)
        if tensor is not None and axes:
            return length(tensor.shape, next(iter(axes)))
    return None


def _restructure(model: nn.Module, module_name: str, module: nn.Module, op_name: str, plan: PruningPlan,
                 spec: SubnetSpec) -> None:
    """A module whose registered shrink rule restructures it (a mixture of experts whose experts keep different
    numbers of hidden units) is replaced by what the rule builds from its pruned tensors and the kept indices."""
    shrink = MODULE_SHRINKS[op_name]
    if shrink.restructure is None:
        return
    prefix = f"{module_name}." if module_name else ""
    kept = {name: plan.keep[prefix + name] for name in module._parameters if prefix + name in plan.keep}
    if not kept:
        return
    replacement, description = shrink.restructure(module, kept)
    set_submodule(model, module_name, replacement)
    spec.replaced_modules[module_name] = {"class": "registered", "op_name": op_name, "restructured": description}


def _bake_standardised_convs(graph, model: nn.Module, plan: PruningPlan, spec: SubnetSpec) -> None:
    """Weight-standardised convolutions losing input channels compute their standardisation now, from the full
    weight (see :class:`StandardisedConv2d`); those that only lose output channels keep their own class."""
    for name in graph.analysis.standardised_convs:
        if 1 in plan.keep.get(f"{name}.weight", {}):
            conv = cast(nn.Conv2d, model.get_submodule(name))
            set_submodule(model, name, StandardisedConv2d.from_module(conv))
            spec.replaced_modules[name] = {"class": "StandardisedConv2d"}


def _replace_attention_modules(model: nn.Module, plan: PruningPlan, spec: SubnetSpec,
                               head_dims: Dict[str, int]) -> None:
    """nn.MultiheadAttention cannot run with pruned heads or a pruned embedding: swap in our module."""
    for name, head_dim in head_dims.items():
        prefix = name + "." if name else ""
        if any(t.startswith(prefix + "in_proj_") or t.startswith(prefix + "out_proj.") for t in plan.keep):
            attention = cast(nn.MultiheadAttention, model.get_submodule(name))
            set_submodule(model, name, PrunedMultiheadAttention.from_module(attention, head_dim))
            spec.replaced_modules[name] = {"class": "PrunedMultiheadAttention", "head_dim": head_dim}


def restore_subnet(model: nn.Module, spec: SubnetSpec) -> nn.Module:
    """Give a fresh instance of the original architecture the compressed shapes and attributes of ``spec``.

    Tensor values are left uninitialised; load the compressed state dict afterwards.
    """
    named: Dict[str, torch.Tensor] = dict(model.named_parameters())
    named.update(dict(model.named_buffers()))
    missing = sorted(set(spec.shapes) - set(named))
    if missing:
        raise ValueError(f"the model has no tensors named {missing[:5]}: is it an instance of the architecture "
                         "that was compressed?")
    replacements = {}
    for name, shape in spec.shapes.items():
        old = named[name]
        data = torch.empty(shape, dtype=old.dtype, device=old.device)
        replacements[id(old)] = nn.Parameter(data, requires_grad=old.requires_grad) \
            if isinstance(old, nn.Parameter) else data
    Store = Dict[str, Any]  # a module's parameters or buffers: each gets back a tensor of its own kind
    for module in model.modules():
        for store in cast(Tuple[Store, Store], (module._parameters, module._buffers)):
            for key, tensor in list(store.items()):
                if tensor is not None and id(tensor) in replacements:
                    store[key] = replacements[id(tensor)]
    for name, size in spec.added_biases.items():
        layer = model.get_submodule(name)
        weight = cast(torch.Tensor, layer.weight)
        layer.bias = nn.Parameter(torch.empty(size, dtype=weight.dtype, device=weight.device))
    for name, description in spec.replaced_modules.items():
        set_submodule(model, name, _replacement(model.get_submodule(name), name, description))
    modules = dict(model.named_modules())
    for module_name, attributes in spec.attributes.items():
        for name, value in attributes.items():
            current = _get_attribute(modules[module_name], name)
            set_module_attribute(modules[module_name], name, tuple(value) if isinstance(current, tuple) else value)
    return model


def _replacement(module: nn.Module, name: str, description: Dict[str, Any]) -> nn.Module:
    """The module ``restore_subnet`` puts at ``name`` in place of a fresh ``module``, as ``description`` says."""
    kind = description.get("class")
    if kind == "PrunedMultiheadAttention":
        return PrunedMultiheadAttention.from_module(cast(nn.MultiheadAttention, module), int(description["head_dim"]))
    if kind == "StandardisedConv2d":
        return StandardisedConv2d.from_module(cast(nn.Conv2d, module))
    if kind == "registered" and description.get("op_name") in MODULE_SHRINKS:
        shrink = MODULE_SHRINKS[description["op_name"]]
        if "restructured" in description and shrink.restore is not None:
            return shrink.restore(module, description["restructured"])
        replace = cast(ModuleReplace, shrink.replace)  # what wrote this entry, unless restore applied above
        return replace(module, int(description["full_size"]))
    raise ValueError(f"unknown replacement module {kind!r} for {name}")
