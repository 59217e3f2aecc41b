"""ONNX graph pass: marker nodes (:mod:`.qdq_markers`) to standard QuantizeLinear/DequantizeLinear operators.

* ``QuantizedWeight`` of layer ``L`` -> ``DequantizeLinear(L.weight_quantized, L.weight_scale, L.weight_zero_point)``:
  the integers ``k`` as an integer initializer of the smallest type of :data:`WEIGHT_TYPES` holding the layer's
  range, the step ``d`` as a float32 scalar scale, zero point 0. The float weight initializer goes.
* ``QuantizedActivation`` of ``L`` -> ``[Abs, Pow(t), Sign, Mul] -> Clip(-n*d, n*d) -> QuantizeLinear ->
  DequantizeLinear`` with scale ``d`` and the integer type and zero point of :data:`ACTIVATION_TYPES` holding
  ``n``; the bracketed nodes compute ``sign(x) * |x|^t`` for a nonlinear quantizer (``t != 1``). That is the
  quantizer exactly: ``round(min(|x|, q)^t / d)`` saturates at ``round(q^t / d) = n`` (module
  :mod:`.integer_weights`), and ``QuantizeLinear`` rounds half to even as ``torch.round`` does.

Both type tables need opset 21, the first whose QuantizeLinear/DequantizeLinear take int4 and int16.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Set, Tuple, Type

import numpy as np
import onnx
from onnx import TensorProto, helper

from .bitpack import pack_bits
from .integer_weights import ActivationGrid, IntegerWeight, UnsupportedBitWidthError
from .qdq_markers import ACTIVATION_MARKER, MARKER_DOMAIN, WEIGHT_MARKER

__all__ = ["QDQ_OPSET", "WEIGHT_TYPES", "ACTIVATION_TYPES", "onnx_type_for", "replace_markers"]

QDQ_OPSET = 21

#: ``(max bits, ONNX type, zero point)`` of weight integers, narrowest first. int4 packs two per byte.
WEIGHT_TYPES = ((4, TensorProto.INT4, 0), (8, TensorProto.INT8, 0), (16, TensorProto.INT16, 0),
                (32, TensorProto.INT32, 0))
#: ``(max bits, ONNX type, zero point)`` of quantized activations. Up to 8 bits uint8 with zero point 128, which
#: holds the symmetric range +-127 like int8 with zero point 0: it is onnxruntime's CPU activation type (U8S8
#: kernels), and onnxruntime 1.32 rejects int8 activations that its MatMul+Add->Gemm fusion meets ("output_dtype
#: INT8 does not match y_zero_point type UINT8"). int16 up to 16 bits; QuantizeLinear has no 32-bit type.
ACTIVATION_TYPES = ((8, TensorProto.UINT8, 128), (16, TensorProto.INT16, 0))

_NUMPY_TYPES: Dict[int, Type[np.integer]] = {TensorProto.INT8: np.int8, TensorProto.INT16: np.int16,
                                             TensorProto.INT32: np.int32}


TypeTable = Sequence[Tuple[int, int, int]]


def onnx_type_for(bits: int, table: TypeTable = WEIGHT_TYPES) -> Tuple[int, int]:
    """``(ONNX type, zero point)`` of the narrowest entry of ``table`` holding ``bits``-bit integers."""
    for max_bits, onnx_type, zero_point in table:
        if bits <= max_bits:
            return onnx_type, zero_point
    raise UnsupportedBitWidthError(f"{bits}-bit integers do not fit the widest QDQ type ({table[-1][0]} bits)")


def _integer_tensor(name: str, codes, bits: int) -> TensorProto:
    onnx_type, _ = onnx_type_for(bits)
    if onnx_type == TensorProto.INT4:
        raw = pack_bits(codes, 4).numpy().tobytes()  # ONNX int4: two per byte, first in the low nibble
    else:
        raw = codes.cpu().numpy().astype(np.dtype(_NUMPY_TYPES[onnx_type]).newbyteorder("<")).tobytes()
    return helper.make_tensor(name, onnx_type, list(codes.shape), raw, raw=True)


def _scalar(name: str, onnx_type: int, value) -> TensorProto:
    return helper.make_tensor(name, onnx_type, [], [value])


class _Rewriter:
    """Builds the replacement of each marker; initializers are created once per layer and reused."""

    def __init__(self, weights: Mapping[str, IntegerWeight], activations: Mapping[str, ActivationGrid]) -> None:
        self.weights, self.activations = weights, activations
        self.initializers: Dict[str, TensorProto] = {}

    def _initializer(self, tensor_name: str, build) -> str:
        if tensor_name not in self.initializers:
            self.initializers[tensor_name] = build(tensor_name)
        return tensor_name

    def weight(self, marker: onnx.NodeProto, layer: str) -> List[onnx.NodeProto]:
        weight = self.weights[layer]
        onnx_type, zero_point = onnx_type_for(weight.bits)
        inputs = [
            self._initializer(f"{layer}.weight_quantized", lambda n: _integer_tensor(n, weight.codes, weight.bits)),
            self._initializer(f"{layer}.weight_scale", lambda n: _scalar(n, TensorProto.FLOAT, float(weight.scale))),
            self._initializer(f"{layer}.weight_zero_point", lambda n: _scalar(n, onnx_type, zero_point)),
        ]
        return [helper.make_node("DequantizeLinear", inputs, list(marker.output), name=f"{marker.output[0]}/dq")]

    def activation(self, marker: onnx.NodeProto, layer: str) -> List[onnx.NodeProto]:
        grid = self.activations[layer]
        onnx_type, zero_point = onnx_type_for(grid.bits, ACTIVATION_TYPES)
        scale, bound = float(grid.scale), float(grid.scale * grid.int_range)  # float32 products, as in torch
        prefix, x = marker.output[0], marker.input[0]
        nodes = []
        if grid.exponent is not None:
            exponent = self._initializer(f"{layer}.input_exponent",
                                         lambda n: _scalar(n, TensorProto.FLOAT, grid.exponent))
            nodes += [helper.make_node("Abs", [x], [f"{prefix}/abs"], name=f"{prefix}/abs"),
                      helper.make_node("Pow", [f"{prefix}/abs", exponent], [f"{prefix}/pow"], name=f"{prefix}/pow"),
                      helper.make_node("Sign", [x], [f"{prefix}/sign"], name=f"{prefix}/sign"),
                      helper.make_node("Mul", [f"{prefix}/sign", f"{prefix}/pow"], [f"{prefix}/levels"],
                                       name=f"{prefix}/levels")]
            x = f"{prefix}/levels"
        low = self._initializer(f"{layer}.input_clip_min", lambda n: _scalar(n, TensorProto.FLOAT, -bound))
        high = self._initializer(f"{layer}.input_clip_max", lambda n: _scalar(n, TensorProto.FLOAT, bound))
        qparams = [self._initializer(f"{layer}.input_scale", lambda n: _scalar(n, TensorProto.FLOAT, scale)),
                   self._initializer(f"{layer}.input_zero_point", lambda n: _scalar(n, onnx_type, zero_point))]
        nodes += [helper.make_node("Clip", [x, low, high], [f"{prefix}/clip"], name=f"{prefix}/clip"),
                  helper.make_node("QuantizeLinear", [f"{prefix}/clip"] + qparams, [f"{prefix}/q"], name=f"{prefix}/q"),
                  helper.make_node("DequantizeLinear", [f"{prefix}/q"] + qparams, list(marker.output),
                                   name=f"{prefix}/dq")]
        return nodes


def _read_names(graph: onnx.GraphProto) -> Set[str]:
    """Names the graph's nodes read, subgraphs (If/Loop bodies) included, and the graph outputs."""
    names = {value.name for value in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for subgraph in list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else []):
                names |= _read_names(subgraph)
    return names


