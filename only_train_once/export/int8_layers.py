"""Integer layers for the ``onnx_int8`` export: a baked layer whose weight and input fit in 8 bits, in the QDQ
form that onnxruntime's CPU provider fuses into integer kernels.

Input of every integer layer (``n``: the activation's integer range, ``s_x``: its step)::

    x -> [Abs, Min(q), Pow(t), Mul(Sign(x))  only where t != 1] -> QuantizeLinear(s_x, zero point 128, uint8)
      -> Clip(128 - n, 128 + n) -> DequantizeLinear

* ``nn.Linear``: ``MatMul`` with ``DequantizeLinear(int8 codes, per-channel scale)``, then ``Add(bias)``
  (``Gemm`` without its bias input for 2-D inputs); onnxruntime fuses it into ``MatMulIntegerToFloat``
  (``QGemm``): integer products, exact up to float rounding of the rescale.
* ``nn.Conv2d``: onnxruntime has no fused integer convolution with a float output, so by default
  (``requantize_conv_outputs``) the output is quantized to uint8 on its own grid (range measured on the probe
  inputs, 255 levels) and the ``DequantizeLinear -> Conv -> QuantizeLinear`` group becomes ``QLinearConv``.
  That grid is an approximation of the trained model (about 0.4% of each convolution's output range per layer;
  the export measures and reports the end-to-end error). Without requantization the convolution is a
  ``ConvInteger`` with a float rescale: exact, but onnxruntime's ``ConvInteger`` is several times slower than its
  float convolution.

In eager PyTorch the stand-in modules compute the graph's function in float; their ONNX form comes from their
``symbolic`` (TorchScript exporter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .baking import ActivationQuantizer, BakedLayer

__all__ = ["MAX_INTEGER_BITS", "IntegerLayerSpec", "integer_layer", "output_grid", "integer_ineligibility",
           "IntegerLinear", "IntegerConv2d"]

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
    output_grid: Optional[Tuple[float, int]] = None  # (scale, uint8 zero point) of a requantized conv output


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


def _dequantized_input_symbolic(g, x, act: ActivationQuantizer):
    return g.op("DequantizeLinear", _quantize_input_symbolic(g, x, act), _const(g, act.scale),
                _const(g, _ZERO_POINT, torch.uint8))


def _dequantized_weight_symbolic(g, codes: Tensor, channel_scale: Tensor, axis: int):
    zero_points = torch.zeros(channel_scale.numel(), dtype=torch.int8)
    return g.op("DequantizeLinear", _const(g, codes.contiguous(), torch.int8), _const(g, channel_scale),
                _const(g, zero_points, torch.int8), axis_i=axis)


def _channel_scale(spec: IntegerLayerSpec) -> Tensor:
    return (spec.output_scale.double() / spec.activation.scale).float()


def _integer_bias(spec: IntegerLayerSpec) -> Tensor:
    """The bias on the accumulator's grid (``s_x * s_c``): what ``QLinearConv`` adds in int32."""
    bias = cast(Tensor, spec.bias)  # called only for a layer with a bias
    return torch.round(bias.double() / spec.output_scale.double()).to(torch.int32)


def _requantize(y: Tensor, grid: Tuple[float, int]) -> Tensor:
    scale, zero_point = grid
    return (torch.clamp(torch.round(y / scale) + zero_point, 0, 255) - zero_point) * scale


class _IntegerLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec: IntegerLayerSpec):
        weight = spec.codes.to(x.dtype) * (spec.output_scale / spec.activation.scale).to(x.dtype)[:, None]
        return F.linear(_quantize_input(x, spec.activation), weight, spec.bias)

    @staticmethod
    def symbolic(g, x, spec: IntegerLayerSpec):
        weight = _dequantized_weight_symbolic(g, spec.codes.t(), _channel_scale(spec), axis=1)
        inputs = [_dequantized_input_symbolic(g, x, spec.activation), weight]
        # 2-D: Gemm without C, onnxruntime's QGemm (MatMul + Add would become a float Gemm, and a float C keeps the
        # Gemm float: QGemm only takes an int32 bias on the accumulator grid, which would round it). Else MatMul,
        # onnxruntime's MatMulIntegerToFloat. The float bias is added after, exactly.
        y = g.op("Gemm" if x.type().dim() == 2 else "MatMul", *inputs)
        return y if spec.bias is None else g.op("Add", y, _const(g, spec.bias.detach()))


