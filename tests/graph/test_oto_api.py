"""The OTO surface that lives on the graph: inputs, outputs, modes, marking, metrics, drawing, errors."""

import dataclasses
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from only_train_once.graph.trace import GraphCaptureError
from tests.graph import models
from tests.helpers import group_by_param

IMAGE = torch.randn(2, 3, 8, 8)


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    extra: tuple


class DataclassOutput(models.ConvBN):
    def forward(self, x):
        return Output(super().forward(x), (None, 3))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x, scale):
        return self.head(F.relu(self.conv(x))) * scale


class ListInput(TwoInputs):
    def forward(self, inputs):
        return self.head(F.relu(self.conv(inputs[0] + inputs[1])))


def test_dict_inputs_and_dict_outputs():
    oto = OTO(models.DictModel().eval(), {"input_ids": torch.randint(0, 10, (2, 4)), "scale": 2.0})
    assert group_by_param(oto, "fc.weight").is_prunable


def test_dataclass_output_tuple_with_int_and_list_inputs():
    assert group_by_param(OTO(DataclassOutput().eval(), IMAGE), "conv1.weight").is_prunable
    assert group_by_param(OTO(TwoInputs().eval(), (IMAGE, 2)), "conv.weight").is_prunable
    assert group_by_param(OTO(ListInput().eval(), [IMAGE, IMAGE]), "conv.weight").is_prunable


def test_train_and_eval_modes_are_restored():
    model = models.ConvBN()
    model.train()
    model.bn1.eval()
    OTO(model, IMAGE)
    assert model.training and model.conv1.training and not model.bn1.training
    model.eval()
    OTO(model, IMAGE)
    assert not model.training


def test_multihead_attention_is_traced_under_no_grad_and_eval():
    model = models.MultiheadAttentionNet().eval()
    with torch.no_grad():
        oto = OTO(model, torch.randn(2, 5, 8))
    assert group_by_param(oto, "attn.in_proj_weight").is_prunable


def test_bad_dummy_input_raises_a_clear_error():
    with pytest.raises(GraphCaptureError, match="dummy_input"):
        OTO(models.ConvBN(), torch.randn(2, 5))
    with pytest.raises(ValueError, match="compress_mode"):
        OTO(models.ConvBN(), IMAGE, compress_mode="shrink")
    with pytest.raises(TypeError, match="nn.Module"):
        OTO(lambda x: x, IMAGE)
    with pytest.raises(ValueError, match="skip_patterns"):
        OTO(models.ConvBN(), IMAGE, skip_patterns=3)


def test_mark_unprunable_by_param_names_and_node_ids():
    oto = OTO(models.Residual().eval(), IMAGE)
    oto.mark_unprunable_by_param_names(["branch.weight"])
    assert not group_by_param(oto, "shortcut.weight").is_prunable
    stem = group_by_param(oto, "stem.weight")
    oto.mark_unprunable_by_node_ids([next(iter(stem.nodes))])
    assert not stem.is_prunable
    assert not any(g["is_prunable"] for g in oto.get_param_groups())


def test_skip_operators_by_module_class():
    oto = OTO(models.ConvTranspose().eval(), IMAGE)
    oto.skip_operators(["ConvTranspose2d"])
    assert not group_by_param(oto, "up.weight").is_prunable
    assert group_by_param(oto, "conv.weight").is_prunable


def test_frozen_parameters_make_their_group_unprunable_and_untrained():
    model = models.ConvBN().eval()
    for p in list(model.conv1.parameters()) + list(model.bn1.parameters()):
        p.requires_grad_(False)
    oto = OTO(model, IMAGE)
    frozen = group_by_param(oto, "conv1.weight")
    assert not frozen.is_prunable and not frozen.is_trainable
    assert all("conv1.weight" not in g["p_names"] for g in oto.get_param_groups())


def test_param_groups_cover_every_trainable_parameter_once():
    model = models.BareParameters().eval()
    groups = OTO(model, IMAGE).get_param_groups()
    names = [n for g in groups for n in g["p_names"]]
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    for group in groups:
        assert len(group["params"]) == len(group["p_transform"]) == len(group["p_axes"]) == len(group["p_names"])
        expected_keys = {"id", "num_groups", "is_prunable", "is_auxiliary", "op_names", "node_ids", "auxiliary_ngs"}
        assert expected_keys <= set(group)


def test_global_unit_ids_are_contiguous_over_prunable_groups():
    groups = OTO(models.Concat().eval(), IMAGE).get_param_groups()
    starts = [(g["global_start_idx"], g["num_groups"]) for g in groups if "global_start_idx" in g]
    assert [s for s, _ in starts] == [sum(n for _, n in starts[:k]) for k in range(len(starts))]
    aux = next(g for g in groups if g["is_auxiliary"])
    bn_weight = aux["p_unit_index"][aux["p_names"].index("bn.weight")]
    assert sorted(bn_weight.tolist()) == list(range(sum(n for _, n in starts)))


def test_cluster_node_groups():
    oto = OTO(models.Residual().eval(), IMAGE)
    assert len(oto.graph.node_group_clusters[0]) == 2
    clusters = oto.cluster_node_groups(2)
    assert sum(len(c) for c in clusters.values()) == 2


