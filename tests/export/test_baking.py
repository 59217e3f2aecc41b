"""The activation quantizer of the deployed model in each form: the same grid, and the cheapest ONNX operators."""

from __future__ import annotations

import collections

import onnx
import pytest
import torch
from torch import nn

from only_train_once.export.baking import ActivationQuantizer, activation_quantizer_module, quantizer_form
from only_train_once.export.onnx_io import run_onnx


def _quantize(quantizer: ActivationQuantizer, form: str, x: torch.Tensor) -> torch.Tensor:
    return activation_quantizer_module(quantizer, form)(None, (x,))[0]


def _probe(quantizer: ActivationQuantizer) -> torch.Tensor:
    """Values over three times the clipping range (so both clamps bind), none within 1e-3 steps of a tie."""
    x = torch.empty(4, 2000).uniform_(-3, 3, generator=torch.Generator().manual_seed(0)) * quantizer.clip
    steps = x / quantizer.scale
    return x[((steps - steps.floor()) - 0.5).abs() > 1e-3].reshape(1, -1)


@pytest.mark.parametrize("int_range", [31, 127])
def test_onnx_form_of_a_linear_quantizer_is_the_decomposed_grid(int_range):
    quantizer = ActivationQuantizer(scale=0.05, clip=0.05 * int_range, int_range=int_range, exponent=None)
    x = _probe(quantizer)
    expected = _quantize(quantizer, "decomposed", x)
    assert expected.min().item() == pytest.approx(-int_range * 0.05)  # the clamp binds on both sides
    assert expected.max().item() == pytest.approx(int_range * 0.05)
    assert torch.equal(_quantize(quantizer, "onnx", x), expected)
    assert torch.equal(_quantize(quantizer, "eager", x), expected)


@pytest.mark.parametrize("exponent", [None, 0.8, 1.25])
def test_eager_form_computes_the_decomposed_quantizer_and_leaves_its_input_alone(exponent):
    quantizer = ActivationQuantizer(scale=0.05, clip=0.05 * 127, int_range=127, exponent=exponent)
    x = _probe(quantizer)
    before = x.clone()
    expected = _quantize(quantizer, "decomposed", x)
    assert torch.allclose(_quantize(quantizer, "eager", x), expected, rtol=0, atol=1e-6)
    assert torch.equal(x, before)  # the in-place steps work on a fresh tensor
    assert len(expected.unique()) > 100  # a real grid, not a constant


class _Quantized(nn.Module):
    def __init__(self, quantizer: ActivationQuantizer, form: str):
        super().__init__()
        self.quantize = activation_quantizer_module(quantizer, form)

    def forward(self, x):
        return self.quantize(None, (x,))[0]


def test_onnx_form_runs_as_clip_and_int8_quantize_dequantize_in_onnxruntime(tmp_path):
    quantizer = ActivationQuantizer(scale=0.05, clip=6.35, int_range=127, exponent=None)
    x = _probe(quantizer)
    path = str(tmp_path / "q.onnx")
    torch.onnx.export(_Quantized(quantizer, "onnx"), (x,), path, input_names=["input_0"], opset_version=17,
                      dynamo=False)
    operators = collections.Counter(node.op_type for node in onnx.load(path).graph.node)
    assert operators["QuantizeLinear"] == operators["DequantizeLinear"] == operators["Clip"] == 1
    assert not operators["Round"] and not operators["Div"]
    assert torch.equal(run_onnx(path, x)[0], _quantize(quantizer, "decomposed", x))


def test_nonlinear_and_wide_quantizers_stay_decomposed_for_onnx():
    assert quantizer_form(ActivationQuantizer(0.05, 1.0, 127, exponent=0.8), "onnx") == "decomposed"
    assert quantizer_form(ActivationQuantizer(0.001, 1.0, 1023, exponent=None), "onnx") == "decomposed"
    assert quantizer_form(ActivationQuantizer(0.05, 1.0, 127, exponent=None), "onnx") == "onnx"
    with pytest.raises(ValueError, match="choose from"):
        quantizer_form(ActivationQuantizer(0.05, 1.0, 127, exponent=None), "int4")
