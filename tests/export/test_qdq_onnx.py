"""ONNX QDQ export: integer weights in QDQ graphs that onnxruntime runs with the fake-quantized model's outputs.

Parity bound asserted on zoo models (``y`` the torch outputs, ``d_max`` the model's largest activation step):
``max |onnxruntime - torch| <= 1e-5 * max(1, max |y|) + 4 * d_max``; the slack is for rounding flips (an
activation within float rounding of a rounding boundary rounds the other way in onnxruntime; a flip in an early
layer reaches every output of a transformer). The tight checks: with activation rounding bypassed on both sides
``max |onnxruntime - torch| <= 1e-5 * max(1, max |y|)`` (the weights are bitwise the fake-quantized ones), and a
single quantized activation is torch's level or one step off, for at most 1% of its elements.
"""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from only_train_once import OTO
from only_train_once.export import (NoQuantizedLayersError, UnsupportedBitWidthError, activation_grid,
                                    export_qdq_onnx, integer_weight, quantized_layers)
from only_train_once.export.qdq_markers import MARKER_DOMAIN
from only_train_once.quantization.quant_layers import QuantizeLinear
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.quantization.quantizer import step_size_for_bits
from only_train_once.quantization.rounding import ActivationRoundingBypassed, max_activation_step
from tests.export.common import (FLIP_STEPS, FLOAT_TOLERANCE, calibrate_in_eval, output_scale, quantized_backbone,
                                 run_onnxruntime, set_mixed_bits, weight_only_twin)
from tests.graph import models
from tests.helpers import outputs

pytest.importorskip("onnxruntime")

MODES = ("weight_only", "weight_and_activation")
WEIGHT_TYPE = {2: TensorProto.INT4, 3: TensorProto.INT4, 4: TensorProto.INT4, 5: TensorProto.INT8,
               6: TensorProto.INT8, 7: TensorProto.INT8, 8: TensorProto.INT8, 16: TensorProto.INT16}


def exported(model, dummy_input, tmp_path, name="model.onnx"):
    path = str(tmp_path / name)
    export_qdq_onnx(model, dummy_input, path)
    return path


