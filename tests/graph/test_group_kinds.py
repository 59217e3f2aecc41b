"""Each kind of pruning group, on a small model: the exact groups, zero-invariance, and a lossless subnet."""

import logging

import pytest
import torch

from only_train_once import OTO
from only_train_once.transform import TensorTransform
from tests.graph import models
from tests.helpers import (assert_lossless_subnet, check_zero_invariance, group_by_param, prunable_groups)

IMAGE = torch.randn(2, 3, 8, 8)
TOKENS = torch.randn(2, 5, 8)


def build(model_cls, dummy_input):
    torch.manual_seed(0)
    model = model_cls().eval()
    return model, OTO(model, dummy_input)


def members(group):
    return {m.name: (m.axis, m.transform) for m in group.members}


def test_conv_batchnorm_stem_owns_conv_and_bn_params():
    _, oto = build(models.ConvBN, IMAGE)
    first = group_by_param(oto, "conv1.weight")
    assert members(first) == {
        "conv1.weight": (0, TensorTransform.BASIC), "conv1.bias": (0, TensorTransform.BASIC),
        "bn1.running_mean": (0, TensorTransform.ACCESSORY), "bn1.running_var": (0, TensorTransform.ACCESSORY),
        "bn1.weight": (0, TensorTransform.ACCESSORY), "bn1.bias": (0, TensorTransform.ACCESSORY)}
    assert first.is_prunable and first.num_groups == 8
    assert group_by_param(oto, "conv2.weight").is_prunable
    head = group_by_param(oto, "fc.weight")
    assert not head.is_prunable and "model output" in head.unprunable_reasons[0]


def test_residual_add_merges_branch_and_shortcut():
    _, oto = build(models.Residual, IMAGE)
    merged = group_by_param(oto, "branch.weight")
    assert set(merged.param_names) == {"branch.weight", "branch.bias", "shortcut.weight", "shortcut.bias"}
    assert merged.is_prunable and merged.num_groups == 8
    assert group_by_param(oto, "stem.weight") is not merged


def test_concat_makes_an_auxiliary_group_with_offsets():
    _, oto = build(models.Concat, IMAGE)
    auxiliary = group_by_param(oto, "bn.weight")
    assert auxiliary.is_auxiliary and auxiliary.num_groups == 10
    dependents = {g.param_names[0]: offset for g, offset in
                  ((d, dict((a.id, o) for a, o in d.auxilary_node_groups)[auxiliary.id])
                   for d in auxiliary.dependent_node_groups)}
    assert dependents == {"conv_a.weight": 0, "conv_b.weight": 4}
    assert any(n.op_name == "concat" for n in auxiliary.nodes.values())


def test_depthwise_conv_joins_its_producer():
    _, oto = build(models.Depthwise, IMAGE)
    group = group_by_param(oto, "conv.weight")
    assert {"dw.weight", "dw.bias", "bn.weight"} <= set(group.param_names)
    assert group.is_prunable and group.num_groups == 8


def test_grouped_conv_units_are_whole_convolution_groups():
    _, oto = build(models.GroupedConv, IMAGE)
    group = group_by_param(oto, "grouped.weight")
    assert group is group_by_param(oto, "conv.weight")
    assert group.num_groups == 4 and group.is_prunable
    assert members(group)["grouped.weight"] == (0, TensorTransform.MULTIHEAD_NUMHEAD)


def test_conv_transpose_prunes_its_output_dim_1():
    _, oto = build(models.ConvTranspose, IMAGE)
    group = group_by_param(oto, "up.weight")
    assert members(group)["up.weight"] == (1, TensorTransform.TRANSPOSE)
    assert {"up.bias", "norm.weight", "norm.bias"} <= set(group.param_names)
    assert group.is_prunable and group.num_groups == 6


def test_embedding_columns_are_a_group():
    _, oto = build(models.EmbeddingMLP, torch.randint(0, 20, (2, 5)))
    group = group_by_param(oto, "embed.weight")
    assert members(group) == {"embed.weight": (1, TensorTransform.TRANSPOSE)}
    assert group.is_prunable and group.num_groups == 8


def test_prelu_slopes_follow_their_channels():
    _, oto = build(models.PReLUNet, IMAGE)
    assert "act.weight" in group_by_param(oto, "conv.weight").param_names


def test_flatten_then_linear_prunes_blocks_of_inputs(tmp_path):
    model, oto = build(models.FlattenLinear, torch.randn(2, 3, 4, 4))
    assert group_by_param(oto, "conv.weight").is_prunable
    with torch.no_grad():
        model.conv.weight[1].zero_()
        model.conv.bias[1] = 0
    oto.construct_subnet(out_dir=str(tmp_path))
    assert model.conv.out_channels == 5 and model.fc.in_features == 5 * 16


