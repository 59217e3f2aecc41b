"""The integers behind a quantized layer: weight codes, steps, integer ranges and the bits that store them.

A quantizer outputs ``d * k`` with an integer ``k = sign(x) * round(min(|x|, q)^t / d)``, ``|k| <= n`` where
``n = round(q^t / d)`` is the quantizer's integer range (``d`` and ``q`` through their floored magnitudes, see
:mod:`only_train_once.quantization.quantizer`). The output levels are uniform even for the nonlinear quantizer
(``t != 1``); only the input-to-level mapping is nonlinear. So a quantized weight is exactly an integer tensor and
one float scale ``d``, and ``n`` fixes the width: ``n.bit_length() + 1`` bits in two's complement (a sign bit and
the magnitude bits), which is the layer's rounded ``weight_bit`` whenever ``d`` comes from ``step_size_for_bits``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Optional, cast

import torch
from torch import Tensor, nn

from ..quantization.quant_layers import QuantizeMixin
from ..quantization.quantizer import effective_scalars, fake_quantize

__all__ = [
    "MAX_WEIGHT_BITS",
    "NoQuantizedLayersError",
    "UnsupportedBitWidthError",
    "IntegerWeight",
    "ActivationGrid",
    "range_bits",
    "integer_dtype",
    "quantized_layers",
    "integer_weight",
    "activation_grid",
]

logger = logging.getLogger(__name__)

#: Widest weight integer the export formats store (int32 codes).
MAX_WEIGHT_BITS = 32


class NoQuantizedLayersError(ValueError):
    """A low-bit export was asked for a model without quantized layers."""


class UnsupportedBitWidthError(ValueError):
    """A quantizer needs more bits than the export format can store."""


def range_bits(int_range: int) -> int:
    """Bits of a two's complement integer holding ``[-int_range, int_range]``: ``int_range.bit_length() + 1``."""
    return int(int_range).bit_length() + 1


def integer_dtype(bits: int) -> torch.dtype:
    """Smallest torch integer dtype holding ``bits``-bit two's complement integers (``bits <= 32``)."""
    for dtype in (torch.int8, torch.int16, torch.int32):
        if bits <= torch.iinfo(dtype).bits:
            return dtype
    raise UnsupportedBitWidthError(f"{bits}-bit integers exceed int32")


@dataclass(frozen=True)
class IntegerWeight:
    """A quantized weight as integers: ``dequantize() == codes * scale`` is the fake-quantized weight, bitwise.

    ``codes``: the integers ``k``, weight-shaped, dtype :func:`integer_dtype` of ``bits``; ``scale``: the effective
    step ``max(|d|, floor)``, shape ``[1]``, in the weight's dtype; ``int_range``: ``n``, with ``|codes| <= n``.
    """

    codes: Tensor
    scale: Tensor
    int_range: int

    @property
    def bits(self) -> int:
        """Storage width of the codes: :func:`range_bits` of ``int_range``."""
        return range_bits(self.int_range)

    def dequantize(self) -> Tensor:
        """``codes * scale`` in the scale's dtype: the values the weight quantizer outputs."""
        return self.codes.to(self.scale.dtype) * self.scale


@dataclass(frozen=True)
class ActivationGrid:
    """An activation quantizer: step ``scale`` (shape ``[1]``, float), integer range ``int_range``, and the
    exponent ``t`` of the input-to-level mapping (``None`` where the mapping is linear, as for ``t == 1``)."""

    scale: Tensor
    int_range: int
    exponent: Optional[float]

    @property
    def bits(self) -> int:
        return range_bits(self.int_range)


def quantized_layers(model: nn.Module) -> Dict[str, QuantizeMixin]:
    """``{qualified name: layer}`` of the quantized layers of ``model`` (each module object once).

    Raises :class:`NoQuantizedLayersError` if there are none: low-bit formats need learned quantizers.
    """
    layers = {name: module for name, module in model.named_modules() if isinstance(module, QuantizeMixin)}
    if not layers:
        raise NoQuantizedLayersError(
            f"{type(model).__name__} has no quantized layers, so it has no low-bit weights to export. Convert it "
            "with only_train_once.quantization.quant_model.model_to_quantize_model (and train it with oto.geta) "
            "first, or save the float model with construct_subnet(ckpt_format='torch' or 'onnx')."
        )
    return layers