def test_random_set_zero_groups_zeroes_an_even_number_per_group():
    import numpy as np

    model = models.ConvBN().eval()
    oto = OTO(model, IMAGE)
    np.random.seed(0)
    oto.random_set_zero_groups(target_group_sparsity=0.5)
    zero_filters = (model.conv1.weight.flatten(1).abs().sum(1) == 0).sum().item()
    assert zero_filters == 4
    assert (model.bn1.weight == 0).sum().item() == 4
    with pytest.raises(ValueError, match="target_group_sparsity"):
        oto.random_set_zero_groups(1.0)


def test_metric_dicts_have_the_reference_keys():
    oto = OTO(models.ConvBN().eval(), IMAGE)
    for result in (oto.compute_flops(), oto.compute_macs(), oto.compute_bops(), oto.compute_weight_size()):
        assert {"total", "by_node_groups", "by_nodes"} <= set(result)
    macs = oto.compute_macs(layerwise=True)
    bops = oto.compute_bops(layerwise=True)
    assert {"name", "type", "macs"} <= set(macs["layer_info"][0])
    assert {"name", "type", "weight_bitwidth", "activation_bitwidth", "bops"} <= set(bops["layer_info"][0])
    conv_macs = 2 * 8 * 8 * 8 * 3 * 9 + 2 * 16 * 8 * 8 * 8 * 9
    assert oto.compute_macs(in_million=False)["total"] == conv_macs + 2 * 16 * 4
    assert oto.compute_macs(in_million=False, in_billion=True)["total"] == pytest.approx((conv_macs + 128) / 1e9)
    assert isinstance(oto.compute_num_params(), float)


def test_attention_matmuls_and_conv_transpose_are_counted():
    tokens = torch.randn(1, 5, 8)
    oto = OTO(models.TokenMixer(models.SeparateQKVAttention()).eval(), tokens)
    linear = (8 * 16 + 4 * 16 * 16 + 16 * 3) * 5
    attention = 2 * 4 * 5 * 5 * 4
    assert oto.compute_macs(in_million=False)["total"] == linear + attention
    up = OTO(models.ConvTranspose().eval(), torch.randn(1, 3, 8, 8))
    convtranspose = next(n for n in up.graph.nodes.values() if n.op_name == "convtranspose")
    assert up.compute_macs(in_million=False)["by_nodes"][convtranspose.id] == 8 * 4 * 4 * 6 * 2 * 2


def test_print_layer_breakdown(capsys):
    oto = OTO(models.ConvBN().eval(), IMAGE)
    oto.print_layer_breakdown(oto.compute_macs(layerwise=True), oto.compute_bops(layerwise=True))
    printed = capsys.readouterr().out
    assert "Layer-by-layer breakdown:" in printed and "Total MACs:" in printed and "Total BOPs:" in printed
    oto.print_layer_breakdown(oto.compute_macs(), oto.compute_bops())
    assert "No layer information" in capsys.readouterr().out


def test_visualize_writes_the_graph(tmp_path):
    oto = OTO(models.Concat().eval(), IMAGE)
    path = oto.visualize(out_dir=str(tmp_path), display_params=True, display_flops=True, display_macs=True)
    assert os.path.basename(path) == "Concat_zig.gv"
    source = open(path).read()
    assert "digraph" in source and "dummy_input" in source and "ellipse" in source and "dashed" in source
    if shutil.which("dot"):
        assert os.path.getsize(path + ".pdf") > 0


def test_skip_patterns_remove_matching_chains():
    oto = OTO(models.ConvBN().eval(), IMAGE, skip_patterns=["relu"])
    assert not any(n.op_name == "relu" for n in oto.graph.nodes.values())


class TrainOnlyBranch(models.ConvBN):
    """An auxiliary head used only in training: the eval-mode trace never sees it."""

    def __init__(self):
        super().__init__()
        self.aux = nn.Linear(8, 4)

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            out = out + self.aux(F.relu(self.bn1(self.conv1(x))).mean((2, 3)))
        return out


def test_untraced_parameters_are_trained_but_never_pruned(caplog):
    with caplog.at_level("WARNING"):
        oto = OTO(TrainOnlyBranch(), IMAGE)
    assert any("not used by the traced forward" in r.message for r in caplog.records)
    groups = oto.get_param_groups()
    untraced = next(g for g in groups if g["id"] == "untraced-parameters")
    assert untraced["p_names"] == ["aux.weight", "aux.bias"] and not untraced["is_prunable"]
    assert sorted(n for g in groups for n in g["p_names"]) == sorted(n for n, _ in oto.model.named_parameters())


def test_public_accessors_expose_the_model_graph_and_groups():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    oto = OTO(model, torch.randn(1, 3, 8, 8))
    assert oto.model is model
    assert oto.groups == list(oto.graph.node_groups.values())
    assert {name for group in oto.groups for name in group.param_names} >= {"0.weight", "0.bias"}
    with pytest.raises(RuntimeError, match="no graph yet"):
        OTO().graph


class _EvalCache(nn.Module):
    """Caches a tensor computed from its parameter in eval mode, as timm's LeViT does with its attention biases."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))
        self.cache = {}

    def forward(self, x):
        if not self.training:
            self.cache.setdefault("scale", self.scale * 2)
        return self.fc(x) * self.cache.get("scale", self.scale * 2)


def test_the_trace_leaves_no_autograd_history_in_tensors_the_model_cached():
    import copy

    model = _EvalCache()
    OTO(model, torch.randn(2, 4))
    assert model.cache["scale"].grad_fn is None and torch.equal(model.cache["scale"], torch.full((4,), 2.0))
    copy.deepcopy(model)  # a non-leaf cached tensor makes deepcopy raise
