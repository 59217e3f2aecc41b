"""Exact target sparsity, the lowest-score redundant set, and pruned units staying exactly zero (SPEC 5.5)."""

import logging

import pytest
import torch
from only_train_once.optimizer import redundancy
from tests.optimizer.common import DigitsNet, TinyMLP, build, train, zero_unit_fraction

UNITS = 64  # DigitsNet: conv_a 8 + conv_b 8 + conv_c 16 + fc1 32


@pytest.mark.parametrize("kind, sparsity, periods, divisible, expected", [
    ("hesso", 0.29, 3, 1, 18),   # floor(64 * 0.29) = 18 (not 17: the decimal value is used)
    ("geta", 0.5, 4, 1, 32),
    ("geta", 0.7, 3, 1, 44),
    ("hesso", 0.97, 2, 1, 60),   # each of the 4 groups keeps one unit: at most 60
    ("geta", 0.3, 2, 2, 18),     # floor(19.2) = 19 is odd; every group keeps a multiple of 2
])
def test_final_sparsity_is_exactly_the_documented_target(kind, sparsity, periods, divisible, expected):
    model, oto = build(DigitsNet, quantized=kind == "geta")
    schedule = dict(target_group_sparsity=sparsity, start_pruning_step=2, pruning_steps=3 * periods,
                    pruning_periods=periods, group_divisible=divisible)
    if kind == "geta":
        optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, start_projection_step=0, projection_steps=2,
                             **schedule)
    else:
        optimizer = oto.hesso(variant="adam", lr=1e-3, **schedule)
    assert optimizer.target_num_redundant_groups == expected
    train(model, optimizer, 3 * periods + 4)
    assert zero_unit_fraction(oto) == (expected, UNITS)
    assert optimizer.compute_metrics().num_zero_groups == expected
    if divisible > 1:
        for group in optimizer.param_groups:
            if group["is_prunable"] and not group["is_auxiliary"]:
                assert len(group["important_idxes"]) % divisible == 0


def test_an_unreachable_target_is_reported(caplog):
    _, oto = build(TinyMLP, quantized=False)
    with caplog.at_level(logging.WARNING, logger="only_train_once.optimizer"):
        optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.99)
    assert optimizer.target_num_redundant_groups == 22
    assert "will be pruned" in caplog.text


def test_without_a_group_cap_the_redundant_set_is_the_lowest_score_set():
    model, oto = build(DigitsNet, quantized=False)
    optimizer = oto.hesso(variant="adam", lr=1e-3, target_group_sparsity=0.4, start_pruning_step=3,
                          pruning_steps=4, pruning_periods=1, max_group_sparsity=1.0)
    train(model, optimizer, 4)  # the period starts at step 4
    scores = torch.cat(optimizer.global_scores)
    starts = [optimizer.param_groups[i]["global_start_idx"] for i in optimizer._unit_groups()]
    ids = torch.cat([torch.arange(s, s + len(v)) for s, v in zip(starts, optimizer.global_scores)])
    lowest = ids[torch.argsort(scores, stable=True)[:optimizer.target_num_redundant_groups]]
    assert optimizer.active_redundant_group_idxes == sorted(lowest.tolist())


def test_a_group_whose_units_all_score_lowest_keeps_one_unit():
    model, oto = build(DigitsNet, quantized=False)
    with torch.no_grad():
        for module in (model.conv_a, model.bn_a):
            module.weight.mul_(1e-4)
            module.bias.mul_(1e-4)
    optimizer = oto.hesso(lr=0.0, target_group_sparsity=0.25, importance_score_criteria={"magnitude": 1.0},
                          max_group_sparsity=1.0)
    train(model, optimizer, 1)
    group = next(g for g in optimizer.param_groups if "conv_a.weight" in g["p_names"])
    assert len(group["pruned_idxes"]) == 7 and len(group["important_idxes"]) == 1
    assert zero_unit_fraction(oto)[0] == 16


def test_by_default_a_group_loses_at_most_half_again_the_target_share_of_its_units():
    model, oto = build(DigitsNet, quantized=False)
    with torch.no_grad():
        for module in (model.conv_a, model.bn_a):
            module.weight.mul_(1e-4)
            module.bias.mul_(1e-4)
    optimizer = oto.hesso(lr=0.0, target_group_sparsity=0.25, importance_score_criteria={"magnitude": 1.0})
    assert optimizer.max_group_sparsity == 0.625  # 1 - (1 - 0.25) / 2
    train(model, optimizer, 1)
    group = next(g for g in optimizer.param_groups if "conv_a.weight" in g["p_names"])
    # conv_a's 8 units all score lowest; the cap floor(8 * 0.625) = 5 leaves it 3 units
    assert len(group["pruned_idxes"]) == 5 and len(group["important_idxes"]) == 3
    assert len(optimizer.pruned_group_idxes) == optimizer.target_num_redundant_groups == 16  # 64 units


