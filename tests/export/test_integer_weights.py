"""Integer view of quantizers: codes * scale is the fake-quantized weight bitwise, within the layer's bit width."""

import logging

import pytest
import torch
from torch import nn

from only_train_once.export import (NoQuantizedLayersError, UnsupportedBitWidthError, activation_grid,
                                    integer_weight, quantized_layers)
from only_train_once.quantization.quant_layers import QuantizeConv2d, QuantizeLinear
from only_train_once.quantization.quantizer import step_size_for_bits
from tests.export.common import quantized_backbone

QUANT_TYPES = ("symmetric+linear", "symmetric+nonlinear", "dge")


def layer_at(bits, quant_type="symmetric+nonlinear", t=0.8):
    torch.manual_seed(0)
    layer = QuantizeConv2d.from_module(nn.Conv2d(8, 16, 3), quant_type=quant_type,
                                       quant_mode="weight_and_activation")
    with torch.no_grad():
        if quant_type == "symmetric+nonlinear":
            layer.t_quant_wt.fill_(t)
        layer.d_quant_wt.copy_(step_size_for_bits(bits, layer.q_m_wt, getattr(layer, "t_quant_wt", None)))
    return layer


@pytest.mark.parametrize("quant_type", QUANT_TYPES)
@pytest.mark.parametrize("bits", (2, 3, 4, 5, 8, 16))
def test_codes_times_scale_is_the_fake_quantized_weight_bitwise(quant_type, bits):
    layer = layer_at(bits, quant_type)
    weight = integer_weight(layer)
    with torch.no_grad():
        assert torch.equal(weight.dequantize(), layer.quantize_weight(layer.weight))
    assert weight.codes.dtype == (torch.int8 if bits <= 8 else torch.int16)


def test_integer_range_never_exceeds_the_layer_bit_width_on_zoo_models():
    for name in ("vgg7_bn", "resnet20_cifar10", "bert"):
        model, _ = quantized_backbone(name, "weight_and_activation")
        for layer_name, layer in quantized_layers(model).items():
            weight = integer_weight(layer, layer_name)
            limit = 2 ** (layer.weight_bit - 1) - 1
            assert weight.bits == layer.weight_bit and int(weight.codes.abs().max()) <= weight.int_range <= limit
            if layer.quantizes_activation:
                grid = activation_grid(layer)
                assert grid.bits == layer.activation_bit and grid.int_range <= 2 ** (layer.activation_bit - 1) - 1


def test_a_bit_width_that_rounds_down_stores_one_bit_more_and_says_so(caplog):
    layer = layer_at(4, "symmetric+linear")
    with torch.no_grad():  # 4.4 unrounded bits: weight_bit 4, but the integers reach round(2^3.4 - 1) = 10
        layer.d_quant_wt.copy_(layer.q_m_wt / (2 ** 3.4 - 1))
    with caplog.at_level(logging.WARNING):
        weight = integer_weight(layer, "conv")
    assert layer.weight_bit == 4 and weight.int_range == 10 and weight.bits == 5
    assert "conv" in caplog.text and "5 bits" in caplog.text


def test_linear_mapping_for_t_equal_to_one_and_exponent_otherwise():
    layer = layer_at(4)
    assert activation_grid(layer).exponent is None  # t_quant_act initialised to 1
    with torch.no_grad():
        layer.t_quant_act.fill_(1.25)
    assert activation_grid(layer).exponent == 1.25
    assert activation_grid(QuantizeLinear(3, 3)) is None


def test_errors_say_what_to_do():
    with pytest.raises(NoQuantizedLayersError, match="model_to_quantize_model"):
        quantized_layers(nn.Sequential(nn.Linear(2, 2)))
    layer = layer_at(4, "symmetric+linear")
    with torch.no_grad():  # steps are floored at 1e-10, so a wide range needs a large q_m
        layer.q_m_wt.fill_(10.0)
        layer.d_quant_wt.fill_(1e-10)
    with pytest.raises(UnsupportedBitWidthError, match="at most 32"):
        integer_weight(layer)
