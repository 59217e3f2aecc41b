"""Pruned channels that are a known constant instead of zero, and the layers that can absorb them.

A shared scalar after a zeroed group (PoolFormer-V2's StarReLU ``s * relu(x) ** 2 + b``, HGNetV2's
LearnableAffineBlock ``scale * x + bias``) turns the group's pruned channels into one constant ``c`` per channel:
the same at every position and for every input. A later Linear or unpadded convolution turns ``c`` into a constant
per output channel, so removing the channels is exact once that constant is added to the layer's bias (the subnet
constructor does it, see :mod:`only_train_once.subnet_construction.constant_folding`). A padded convolution sees
``c`` at interior positions only, so its border outputs would change: there the channels stay pinned.

The zero-flow pass asks :func:`constant_units` which units of a value are *constant*: at the elements of their
pruned slices, the value does not depend on the input, nor on any coordinate other than the one along the axis
that carries the unit. Only operators known to keep that property pass it on; every other call drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional

from torch import nn

#: Elementwise catalogue kinds: a constant stays constant when every other operand is an input-independent scalar.
_ELEMENTWISE = frozenset({"elementwise", "pow", "clamp", "mul", "add", "div", "quantize", "prelu"})
#: Movement kinds that keep each carrying axis whole (views merging it with size-1 axes, permutes, expands).
_AXIS_KEEPING = frozenset({"reshape", "transpose", "expand", "repeat"})
#: Kinds that select or reduce along other axes: each output element is one of, or a reduction over, its inputs
#: at the same coordinate of the carrying axis.
_SELECTING = frozenset({"split", "unbind", "slice", "reduce"})


@dataclass(frozen=True)
class ConstantFold:
    """Layer ``module_name`` reads pruned channels that are constants along ``axis`` of its input ``value_id``:
    the subnet constructor adds their contribution to the layer's bias before removing them."""

    module_name: str
    value_id: str
    axis: int


def constant_units(analysis, node, out: str, constant: Callable[[str], FrozenSet[int]],
                   independent: Callable[[str], bool]) -> FrozenSet[int]:
    """Units of ``out`` whose pruned slices stay constant through ``node``, given ``constant(value_id)`` for its
    inputs and ``independent(value_id)`` (whether a value depends on no model input)."""
    kind = node.op_kind.op_name if node.op_kind is not None else None
    refs = node.tensor_args
    units = analysis.value_units(out)
    if kind in _ELEMENTWISE:
        return frozenset(uid for uid in units if all(_keeps(analysis, r, uid, constant, independent) for r in refs))
    if kind in _AXIS_KEEPING and refs:
        return frozenset(uid for uid in units & constant(refs[0]) if _carrying_axes_kept(analysis, refs[0], out, uid)
                         and all(independent(r) for r in refs[1:]))
    if kind in _SELECTING and refs and all(independent(r) for r in refs[1:]):
        return units & constant(refs[0])
    if kind == "concat":
        return _concat_constants(analysis, node, out, constant)
    if kind in ("averagepool", "maxpool") and node.call.name.startswith("adaptive"):
        return units & constant(refs[0])  # a global pool of a constant is that constant
    return frozenset()


def initial_constant_units(analysis, value_id: str, zero: FrozenSet[int]) -> FrozenSet[int]:
    """Constant units of a value no call produced: its zeroed units, and for a parameter or buffer every unit
    whose other axes have size 1 (a per-channel tensor does not vary with the input or the position)."""
    value = analysis.graph.values[value_id]
    if value.kind not in ("param", "buffer"):
        return zero
    axes = analysis.axes(value_id)
    result = set(zero)
    for uid in analysis.value_units(value_id):
        if all(size == 1 for size, space in zip(value.shape, axes) if uid not in analysis.units(space)):
            result.add(uid)
    return frozenset(result)


def independent_output(node, independent: Callable[[str], bool]) -> bool:
    """Whether ``node``'s outputs depend on no model input: an elementwise or movement call on such values only
    (factories are left out: ``randn`` depends on none, but is not constant)."""
    kind = node.op_kind.op_name if node.op_kind is not None else None
    keeps = kind in _ELEMENTWISE or kind in _AXIS_KEEPING or kind in _SELECTING or kind == "concat"
    return keeps and bool(node.tensor_args) and all(independent(r) for r in node.tensor_args)


def _keeps(analysis, ref: str, uid: int, constant, independent) -> bool:
    if uid in analysis.value_units(ref):
        return uid in constant(ref)
    # an operand without the unit is broadcast over its channels: only an input-independent scalar keeps them equal
    return independent(ref) and all(size == 1 for size in analysis.shape(ref))


def _carrying_axes_kept(analysis, source: str, out: str, uid: int) -> bool:
    """Every axis of ``source`` that carries unit ``uid`` is an axis of ``out`` as a whole (same space)."""
    spaces = analysis.spaces
    out_spaces = {spaces.find(axis).uid for axis in analysis.axes(out)}
    return all(spaces.find(axis).uid in out_spaces for axis in analysis.axes(source) if uid in analysis.units(axis))


def _concat_constants(analysis, node, out: str, constant) -> FrozenSet[int]:
    """Along the carrying axis each part brings its own channels; along another axis the parts' constants would
    stack up into a value that varies with the position."""
    dim = node.arg(1, "dim", 0) or 0
    out_axes = analysis.axes(out)
    dim = int(dim) + len(out_axes) if int(dim) < 0 else int(dim)
    carried = analysis.units(out_axes[dim])
    result = set()
    for uid in analysis.value_units(out) & carried:
        holders = [r for r in node.tensor_args if uid in analysis.value_units(r)]
        if all(uid in constant(r) for r in holders):
            result.add(uid)
    return frozenset(result)


def fold_blocker(analysis, node) -> Optional[str]:
    """Why the layer of ``node`` (a stem call reading pruned constant channels) cannot absorb them into its bias;
    None when it can: an ``nn.Linear`` or unpadded, non-transposed ``nn.Conv*d`` called once, on its own weight."""
    name = node.op_kind.op_name
    module = node.call.module
    if name not in ("linear", "conv") or not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) \
            or getattr(module, "transposed", False):
        return "it is not an nn.Linear or nn.Conv layer"
    module_name = analysis.graph.module_names.get(id(module))
    weight = node.value_arg(1, "weight")
    if module_name is None or weight is None or analysis.graph.values[weight].name != _join(module_name, "weight"):
        return "it does not run on its own weight parameter"
    if name == "conv" and not _unpadded(node.arg(4, "padding", 0)):
        return ("it pads its input, so border positions see the constant only in part and its contribution "
                "depends on the position")
    calls = [n for n in analysis.graph.nodes.values() if n.call.module is module and n.op_kind is not None
             and n.op_kind.op_name == name]
    if len(calls) != 1:
        return "it is called more than once"
    return None


def record_fold(analysis, node, value_id: str, axis: int, folds: Dict[str, ConstantFold]) -> None:
    module_name = analysis.graph.module_names[id(node.call.module)]
    folds.setdefault(module_name, ConstantFold(module_name, value_id, axis))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unpadded(padding) -> bool:
    if isinstance(padding, str):
        return padding == "valid"
    if isinstance(padding, (tuple, list)):
        return all(int(p) == 0 for p in padding)
    return int(padding) == 0
