"""Packed low-bit format: reloads into a fresh original model with identical outputs, at the theoretical size."""

import json
import os

import numpy as np
import onnx
import pytest
import torch
from safetensors import safe_open
from torch import nn

from only_train_once import OTO
from only_train_once.export import (GRID_LAYERS, NoQuantizedLayersError, export_qdq_onnx, load_packed,
                                    quantized_layers, save_packed)
from only_train_once.export.bitpack import packed_size
from only_train_once.quantization.quant_layers import QuantizeConv2d
from only_train_once.quantization.quantizer import fake_quantize, step_size_for_bits
from sanity_check.registry import BACKBONES
from tests.export.common import quantized_backbone
from tests.graph import models
from tests.helpers import outputs


def compressed(name, quant_mode, tmp_path, weight_bits=(2, 3, 4, 5, 6, 7, 8, 16)):
    """The zoo model quantized at mixed bits, half its groups zeroed, built by construct_subnet; its OTO."""
    model, dummy_input = quantized_backbone(name, quant_mode, weight_bits=weight_bits)
    oto = OTO(model, dummy_input)
    oto.mark_unprunable_by_param_names(BACKBONES[name].unprunable_names(model))
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    return model, dummy_input, oto


@pytest.mark.parametrize("name,mode", [("vgg7_bn", "weight_and_activation"), ("resnet20_cifar10", "weight_only"),
                                       ("bert", "weight_and_activation")])
def test_a_fresh_original_model_reloads_with_bitwise_identical_outputs(tmp_path, name, mode):
    model, dummy_input, oto = compressed(name, mode, tmp_path)
    path = oto.save_packed(str(tmp_path / "packed.safetensors"))
    loaded = load_packed(BACKBONES[name].build(seed=1), path).eval()  # float layers, other weights
    assert all(torch.equal(a, b) for a, b in zip(outputs(loaded, dummy_input), outputs(model, dummy_input)))
    for layer_name, layer in quantized_layers(loaded).items():
        assert type(layer) in GRID_LAYERS.values() and not layer.weight.requires_grad
        assert layer.quant_mode is quantized_layers(model)[layer_name].quant_mode


@pytest.mark.parametrize("name,mode", [("vgg7_bn", "weight_and_activation"), ("resnet18_cifar10", "weight_only")])
def test_file_size_is_within_5_percent_of_the_theoretical_weight_size(tmp_path, name, mode):
    model, _, oto = compressed(name, mode, tmp_path, weight_bits=(2, 3, 4, 5, 6, 7, 8))
    path = oto.save_packed(str(tmp_path / "packed.safetensors"))
    theoretical_bits = oto.compute_weight_size(in_million=False)["total"]
    assert abs(8 * os.path.getsize(path) / theoretical_bits - 1) <= 0.05


def test_each_weight_is_packed_at_the_layer_bit_width(tmp_path):
    model, _ = quantized_backbone("vgg7_bn", "weight_only")
    path = save_packed(model, str(tmp_path / "packed.safetensors"))
    with safe_open(path, framework="pt") as handle:
        header = json.loads(handle.metadata()["only_train_once.packed"])
        for name, layer in quantized_layers(model).items():
            assert header["layers"][name]["bits"] == layer.weight_bit
            packed = handle.get_tensor(f"{name}.weight.packed")
            assert packed.dtype == torch.uint8 and packed.numel() == packed_size(layer.weight.numel(),
                                                                                layer.weight_bit)
            assert f"{name}.weight" not in handle.keys()


def test_loading_does_not_run_the_weight_quantizer_again(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(QuantizeConv2d.from_module(nn.Conv2d(3, 8, 3), quant_type="symmetric+nonlinear"))
    layer = model[0]
    with torch.no_grad():
        layer.t_quant_wt.fill_(0.8)
        layer.d_quant_wt.copy_(step_size_for_bits(4, layer.q_m_wt, layer.t_quant_wt))
        quantized = layer.quantize_weight(layer.weight)
        again = fake_quantize(quantized, layer.d_quant_wt, layer.q_m_wt, layer.t_quant_wt,
                              quant_type="symmetric+nonlinear")
    assert not torch.equal(again, quantized)  # re-quantizing a dequantized weight moves it (t != 1)
    path = save_packed(model, str(tmp_path / "packed.safetensors"))
    loaded = load_packed(nn.Sequential(nn.Conv2d(3, 8, 3)), path)
    assert torch.equal(loaded[0].weight, quantized)
    with torch.no_grad():
        assert torch.equal(loaded[0].quantize_weight(loaded[0].weight), quantized)


def test_a_loaded_model_exports_the_same_integers(tmp_path):
    model, dummy_input = quantized_backbone("resnet20_cifar10", "weight_and_activation")
    loaded = load_packed(BACKBONES["resnet20_cifar10"].build(seed=1),
                         save_packed(model, str(tmp_path / "packed.safetensors")))
    paths = [export_qdq_onnx(m, dummy_input, str(tmp_path / f"{i}.onnx")) for i, m in enumerate((model, loaded))]
    first, second = ({t.name: t.SerializeToString() for t in onnx.load(p).graph.initializer} for p in paths)
    assert first == second
    resaved = save_packed(loaded, str(tmp_path / "again.safetensors"))
    assert os.path.getsize(resaved) == os.path.getsize(str(tmp_path / "packed.safetensors"))


def test_errors_are_clear(tmp_path):
    with pytest.raises(NoQuantizedLayersError, match="no quantized layers"):
        save_packed(models.ConvBN(), str(tmp_path / "float.safetensors"))
    model, _, oto = compressed("resnet20_cifar10", "weight_only", tmp_path)
    weights_only = oto.compressed_model_path.rsplit(".", 1)[0] + ".safetensors"
    with pytest.raises(ValueError, match="not an only_train_once packed model"):
        load_packed(BACKBONES["resnet20_cifar10"].build(), weights_only)
    path = oto.save_packed(str(tmp_path / "packed.safetensors"))
    with pytest.raises((ValueError, AttributeError, TypeError)):
        load_packed(models.ConvBN(), path)
