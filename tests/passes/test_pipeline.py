"""The declared pipeline: its stages, the results each pass leaves, and errors naming the real pass."""

import pytest
import torch
from torch import nn

from only_train_once import OTO, Graph, build_pruning_dependency_graph
from only_train_once.dependency_graph.analysis import AnalysisResult
from only_train_once.graph.node_group import GroupSet
from only_train_once.graph.trace import GraphCaptureError
from only_train_once.passes.pipeline import PIPELINE, STAGES, stage
from tests.graph import models

IMAGE = torch.randn(2, 3, 8, 8)


def test_the_pipeline_is_one_list_split_into_ordered_stages():
    names = [p.name for p in PIPELINE]
    assert len(names) == len(set(names))
    assert [p for s in STAGES for p in stage(s)] == list(PIPELINE)
    assert names.index("capture") < names.index("fold_quantizers") < names.index("analyze_spaces") \
        < names.index("build_groups") < names.index("set_trainable")
    with pytest.raises(ValueError, match="unknown pipeline stage"):
        stage("nope")


def test_graph_stage_results_are_recorded_and_groups_are_read_only_views():
    graph = Graph(models.ConvBN().eval(), IMAGE)
    assert [name for name in graph.results] == [p.name for p in stage("graph")]
    assert graph.analysis is None and len(graph.node_groups) == 0
    groups = build_pruning_dependency_graph(graph)
    assert isinstance(graph.analysis, AnalysisResult) and graph.analysis is graph.results["analyze_spaces"]
    assert isinstance(groups, GroupSet) and groups is graph.node_groups
    with pytest.raises(AttributeError):
        graph.node_groups = GroupSet()


def test_node_index_orders_the_nodes():
    graph = Graph(models.Residual().eval(), IMAGE)
    assert [node.index for node in graph.nodes.values()] == list(range(len(graph.nodes)))
    assert all(node.id == f"node-{node.index}" for node in graph.nodes.values())


class Broken(nn.Module):
    def forward(self, x):
        raise KeyError("the model's own error")


def test_an_error_inside_the_model_keeps_the_capture_error_and_names_the_capture_pass():
    with pytest.raises(GraphCaptureError, match="the model's own error") as caught:
        OTO(Broken(), IMAGE)
    assert any("'capture'" in note for note in caught.value.__notes__)


def test_bad_build_option_is_reported_by_its_pass():
    with pytest.raises(ValueError, match="verify_groups must be") as caught:
        OTO(models.ConvBN().eval(), IMAGE, verify_groups="sometimes")
    assert any("'verify_groups'" in note for note in caught.value.__notes__)


def test_the_analysis_result_offers_queries_but_no_mutators():
    graph = Graph(models.ConvBN().eval(), IMAGE)
    build_pruning_dependency_graph(graph)
    analysis = graph.analysis
    assert not any(hasattr(analysis, name) for name in ("pin", "claim", "set_axes", "run"))
    with pytest.raises(TypeError):
        analysis.owner_axis["v0"] = 1
    weight = next(v for v in graph.values.values() if v.name == "conv1.weight")
    uids, _ = analysis.owners(analysis.axes(weight.id)[0])
    assert (uids >= 0).all()  # conv1's output channels are prunable units


def test_an_oto_build_records_every_pass_result_on_its_graph():
    oto = OTO(models.Residual().eval(), IMAGE, verify_groups=True)
    assert list(oto.graph.results) == [p.name for p in PIPELINE]
    assert oto.graph.results["verify_groups"] == []  # no group failed the check
    assert oto.graph.node_group_clusters is oto.graph.results["cluster_node_groups"]
