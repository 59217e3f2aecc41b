"""The reference backbones reproduce the reference's group structure and metrics (SPEC section 0)."""

import pytest
import torch

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from sanity_check.registry import BACKBONES

REFERENCED = [name for name, backbone in BACKBONES.items() if backbone.reference is not None]


def as_printed(value: float, reference: float) -> float:
    """``value`` rounded to the decimals the reference figure was printed with."""
    decimals = len(repr(reference).split(".")[1]) if "." in repr(reference) else 0
    return round(value, decimals)


def test_the_reference_table_is_covered():
    assert {"mlp", "vgg7_bn", "resnet18_cifar10", "resnet20_cifar10", "resnet56_cifar10", "densenet121", "carn",
            "demonet_concat_case1"} <= set(REFERENCED)


@pytest.mark.parametrize("name", REFERENCED)
def test_groups_and_metrics_match_the_reference(name):
    backbone = BACKBONES[name]
    reference = backbone.reference
    torch.manual_seed(0)
    model = backbone.factory().eval()
    dummy_input = (reference.example_input or backbone.example_input)(0)
    oto = OTO(model, dummy_input)
    groups = oto.groups
    assert len(groups) == reference.node_groups
    assert sum(g.is_prunable for g in groups) == reference.prunable
    assert sum(g.is_auxiliary for g in groups) == reference.auxiliary
    assert sum(g.num_groups for g in groups if g.is_prunable and not g.is_auxiliary) == reference.prunable_group_sum
    assert as_printed(oto.compute_num_params(), reference.params_m) == reference.params_m
    assert as_printed(oto.compute_macs()["total"], reference.macs_m) == reference.macs_m
    assert as_printed(oto.compute_flops()["total"], reference.macs_m) == reference.macs_m
    assert as_printed(oto.compute_weight_size()["total"], reference.weight_size_mbit) == reference.weight_size_mbit
    assert oto.compute_bops()["total"] == pytest.approx(oto.compute_macs()["total"] * 32 * 32, rel=1e-9)
    assert oto.compute_average_bit_width() == pytest.approx(32.0)


def test_weight_only_quantized_vgg7_matches_the_reference():
    torch.manual_seed(0)
    model = model_to_quantize_model(BACKBONES["vgg7_bn"].factory().eval())
    oto = OTO(model, torch.randn(1, 3, 32, 32))
    groups = oto.groups
    assert (len(groups), sum(g.is_prunable for g in groups)) == (8, 7)
    assert as_printed(oto.compute_num_params(), 5.1156) == 5.1156
    assert as_printed(oto.compute_macs()["total"], 608.053) == 608.053
    assert as_printed(oto.compute_weight_size()["total"], 81.906) == 81.906
    assert oto.compute_bops()["total"] == pytest.approx(608.053248 * 16 * 32, rel=1e-6)
    assert oto.compute_average_bit_width() == pytest.approx(81.906 / 5.1156, rel=1e-4)
