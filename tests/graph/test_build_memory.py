"""What a graph build and the OTO object keep alive, and the cost of reading a group's id."""

import gc
import weakref

import torch
from torch import nn

from only_train_once import OTO
from only_train_once.graph.node_group import NodeGroup
from tests.graph import models


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) + 1.0  # autograd does not keep fc's output


class Chain(nn.Module):
    """Two blocks; records which outputs of the first block's layer are still alive once that block has run."""

    def __init__(self):
        super().__init__()
        self.first, self.second = Block(), Block()
        self.made = []
        self.first.fc.register_forward_hook(lambda module, inputs, output: self.made.append(weakref.ref(output)))
        self.alive_after_first_block = None

    def forward(self, x):
        hidden = self.first(x)
        gc.collect()
        self.alive_after_first_block = [ref() is not None for ref in self.made]
        return self.second(hidden)


def test_the_capture_frees_intermediates_as_soon_as_the_model_does():
    model = Chain()
    model(torch.randn(2, 8))
    assert model.alive_after_first_block == [False]  # what the model itself keeps
    model.made.clear()
    # the group check would run the model again (fc's channels, the constant 1 after pruning, fold into the next
    # layer's bias, so they are prunable): only the capture's forward is under test
    OTO(model, torch.randn(2, 8), verify_groups=False)
    assert model.alive_after_first_block == [False]


def test_oto_does_not_keep_the_optimizer_alive():
    oto = OTO(models.ConvBN().eval(), torch.randn(2, 3, 8, 8))
    optimizer = oto.geta(variant="adam", lr=1e-3)
    alive = weakref.ref(optimizer)
    del optimizer
    gc.collect()
    assert alive() is None


def test_a_group_id_is_built_once_per_change_of_its_nodes():
    class FakeNode:
        def __init__(self, node_id):
            self.id = node_id

    group = NodeGroup(0, 4)
    group.add_node(FakeNode("node-1"))
    group.add_node(FakeNode("node-2"))
    first = group.id
    assert first == "node-1_node-2" and group.id is first
    group.add_node(FakeNode("node-3"))
    assert group.id == "node-1_node-2_node-3"
    group.nodes = {"node-4": FakeNode("node-4")}
    assert group.id == "node-4"