def test_the_group_cap_is_validated_and_limits_the_reachable_target():
    model, oto = build(DigitsNet, quantized=False)
    with pytest.raises(ValueError, match="max_group_sparsity"):
        oto.hesso(lr=0.1, max_group_sparsity=0.0)
    assert oto.hesso(lr=0.1, target_group_sparsity=0.9, max_group_sparsity=0.5).target_num_redundant_groups == 32


@pytest.mark.parametrize("quantized", [False, True])
def test_pruned_units_stay_exactly_zero_in_every_slice(quantized):
    model, oto = build(DigitsNet, quantized=quantized)
    if quantized:
        optimizer = oto.geta(variant="adamw", lr=1e-2, lr_quant=1e-3, target_group_sparsity=0.5,
                             start_projection_step=0, projection_steps=2, start_pruning_step=2, pruning_steps=4,
                             pruning_periods=2)
    else:
        optimizer = oto.hesso(variant="adamw", lr=1e-2, target_group_sparsity=0.5, start_pruning_step=2,
                              pruning_steps=4, pruning_periods=2)
    train(model, optimizer, 7)
    pruned = list(optimizer.pruned_group_idxes)
    train(model, optimizer, 10, first_step=7)
    assert optimizer.pruned_group_idxes == pruned
    for unit_slices in optimizer.layout.slices:  # own slices, biases, BatchNorms and the concat BatchNorm
        where = unit_slices.positions(optimizer.layout.mask(pruned))
        assert torch.count_nonzero(unit_slices.param.index_select(unit_slices.axis, where)) == 0
    assert any(not s.own_group for s in optimizer.layout.slices), "DigitsNet has an auxiliary (concat) group"
    assert zero_unit_fraction(oto) == (32, UNITS)


def test_geta_prunes_a_float_model_and_a_float_layer_of_a_quantized_model():
    model, oto = build(DigitsNet, quantized=False)
    optimizer = oto.geta(variant="adam", lr=1e-3, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=4,
                         pruning_periods=2)
    train(model, optimizer, 8)
    assert zero_unit_fraction(oto) == (32, UNITS)
    model, oto = build(DigitsNet, quantized=True, filter_fn=lambda module, name: name != "conv_c")
    assert not hasattr(model.conv_c, "d_quant_wt")
    optimizer = oto.geta(variant="adam", lr=1e-3, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=4,
                         pruning_periods=2)
    train(model, optimizer, 8)
    assert zero_unit_fraction(oto) == (32, UNITS)


def test_hesso_prunes_a_quantized_model():
    model, oto = build(DigitsNet, quantized=True)
    optimizer = oto.hesso(variant="sgd", lr=1e-3, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=2)
    train(model, optimizer, 4)
    assert zero_unit_fraction(oto) == (32, UNITS)


def test_allowed_counts_and_reachable_targets():
    assert redundancy.allowed_counts(5, 1) == [0, 1, 2, 3, 4]
    assert redundancy.allowed_counts(5, 2) == [0, 1, 3]
    assert redundancy.allowed_counts(8, 4) == [0, 4]
    assert redundancy.reachable_target([5, 5], 2, 5) == 4
    assert redundancy.reachable_target([8, 16], 4, 100) == 16
    assert redundancy.allowed_counts(5, 1, 0.5) == [0, 1, 2]
    assert redundancy.allowed_counts(16, 4, 0.5) == [0, 4, 8]
    assert redundancy.reachable_target([5, 5], 1, 100, 0.5) == 4
    assert redundancy.requested_count(100, 0.29) == 29
    assert redundancy.period_budgets(206, 3) == [68, 68, 70]


def test_without_fixed_zero_groups_pruned_units_are_zeroed_once_then_free():
    model, oto = build(DigitsNet, quantized=False)
    optimizer = oto.hesso(variant="adam", lr=1e-2, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=1,
                          fixed_zero_groups=False)
    train(model, optimizer, 1)
    assert optimizer.compute_metrics().num_zero_groups == 32
    train(model, optimizer, 3, first_step=1)
    assert optimizer.compute_metrics().num_zero_groups < 32
