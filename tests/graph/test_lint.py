"""Graph.lint(): every invariant holds on built graphs, and each one catches the corruption it guards against."""

import pytest
import torch

from only_train_once import OTO
from only_train_once.graph.lint import INVARIANTS, GraphInvariantError
from only_train_once.quantization.quant_model import model_to_quantize_model
from tests.graph import models

IMAGE = torch.randn(2, 3, 8, 8)
TOKENS = torch.randn(2, 5, 8)

ZOO = {
    "conv_bn": (models.ConvBN, IMAGE),
    "residual": (models.Residual, IMAGE),
    "concat": (models.Concat, IMAGE),
    "grouped_conv": (models.GroupedConv, IMAGE),
    "fused_qkv": (lambda: models.TokenMixer(models.FusedQKVAttention()), TOKENS),
    "weight_share": (models.WeightShare, IMAGE),
    "quantized_conv_bn": (lambda: model_to_quantize_model(models.ConvBN(), quant_mode="weight_and_activation"),
                          IMAGE),
}


def built_graph(name="concat"):
    factory, dummy_input = ZOO[name]
    return OTO(factory().eval(), dummy_input, verify_groups=False).graph


@pytest.mark.parametrize("name", sorted(ZOO))
def test_lint_passes_on_built_graphs(name):
    graph = built_graph(name)
    assert graph.node_groups and len(graph.nodes) > 3
    graph.lint()


def _corrupt_node_ids(graph):
    next(iter(graph.nodes.values())).index += 100


def _corrupt_values_exist(graph):
    next(iter(graph.nodes.values())).inputs.append("no-such-value")


def _corrupt_producers(graph):
    node = next(iter(graph.nodes.values()))
    graph.values[node.outputs[0]].producer = "node-999"


def _corrupt_adjacency(graph):
    last = list(graph.nodes)[-1]  # deleted from the node table only, not from the edge maps
    del graph.nodes[last]


def _corrupt_edges_follow_values(graph):
    reader = next(n for n in graph.nodes.values() if graph.predecessors(n))
    reader.inputs = []  # it keeps its edges but no longer reads its predecessors' values


def _corrupt_group_members(graph):
    member = next(m for g in graph.node_groups.values() for m in g.members)
    member.tensor = member.tensor.detach().clone()


def _corrupt_group_nodes(graph):
    next(iter(graph.nodes.values())).node_group_ids.append("a-group-that-does-not-exist")


CORRUPTIONS = {
    "node_ids": _corrupt_node_ids,
    "values_exist": _corrupt_values_exist,
    "producers": _corrupt_producers,
    "adjacency": _corrupt_adjacency,
    "edges_follow_values": _corrupt_edges_follow_values,
    "group_members": _corrupt_group_members,
    "group_nodes": _corrupt_group_nodes,
}


def test_every_invariant_has_a_corruption_test():
    assert sorted(CORRUPTIONS) == sorted(name for name, _ in INVARIANTS)


@pytest.mark.parametrize("invariant", sorted(CORRUPTIONS))
def test_lint_names_the_broken_invariant(invariant):
    graph = built_graph()
    graph.lint()
    CORRUPTIONS[invariant](graph)
    with pytest.raises(GraphInvariantError, match=f"graph invariant '{invariant}' broken") as caught:
        graph.lint()
    assert caught.value.invariant == invariant
