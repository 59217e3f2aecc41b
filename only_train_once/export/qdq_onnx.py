"""Export of a quantized model as a standard ONNX QDQ graph: integer weights, QuantizeLinear/DequantizeLinear.

Three steps: trace with the TorchScript exporter at opset :data:`TRACE_OPSET` (as ``construct_subnet``'s float
export) with every quantizer recorded as a marker node (:mod:`.qdq_markers`); convert to opset
:data:`~.qdq_rewrite.QDQ_OPSET` with ``onnx.version_converter``; replace the markers by QDQ operators
(:mod:`.qdq_rewrite`). Bit widths map to ONNX types as follows (all run in onnxruntime's CPU provider):

==============  ==========================  ==========================================
integer bits    weight initializer          activation QuantizeLinear output
==============  ==========================  ==========================================
1..4            int4 (two per byte)         uint8, zero point 128
5..8            int8                        uint8, zero point 128
9..16           int16                       int16
17..32          int32                       not exported (UnsupportedBitWidthError)
==============  ==========================  ==========================================

where a quantizer's integer bits are ``n.bit_length() + 1`` for its integer range ``n`` (its rounded bit width
when its step comes from ``step_size_for_bits``); weight zero points are 0; why uint8 activations, see
:data:`~.qdq_rewrite.ACTIVATION_TYPES`. Scales are float32: the model must be float32.

onnxruntime's default CPU session fuses ``DequantizeLinear -> MatMul`` into its ``MatMulNBits`` kernel and
computes it at its default ``accuracy_level`` 4, with the activations quantized to int8 on the fly: fast, but not
the model's function (about 1% of the output off on a small ViT). :data:`EXACT_SESSION_CONFIG` keeps float32
compute; pass each entry to ``SessionOptions.add_session_config_entry``.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any, cast

import onnx
import torch
from onnx import version_converter
from torch import nn

from ..subnet_construction.onnx_integrity import save_onnx
from ..utils import eval_mode
from .integer_weights import (ActivationGrid, UnsupportedBitWidthError, activation_grid, integer_weight,
                              quantized_layers)
from .qdq_markers import ACTIVATION_MARKER, MARKER_DOMAIN, WEIGHT_MARKER, QuantizerMarking
from .qdq_rewrite import ACTIVATION_TYPES, QDQ_OPSET, replace_markers

__all__ = ["TRACE_OPSET", "EXACT_SESSION_CONFIG", "export_qdq_onnx"]

logger = logging.getLogger(__name__)

TRACE_OPSET = 17

#: onnxruntime session config entries under which a QDQ graph computes the fake-quantized model's function.
EXACT_SESSION_CONFIG = {"session.qdq_matmulnbits_accuracy_level": "1"}


def _positional(dummy_input: Any) -> tuple:
    """``dummy_input`` as exporter arguments, with ``construct_subnet``'s convention (dict: keyword values)."""
    args = tuple(dummy_input.values()) if isinstance(dummy_input, dict) else dummy_input
    return args if isinstance(args, tuple) else (args,)


def _trace(model: nn.Module, dummy_input: Any, marking: QuantizerMarking) -> onnx.ModelProto:
    buffer = io.BytesIO()
    try:
        with eval_mode(model), torch.no_grad(), marking, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # torch's stub types ``f`` as a path; the TorchScript exporter also writes to a file object
            torch.onnx.export(model, _positional(dummy_input), buffer,  # type: ignore[arg-type]
                              opset_version=TRACE_OPSET, dynamo=False, custom_opsets={MARKER_DOMAIN: 1})
    except Exception as error:
        raise RuntimeError(f"the TorchScript ONNX exporter cannot trace {type(model).__name__} ({error}); the QDQ "
                           "export needs it (the torch.export-based exporter does not run quantizer markers)") \
            from error
    return onnx.load_from_string(buffer.getvalue())


def export_qdq_onnx(model: nn.Module, dummy_input: Any, path: str) -> str:
    """Write ``model`` (float32, with quantized layers) as an ONNX QDQ graph at opset 21 to ``path``; returns it.

    ``dummy_input``: a tensor, a tuple of positional inputs or a dict of keyword inputs, as for ``OTO``; the graph
    has its shapes. Every quantized layer's weight is an integer initializer dequantized by ``DequantizeLinear``
    (scale: the layer's step ``d``); in weight+activation mode its input goes through ``Clip`` ->
    ``QuantizeLinear`` -> ``DequantizeLinear`` (module docstring for the types, :mod:`.qdq_rewrite` for the
    graph). The file is written atomically with checksums of its tensors (``verify_onnx_file`` checks them).
    onnxruntime computes the fake-quantized model's function: weights bitwise, activations up to
    floating-point rounding of values that land on a rounding boundary. Raises ``NoQuantizedLayersError`` without
    quantized layers, ``UnsupportedBitWidthError`` for weights over 32 or activations over 16 integer bits,
    ``ValueError`` for a model that is not float32.
    """
    layers = quantized_layers(model)
    not_float32 = [name for name, layer in layers.items() if layer.weight.dtype != torch.float32]
    if not_float32:
        raise ValueError(f"QDQ export writes float32 scales; layers {not_float32[:5]} are not float32: export the "
                         "float32 model")
    weights = {name: integer_weight(layer, name) for name, layer in layers.items()}
    activations = {name: cast(ActivationGrid, activation_grid(layer))  # not None: the layer quantizes its input
                   for name, layer in layers.items() if layer.quantizes_activation}
    widest = ACTIVATION_TYPES[-1][0]
    too_wide = {name: grid.bits for name, grid in activations.items() if grid.bits > widest}
    if too_wide:
        raise UnsupportedBitWidthError(f"activation quantizers of {too_wide} need more than {widest} integer bits, "
                                       "the widest QuantizeLinear type; give them at most 16 bits")
    traced = _trace(model, dummy_input, QuantizerMarking(layers, weights))
    converted = version_converter.convert_version(traced, QDQ_OPSET)
    counts = replace_markers(converted, weights, activations)
    converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(converted.opset_import))
    onnx.checker.check_model(converted)
    save_onnx(converted, path)
    logger.info("wrote QDQ ONNX %s: %d weight and %d activation quantizers, weight bits %s", path,
                counts[WEIGHT_MARKER], counts[ACTIVATION_MARKER],
                sorted({weight.bits for weight in weights.values()}))
    return path

