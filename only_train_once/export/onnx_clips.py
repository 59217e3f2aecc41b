"""Remove the ``Clip`` of an activation quantizer's ONNX form where the int8 ``QuantizeLinear`` after it clamps alike.

The float ``onnx`` target writes a linear activation quantizer with ``n = 127`` as ``Clip(-127 d, 127 d) ->
QuantizeLinear(d, int8) -> DequantizeLinear`` (:mod:`.baking`); the integer layers of ``onnx_int8`` as
``QuantizeLinear(d, uint8, zero point 128) -> Clip(1, 255)`` (:mod:`.int8_layers`), the same levels.
``QuantizeLinear`` saturates to ``[-128, 127]``: the same upper clamp, and a lower one that differs only for inputs
below ``-127.5 d``. Where the input provably stays above that (it comes from a ReLU, a sigmoid, a hard-swish,
SiLU...), the ``Clip`` changes nothing and is dropped: one elementwise pass less per layer, bit for bit the same
output.

Lower bounds are derived from the producing operator (:data:`LOWER_BOUNDS`), carried through pooling and
reshaping operators, and through a product with a gate in ``[0, 1]`` (squeeze-and-excitation).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np

__all__ = ["drop_redundant_clips", "LOWER_BOUNDS"]

#: Smallest output of an operator whatever its input (SiLU is ``Mul(x, Sigmoid(x))``, handled apart).
LOWER_BOUNDS = {"Relu": 0.0, "Sigmoid": 0.0, "HardSigmoid": 0.0, "Softmax": 0.0, "HardSwish": -0.375}
#: Operators whose output lies in ``[0, 1]``.
GATES = ("Sigmoid", "HardSigmoid")
#: Operators whose output is bounded below by their first input's bound (means, maxima, reshapes).
KEEPS_LOWER_BOUND = ("ReduceMean", "GlobalAveragePool", "AveragePool", "MaxPool", "GlobalMaxPool", "Flatten",
                     "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze")
#: ``min over x of x * sigmoid(x)``.
SILU_MINIMUM = -0.27846454276107380
_INT8_MAX = 127


class _Graph:
    """Producers, consumers and constant values of an ONNX graph."""

    def __init__(self, graph):
        self.producer = {output: node for node in graph.node for output in node.output}
        self.consumers: Dict[str, List] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.outputs = {output.name for output in graph.output}
        self._bounds: Dict[str, Optional[float]] = {}

    def constant(self, name: str) -> Optional[np.ndarray]:
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def lower_bound(self, name: str) -> Optional[float]:
        """A proven lower bound of tensor ``name`` (None: unknown)."""
        if name not in self._bounds:
            self._bounds[name] = None  # cycles cannot occur in ONNX, but stay safe
            self._bounds[name] = self._derive(name)
        return self._bounds[name]

    def _derive(self, name: str) -> Optional[float]:
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type in LOWER_BOUNDS:
            return LOWER_BOUNDS[node.op_type]
        if node.op_type in KEEPS_LOWER_BOUND:
            return self.lower_bound(node.input[0])
        if node.op_type == "Clip" and len(node.input) >= 2 and node.input[1]:  # e.g. ReLU6
            low = self.constant(node.input[1])
            return None if low is None else float(low)
        if node.op_type == "Mul" and len(node.input) == 2:
            return self._product_bound(*node.input)
        return None

    def _is_gate(self, name: str) -> bool:
        node = self.producer.get(name)
        return node is not None and node.op_type in GATES

    def _product_bound(self, a: str, b: str) -> Optional[float]:
        for value, gate in ((a, b), (b, a)):
            if not self._is_gate(gate):
                continue
            gate_node = self.producer[gate]
            if gate_node.op_type == "Sigmoid" and gate_node.input[0] == value:
                return SILU_MINIMUM
            bound = self.lower_bound(value)
            if bound is not None:  # x * s with s in [0, 1] lies between min(x, 0) and max(x, 0)
                return min(bound, 0.0)
        return None


def _above_lowest_level(graph: _Graph, name: str, step: float) -> bool:
    """Tensor ``name`` provably stays above ``-127.5 step`` (so it never rounds to level -128)."""
    bound = graph.lower_bound(name)
    return bound is not None and bound > -(_INT8_MAX + 0.5) * step * (1 - 1e-6)


def _redundant_integer_clip(graph: _Graph, clip, low: np.ndarray, high: np.ndarray) -> bool:
    """The integer layers' form (:mod:`.int8_layers`): ``QuantizeLinear(d, uint8, zero point 128) -> Clip(1, 255)``
    keeps levels ``[-127, 127]``; redundant where the quantized input stays above ``-127.5 d``."""
    quantize = graph.producer.get(clip.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear" or len(quantize.input) != 3:
        return False
    scale, zero_point = graph.constant(quantize.input[1]), graph.constant(quantize.input[2])
    if scale is None or zero_point is None or scale.size != 1 or zero_point.dtype != np.uint8:
        return False
    center = int(zero_point)
    if center != _INT8_MAX + 1 or int(low) != center - _INT8_MAX or int(high) != center + _INT8_MAX:
        return False
    return _above_lowest_level(graph, quantize.input[0], float(scale))


def _redundant(graph: _Graph, clip) -> bool:
    """The Clip clamps to ``[-127 d, 127 d]`` and feeds only int8 ``QuantizeLinear``s of step ``d`` and zero point
    0, and its input stays above ``-127.5 d`` (or it is the integer form, :func:`_redundant_integer_clip`)."""
    if len(clip.input) != 3 or clip.output[0] in graph.outputs:
        return False
    low, high = graph.constant(clip.input[1]), graph.constant(clip.input[2])
    consumers = graph.consumers.get(clip.output[0], [])
    if low is None or high is None or not consumers:
        return False
    if low.dtype == np.uint8:
        return _redundant_integer_clip(graph, clip, low, high)
    for consumer in consumers:
        if consumer.op_type != "QuantizeLinear" or len(consumer.input) != 3:
            return False
        scale, zero_point = graph.constant(consumer.input[1]), graph.constant(consumer.input[2])
        if scale is None or zero_point is None or scale.size != 1 or zero_point.dtype != np.int8 or \
                zero_point.any():
            return False
        step = float(scale)
        if not (math.isclose(float(high), _INT8_MAX * step, rel_tol=1e-6)
                and math.isclose(float(low), -_INT8_MAX * step, rel_tol=1e-6)):
            return False
        if not _above_lowest_level(graph, clip.input[0], step):
            return False
    return True


def drop_redundant_clips(model) -> int:
    """Remove, in place, every activation quantizer ``Clip`` of ``model`` (an ``onnx.ModelProto``) that is
    redundant (module docstring); returns how many were removed."""
    graph = _Graph(model.graph)
    redundant = [node for node in model.graph.node if node.op_type == "Clip" and _redundant(graph, node)]
    for clip in redundant:
        for consumer in graph.consumers[clip.output[0]]:
            for index, name in enumerate(consumer.input):
                if name == clip.output[0]:
                    consumer.input[index] = clip.input[0]
        model.graph.node.remove(clip)
    return len(redundant)
