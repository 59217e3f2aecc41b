"""The operator catalogue: what each traced call means for pruning and for cost.

One :class:`OpKind` per operator family, looked up by the traced call's name (``conv2d``, ``add``,
``view``, ``layer_norm``...). Each kind states

* ``propagate(ctx, node)``: how the call relates the index spaces of its inputs, parameters and outputs
  (see :mod:`only_train_once.dependency_graph.spaces`), which spaces it pins, and which axis of each
  parameter it *owns* (the axis along which the parameter is pruned with its group);
* ``zero``: how zeroed (pruned) slices flow through it — whether a slice that is zero at the input is
  still zero at the output (``relu(0) = 0``; ``sigmoid(0) = 0.5``), which is what makes a group
  zero-invariant;
* ``macs(node, ctx)``: multiply-accumulates of one call (FLOPs are reported as multiplications, as the
  reference does, so they equal MACs).

Adding an operator means adding one entry to :data:`OP_KINDS` (users do it with
:func:`only_train_once.register_operator` / :func:`only_train_once.register_module`, see
:mod:`only_train_once.operation.registry`). A call that is not in the catalogue is
reported and every space it touches is pinned, so it can never produce a wrong subnet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..graph.trace import ValueRef

# Zero-flow categories (see OpKind.zero).
PRESERVE = "preserve"  # f(0) = 0 elementwise: relu, gelu, dropout, views
GENERATE = "generate"  # f(0) != 0: sigmoid, exp, cos, adding a constant
MUL = "mul"  # zero if any factor is zero
ADD = "add"  # zero if every term is zero
DIV = "div"  # zero if the numerator is zero
STEM = "stem"  # fresh output channels that are zero when pruned
AFFINE_NORM = "affine_norm"  # channel-wise normalisation followed by zeroed affine params
CONCAT = "concat"
CUSTOM = "custom"


@dataclass(frozen=True)
class OpKind:
    """One operator family of the catalogue."""

    op_name: str
    propagate: Callable
    zero: str = PRESERVE
    is_stem: bool = False
    macs: Optional[Callable] = None
    zero_rule: Optional[Callable] = None  # zero_rule(ctx, node, output, nonzero) -> units that may be nonzero
    weight_index: Optional[int] = None  # AFFINE_NORM: position of the affine weight (also found as ``weight=``)


@dataclass(frozen=True)
class RuleFindings:
    """What an index-space rule found about its call beyond the spaces, returned by the rule (``propagate``) and
    recorded on the node by the analysis's ``propagate`` pass: attributes for ``node.cfg_params`` (kernel shape,
    concat axis, reduced axes...) and, where the call is a special case of its family, the more specific
    ``op_name`` (an adaptive pool to 1x1 is a global pool)."""

    cfg_params: Mapping[str, Any] = field(default_factory=dict)
    op_name: Optional[str] = None


# ---------------------------------------------------------------------------------------------------
# helpers

def _tensor_refs(node) -> List[str]:
    return node.tensor_args


def _out(node) -> str:
    return node.outputs[0]


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _dims_arg(value, ndim: int) -> List[int]:
    if value is None:
        return list(range(ndim))
    if isinstance(value, int):
        return [_norm_dim(value, ndim)]
    return [_norm_dim(int(d), ndim) for d in value]


def passthrough(ctx, node) -> None:
    """Output has the input's shape and index spaces (elementwise unary ops, dtype casts, copies)."""
    source = node.value_arg(0, "input") or next(iter(_tensor_refs(node)), None)
    out = _out(node)
    if source is None or ctx.shape(source) != ctx.shape(out):
        return broadcast(ctx, node)
    ctx.set_axes(out, ctx.axes(source))
    for other in _tensor_refs(node)[1:]:
        ctx.pin_value(other, f"{node.op_name} argument")


def cast_like(ctx, node) -> None:
    """``x.type_as(y)`` / ``x.to(y)``: the output is ``x`` in ``y``'s dtype; ``y`` lends its dtype, not its data."""
    source = node.value_arg(0, "input")
    if source is None or ctx.shape(source) != ctx.shape(_out(node)):
        return broadcast(ctx, node)
    ctx.set_axes(_out(node), ctx.axes(source))


def broadcast(ctx, node) -> None:
    """Elementwise op over broadcast inputs: equal non-singleton axes are the same space."""
    out = _out(node)
    out_shape = ctx.shape(out)
    spaces = [None] * len(out_shape)
    for ref in _tensor_refs(node):
        shape = ctx.shape(ref)
        axes = ctx.axes(ref)
        offset = len(out_shape) - len(shape)
        if offset < 0:
            ctx.pin_value(ref, f"{node.op_name}: operand has more dims than the result")
            continue
        for i, size in enumerate(shape):
            j = i + offset
            if size == out_shape[j] and size > 1:
                spaces[j] = axes[i] if spaces[j] is None else ctx.spaces.union(spaces[j], axes[i])
    ctx.set_axes(out, [s if s is not None else ctx.spaces.new(size, f"{node.op_name}:broadcast", pinned=True)
                       for s, size in zip(spaces, out_shape)])


def unknown(ctx, node) -> None:
    ctx.unknown(node)


def _set_fresh(ctx, node, value_id: str, origin: str) -> None:
    ctx.set_axes(value_id, [ctx.spaces.new(s, origin, pinned=True) for s in ctx.shape(value_id)])


def factory(ctx, node) -> None:
    """Tensors created from shapes or constants: their axes are fixed."""
    for out in node.outputs:
        _set_fresh(ctx, node, out, node.op_name)
    for ref in _tensor_refs(node):
        ctx.pin_value(ref, f"{node.op_name} argument")


def zeros_factory(ctx, node) -> None:
    """``torch.zeros(b, x.shape[1], n)`` / ``x.new_zeros(...)``: an axis whose size is read from a tensor's axis
    (a scan's initial state, Mamba's ``ssm_state``) follows that axis when it is pruned; the tensor holds zeros,
    so pruned slices are zero in it (see :func:`nothing_nonzero`). Other sizes are fixed."""
    sizes = node.call.args[1:] if node.call.name == "new_zeros" else node.call.args
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = sizes[0]
    out = _out(node)
    axes = []
    for k, size in enumerate(ctx.shape(out)):
        source = exact_shape_source(sizes[k]) if k < len(sizes) else None
        axes.append(ctx.axes(source[0])[source[1]] if source is not None
                    else ctx.spaces.new(size, node.op_name, pinned=True))
    ctx.set_axes(out, axes)


def nothing_nonzero(ctx, node, out, nonzero) -> frozenset:
    """Zero rule of a tensor of zeros: no slice of it is nonzero."""
    return frozenset()


def exact_shape_source(size) -> Optional[tuple]:
    """``(value id, axis)`` when ``size`` *is* a traced tensor's size (``x.shape[1]``), else None."""
    sources = getattr(size, "sources", None)
    if getattr(size, "exact", False) and sources is not None and len(sources) == 1:
        ((kind, value_id, axis),) = sources
        if kind == "shape":
            return value_id, axis
    return None


def like_factory(ctx, node) -> None:
    """``zeros_like(x)`` and friends: same shape, no data dependency; zeros may share x's spaces."""
    source = node.value_arg(0, "input")
    if source is not None and node.call.name == "zeros_like":
        ctx.set_axes(_out(node), ctx.axes(source))
    else:
        factory(ctx, node)