@pytest.mark.parametrize("attention", [models.SeparateQKVAttention, models.FusedQKVAttention])
def test_attention_is_pruned_by_whole_heads(attention, tmp_path):
    torch.manual_seed(0)
    model = models.TokenMixer(attention()).eval()
    oto = OTO(model, TOKENS)
    name = "attn.q.weight" if attention is models.SeparateQKVAttention else "attn.qkv.weight"
    heads = group_by_param(oto, name)
    assert heads.is_prunable and heads.num_groups == 4
    assert members(heads)[name] == (0, TensorTransform.MULTIHEAD_NUMHEAD)
    unit_rows = heads.members[0].owners[1]
    assert unit_rows.tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert_lossless_subnet(model, TOKENS, tmp_path, sparsity=0.5)
    assert model.attn.num_heads == 2


def test_hard_coded_head_count_leaves_heads_and_stream_unprunable():
    torch.manual_seed(0)
    oto = OTO(models.TokenMixer(models.FixedShapeAttention()).eval(), TOKENS)
    heads = group_by_param(oto, "attn.qkv.weight")
    assert not heads.is_prunable
    assert not group_by_param(oto, "embed.weight").is_prunable


def test_multihead_attention_module_prunes_heads(tmp_path):
    torch.manual_seed(0)
    model = models.MultiheadAttentionNet().eval()
    oto = OTO(model, TOKENS)
    heads = group_by_param(oto, "attn.in_proj_weight")
    assert heads.is_prunable and heads.num_groups == 4
    assert "attn.out_proj.weight" in group_by_param(oto, "embed.weight").param_names
    assert_lossless_subnet(model, TOKENS, tmp_path, sparsity=0.5)
    assert model.attn.num_heads == 2 and model.attn.in_proj_weight.shape[0] == 3 * 2 * 4


def test_weight_shared_module_is_one_group_with_both_calls():
    _, oto = build(models.WeightShare, IMAGE)
    group = group_by_param(oto, "shared.weight")
    assert group is group_by_param(oto, "conv0.weight")
    assert sum(1 for n in group.nodes.values() if "shared.weight" in n.param_names) == 2


def test_bare_parameters_are_pruned_along_the_channel_axis():
    _, oto = build(models.BareParameters, IMAGE)
    group = group_by_param(oto, "patch.weight")
    found = members(group)
    assert found["cls_token"][0] == 2 and found["pos_embed"][0] == 2 and found["gamma"][0] == 0
    assert group.is_prunable


def test_group_norm_units_are_groupnorm_groups():
    for affine in (True, False):
        torch.manual_seed(0)
        oto = OTO(models.GroupNormNet(affine).eval(), IMAGE)
        group = group_by_param(oto, "conv.weight")
        assert group.num_groups == 4 and group.is_prunable
        assert group.members[0].owners[1].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_layer_norm_pins_the_channels_it_normalises():
    _, oto = build(models.LayerNormStream, torch.randn(2, 6))
    stream = group_by_param(oto, "fc1.weight")
    assert not stream.is_prunable and "layernorm normalises over it" in stream.unprunable_reasons[0]
    assert group_by_param(oto, "fc2.weight").is_prunable


def test_sigmoid_gate_times_zero_channel_stays_prunable():
    _, oto = build(models.SqueezeExcite, IMAGE)
    group = group_by_param(oto, "conv.weight")
    assert "fc2.weight" in group.param_names and group.is_prunable


@pytest.mark.parametrize("model_cls", [models.ShiftedActivation, models.NoAffineBatchNorm])
def test_channels_that_are_not_zero_when_pruned_are_unprunable(model_cls):
    _, oto = build(model_cls, IMAGE)
    group = group_by_param(oto, "conv.weight")
    assert not group.is_prunable
    assert "without being zero there" in group.unprunable_reasons[0]


def test_unknown_operator_is_reported_and_its_channels_left_unprunable(caplog):
    with caplog.at_level(logging.WARNING):
        _, oto = build(models.UnknownOperator, IMAGE)
    assert any("special_i0" in r.message and "not understood" in r.message for r in caplog.records)
    assert not group_by_param(oto, "conv.weight").is_prunable
    assert group_by_param(oto, "mid.weight").is_prunable


def test_groupnorm_over_concatenated_channels_prunes_whole_groups_per_branch(tmp_path):
    _, oto = build(models.GroupNormOverConcat, IMAGE)
    conv_a, conv_b = group_by_param(oto, "conv_a.weight"), group_by_param(oto, "conv_b.weight")
    assert conv_a.is_prunable and conv_a.num_groups == 4
    assert conv_b.is_prunable and conv_b.num_groups == 2 and conv_b is not conv_a
    norm = group_by_param(oto, "norm.weight")
    assert norm.is_auxiliary and {g.id for g in norm.dependent_node_groups} == {conv_a.id, conv_b.id}
    assert check_zero_invariance(models.GroupNormOverConcat, IMAGE) == 2
    oto = assert_lossless_subnet(models.GroupNormOverConcat().eval(), IMAGE, str(tmp_path), sparsity=0.5)
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    # 2 of a's 4 units go (b keeps both: random_set_zero_groups zeroes pairs of units)
    assert compressed.norm.num_channels == 16 and compressed.norm.num_groups == 4
    assert compressed.side.in_channels == compressed.conv_a.out_channels == 8  # a consumer of a alone


