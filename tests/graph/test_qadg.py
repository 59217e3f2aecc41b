"""QADG: quantized models (weight-only and weight+activation) trace like their float twins."""

import pytest
import torch

from only_train_once import OTO
from only_train_once.quantization.quant_layers import QuantizationMode
from only_train_once.quantization.quant_model import model_to_quantize_model
from sanity_check.registry import BACKBONES
from tests.helpers import group_summary

TWINS = ["vgg7_bn", "resnet20_cifar10", "densenet121", "carn", "simple_vit", "bert", "llama", "phi", "swin_mini",
         "demonet_concat_case2", "demonet_convtranspose_in_case2", "tiny_unet"]
MODES = [QuantizationMode.WEIGHT_ONLY, QuantizationMode.WEIGHT_AND_ACTIVATION]


def traced(name, mode=None):
    backbone = BACKBONES[name]
    torch.manual_seed(0)
    model = backbone.factory().eval()
    if mode is not None:
        model_to_quantize_model(model, quant_mode=mode)
    return OTO(model, backbone.example_input(0))


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("name", TWINS)
def test_quantized_model_has_the_float_topology_and_groups(name, mode):
    float_oto, quant_oto = traced(name), traced(name, mode)
    float_graph, quant_graph = float_oto.graph, quant_oto.graph
    assert [n.op_name for n in quant_graph.nodes.values()] == [n.op_name for n in float_graph.nodes.values()]
    assert sorted(quant_graph.edges) == sorted(float_graph.edges)
    assert group_summary(quant_oto) == group_summary(float_oto)
    assert list(quant_graph.node_groups) == list(float_graph.node_groups)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_each_layer_node_carries_its_quantizer_parameters(mode):
    oto = traced("vgg7_bn", mode)
    conv = next(n for n in oto.graph.nodes.values() if n.op_name == "conv")
    expected = {"features.0.d_quant_wt", "features.0.q_m_wt", "features.0.t_quant_wt"}
    if mode is QuantizationMode.WEIGHT_AND_ACTIVATION:
        expected |= {"features.0.d_quant_act", "features.0.q_m_act", "features.0.t_quant_act"}
    assert set(conv.quant_param_names) == expected
    assert conv.param_names[:2] == ["features.0.weight", "features.0.bias"]
    assert conv.inputs == [oto.graph.input_values[0]]
    assert not any(n.op_name == "quantize" for n in oto.graph.nodes.values())
    group = oto.graph.node_groups[conv.node_group_ids[0]]
    quant_members = [m for m in group.members if m.name in expected]
    assert len(quant_members) == len(expected) and all(m.axis is None for m in quant_members)


def test_bops_use_each_layers_bit_widths():
    oto = traced("vgg7_bn", QuantizationMode.WEIGHT_AND_ACTIVATION)
    bops = oto.compute_bops(layerwise=True)
    conv_rows = [row for row in bops["layer_info"] if row["type"] == "conv"]
    assert conv_rows and all(row["weight_bitwidth"] == 16 and row["activation_bitwidth"] == 16 for row in conv_rows)
    assert bops["total"] == pytest.approx(oto.compute_macs()["total"] * 16 * 16, rel=1e-9)