class _IntegerConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec: IntegerLayerSpec):
        weight = spec.codes.to(x.dtype) * (spec.output_scale / spec.activation.scale).to(x.dtype)[:, None, None, None]
        if spec.output_grid is None:
            return F.conv2d(_quantize_input(x, spec.activation), weight, spec.bias, spec.stride, spec.padding,
                            spec.dilation, spec.groups)
        bias = None if spec.bias is None else (_integer_bias(spec).double() * spec.output_scale.double()).to(x.dtype)
        y = F.conv2d(_quantize_input(x, spec.activation), weight, bias, spec.stride, spec.padding, spec.dilation,
                     spec.groups)
        return _requantize(y, spec.output_grid)

    @staticmethod
    def symbolic(g, x, spec: IntegerLayerSpec):
        if spec.output_grid is not None:
            return _IntegerConvFunction._qlinear_symbolic(g, x, spec)
        quantized = _quantize_input_symbolic(g, x, spec.activation)
        codes = _const(g, spec.codes.contiguous(), torch.int8)
        pad_h, pad_w = spec.padding
        accumulated = g.op("ConvInteger", quantized, codes, _const(g, _ZERO_POINT, torch.uint8),
                           kernel_shape_i=list(spec.codes.shape[2:]), strides_i=list(spec.stride),
                           pads_i=[pad_h, pad_w, pad_h, pad_w], dilations_i=list(spec.dilation), group_i=spec.groups)
        return _rescale_symbolic(g, accumulated, spec, (1, -1, 1, 1))

    @staticmethod
    def _qlinear_symbolic(g, x, spec: IntegerLayerSpec):
        """``DequantizeLinear -> Conv -> QuantizeLinear -> DequantizeLinear``: onnxruntime's ``QLinearConv``."""
        weight = _dequantized_weight_symbolic(g, spec.codes, _channel_scale(spec), axis=0)
        inputs = [_dequantized_input_symbolic(g, x, spec.activation), weight]
        if spec.bias is not None:
            inputs.append(g.op("DequantizeLinear", _const(g, _integer_bias(spec), torch.int32),
                               _const(g, spec.output_scale), _const(g, torch.zeros(spec.bias.numel()), torch.int32),
                               axis_i=0))
        pad_h, pad_w = spec.padding
        y = g.op("Conv", *inputs, kernel_shape_i=list(spec.codes.shape[2:]), strides_i=list(spec.stride),
                 pads_i=[pad_h, pad_w, pad_h, pad_w], dilations_i=list(spec.dilation), group_i=spec.groups)
        grid = cast(Tuple[float, int], spec.output_grid)  # this symbolic is chosen only when there is a grid
        scale, zero_point = _const(g, grid[0]), _const(g, grid[1], torch.uint8)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", y, scale, zero_point), scale, zero_point)


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


def output_grid(low: float, high: float) -> Tuple[float, int]:
    """``(scale, zero point)`` of the uint8 grid covering ``[min(low, 0), max(high, 0)]``."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255.0
    return float(torch.tensor(scale, dtype=torch.float32)), int(round(-low / scale))


def integer_layer(baked: BakedLayer, grid: Optional[Tuple[float, int]] = None) -> nn.Module:
    """The integer stand-in of an eligible baked layer (check :func:`integer_ineligibility` first); ``grid``:
    the requantization grid of a convolution's output (``None``: exact ``ConvInteger``)."""
    # eligible: a linear or 2-d convolution quantizing its input (see integer_ineligibility)
    module = cast(Union[nn.Linear, nn.Conv2d], baked.module)
    act = cast(ActivationQuantizer, baked.activation)
    output_scale = (baked.channel_scale.double() * act.scale).float()
    bias = None if module.bias is None else module.bias.detach().float()
    codes = baked.codes.to(torch.int8)
    if isinstance(module, nn.Linear):
        return IntegerLinear(IntegerLayerSpec(codes, output_scale, bias, act))
    return IntegerConv2d(IntegerLayerSpec(codes, output_scale, bias, act, tuple(module.stride),
                                          tuple(module.padding), tuple(module.dilation), module.groups, grid))
