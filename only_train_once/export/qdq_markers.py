"""Marker nodes: how each quantizer of a traced model reaches the ONNX graph as one node naming its layer.

Inside :class:`QuantizerMarking`, the TorchScript ONNX exporter records every weight quantizer of the given layers
as one ``QuantizedWeight`` node and every activation quantizer as one ``QuantizedActivation`` node, both in the
:data:`MARKER_DOMAIN` domain, with the float tensor as input and the layer's qualified name as attribute
``layer``. The graph pass of :mod:`.qdq_rewrite` then replaces the markers by standard QDQ operators. The mode
intercepts the quantizer calls of the tracing contract (:func:`~only_train_once.quantization.quantizer.fake_quantize`
and, for grid layers, :func:`~.grid_layers.grid_weight`) and recognises a layer by its step Parameter object.
"""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..quantization.quant_layers import QuantizeMixin
from ..quantization.quantizer import fake_quantize
from .grid_layers import grid_weight
from .integer_weights import IntegerWeight

__all__ = ["MARKER_DOMAIN", "WEIGHT_MARKER", "ACTIVATION_MARKER", "QuantizerMarking"]

MARKER_DOMAIN = "only_train_once.export"
WEIGHT_MARKER = "QuantizedWeight"
ACTIVATION_MARKER = "QuantizedActivation"


class _Marker(torch.autograd.Function):
    """``apply(x, quantized, op_type, layer)``: returns ``quantized``, the quantizer's output on ``x`` (what the
    trace computes with); exported as one ``op_type`` marker node on ``x`` with attribute ``layer``."""

    @staticmethod
    def forward(ctx, x: Tensor, quantized: Tensor, op_type: str, layer: str) -> Tensor:
        return quantized.clone()

    @staticmethod
    def symbolic(g, x, quantized, op_type, layer):
        node = g.op(f"{MARKER_DOMAIN}::{op_type}", x, layer_s=layer)
        node.setType(x.type())  # a marker keeps its input's type and shape: downstream shape inference goes on
        return node


class QuantizerMarking(TorchFunctionMode):
    """Within this mode the quantizers of ``layers`` export as marker nodes (module docstring).

    ``layers``: ``{qualified name: quantized layer}``; ``weights``: their :class:`IntegerWeight`, whose
    ``dequantize()`` is what a weight marker computes in the trace. Calls of other layers run unchanged.
    """

    def __init__(self, layers: Mapping[str, QuantizeMixin], weights: Mapping[str, IntegerWeight]) -> None:
        super().__init__()
        self._weights: Dict[int, Tuple[str, Tensor]] = {
            id(layer.d_quant_wt): (name, weights[name].dequantize()) for name, layer in layers.items()}
        self._activations: Dict[int, str] = {
            id(layer.d_quant_act): name for name, layer in layers.items() if layer.quantizes_activation}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is fake_quantize or func is grid_weight:
            x, step = args[0], args[1]
            if id(step) in self._weights:
                name, quantized = self._weights[id(step)]
                return _Marker.apply(x, quantized, WEIGHT_MARKER, name)
            if id(step) in self._activations:
                # The quantizer's own nodes in the trace feed nothing but the marker; the exporter drops them.
                return _Marker.apply(x, func(*args, **kwargs), ACTIVATION_MARKER, self._activations[id(step)])
        return func(*args, **kwargs)
