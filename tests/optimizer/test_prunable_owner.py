"""One record of what is prunable: the graph's groups and the optimizer built from them agree, with reasons."""

import gc

import pytest
import torch
from torch import nn

from only_train_once import OTO


class TwoWidths(nn.Module):
    """A 2-unit layer (too small for ``group_divisible=2``) beside an 8-unit one."""

    def __init__(self):
        super().__init__()
        self.narrow = nn.Linear(6, 2)
        self.wide = nn.Linear(6, 8)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        return self.head(torch.cat([torch.relu(self.narrow(x)), torch.relu(self.wide(x))], dim=1))


def _group(oto, param_name):
    return next(g for g in oto.groups if param_name in g.param_names)


def _param_group(optimizer, param_name):
    return next(g for g in optimizer.param_groups if param_name in g["p_names"])


def _oto():
    torch.manual_seed(0)
    return OTO(TwoWidths(), torch.randn(4, 6))


def test_a_group_too_small_for_the_optimizer_is_unprunable_on_the_graph_with_the_reason():
    oto = _oto()
    assert _group(oto, "narrow.weight").is_prunable
    optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.3, group_divisible=2)
    narrow = _group(oto, "narrow.weight")
    assert not narrow.is_prunable
    assert any("group_divisible=2" in reason for reason in narrow.unprunable_reasons)
    assert not _param_group(optimizer, "narrow.weight")["is_prunable"]
    assert _group(oto, "wide.weight").is_prunable and _param_group(optimizer, "wide.weight")["is_prunable"]


def test_a_new_optimizer_decides_afresh_and_numbers_the_units_the_same():
    oto = _oto()
    first = oto.hesso(lr=0.1, target_group_sparsity=0.3, group_divisible=2)
    starts = [g.get("global_start_idx") for g in first.param_groups]
    del first
    gc.collect()
    second = oto.hesso(lr=0.1, target_group_sparsity=0.3, group_divisible=1)
    assert _group(oto, "narrow.weight").is_prunable
    assert _param_group(second, "narrow.weight")["is_prunable"]
    assert [g.get("global_start_idx") for g in second.param_groups] == starts


@pytest.mark.parametrize("call", [
    lambda oto: oto.mark_unprunable_by_param_names(["wide.weight"]),
    lambda oto: oto.mark_unprunable_by_node_ids(list(_group(oto, "wide.weight").nodes)),
    lambda oto: oto.skip_operators(["Linear"]),
])
def test_marking_after_the_optimizer_is_built_raises_instead_of_being_ignored(call):
    oto = _oto()
    optimizer = oto.geta(lr=0.1, target_group_sparsity=0.3)
    with pytest.raises(RuntimeError, match="before building the optimizer"):
        call(oto)
    assert _group(oto, "wide.weight").is_prunable and _param_group(optimizer, "wide.weight")["is_prunable"]
    del optimizer
    gc.collect()
    call(oto)
    assert not _group(oto, "wide.weight").is_prunable
    assert not _param_group(oto.geta(lr=0.1, target_group_sparsity=0.3), "wide.weight")["is_prunable"]


def test_the_reference_flag_assignment_records_a_reason_and_can_be_undone():
    group = _group(_oto(), "wide.weight")
    group.is_prunable = False
    assert not group.is_prunable and group.unprunable_reasons == ["is_prunable set to False"]
    group.is_prunable = True
    assert group.is_prunable and not group.unprunable_reasons


@pytest.mark.parametrize("method", ["verify_groups", "set_trainable"])
def test_rechecking_the_groups_after_the_optimizer_is_built_raises(method):
    oto = _oto()
    optimizer = oto.geta(lr=0.1, target_group_sparsity=0.3)
    with pytest.raises(RuntimeError, match=f"oto.{method} was called after"):
        getattr(oto, method)()
    del optimizer
    gc.collect()
    getattr(oto, method)()
