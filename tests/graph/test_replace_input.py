"""Graph.replace_input: a node's argument template, value lists and incoming edges move together."""

import torch

from only_train_once import Graph
from only_train_once.graph.trace import iter_value_refs
from tests.graph import models

IMAGE = torch.randn(2, 3, 8, 8)


def test_rewiring_a_node_moves_its_template_inputs_and_edges():
    graph = Graph(models.Residual().eval(), IMAGE)
    add = next(n for n in graph.nodes.values() if n.op_name == "add")
    left, right = (graph.values[v].producer for v in add.inputs)
    graph.replace_input(add, graph.nodes[right].outputs[0], graph.nodes[left].outputs[0])
    assert add.inputs == [graph.nodes[left].outputs[0]] * 2
    assert {ref.value_id for ref in iter_value_refs((add.call.args, add.call.kwargs))} == {add.inputs[0]}
    assert [p.id for p in graph.predecessors(add)] == [left]
    assert add not in graph.successors(graph.nodes[right])
    graph.lint()


def test_reading_a_parameter_instead_of_an_activation_lists_it_among_the_node_parameters():
    graph = Graph(models.Residual().eval(), IMAGE)
    head = next(n for n in graph.nodes.values() if n.op_name == "conv" and n.param_names[0] == "head.weight")
    bias = next(v for v, value in graph.values.items() if value.name == "head.bias")
    producer = graph.values[head.inputs[0]].producer
    graph.replace_input(head, head.inputs[0], bias)
    assert head.inputs == [] and head.param_names == ["head.bias", "head.weight", "head.bias"]
    assert graph.predecessors(head) == [] and head not in graph.successors(producer)
