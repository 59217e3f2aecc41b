"""The unit map: one record of which unit owns each index of every parameter and buffer axis, read by all."""

import numpy as np
import torch

from only_train_once import OTO
from only_train_once.graph.unit_map import global_unit_ids
from only_train_once.subnet_construction.plan import plan_for_masks
from tests.graph import models
from tests.helpers import group_by_param

IMAGE = torch.randn(2, 3, 8, 8)


def _concat_oto():
    torch.manual_seed(0)
    return OTO(models.Concat().eval(), IMAGE)


def test_the_members_read_the_unit_map_itself():
    oto = _concat_oto()
    unit_map = oto.graph.unit_map
    members = [m for g in oto.groups for m in g.members if m.axis is not None]
    assert members
    for member in members:
        assert member.owners is unit_map.owners(member.name, member.axis)


def test_the_map_names_the_producer_units_on_a_consumer_input_axis():
    oto = _concat_oto()
    keys, indices = oto.graph.unit_map.owners("head.weight", 1)  # head reads cat([conv_a (4), conv_b (6)])
    key_a = group_by_param(oto, "conv_a.weight").key
    key_b = group_by_param(oto, "conv_b.weight").key
    assert keys.tolist() == [key_a] * 4 + [key_b] * 6
    assert indices.tolist() == list(range(4)) + list(range(6))


def test_the_optimizer_unit_ids_are_the_map_laid_out_by_group_offsets():
    oto = _concat_oto()
    unit_map = oto.graph.unit_map
    groups = oto.get_param_groups()
    offsets = {}
    for group in groups:
        if "global_start_idx" in group:
            offsets[oto.graph.node_groups[group["id"]].key] = group["global_start_idx"]
    assert len(offsets) == 2
    for group in groups:
        for name, axis, ids in zip(group["p_names"], group["p_axes"], group["p_unit_index"]):
            if axis is not None:
                assert np.array_equal(ids.numpy(), global_unit_ids(unit_map.owners(name, axis), offsets))


def test_the_pruning_plan_removes_what_the_map_says_on_both_sides_of_a_layer():
    oto = _concat_oto()
    key_b = group_by_param(oto, "conv_b.weight").key
    removed = np.zeros(6, dtype=bool)
    removed[[1, 4]] = True
    plan = plan_for_masks(oto.graph, {key_b: removed})
    assert plan.keep["conv_b.weight"][0].tolist() == [0, 2, 3, 5]
    assert plan.keep["bn.weight"][0].tolist() == [0, 1, 2, 3, 4, 6, 7, 9]  # conv_b's channels follow conv_a's 4
    assert plan.keep["head.weight"][1].tolist() == [0, 1, 2, 3, 4, 6, 7, 9]
    assert "conv_a.weight" not in plan.keep and 0 not in plan.keep["head.weight"]