# ---------------------------------------------------------------------------------------------------
# layers with parameters

def conv(ctx, node) -> RuleFindings:
    x, w, b = node.value_arg(0, "input"), node.value_arg(1, "weight"), node.value_arg(2, "bias")
    groups = int(node.arg(6, "groups", 1) or 1)
    out = _out(node)
    x_axes, w_axes = ctx.axes(x), ctx.axes(w)
    w_shape = ctx.shape(w)
    in_channels = ctx.shape(x)[1]
    out_channels = w_shape[0]
    ctx.claim(w, 0, node)
    if b is not None:
        ctx.spaces.union(ctx.axes(b)[0], w_axes[0])
        ctx.claim(b, 0, node)
    if groups == 1:
        ctx.spaces.union(x_axes[1], w_axes[1])
    elif groups == in_channels and out_channels == in_channels:
        # Depthwise: output channel c reads input channel c only.
        ctx.spaces.union(x_axes[1], w_axes[0])
    elif groups == in_channels:
        multiplier = out_channels // in_channels
        in_block, per = ctx.spaces.factor(w_axes[0], [in_channels, multiplier], "depthwise multiplier")
        ctx.spaces.union(in_block, x_axes[1])
        ctx.pin(per, "depthwise channel multiplier")
    else:
        # Grouped convolution: whole convolution groups can be removed together.
        in_groups, in_inner = ctx.spaces.factor(x_axes[1], [groups, in_channels // groups], "conv groups")
        out_groups, out_inner = ctx.spaces.factor(w_axes[0], [groups, out_channels // groups], "conv groups")
        ctx.spaces.union(in_groups, out_groups)
        ctx.spaces.union(in_inner, w_axes[1])
        ctx.pin(in_inner, "channels inside a convolution group")
        ctx.pin(out_inner, "channels inside a convolution group")
    spatial = [ctx.spaces.new(s, "conv spatial", pinned=True) for s in ctx.shape(out)[2:]]
    ctx.set_axes(out, [x_axes[0], w_axes[0]] + spatial)
    for axis in w_axes[2:]:
        ctx.pin(axis, "kernel window")
    return RuleFindings(_conv_attributes(node, w_shape, groups))


def _conv_attributes(node, w_shape, groups) -> dict:
    rank = len(w_shape) - 2

    def tup(value, default):
        value = default if value is None else value
        return [int(value)] * rank if isinstance(value, int) else [int(v) for v in value]

    padding = node.arg(4, "padding", 0)
    pads = tup(padding, 0) * 2 if not isinstance(padding, str) else None
    return {"kernel_shape": list(w_shape[2:]), "strides": tup(node.arg(3, "stride", 1), 1), "pads": pads,
            "dilations": tup(node.arg(5, "dilation", 1), 1), "group": groups}


def conv_transpose(ctx, node) -> RuleFindings:
    x, w, b = node.value_arg(0, "input"), node.value_arg(1, "weight"), node.value_arg(2, "bias")
    groups = int(node.arg(6, "groups", 1) or 1)
    out = _out(node)
    x_axes, w_axes = ctx.axes(x), ctx.axes(w)
    ctx.claim(w, 1, node)
    if b is not None:
        ctx.spaces.union(ctx.axes(b)[0], w_axes[1])
        ctx.claim(b, 0, node)
    ctx.spaces.union(x_axes[1], w_axes[0])
    if groups != 1:
        ctx.pin(w_axes[0], "grouped transposed convolution")
        ctx.pin(w_axes[1], "grouped transposed convolution")
    spatial = [ctx.spaces.new(s, "convtranspose spatial", pinned=True) for s in ctx.shape(out)[2:]]
    ctx.set_axes(out, [x_axes[0], w_axes[1]] + spatial)
    for axis in w_axes[2:]:
        ctx.pin(axis, "kernel window")
    return RuleFindings({"kernel_shape": list(ctx.shape(w)[2:]), "group": groups,
                         "strides": _conv_attributes(node, ctx.shape(w), groups)["strides"]})


def linear(ctx, node) -> None:
    x, w, b = node.value_arg(0, "input"), node.value_arg(1, "weight"), node.value_arg(2, "bias")
    x_axes, w_axes = ctx.axes(x), ctx.axes(w)
    ctx.claim(w, 0, node)
    ctx.spaces.union(x_axes[-1], w_axes[1])
    if b is not None:
        ctx.spaces.union(ctx.axes(b)[0], w_axes[0])
        ctx.claim(b, 0, node)
    ctx.set_axes(_out(node), list(x_axes[:-1]) + [w_axes[0]])


def matmul(ctx, node) -> None:
    refs = _tensor_refs(node)
    if node.call.name == "addmm":
        bias, a, b = refs[0], refs[1], refs[2]
    else:
        bias, (a, b) = None, refs[:2]
    a_shape, b_shape = ctx.shape(a), ctx.shape(b)
    if len(a_shape) < 2 or len(b_shape) < 2:
        return unknown(ctx, node)
    a_axes, b_axes = ctx.axes(a), ctx.axes(b)
    ctx.spaces.union(a_axes[-1], b_axes[-2])
    out = _out(node)
    out_shape = ctx.shape(out)
    batch = [None] * (len(out_shape) - 2)
    for axes, shape in ((a_axes, a_shape), (b_axes, b_shape)):
        offset = len(batch) - (len(shape) - 2)
        for i, size in enumerate(shape[:-2]):
            j = i + offset
            if size == out_shape[j] and size > 1:
                batch[j] = axes[i] if batch[j] is None else ctx.spaces.union(batch[j], axes[i])
    batch = [s if s is not None else ctx.spaces.new(size, "matmul broadcast", pinned=True)
             for s, size in zip(batch, out_shape[:-2])]
    ctx.set_axes(out, batch + [a_axes[-2], b_axes[-1]])
    if ctx.kind(b) == "param":
        ctx.claim(b, len(b_shape) - 1, node)
    if ctx.kind(a) == "param":
        ctx.claim(a, len(a_shape) - 2, node)
    if bias is not None:
        bias_axes = ctx.axes(bias)
        if ctx.shape(bias) and ctx.shape(bias)[-1] == out_shape[-1]:
            ctx.spaces.union(bias_axes[-1], b_axes[-1])
            if ctx.kind(bias) == "param":
                ctx.claim(bias, len(ctx.shape(bias)) - 1, node)


def matvec(ctx, node) -> None:
    """``mv(A, x)`` and ``dot(a, b)``: a contraction over the last axis of the first operand."""
    a, b = _tensor_refs(node)[:2]
    a_axes, b_axes = ctx.axes(a), ctx.axes(b)
    if node.call.name == "mv":
        ctx.spaces.union(a_axes[1], b_axes[0])
        ctx.set_axes(_out(node), [a_axes[0]])
    else:
        ctx.spaces.union(a_axes[0], b_axes[0])
        ctx.set_axes(_out(node), [])


def batch_norm(ctx, node) -> None:
    """batch_norm / instance_norm: per-channel statistics. With batch statistics (``training=True``) or per
    instance, every other axis is averaged over, so it is pinned; except in a weight-standardised convolution
    (``batch_norm(self.weight.reshape(1, out, -1), training=True)``, timm's ``StdConv2d``/``ScaledStdConv2d``),
    whose input channels stay prunable because the subnet constructor computes the standardised weight from the
    full weight before pruning them (see :func:`standardises_own_weight`)."""
    x = node.value_arg(0, "input")
    axes = ctx.axes(x)
    if node.call.name == "batch_norm" and node.arg(5, "training", False) and standardises_own_weight(ctx, node):
        ctx.record_weight_standardisation(node)
    elif node.call.name == "instance_norm" or node.arg(5, "training", False):
        for axis in axes[2:]:
            ctx.pin(axis, f"{node.call.name} computes statistics over it")
    for index, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        ref = node.value_arg(index, name)
        if ref is not None:
            ctx.spaces.union(ctx.axes(ref)[0], axes[1])
            ctx.claim(ref, 0, node)
    ctx.set_axes(_out(node), axes)


def standardises_own_weight(ctx, node) -> bool:
    """Whether a batch_norm call standardises the weight of the convolution whose forward makes it, per output
    channel (``w.reshape(1, out_channels, -1)``) with an ``eps`` attribute the baked module can reuse."""
    module = node.call.module
    x = node.value_arg(0, "input")
    if not isinstance(module, torch.nn.modules.conv._ConvNd) or module.transposed or not hasattr(module, "eps"):
        return False
    weight = module._parameters.get("weight")
    shape = ctx.shape(x)
    # the affine part must be the one StandardisedConv2d reproduces: none (StdConv2d) or gain * scale
    affine_known = node.arg(3, "weight") is None or isinstance(module._parameters.get("gain"), torch.nn.Parameter)
    return (weight is not None and len(shape) == 3 and shape[0] == 1 and shape[1] == weight.shape[0]
            and shape[2] == weight[0].numel() and node.value_arg(1, "running_mean") is None
            and node.arg(4, "bias") is None and affine_known)


def group_norm(ctx, node) -> RuleFindings:
    x = node.value_arg(0, "input")
    num_groups = int(node.arg(1, "num_groups"))
    axes = ctx.axes(x)
    channels = ctx.shape(x)[1]
    _, inner = ctx.spaces.factor(axes[1], [num_groups, channels // num_groups], "group_norm")
    ctx.pin(inner, "channels inside a GroupNorm group are normalised together")
    for index, name in ((2, "weight"), (3, "bias")):
        ref = node.value_arg(index, name)
        if ref is not None:
            ctx.spaces.union(ctx.axes(ref)[0], axes[1])
            ctx.claim(ref, 0, node)
    ctx.set_axes(_out(node), axes)
    return RuleFindings({"num_groups": num_groups})


def layer_norm(ctx, node) -> None:
    x = node.value_arg(0, "input")
    shape = node.arg(1, "normalized_shape")
    count = 1 if isinstance(shape, int) else len(shape)
    axes = ctx.axes(x)
    for axis in axes[-count:]:
        ctx.pin(axis, f"{node.op_name} normalises over it")
    weight_index = 2
    for index, name in ((weight_index, "weight"), (weight_index + 1, "bias")):
        ref = node.value_arg(index, name)
        if ref is not None and name in ("weight", "bias"):
            for a, b in zip(ctx.axes(ref), axes[-count:]):
                ctx.spaces.union(a, b)
            ctx.claim(ref, 0, node)
    ctx.set_axes(_out(node), axes)


def embedding(ctx, node) -> None:
    ids, w = node.value_arg(0, "input"), node.value_arg(1, "weight")
    w_axes = ctx.axes(w)
    ctx.pin(w_axes[0], "embedding rows are selected by token ids")
    ctx.claim(w, 1, node)
    ctx.set_axes(_out(node), list(ctx.axes(ids)) + [w_axes[1]])


def prelu(ctx, node) -> None:
    x, w = node.value_arg(0, "input"), node.value_arg(1, "weight")
    axes = ctx.axes(x)
    if ctx.shape(w) and ctx.shape(w)[0] > 1:
        ctx.spaces.union(ctx.axes(w)[0], axes[1])
        ctx.claim(w, 0, node)
    ctx.set_axes(_out(node), axes)


# ---------------------------------------------------------------------------------------------------
# shape operators

def reshape(ctx, node) -> None:
    """view/reshape/flatten/squeeze: relate axes by matching products of consecutive sizes."""
    source = node.value_arg(0, "input") or _tensor_refs(node)[0]
    in_shape, out_shape = ctx.shape(source), ctx.shape(_out(node))
    in_axes = ctx.axes(source)
    out_axes: List = [None] * len(out_shape)
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        if i < len(in_shape) and in_shape[i] == 1 and (j >= len(out_shape) or out_shape[j] != 1):
            i += 1
            continue
        if j < len(out_shape) and out_shape[j] == 1 and (i >= len(in_shape) or in_shape[i] != 1):
            out_axes[j] = ctx.spaces.new(1, "reshape", pinned=True)
            j += 1
            continue
        if i >= len(in_shape) or j >= len(out_shape):
            return unknown(ctx, node)
        group_in, group_out = [i], [j]
        p_in, p_out = in_shape[i], out_shape[j]
        while p_in != p_out:
            if p_in < p_out:
                i += 1
                if i >= len(in_shape):
                    return unknown(ctx, node)
                group_in.append(i)
                p_in *= in_shape[i]
            else:
                j += 1
                if j >= len(out_shape):
                    return unknown(ctx, node)
                group_out.append(j)
                p_out *= out_shape[j]
        i += 1
        j += 1
        sources = [in_axes[k] for k in group_in if in_shape[k] > 1] or [in_axes[group_in[0]]]
        merged = ctx.spaces.product(sources, "reshape")
        targets = [k for k in group_out if out_shape[k] > 1] or group_out[:1]
        if len(targets) == 1:
            out_axes[targets[0]] = merged
        else:
            for k, space in zip(targets, ctx.spaces.factor(merged, [out_shape[k] for k in targets], "reshape")):
                out_axes[k] = space
        for k in group_out:
            if out_axes[k] is None:
                out_axes[k] = ctx.spaces.new(1, "reshape", pinned=True)
    ctx.set_axes(_out(node), out_axes)
    ctx.record_literal_shape(node)


def permute(ctx, node) -> None:
    source = node.value_arg(0, "input")
    axes = ctx.axes(source)
    ndim = len(axes)
    name = node.call.name
    if name in ("transpose", "swapaxes", "swapdims"):
        d0, d1 = _norm_dim(int(node.arg(1, "dim0")), ndim), _norm_dim(int(node.arg(2, "dim1")), ndim)
        order = list(range(ndim))
        order[d0], order[d1] = order[d1], order[d0]
    elif name in ("t", "T", "numpy_T"):
        order = list(reversed(range(ndim)))
    elif name == "mT":
        order = list(range(ndim - 2)) + [ndim - 1, ndim - 2]
    elif name == "movedim":
        src = _dims_arg(node.arg(1, "source"), ndim)
        dst = _dims_arg(node.arg(2, "destination"), ndim)
        rest = [d for d in range(ndim) if d not in src]
        moved: Dict[int, int] = dict(zip(dst, src))
        it = iter(rest)
        order = [moved[d] if d in moved else next(it) for d in range(ndim)]
    else:
        dims = node.call.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        if not dims:
            dims = node.arg(1, "dims")
        order = [_norm_dim(int(d), ndim) for d in dims]
    ctx.set_axes(_out(node), [axes[k] for k in order])


def concat(ctx, node) -> RuleFindings:
    tensors = node.arg(0, "tensors")
    refs = [t.value_id for t in tensors if isinstance(t, ValueRef)]
    refs = [r for r in refs if ctx.shape(r) != (0,)]
    out = _out(node)
    ndim = len(ctx.shape(out))
    dim = _norm_dim(int(node.arg(1, "dim", 0) or 0), ndim)
    axes: List = list(ctx.axes(refs[0]))
    for ref in refs[1:]:
        for k, space in enumerate(ctx.axes(ref)):
            if k != dim:
                axes[k] = ctx.spaces.union(axes[k], space)
    axes[dim] = ctx.spaces.concat([ctx.axes(r)[dim] for r in refs], "concat")
    ctx.set_axes(out, axes)
    return RuleFindings({"axis": dim})


def stack(ctx, node) -> None:
    tensors = node.arg(0, "tensors")
    refs = [t.value_id for t in tensors if isinstance(t, ValueRef)]
    out = _out(node)
    dim = _norm_dim(int(node.arg(1, "dim", 0) or 0), len(ctx.shape(out)))
    axes = list(ctx.axes(refs[0]))
    for ref in refs[1:]:
        axes = [ctx.spaces.union(a, b) for a, b in zip(axes, ctx.axes(ref))]
    axes.insert(dim, ctx.spaces.new(len(refs), "stack", pinned=True))
    ctx.set_axes(out, axes)


def split(ctx, node) -> None:
    """chunk/split/tensor_split: the split axis becomes a sequence of spaces, one per output."""
    source = node.value_arg(0, "input") or _tensor_refs(node)[0]
    axes = ctx.axes(source)
    ndim = len(axes)
    dim = _norm_dim(int(node.arg(2, "dim", 0) or 0), ndim)
    sizes = [ctx.shape(o)[dim] for o in node.outputs]
    if node.call.name == "chunk" and len(sizes) > 1 and len(set(sizes)) == 1:
        return _equal_chunks(ctx, node, axes, dim, len(sizes))
    parts = ctx.spaces.split(axes[dim], sizes, node.call.name)
    if parts is None:
        ctx.pin(axes[dim], f"{node.call.name} does not align with earlier splits")
        parts = [ctx.spaces.new(s, node.call.name, pinned=True) for s in sizes]
    for out, part in zip(node.outputs, parts):
        out_axes = list(axes)
        out_axes[dim] = part
        ctx.set_axes(out, out_axes)
    ctx.record_split(node, parts)


def _equal_chunks(ctx, node, axes, dim: int, count: int) -> None:
    """``chunk`` re-splits into equal parts after pruning, so index i of every part is pruned together: the axis
    is the product (chunk, index in chunk), the chunk factor pinned and the index shared by all outputs."""
    chunks, inner = ctx.spaces.factor(axes[dim], [count, ctx.shape(node.outputs[0])[dim]], "chunk")
    ctx.pin(chunks, "chunk count")
    for out in node.outputs:
        out_axes = list(axes)
        out_axes[dim] = inner
        ctx.set_axes(out, out_axes)


def unbind(ctx, node) -> None:
    source = node.value_arg(0, "input")
    axes = ctx.axes(source)
    dim = _norm_dim(int(node.arg(1, "dim", 0) or 0), len(axes))
    ctx.pin(axes[dim], "unbind selects each index")
    for out in node.outputs:
        ctx.set_axes(out, axes[:dim] + axes[dim + 1:])


def getitem(ctx, node) -> None:
    source = node.value_arg(0, "input")
    index = node.arg(1, "index")
    axes = list(ctx.axes(source))
    in_shape = ctx.shape(source)
    items = list(index) if isinstance(index, (tuple, list)) and not _is_int_list(index) else [index]
    advanced = [i for i in items if isinstance(i, ValueRef) and len(ctx.shape(i.value_id)) > 0]
    masks = [i for i in advanced if ctx.graph.values[i.value_id].dtype == torch.bool]
    if len(advanced) > 1 or (advanced and any(isinstance(i, int) or i is None for i in items)) \
            or any(len(ctx.shape(m.value_id)) > 1 for m in masks):
        return unknown(ctx, node)
    out_axes: List = []
    k = 0
    ellipsis_span = len(in_shape) - sum(1 for i in items if i is not None and i is not Ellipsis)
    for item in items:
        if item is Ellipsis:
            out_axes.extend(axes[k:k + ellipsis_span])
            k += ellipsis_span
        elif item is None:
            out_axes.append(ctx.spaces.new(1, "getitem", pinned=True))
        elif isinstance(item, int):
            ctx.pin(axes[k], "indexed by a constant")
            k += 1
        elif isinstance(item, slice):
            start, stop, step = item.indices(in_shape[k])
            if (start, stop, step) == (0, in_shape[k], 1):
                out_axes.append(axes[k])
            elif step == 1 and stop > start and _slices_follow_pruning(ctx, node):
                out_axes.append(_slice_segment(ctx, axes[k], start, stop))
            else:
                ctx.pin(axes[k], "sliced by constants")
                out_axes.append(None)
            k += 1
        else:
            # One tensor index (``table[:, idx]``): its own axes replace the indexed one, in place.
            ctx.pin(axes[k], "indexed by a tensor or list")
            out_axes.extend([None] * _index_rank(ctx, item))
            k += 1
    out_axes.extend(axes[k:])
    out = _out(node)
    out_shape = ctx.shape(out)
    if len(out_axes) != len(out_shape):
        return unknown(ctx, node)
    ctx.set_axes(out, [a if a is not None else ctx.spaces.new(s, "getitem", pinned=True)
                       for a, s in zip(out_axes, out_shape)])


def _slices_follow_pruning(ctx, node) -> bool:
    """Whether the module running this slice rewrites its slice bounds after pruning (see
    :mod:`.sliced_modules`: Phi-3's fused ``qkv_proj``)."""
    from .sliced_modules import slices_follow_pruning

    try:
        module = ctx.graph.root_module.get_submodule(node.scope)
    except AttributeError:  # a scope that names no module (a function's)
        return False
    return slices_follow_pruning(module)


def _slice_segment(ctx, axis, start: int, stop: int):
    """``x[start:stop]`` along ``axis`` as one segment of it; the other slices of the same axis refine the same
    segments, so each part is pruned with its own units; a slice that cannot align with them is pinned."""
    sizes = [size for size in (start, stop - start, axis.size - stop) if size]
    parts = ctx.spaces.split(axis, sizes, "slice")
    if parts is None:
        ctx.pin(axis, "sliced by constants that do not align with other slices")
        return ctx.spaces.new(stop - start, "getitem", pinned=True)
    return parts[1 if start else 0]


def _index_rank(ctx, item) -> int:
    """Output axes produced by one index item: a long index tensor's own axes; a boolean mask, one."""
    if not isinstance(item, ValueRef):
        return 1
    if ctx.graph.values[item.value_id].dtype == torch.bool:
        return 1
    return len(ctx.shape(item.value_id))


def _is_int_list(index) -> bool:
    return isinstance(index, list) and all(isinstance(i, int) for i in index)


def setitem(ctx, node) -> None:
    target = node.value_arg(0, "input")
    index = node.arg(1, "index")
    items = list(index) if isinstance(index, tuple) else [index]
    axes = ctx.axes(target)
    full = all(isinstance(i, slice) and i == slice(None) or i is Ellipsis for i in items)
    if not full:
        for axis in axes:
            ctx.pin(axis, "partially overwritten by __setitem__")
    for ref in _tensor_refs(node)[1:]:
        ctx.pin_value(ref, "written by __setitem__")
    ctx.set_axes(_out(node), axes)


def select(ctx, node) -> None:
    """``x.select(dim, i)``: one constant index of ``dim`` (pinned); the other axes pass through."""
    source = node.value_arg(0, "input")
    axes = list(ctx.axes(source))
    dim = _norm_dim(int(node.arg(1, "dim")), len(axes))
    ctx.pin(axes[dim], "indexed by a constant")
    ctx.set_axes(_out(node), axes[:dim] + axes[dim + 1:])


def narrow(ctx, node) -> None:
    """``x.narrow(dim, start, length)``: a constant slice of ``dim`` (pinned unless it keeps everything)."""
    source = node.value_arg(0, "input")
    axes = list(ctx.axes(source))
    dim = _norm_dim(int(node.arg(1, "dim")), len(axes))
    out = _out(node)
    if ctx.shape(out)[dim] != ctx.shape(source)[dim]:
        ctx.pin(axes[dim], "sliced by constants")
        axes[dim] = ctx.spaces.new(ctx.shape(out)[dim], "narrow", pinned=True)
    ctx.set_axes(out, axes)


def view_write(ctx, node) -> None:
    """The base of a view written in place (:func:`~only_train_once.graph.trace.write_through_view`): the base
    keeps its spaces; the view's axes are related to them by the view calls that made it, and the write's
    zeros flow as a union (a pruned slice stays zero only if both the old base and the written view keep it)."""
    ctx.set_axes(_out(node), ctx.axes(node.value_arg(0, "base")))


def expand(ctx, node) -> None:
    source = node.value_arg(0, "input")
    in_shape, out_shape = ctx.shape(source), ctx.shape(_out(node))
    axes = ctx.axes(source)
    offset = len(out_shape) - len(in_shape)
    out_axes = [ctx.spaces.new(s, "expand", pinned=True) for s in out_shape[:offset]]
    for axis, size, out_size in zip(axes, in_shape, out_shape[offset:]):
        out_axes.append(axis if size == out_size else ctx.spaces.new(out_size, "expand", pinned=True))
    ctx.set_axes(_out(node), out_axes)
    ctx.record_literal_shape(node)


def repeat(ctx, node) -> None:
    source = node.value_arg(0, "input")
    in_shape, out_shape = ctx.shape(source), ctx.shape(_out(node))
    axes = ctx.axes(source)
    offset = len(out_shape) - len(in_shape)
    out_axes = [ctx.spaces.new(s, "repeat", pinned=True) for s in out_shape[:offset]]
    interleave = node.call.name == "repeat_interleave"
    for axis, size, out_size in zip(axes, in_shape, out_shape[offset:]):
        if size == out_size:
            out_axes.append(axis)
        else:
            copies = ctx.spaces.new(out_size // size, node.call.name, pinned=True)
            out_axes.append(ctx.spaces.product([axis, copies] if interleave else [copies, axis], node.call.name))
    ctx.set_axes(_out(node), out_axes)


def pool(ctx, node) -> Optional[RuleFindings]:
    """Pooling and resizing: the trailing window axes (1, 2 or 3 by the call's name; all but two for resizes) are
    mixed, so they are pinned and replaced; the leading axes pass through. ``avg_pool1d`` over a (B, L, D)
    feature axis or ``avg_pool3d`` over (B, 1, C, H, W) pins those channels."""
    source = node.value_arg(0, "input")
    axes = ctx.axes(source)
    window = _window_rank(node.call.name, len(axes))
    for axis in axes[len(axes) - window:]:
        ctx.pin(axis, f"{node.call.name} pools over it")
    for out in node.outputs:
        shape = ctx.shape(out)
        kept = list(axes[:len(axes) - window])
        spatial = [ctx.spaces.new(s, node.op_name, pinned=True) for s in shape[len(kept):]]
        ctx.set_axes(out, kept + spatial)
    name = node.call.name
    if "adaptive" in name and all(s == 1 for s in ctx.shape(_out(node))[2:]):
        return RuleFindings(op_name="globalaveragepool" if "avg" in name else "globalmaxpool")
    return None


def _window_rank(call_name: str, ndim: int) -> int:
    for rank in (1, 2, 3):
        if f"pool{rank}d" in call_name:
            return min(rank, ndim)
    return max(ndim - 2, 0)


def pad(ctx, node) -> None:
    """``F.pad``: padded axes are pinned; a non-zero fill value makes pruned slices non-zero."""
    source = node.value_arg(0, "input")
    axes = list(ctx.axes(source))
    for k, (a, b) in enumerate(zip(ctx.shape(source), ctx.shape(_out(node)))):
        if a != b:
            ctx.pin(axes[k], "padded")
            axes[k] = ctx.spaces.new(b, "pad", pinned=True)
    if node.arg(3, "value", 0.0) not in (0, 0.0, None):
        ctx.mark_generating(node)
    ctx.set_axes(_out(node), axes)


def reduction(ctx, node) -> RuleFindings:
    """mean/sum/amax/...: reduced axes vanish (or become size 1); which reductions are safe is a zero rule."""
    source = node.value_arg(0, "input")
    axes = ctx.axes(source)
    ndim = len(axes)
    first = 2 if node.call.name in P_NORMS else 1  # norms take their order before dim
    dim = node.arg(first, "dim")
    reduced = _dims_arg(dim, ndim) if not isinstance(dim, ValueRef) else list(range(ndim))
    keepdim = bool(node.arg(first + 1, "keepdim", False))
    if not _blind_to_zero_slices(node):
        for k in reduced:
            ctx.pin(axes[k], f"{node.call.name} over it depends on how many channels there are")
    for out in node.outputs:
        out_shape = ctx.shape(out)
        if keepdim or len(out_shape) == ndim:
            out_axes = [ctx.spaces.new(1, "reduced", pinned=True) if k in reduced else axes[k] for k in range(ndim)]
        else:
            out_axes = [axes[k] for k in range(ndim) if k not in reduced]
        if [s.size for s in out_axes] != list(out_shape):
            out_axes = [ctx.spaces.new(s, "reduced", pinned=True) for s in out_shape]
        ctx.set_axes(out, out_axes)
    return RuleFindings({"reduced_axes": reduced})


SUM_LIKE = frozenset({"sum", "nansum"})
P_NORMS = frozenset({"norm", "linalg_vector_norm", "vector_norm"})


def _blind_to_zero_slices(node) -> bool:
    """Whether removing all-zero slices along the reduced axes leaves the result unchanged: sums, and p-norms
    with p >= 0 (``x.norm(dim=1)``; a negative p, or -inf, is driven by the zeros)."""
    name = node.call.name
    if name in SUM_LIKE:
        return True
    if name in P_NORMS:
        return _nonnegative_order(node.arg(1, "p" if name == "norm" else "ord", 2))
    return False


def _nonnegative_order(order) -> bool:
    if order is None or order == "fro":
        return True
    return isinstance(order, (int, float)) and not isinstance(order, bool) and order >= 0


def normalize(ctx, node) -> None:
    """``F.normalize(x, p, dim)``: x / ||x||_p along ``dim``. Zero slices neither change the norm (p >= 0) nor
    stop being zero, so the axis stays prunable; a negative p pins it."""
    source = node.value_arg(0, "input")
    axes = ctx.axes(source)
    if not _nonnegative_order(node.arg(1, "p", 2.0)):
        dim = node.arg(2, "dim", 1)
        ctx.pin(axes[_norm_dim(int(dim), len(axes))], "normalize with a negative order")
    ctx.set_axes(_out(node), axes)


def along_axis(ctx, node) -> None:
    """softmax/cumsum/sort...: the op mixes elements along one axis, which is therefore pinned."""
    source = node.value_arg(0, "input")
    axes = ctx.axes(source)
    dim = node.arg(1, "dim")
    if dim is None:
        dim = -1
    ctx.pin(axes[_norm_dim(int(dim), len(axes))], f"{node.call.name} mixes elements along it")
    for out in node.outputs:
        if ctx.shape(out) == ctx.shape(source):
            ctx.set_axes(out, axes)
        else:
            _set_fresh(ctx, node, out, node.op_name)


def pixel_shuffle(ctx, node) -> None:
    source = node.value_arg(0, "input")
    axes = ctx.axes(source)
    # Kept unprunable, as in the reference (depth-to-space): pruning would move channels across pixels.
    ctx.pin(axes[1], "depth-to-space (pixel_shuffle) rearranges channels into pixels")
    _set_fresh(ctx, node, _out(node), "pixel_shuffle")
    ctx.set_axes(_out(node), [axes[0]] + ctx.axes(_out(node))[1:])


def sdpa(ctx, node) -> None:
    """scaled_dot_product_attention: heads (batch axes) shared by q, k, v and the output.

    With ``enable_gqa=True`` the query has ``groups x`` the key/value heads (grouped-query and multi-query
    attention): see :func:`_grouped_query_heads`.
    """
    q, k, v = node.value_arg(0, "query"), node.value_arg(1, "key"), node.value_arg(2, "value")
    qa, ka, va = ctx.axes(q), ctx.axes(k), ctx.axes(v)
    if len(qa) != len(ka) or len(qa) != len(va):
        return unknown(ctx, node)
    shared = list(qa)
    if len(qa) >= 3 and node.arg(7, "enable_gqa", False) and ctx.shape(q)[-3] != ctx.shape(k)[-3]:
        shared[-3] = _grouped_query_heads(ctx, qa[-3], ka[-3])
    for a, b, c in zip(shared[:-2], ka[:-2], va[:-2]):
        ctx.spaces.union(ctx.spaces.union(a, b), c)
    batch = list(qa[:-2])
    ctx.spaces.union(qa[-1], ka[-1])
    ctx.pin(qa[-1], "attention head dimension (q.k contraction)")
    ctx.spaces.union(ka[-2], va[-2])
    mask = node.value_arg(3, "attn_mask")
    if mask is not None:
        _relate_attention_bias(ctx, mask, batch + [qa[-2], ka[-2]])
    ctx.set_axes(_out(node), batch + [qa[-2], va[-1]])
    ctx.pin(va[-1], "attention value head dimension")


def _relate_attention_bias(ctx, mask: str, score_axes: List) -> None:
    """An additive mask or bias broadcast onto the scores (batch..., heads, queries, keys): its full-size axes are
    the scores' spaces, so a per-head bias (Swin's relative-position table, T5's relative_attention_bias) is pruned
    with its heads; a broadcast or mismatched axis is pinned. Whatever a pruned head's bias is, its output is its
    softmax times zero values, so the bias needs no zero check."""
    axes, shape = ctx.axes(mask), ctx.shape(mask)
    offset = len(score_axes) - len(shape)
    for k, (axis, size) in enumerate(zip(axes, shape)):
        target = score_axes[k + offset] if k + offset >= 0 else None
        if target is not None and size == target.size and size > 1:
            ctx.spaces.union(axis, target)
        else:
            ctx.pin(axis, "attention mask")


def _grouped_query_heads(ctx, query_heads, kv_heads):
    """Query head ``h`` reads key/value head ``h // groups``: the query head space is the product
    ``[key/value heads, groups]``. A unit is one key/value head with its whole query group (the heads inside a
    group are pinned: every key/value head must keep as many query heads); with a single key/value head
    (multi-query attention) a unit is one query head. Returns the space standing for the query heads as seen by
    the key/value heads (the key/value head factor)."""
    groups = query_heads.size // kv_heads.size
    if groups * kv_heads.size != query_heads.size:
        ctx.pin(query_heads, f"{query_heads.size} query heads do not share {kv_heads.size} key/value heads evenly")
        return query_heads
    if kv_heads.size == 1:
        # Multi-query attention: every query head is a unit of its own. Zeroing its query rows does not zero its
        # output (a softmax over zero scores averages the shared values), so it is removed through the input
        # columns of the layer that reads it (the output projection), which are zeroed with it.
        ctx.prune_through_consumer_columns(query_heads)
        return kv_heads
    shared, inner = ctx.spaces.factor(query_heads, [kv_heads.size, groups], "grouped-query heads")
    ctx.pin(inner, "query heads sharing a key/value head are pruned with it")
    return shared


def multi_head_attention(ctx, node) -> Optional[RuleFindings]:
    """``F.multi_head_attention_forward`` (nn.MultiheadAttention): pruned by whole heads."""
    query, key, value = (node.value_arg(i, n) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    num_heads = int(node.arg(4, "num_heads"))
    in_w, in_b = node.value_arg(5, "in_proj_weight"), node.value_arg(6, "in_proj_bias")
    out_w, out_b = node.value_arg(11, "out_proj_weight"), node.value_arg(12, "out_proj_bias")
    separate = bool(node.arg(17, "use_separate_proj_weight", False))
    if separate or in_w is None or node.value_arg(7, "bias_k") is not None:
        unknown(ctx, node)
        return None
    q_axes = ctx.axes(query)
    embed = ctx.shape(query)[-1]
    head_dim = embed // num_heads
    in_axes = ctx.axes(in_w)
    ctx.claim(in_w, 0, node)
    for ref in (key, value):
        if ref is not None and ref != query:
            ctx.spaces.union(ctx.axes(ref)[-1], q_axes[-1])
    ctx.spaces.union(in_axes[1], q_axes[-1])
    q_rows, k_rows, v_rows = ctx.spaces.split(in_axes[0], [embed] * 3, "in_proj")
    heads = []
    for rows in (q_rows, k_rows, v_rows):
        head, dim = ctx.spaces.factor(rows, [num_heads, head_dim], "attention heads")
        ctx.pin(dim, "attention head dimension")
        heads.append(head)
    ctx.spaces.union(ctx.spaces.union(heads[0], heads[1]), heads[2])
    if in_b is not None:
        ctx.spaces.union(ctx.axes(in_b)[0], in_axes[0])
        ctx.claim(in_b, 0, node)
    out_axes = ctx.axes(out_w)
    ctx.spaces.union(out_axes[1], v_rows)
    ctx.claim(out_w, 0, node)
    if out_b is not None:
        ctx.spaces.union(ctx.axes(out_b)[0], out_axes[0])
        ctx.claim(out_b, 0, node)
    ctx.set_axes(node.outputs[0], list(q_axes[:-1]) + [out_axes[0]])
    for extra in node.outputs[1:]:
        _set_fresh(ctx, node, extra, "attention weights")
    for ref in (node.value_arg(14, "key_padding_mask"), node.value_arg(16, "attn_mask")):
        if ref is not None:
            ctx.pin_value(ref, "attention mask")
    return RuleFindings({"num_heads": num_heads, "head_dim": head_dim})


def _einsum_operands(node) -> List[str]:
    items = list(node.call.args[1:])
    if len(items) == 1 and isinstance(items[0], (list, tuple)):
        items = list(items[0])
    return [item.value_id for item in items if isinstance(item, ValueRef)]


def _einsum_letters(equation: str, ndims: Sequence[int]) -> Optional[tuple]:
    """Per-operand and output subscripts, ``...`` expanded to numbered batch letters; None if malformed."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ndims):
        return None
    widest = max((n - len(t.replace("...", "")) for t, n in zip(terms, ndims) if "..." in t), default=0)
    ellipsis = [f"...{k}" for k in range(widest)]

    def expand(term: str, ndim: Optional[int]) -> List[str]:
        head, dots, tail = term.partition("...")
        if not dots:
            return list(term)
        span = (ndim - len(head) - len(tail)) if ndim is not None else widest
        return list(head) + ellipsis[widest - span:] + list(tail)

    operands = [expand(t, n) for t, n in zip(terms, ndims)]
    if any(len(letters) != n for letters, n in zip(operands, ndims)):
        return None
    if arrow:
        result = expand(output, None)
    else:
        counts: Dict[str, int] = {}
        for letters in operands:
            for letter in letters:
                counts[letter] = counts.get(letter, 0) + 1
        result = ellipsis + sorted(k for k, c in counts.items() if c == 1 and not k.startswith("..."))
    return operands, result


def einsum(ctx, node) -> Optional[RuleFindings]:
    """``einsum`` read from its equation: axes sharing a letter are one space; the output takes its letters'
    spaces. Contracted letters are checked by the zero rule (:func:`einsum_zero`)."""
    refs = _einsum_operands(node)
    parsed = _einsum_letters(str(node.call.args[0]), [len(ctx.shape(r)) for r in refs])
    if parsed is None:
        unknown(ctx, node)
        return None
    operands, result = parsed
    spaces: Dict[str, object] = {}
    for ref, letters in zip(refs, operands):
        for letter, axis, size in zip(letters, ctx.axes(ref), ctx.shape(ref)):
            if size == 1:
                continue
            spaces[letter] = axis if letter not in spaces else ctx.spaces.union(spaces[letter], axis)
    out = _out(node)
    ctx.set_axes(out, [spaces[letter] if letter in spaces and size > 1 else ctx.spaces.new(size, "einsum", True)
                       for letter, size in zip(result, ctx.shape(out))])
    return RuleFindings({"einsum_contracted": [spaces[k] for k in spaces if k not in result]})


def einsum_zero(ctx, node, out: str, nz) -> frozenset:
    """A product of its operands: an output unit is zero where an operand holding it is zero; a contracted unit
    must be zero in some operand, else removing it would change the sum."""
    refs = _einsum_operands(node)
    for space in node.cfg_params.get("einsum_contracted", []):
        units = ctx.units(space)
        live = units.intersection(*[nz(r) | (units - ctx.value_units(r)) for r in refs]) if refs else units
        ctx.pin_units(live, f"'einsum' in {node.scope or 'the model'} contracts pruned slices that are not zero")
    result = set()
    for uid in ctx.value_units(out):
        holders = [r for r in refs if uid in ctx.value_units(r)]
        if all(uid in nz(r) for r in holders):
            result.add(uid)
    return frozenset(result)


def quantize(ctx, node) -> None:
    """A quantizer left in the graph (not folded into a layer): elementwise, Q(0) = 0."""
    source = node.value_arg(0, "x")
    ctx.set_axes(_out(node), ctx.axes(source))


# ---------------------------------------------------------------------------------------------------
# costs

def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape)) if shape else 1


def conv_macs(node, ctx) -> float:
    w = node.value_arg(1, "weight")
    return float(_numel(ctx.shape(_out(node))) * _numel(ctx.shape(w)[1:]))


def conv_transpose_macs(node, ctx) -> float:
    x, w = node.value_arg(0, "input"), node.value_arg(1, "weight")
    return float(_numel(ctx.shape(x)) * _numel(ctx.shape(w)[1:]))


def linear_macs(node, ctx) -> float:
    w = node.value_arg(1, "weight")
    return float(_numel(ctx.shape(_out(node))) * ctx.shape(w)[1])


def matmul_macs(node, ctx) -> float:
    refs = _tensor_refs(node)
    a = refs[1] if node.call.name == "addmm" else refs[0]
    shape = ctx.shape(a)
    if not shape:
        return 0.0
    return float(_numel(ctx.shape(_out(node))) * shape[-1])


def sdpa_macs(node, ctx) -> float:
    q, k, v = node.value_arg(0, "query"), node.value_arg(1, "key"), node.value_arg(2, "value")
    qs, ks, vs = ctx.shape(q), ctx.shape(k), ctx.shape(v)
    scores = _numel(qs[:-1]) * ks[-2]
    return float(scores * qs[-1] + scores * vs[-1])


def mha_macs(node, ctx) -> float:
    query = node.value_arg(0, "query")
    key = node.value_arg(1, "key") or query
    shape, key_shape = ctx.shape(query), ctx.shape(key)
    embed = shape[-1]
    tokens, key_tokens = _numel(shape[:-1]), _numel(key_shape[:-1])
    projections = (tokens + 2 * key_tokens) * embed * embed + tokens * embed * embed
    attention = 2 * tokens * (key_shape[0] if len(key_shape) == 3 else 1) * embed
    return float(projections + attention)


# ---------------------------------------------------------------------------------------------------
# registry

def _kinds(names: Sequence[str], kind: OpKind) -> Dict[str, OpKind]:
    return {name: kind for name in names}


_UNARY_PRESERVING = ["relu", "relu_", "relu6", "gelu", "silu", "silu_", "tanh", "tanh_", "hardtanh", "hardtanh_",
                     "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "hardswish", "hardswish_", "mish",
                     "dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d",
                     "dropout3d", "clone", "contiguous", "float", "half", "double", "bfloat16", "type",
                     "detach", "detach_", "requires_grad_", "cpu", "cuda", "neg", "negative", "abs",
                     "sign", "sin", "round", "floor", "ceil", "trunc", "sqrt", "square", "threshold", "softshrink",
                     "hardshrink", "tanhshrink", "erf", "arctan", "atan", "asin", "arcsin", "sinh", "view_as_real",
                     "data", "nan_to_num", "rrelu", "relu6_"]
_UNARY_GENERATING = ["sigmoid", "sigmoid_", "exp", "exp_", "cos", "softplus", "log", "log_", "log1p", "expm1",
                     "reciprocal", "rsqrt", "hardsigmoid", "logsigmoid", "cosh", "erfc", "exp2", "logit"]
_ELEMENTWISE_MUL = ["mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "__and__", "logical_and"]
_ELEMENTWISE_ADD = ["masked_fill", "masked_fill_", "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_",
                    "__sub__", "__rsub__",
                    "__isub__", "rsub", "subtract", "maximum", "minimum", "where", "lerp", "addcmul", "addcdiv",
                    "__or__", "logical_or", "eq", "ne", "gt", "lt", "ge", "le", "__eq__", "__ne__", "__gt__",
                    "__lt__", "__ge__", "__le__", "pow_tensor", "fmod", "remainder", "__mod__", "atan2"]
_ELEMENTWISE_DIV = ["div", "div_", "__truediv__", "__itruediv__", "true_divide", "divide", "__floordiv__",
                    "floor_divide", "__rtruediv__"]

OP_KINDS: Dict[str, OpKind] = {}
OP_KINDS.update(_kinds(["conv1d", "conv2d", "conv3d"], OpKind("conv", conv, STEM, True, conv_macs)))
OP_KINDS.update(_kinds(["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"],
                       OpKind("convtranspose", conv_transpose, STEM, True, conv_transpose_macs)))
OP_KINDS.update(_kinds(["linear"], OpKind("linear", linear, STEM, True, linear_macs)))
OP_KINDS.update(_kinds(["matmul", "__matmul__", "bmm", "mm", "addmm", "__rmatmul__"],
                       OpKind("matmul", matmul, CUSTOM, False, matmul_macs)))
OP_KINDS.update(_kinds(["einsum"], OpKind("einsum", einsum, CUSTOM, zero_rule=einsum_zero)))
OP_KINDS.update(_kinds(["mv", "dot", "vdot", "inner"], OpKind("matvec", matvec, CUSTOM)))
OP_KINDS.update(_kinds(["batch_norm"], OpKind("batchnorm", batch_norm, AFFINE_NORM, weight_index=3)))
OP_KINDS.update(_kinds(["instance_norm"], OpKind("instancenorm", batch_norm, AFFINE_NORM, weight_index=3)))
OP_KINDS.update(_kinds(["group_norm"], OpKind("groupnorm", group_norm, AFFINE_NORM, weight_index=2)))
OP_KINDS.update(_kinds(["layer_norm"], OpKind("layernorm", layer_norm, PRESERVE)))
OP_KINDS.update(_kinds(["rms_norm"], OpKind("rmsnorm", layer_norm, PRESERVE)))
OP_KINDS.update(_kinds(["embedding"], OpKind("embedding", embedding, STEM, False)))
OP_KINDS.update(_kinds(["prelu"], OpKind("prelu", prelu, PRESERVE)))
OP_KINDS.update(_kinds(_UNARY_PRESERVING, OpKind("elementwise", passthrough, PRESERVE)))
OP_KINDS.update(_kinds(_UNARY_GENERATING, OpKind("elementwise", passthrough, GENERATE)))
OP_KINDS.update(_kinds(["to", "type_as"], OpKind("elementwise", cast_like, PRESERVE)))
OP_KINDS.update(_kinds(["pow", "__pow__", "__rpow__"], OpKind("pow", broadcast, CUSTOM)))
OP_KINDS.update(_kinds(["clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_",
                        "threshold", "threshold_"], OpKind("clamp", passthrough, CUSTOM)))
OP_KINDS.update(_kinds(_ELEMENTWISE_MUL, OpKind("mul", broadcast, MUL)))
OP_KINDS.update(_kinds(_ELEMENTWISE_ADD, OpKind("add", broadcast, ADD)))
OP_KINDS.update(_kinds(_ELEMENTWISE_DIV, OpKind("div", broadcast, DIV)))
OP_KINDS.update(_kinds(["view", "reshape", "flatten", "unflatten", "squeeze", "squeeze_", "unsqueeze",
                        "unsqueeze_", "view_as", "reshape_as", "ravel"], OpKind("reshape", reshape, PRESERVE)))
OP_KINDS.update(_kinds(["transpose", "permute", "t", "T", "mT", "movedim", "swapaxes", "swapdims"],
                       OpKind("transpose", permute, PRESERVE)))
OP_KINDS.update(_kinds(["cat", "concat", "concatenate"], OpKind("concat", concat, CONCAT)))
OP_KINDS.update(_kinds(["stack"], OpKind("stack", stack, CONCAT)))
OP_KINDS.update(_kinds(["chunk", "split", "tensor_split", "split_with_sizes"], OpKind("split", split, PRESERVE)))
OP_KINDS.update(_kinds(["unbind"], OpKind("unbind", unbind, PRESERVE)))
OP_KINDS.update(_kinds(["__getitem__"], OpKind("slice", getitem, PRESERVE)))
OP_KINDS.update(_kinds(["__setitem__"], OpKind("setitem", setitem, GENERATE)))
OP_KINDS.update(_kinds(["select"], OpKind("slice", select, PRESERVE)))
OP_KINDS.update(_kinds(["narrow"], OpKind("slice", narrow, PRESERVE)))
OP_KINDS.update(_kinds(["write_through_view"], OpKind("viewwrite", view_write, CONCAT)))
OP_KINDS.update(_kinds(["fill_", "fill"], OpKind("fill", passthrough, GENERATE)))
OP_KINDS.update(_kinds(["zero_"], OpKind("elementwise", passthrough, PRESERVE)))
OP_KINDS.update(_kinds(["expand", "expand_as", "broadcast_to"], OpKind("expand", expand, PRESERVE)))
OP_KINDS.update(_kinds(["repeat", "tile", "repeat_interleave"], OpKind("repeat", repeat, PRESERVE)))
OP_KINDS.update(_kinds(["max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                        "max_pool2d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d",
                        "adaptive_max_pool2d_with_indices"], OpKind("maxpool", pool, PRESERVE)))
OP_KINDS.update(_kinds(["avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                        "adaptive_avg_pool3d", "lp_pool2d"], OpKind("averagepool", pool, PRESERVE)))
OP_KINDS.update(_kinds(["interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "grid_sample"],
                       OpKind("resize", pool, PRESERVE)))
OP_KINDS.update(_kinds(["pad"], OpKind("pad", pad, PRESERVE)))
OP_KINDS.update(_kinds(["mean", "sum", "nansum", "amax", "amin", "max", "min", "std", "var", "prod", "norm",
                        "linalg_vector_norm", "vector_norm",
                        "logsumexp", "argmax", "argmin", "all", "any"], OpKind("reduce", reduction, CUSTOM)))
OP_KINDS.update(_kinds(["softmax", "log_softmax", "softmin", "cumsum", "cumprod", "sort", "argsort", "topk",
                        "flip", "roll", "cummax"], OpKind("softmax", along_axis, GENERATE)))
OP_KINDS.update(_kinds(["normalize"], OpKind("normalize", normalize, PRESERVE)))
OP_KINDS.update(_kinds(["pixel_shuffle", "pixel_unshuffle"], OpKind("depthtospace", pixel_shuffle, PRESERVE)))
OP_KINDS.update(_kinds(["scaled_dot_product_attention"], OpKind("attention", sdpa, CUSTOM, False, sdpa_macs)))
OP_KINDS.update(_kinds(["multi_head_attention_forward"],
                       OpKind("multiheadattention", multi_head_attention, STEM, True, mha_macs)))
OP_KINDS.update(_kinds(["zeros", "new_zeros"], OpKind("zeros", zeros_factory, CUSTOM, zero_rule=nothing_nonzero)))
OP_KINDS.update(_kinds(["ones", "full", "empty", "arange", "linspace", "rand", "randn", "randint",
                        "tensor", "as_tensor", "eye", "tril", "triu", "new_ones", "new_full",
                        "new_empty", "new_tensor", "outer", "polar", "cos_sin", "bernoulli", "multinomial"],
                       OpKind("constant", factory, GENERATE)))
OP_KINDS.update(_kinds(["zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like"],
                       OpKind("constant", like_factory, GENERATE)))
OP_KINDS.update(_kinds(["fake_quantize"], OpKind("quantize", quantize, PRESERVE)))


def lookup(call_name: str) -> Optional[OpKind]:
    return OP_KINDS.get(call_name)