def test_graph_holds_integer_weights_of_the_width_type_and_qdq_activations(tmp_path):
    model, dummy_input = quantized_backbone("vgg7_bn", "weight_and_activation")
    graph = onnx.load(exported(model, dummy_input, tmp_path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Clip"} <= ops
    assert all(node.domain in ("", "ai.onnx") for node in graph.node), MARKER_DOMAIN
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    for name, layer in quantized_layers(model).items():
        assert f"{name}.weight" not in initializers  # no float copy of a quantized weight
        tensor = initializers[f"{name}.weight_quantized"]
        assert tensor.data_type == WEIGHT_TYPE[layer.weight_bit]
        codes = numpy_helper.to_array(tensor).astype(np.int64)
        assert np.abs(codes).max() <= 2 ** (layer.weight_bit - 1) - 1
        assert np.array_equal(codes, integer_weight(layer).codes.numpy())
        assert numpy_helper.to_array(initializers[f"{name}.weight_scale"]) == layer.d_quant_wt.abs().item()
        grid = activation_grid(layer)
        bound = numpy_helper.to_array(initializers[f"{name}.input_clip_max"]).item()
        scale = numpy_helper.to_array(initializers[f"{name}.input_scale"]).item()
        assert round(bound / scale) == grid.int_range <= 2 ** (layer.activation_bit - 1) - 1
        zero_point = initializers[f"{name}.input_zero_point"]
        expected = (TensorProto.UINT8, 128) if layer.activation_bit <= 8 else (TensorProto.INT16, 0)
        assert (zero_point.data_type, numpy_helper.to_array(zero_point).item()) == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ("vgg7_bn", "resnet20_cifar10", "vit_tiny", "bert"))
def test_onnxruntime_matches_the_fake_quantized_model_at_mixed_bits(tmp_path, name, mode):
    model, dummy_input = quantized_backbone(name, mode)
    reference = outputs(model, dummy_input)
    result = run_onnxruntime(exported(model, dummy_input, tmp_path), dummy_input)
    difference = max((a - b).abs().max().item() for a, b in zip(result, reference))
    assert difference <= FLOAT_TOLERANCE * output_scale(reference) + FLIP_STEPS * max_activation_step(model)


@pytest.mark.parametrize("name", ("vgg7_bn", "resnet20_cifar10", "vit_tiny", "bert"))
def test_weights_are_exact_with_activation_rounding_bypassed(tmp_path, name):
    model, dummy_input = quantized_backbone(name, "weight_and_activation")
    with ActivationRoundingBypassed():
        reference = outputs(model, dummy_input)
    result = run_onnxruntime(exported(weight_only_twin(model), dummy_input, tmp_path), dummy_input)
    assert max((a - b).abs().max().item() for a, b in zip(result, reference)) <= \
        FLOAT_TOLERANCE * output_scale(reference)


@pytest.mark.parametrize("quant_type,exponent", [("symmetric+linear", None), ("dge", None),
                                                 ("symmetric+nonlinear", 0.8), ("symmetric+nonlinear", 1.25)])
@pytest.mark.parametrize("bits", (2, 4, 8, 16))
def test_the_activation_chain_reproduces_the_activation_quantizer_levels(tmp_path, quant_type, exponent, bits):
    """Behind an identity weight the output is the quantized activation: every element is torch's level, or one
    step off where torch and onnxruntime round an input on a rounding boundary differently (at most 1%)."""
    torch.manual_seed(bits)
    identity = nn.Linear(64, 64, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(64))
    layer = QuantizeLinear.from_module(identity, quant_type=quant_type, quant_mode="weight_and_activation").eval()
    x = 1.5 * torch.randn(32, 64)
    with torch.no_grad():
        layer.calibrate_activation_range(x)
        if exponent is not None:
            layer.t_quant_act.fill_(exponent)
        layer.d_quant_act.copy_(step_size_for_bits(bits, layer.q_m_act, getattr(layer, "t_quant_act", None)))
        levels = layer.quantize_act(x)
    (result,) = run_onnxruntime(exported(layer, x, tmp_path), x)
    grid = activation_grid(layer)
    difference = (result - levels).abs()
    flips = (difference - grid.scale.item()).abs() <= FLOAT_TOLERANCE
    assert bool(((difference <= FLOAT_TOLERANCE) | flips).all())
    assert flips.float().mean().item() <= 0.01
    assert len(levels.unique()) > min(grid.int_range, 64)  # the input exercises the levels


class EveryLayerKind(nn.Module):
    """Conv2d -> ConvTranspose2d -> Conv1d -> Linear, plus an Embedding added in."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.conv1d = nn.Conv1d(4, 6, 3)
        self.embedding = nn.Embedding(5, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x, tokens):
        y = self.deconv(torch.relu(self.conv(x)))
        y = self.conv1d(y.flatten(2)).mean(2) + self.embedding(tokens).sum(1)
        return self.fc(y)


def test_every_quantized_layer_kind_exports(tmp_path):
    torch.manual_seed(0)
    model = model_to_quantize_model(EveryLayerKind(), quant_type="symmetric+nonlinear",
                                    quant_mode="weight_and_activation", filter_fn=lambda module, name: True).eval()
    dummy_input = (torch.randn(1, 3, 6, 6), torch.tensor([[1, 4]]))
    calibrate_in_eval(model, dummy_input)
    set_mixed_bits(model)
    path = exported(model, dummy_input, tmp_path)
    types = {node.op_type for node in onnx.load(path).graph.node}
    assert {"Conv", "ConvTranspose", "Gather"} <= types
    reference = outputs(model, dummy_input)
    (result,) = run_onnxruntime(path, dummy_input)
    assert (result - reference[0]).abs().max().item() <= FLOAT_TOLERANCE * output_scale(reference)


def quantized_conv_bn():
    torch.manual_seed(0)
    model = model_to_quantize_model(models.ConvBN(), quant_mode="weight_and_activation").eval()
    image = torch.randn(1, 3, 8, 8)
    calibrate_in_eval(model, image)
    set_mixed_bits(model)
    oto = OTO(model, image)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    return model, image, oto


def test_construct_subnet_writes_qdq_onnx_files_of_both_models(tmp_path):
    model, image, oto = quantized_conv_bn()
    oto.construct_subnet(out_dir=str(tmp_path), ckpt_format="onnx_qdq")
    assert oto.compressed_model_path.endswith("ConvBN_compressed.onnx")
    assert oto.full_group_sparse_model_path.endswith("ConvBN_full_group_sparse.onnx")
    for path in (oto.compressed_model_path, oto.full_group_sparse_model_path):
        assert "DequantizeLinear" in {node.op_type for node in onnx.load(path).graph.node}
    (result,) = run_onnxruntime(oto.compressed_model_path, image)
    assert (result - outputs(model, image)[0]).abs().max().item() <= FLOAT_TOLERANCE + \
        FLIP_STEPS * max_activation_step(model)
    assert oto.export_qdq_onnx(str(tmp_path / "again.onnx")) == str(tmp_path / "again.onnx")


def test_errors_are_clear_and_come_before_pruning(tmp_path):
    float_model = models.ConvBN().eval()
    with pytest.raises(NoQuantizedLayersError, match="no quantized layers.*model_to_quantize_model"):
        export_qdq_onnx(float_model, torch.randn(1, 3, 8, 8), str(tmp_path / "m.onnx"))
    oto = OTO(float_model, torch.randn(1, 3, 8, 8))
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    with pytest.raises(NoQuantizedLayersError):
        oto.construct_subnet(out_dir=str(tmp_path), ckpt_format="onnx_qdq")
    assert float_model.conv1.weight.shape[0] == 8 and not list(tmp_path.iterdir())  # nothing pruned or written
    model, image, oto = quantized_conv_bn()
    with pytest.raises(ValueError, match="export_float16"):
        oto.construct_subnet(out_dir=str(tmp_path), ckpt_format="onnx_qdq", export_float16=True)
    with torch.no_grad():
        model.fc.d_quant_act.copy_(model.fc.q_m_act / 2 ** 20)
    with pytest.raises(UnsupportedBitWidthError, match="at most 16 bits"):
        export_qdq_onnx(model, image, str(tmp_path / "wide.onnx"))