def _exponent(layer: QuantizeMixin, suffix: str) -> Optional[Tensor]:
    return getattr(layer, f"t_quant_{suffix}", None)  # only the nonlinear quantizer registers t


def _step_and_range(layer: QuantizeMixin, suffix: str, dtype: torch.dtype):
    """``(effective step d [1], integer range n)`` of one of the layer's quantizers, for inputs of ``dtype``.

    ``n`` is read off the quantizer itself, as the integer it assigns to an input at its range ``q``, so that it
    is exactly the bound of the integers it produces (a separately computed ``round(q^t / d)`` may differ by one
    where ``q^t / d`` lies within an ulp of a half-integer).
    """
    d, q_m, t = (getattr(layer, f"d_quant_{suffix}"), getattr(layer, f"q_m_{suffix}"), _exponent(layer, suffix))
    probe = torch.zeros(1, dtype=dtype, device=d.device)
    step, range_value, _ = effective_scalars(probe, d.detach(), q_m.detach(), None)
    top = fake_quantize(range_value, d.detach(), q_m.detach(), None if t is None else t.detach(),
                        quant_type=layer.quant_type)
    return step, int(torch.round(top / step).item())


@torch.no_grad()
def integer_weight(layer: QuantizeMixin, name: Optional[str] = None) -> IntegerWeight:
    """The integers and step behind ``layer``'s quantized weight (``layer.quantize_weight(layer.weight)``).

    ``name`` (the layer's qualified name) is for messages only.

    Raises :class:`UnsupportedBitWidthError` if the integers need more than :data:`MAX_WEIGHT_BITS` bits, and
    ``RuntimeError`` if the quantized weight is not ``codes * scale`` bitwise (a weight quantizer this module does
    not know).
    """
    label = name or type(layer).__name__
    grid = layer.quantize_weight(cast(Tensor, layer.weight)).detach()
    step, int_range = _step_and_range(layer, "wt", grid.dtype)
    bits = range_bits(int_range)
    if bits > MAX_WEIGHT_BITS:
        raise UnsupportedBitWidthError(
            f"the weight of {label} spans +-{int_range} steps ({bits} bits); at most "
            f"{MAX_WEIGHT_BITS} bits are stored. Its quantizer is practically float: give it a bit width of at most "
            f"{MAX_WEIGHT_BITS} (d_quant_wt = step_size_for_bits(bits, q_m_wt, t_quant_wt))."
        )
    levels = torch.round(grid / step)
    if not torch.equal(levels * step, grid) or bool((levels.abs() > int_range).any()):
        raise RuntimeError(f"the quantized weight of {label} is not an integer multiple of its step "
                           "within its range; its weight quantizer does not follow the symmetric quantizer.")
    if bits > layer.weight_bit:
        logger.warning("%s: the weight integers span +-%d, %d bits, one more than the rounded weight_bit %d (the "
                       "unrounded bit width rounds down); they are stored at %d bits.", label,
                       int_range, bits, layer.weight_bit, bits)
    return IntegerWeight(levels.to(integer_dtype(bits)), step, int_range)


@torch.no_grad()
def activation_grid(layer: QuantizeMixin, dtype: torch.dtype = torch.float32) -> Optional[ActivationGrid]:
    """The activation quantizer of ``layer`` for inputs of ``dtype``; ``None`` in weight-only mode."""
    if not layer.quantizes_activation:
        return None
    step, int_range = _step_and_range(layer, "act", dtype)
    t = _exponent(layer, "act")
    exponent = None if t is None or float(t) == 1.0 else float(t)  # t == 1 is the linear quantizer, as in eager
    return ActivationGrid(step, int_range, exponent)