@pytest.mark.parametrize("first, second, units", [(4, 8, 4), (8, 4, 4), (8, 16, 8), (16, 8, 8), (8, 8, 8)])
def test_two_groupnorms_over_the_same_channels_prune_whole_groups_of_both(first, second, units, tmp_path):
    factory = lambda: models.TwoGroupNorms(first, second)  # noqa: E731
    _, oto = build(factory, IMAGE)
    group = group_by_param(oto, "conv.weight")
    assert group.is_prunable and group.num_groups == units
    for seed in range(3):
        oto = assert_lossless_subnet(factory().eval(), IMAGE, str(tmp_path / str(seed)), sparsity=0.5, seed=seed)
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    pruned_units = units // 2  # random_set_zero_groups at 0.5 (an even count here)
    assert compressed.conv.out_channels == 64 - pruned_units * (64 // units)
    assert compressed.norm_1.num_groups == first - pruned_units * first // units


def test_a_scale_computed_from_a_channel_count_pins_those_channels(tmp_path):
    _, oto = build(models.SpatialAttention, IMAGE)
    stem = group_by_param(oto, "stem.weight")
    assert not stem.is_prunable and "computed from a size that pruning changes" in stem.unprunable_reasons[0]
    _, oto = build(lambda: models.SpatialAttention(scale_from_size=False), IMAGE)
    assert group_by_param(oto, "stem.weight").is_prunable
    assert_lossless_subnet(models.SpatialAttention(scale_from_size=False).eval(), IMAGE, str(tmp_path), sparsity=0.5)


def test_groupnorm_straddling_a_concat_boundary_is_kept_and_reported(caplog):
    with caplog.at_level(logging.WARNING):
        _, oto = build(lambda: models.GroupNormOverConcat(6, 6), IMAGE)
    assert not group_by_param(oto, "conv_a.weight").is_prunable
    assert not group_by_param(oto, "conv_b.weight").is_prunable
    reports = [r.message for r in caplog.records if "cannot prove them zero-invariant" in r.message]
    assert len(reports) == 1 and "a concatenated space is reshaped" in reports[0]


def test_structurally_pinned_groups_are_not_reported(caplog):
    with caplog.at_level(logging.WARNING):
        build(models.LayerNormStream, torch.randn(2, 6))
        build(models.ShiftedActivation, IMAGE)
    assert not any("cannot prove them zero-invariant" in r.message for r in caplog.records)


ZERO_INVARIANCE_CASES = [
    (models.ConvBN, IMAGE), (models.Residual, IMAGE), (models.Concat, IMAGE), (models.Depthwise, IMAGE),
    (models.GroupedConv, IMAGE), (models.ConvTranspose, IMAGE), (models.EmbeddingMLP, torch.randint(0, 20, (2, 5))),
    (models.PReLUNet, IMAGE), (models.FlattenLinear, torch.randn(2, 3, 4, 4)), (models.WeightShare, IMAGE),
    (models.BareParameters, IMAGE), (models.GroupNormNet, IMAGE), (models.LayerNormStream, torch.randn(2, 6)),
    (models.SqueezeExcite, IMAGE), (models.UnknownOperator, IMAGE),
    (lambda: models.TokenMixer(models.SeparateQKVAttention()), TOKENS),
    (lambda: models.TokenMixer(models.FusedQKVAttention()), TOKENS),
]


@pytest.mark.parametrize("factory,dummy_input", ZERO_INVARIANCE_CASES)
def test_zeroing_a_group_equals_masking_its_channels(factory, dummy_input):
    assert check_zero_invariance(factory, dummy_input) >= 1


@pytest.mark.parametrize("factory,dummy_input", ZERO_INVARIANCE_CASES + [
    (models.ShiftedActivation, IMAGE), (models.NoAffineBatchNorm, IMAGE), (models.MultiheadAttentionNet, TOKENS),
    (lambda: models.TokenMixer(models.FixedShapeAttention()), TOKENS)])
def test_random_subnet_is_lossless(factory, dummy_input, tmp_path):
    torch.manual_seed(1)
    assert_lossless_subnet(factory().eval(), dummy_input, tmp_path)


def test_every_model_has_a_prunable_group_where_expected():
    for factory, dummy_input in ZERO_INVARIANCE_CASES:
        torch.manual_seed(0)
        assert prunable_groups(OTO(factory().eval(), dummy_input))


def test_clamp_keeps_prunability_only_when_zero_stays_zero():
    assert group_by_param(OTO(models.ClampedActivation(0.0).eval(), IMAGE), "conv.weight").is_prunable
    shifted = group_by_param(OTO(models.ClampedActivation(0.1).eval(), IMAGE), "conv.weight")
    assert not shifted.is_prunable and "without being zero there" in shifted.unprunable_reasons[0]
