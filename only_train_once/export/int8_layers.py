"""Integer layers for the ``onnx_int8`` export: a baked layer whose weight and input fit in 8 bits, computed as
``ConvInteger`` / ``MatMulInteger`` on the integer codes.

Graph of one layer (``n``: the activation's integer range, ``s_x``: its step, ``s_c``: the weight's per-channel
scale)::

    x -> [Abs, Min(q), Pow(t), Mul(Sign(x))  only where t != 1] -> QuantizeLinear(s_x, zero point 128, uint8)
      -> Clip(128 - n, 128 + n) -> ConvInteger / MatMulInteger(int8 codes) -> Cast(float) -> Mul(s_x * s_c) -> Add(bias)

The integer product is exact, so the layer computes the baked layer's function up to float rounding of the final
rescale and of ``x / s_x`` at rounding boundaries (one-step flips). In eager PyTorch the stand-in modules compute
that function in float; only their ONNX symbolic (TorchScript exporter) is integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .baking import ActivationQuantizer, BakedLayer

__all__ = ["MAX_INTEGER_BITS", "IntegerLayerSpec", "integer_layer", "integer_ineligibility", "IntegerLinear",
           "IntegerConv2d"]

#: Widest weight and activation (integer bits) computed as int8.
MAX_INTEGER_BITS = 8
_ZERO_POINT = 128


@dataclass(frozen=True)
class IntegerLayerSpec:
    """What the symbolic needs: codes (int8), output scale ``s_x * s_c`` (float, per output channel), bias, the
    activation quantizer and, for convolutions, the geometry."""

    codes: Tensor
    output_scale: Tensor
    bias: Optional[Tensor]
    activation: ActivationQuantizer
    stride: tuple = ()
    padding: tuple = ()
    dilation: tuple = ()
    groups: int = 1


def integer_ineligibility(baked: BakedLayer) -> Optional[str]:
    """Why ``baked`` stays float in the int8 export, or ``None`` if it becomes integer."""
    module = baked.module
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        return f"{type(module).__name__} has no integer kernel here"
    if isinstance(module, nn.Conv2d) and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
        return "convolution padding mode/string padding"
    if baked.activation is None:
        return "weight-only quantization (float input)"
    if baked.activation.bits > MAX_INTEGER_BITS:
        return f"activation {baked.activation.bits} bits > {MAX_INTEGER_BITS}"
    if baked.weight_bits > MAX_INTEGER_BITS:
        return f"weight {baked.weight_bits} bits > {MAX_INTEGER_BITS}"
    return None


def _quantize_input(x: Tensor, act: ActivationQuantizer) -> Tensor:
    """Float value of the integer input the graph computes: ``s_x * clamp(round(v / s_x), -n, n)``."""
    if act.exponent is not None:
        x = torch.sign(x) * torch.pow(torch.clamp(torch.abs(x), max=act.clip), act.exponent)
    return torch.clamp(torch.round(x / act.scale), -act.int_range, act.int_range) * act.scale


def _const(g, value, dtype=torch.float32):
    return g.op("Constant", value_t=torch.as_tensor(value, dtype=dtype))


def _quantize_input_symbolic(g, x, act: ActivationQuantizer):
    if act.exponent is not None:
        magnitude = g.op("Min", g.op("Abs", x), _const(g, act.clip))
        x = g.op("Mul", g.op("Pow", magnitude, _const(g, act.exponent)), g.op("Sign", x))
    quantized = g.op("QuantizeLinear", x, _const(g, act.scale), _const(g, _ZERO_POINT, torch.uint8))
    n = act.int_range
    return g.op("Clip", quantized, _const(g, _ZERO_POINT - n, torch.uint8), _const(g, _ZERO_POINT + n, torch.uint8))


def _rescale_symbolic(g, accumulated, spec: IntegerLayerSpec, shape):
    y = g.op("Mul", g.op("Cast", accumulated, to_i=1), _const(g, spec.output_scale.reshape(shape)))  # 1: FLOAT
    return y if spec.bias is None else g.op("Add", y, _const(g, spec.bias.detach().reshape(shape)))


class _IntegerLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec: IntegerLayerSpec):
        weight = spec.codes.to(x.dtype) * (spec.output_scale / spec.activation.scale).to(x.dtype)[:, None]
        return F.linear(_quantize_input(x, spec.activation), weight, spec.bias)

    @staticmethod
    def symbolic(g, x, spec: IntegerLayerSpec):
        quantized = _quantize_input_symbolic(g, x, spec.activation)
        codes = _const(g, spec.codes.t().contiguous(), torch.int8)
        accumulated = g.op("MatMulInteger", quantized, codes, _const(g, _ZERO_POINT, torch.uint8))
        return _rescale_symbolic(g, accumulated, spec, (-1,))


class _IntegerConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec: IntegerLayerSpec):
        weight = spec.codes.to(x.dtype) * (spec.output_scale / spec.activation.scale).to(x.dtype)[:, None, None, None]
        return F.conv2d(_quantize_input(x, spec.activation), weight, spec.bias, spec.stride, spec.padding,
                        spec.dilation, spec.groups)

    @staticmethod
    def symbolic(g, x, spec: IntegerLayerSpec):
        quantized = _quantize_input_symbolic(g, x, spec.activation)
        codes = _const(g, spec.codes.contiguous(), torch.int8)
        pad_h, pad_w = spec.padding
        accumulated = g.op("ConvInteger", quantized, codes, _const(g, _ZERO_POINT, torch.uint8),
                           kernel_shape_i=list(spec.codes.shape[2:]), strides_i=list(spec.stride),
                           pads_i=[pad_h, pad_w, pad_h, pad_w], dilations_i=list(spec.dilation), group_i=spec.groups)
        return _rescale_symbolic(g, accumulated, spec, (1, -1, 1, 1))


class IntegerLinear(nn.Module):
    """Export-time stand-in of a baked ``nn.Linear`` (see module docstring)."""

    def __init__(self, spec: IntegerLayerSpec):
        super().__init__()
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        return _IntegerLinearFunction.apply(x, self.spec)


class IntegerConv2d(nn.Module):
    """Export-time stand-in of a baked ``nn.Conv2d`` (see module docstring)."""

    def __init__(self, spec: IntegerLayerSpec):
        super().__init__()
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        return _IntegerConvFunction.apply(x, self.spec)


def integer_layer(baked: BakedLayer) -> nn.Module:
    """The integer stand-in of an eligible baked layer (check :func:`integer_ineligibility` first)."""
    module, act = baked.module, baked.activation
    output_scale = (baked.channel_scale.double() * act.scale).float()
    bias = None if module.bias is None else module.bias.detach().float()
    codes = baked.codes.to(torch.int8)
    if isinstance(module, nn.Linear):
        return IntegerLinear(IntegerLayerSpec(codes, output_scale, bias, act))
    return IntegerConv2d(IntegerLayerSpec(codes, output_scale, bias, act, tuple(module.stride),
                                          tuple(module.padding), tuple(module.dilation), module.groups))