def _remove_unused(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads (the float weights' leftovers), then unread initializers."""
    while True:
        read = _read_names(graph)
        dead = [node for node in graph.node if not any(name in read for name in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = _read_names(graph)
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in read]:
        graph.initializer.remove(tensor)
    for value in [value for value in graph.value_info if value.name not in read]:
        graph.value_info.remove(value)


def replace_markers(model: onnx.ModelProto, weights: Mapping[str, IntegerWeight],
                    activations: Mapping[str, ActivationGrid]) -> Dict[str, int]:
    """Replace, in place, every marker of ``model`` (already at opset :data:`QDQ_OPSET`) by its QDQ operators.

    ``weights`` / ``activations``: by layer name, the quantizers the markers name. Drops the marker domain and the
    float weights. Returns the number of markers replaced, by marker type.
    """
    rewriter = _Rewriter(weights, activations)
    builders = {WEIGHT_MARKER: rewriter.weight, ACTIVATION_MARKER: rewriter.activation}
    counts = {WEIGHT_MARKER: 0, ACTIVATION_MARKER: 0}
    nodes: List[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.domain != MARKER_DOMAIN:
            nodes.append(node)
            continue
        layer = next(attribute.s.decode() for attribute in node.attribute if attribute.name == "layer")
        nodes += builders[node.op_type](node, layer)
        counts[node.op_type] += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(rewriter.initializers.values())
    _remove_unused(model.graph)
    kept = [opset for opset in model.opset_import if opset.domain != MARKER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return counts
