"""The reference-compatibility surface: one module, reached through the reference's import paths."""

import ast
import inspect

import pytest
import torch

import only_train_once.compat as compat
from only_train_once import OTO
from only_train_once.dependency_graph import pruning_dependency
from only_train_once.graph import NodeGroup, NodeGroupComposedOp
from only_train_once.transform import TensorTransform, index_transformation, tensor_transformation
from tests.graph import models

IMAGE = torch.randn(2, 3, 8, 8)


def test_reference_paths_reach_the_compat_objects():
    assert pruning_dependency.post_process_chunk_node is compat.post_process_chunk_node
    assert tensor_transformation is compat.tensor_transformation
    assert TensorTransform is compat.TensorTransform
    assert NodeGroupComposedOp is NodeGroup


def test_compat_imports_nothing_from_the_library_at_import_time():
    # Any core module may import compat (the mixins) without an import cycle.
    tree = ast.parse(inspect.getsource(compat))
    relative = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert relative == []


def test_node_predicates_and_graph_lookups():
    oto = OTO(models.Concat().eval(), IMAGE, verify_groups=False)
    graph = oto.graph
    convs = [n for n in graph.nodes.values() if n.is_conv()]
    assert convs and all(n.op_name == "conv" for n in convs)
    assert [n.is_concat(axis=1) for n in graph.nodes.values()].count(True) == 1
    assert not any(n.is_linear() or n.is_dummy() for n in convs)
    assert graph.visited_dict() == {node_id: False for node_id in graph.nodes}
    name = convs[0].param_names[0]
    assert graph.get_nodes_by_param_name(name) == [convs[0]]
    assert [g.id for g in graph.get_node_groups_by_param_name(name)] == [g.id for g in oto.groups
                                                                         if name in g.param_names]


def test_post_process_chunk_node_rebuilds_the_same_groups():
    oto = OTO(models.Concat().eval(), IMAGE, verify_groups=False)
    before = [(g.id, g.param_names) for g in oto.groups]
    rebuilt = compat.post_process_chunk_node(oto.graph)
    assert [(g.id, g.param_names) for g in rebuilt.values()] == before
    oto.graph.lint()


def test_h2spg_is_not_provided():
    with pytest.raises(NotImplementedError, match="hesso"):
        OTO(models.ConvBN().eval(), IMAGE, verify_groups=False).h2spg()


def test_tensor_views_follow_the_reference_layouts():
    weight = torch.arange(24.0).reshape(4, 6)
    assert torch.equal(tensor_transformation(weight, TensorTransform.BASIC, num_groups=4), weight)
    assert torch.equal(tensor_transformation(weight, TensorTransform.TRANSPOSE, num_groups=6), weight.t())
    assert index_transformation([1], TensorTransform.MULTIHEAD_NUMHEAD, head_dim=3) == [3, 4, 5]
    assert index_transformation([1], TensorTransform.MULTIHEAD_HEADDIM, num_heads=2, head_dim=4) == [1, 5]


def test_the_reference_misleading_names_are_aliases_of_the_clear_ones():
    oto = OTO(models.Concat().eval(), IMAGE)
    conv_a = next(g for g in oto.groups if "conv_a.weight" in g.param_names)
    assert conv_a.num_units == conv_a.num_groups == 4
    assert conv_a.auxiliary_node_groups and conv_a.auxilary_node_groups is conv_a.auxiliary_node_groups
    optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.5, start_pruning_step=0, pruning_steps=2)
    model, x = oto.model, IMAGE
    for _ in range(2):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
    assert optimizer.pruned_unit_ids and optimizer.pruned_group_idxes == optimizer.pruned_unit_ids
    assert optimizer.state_dict()["pruned_group_idxes"] == optimizer.pruned_unit_ids
