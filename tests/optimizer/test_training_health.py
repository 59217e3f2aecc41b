"""GETA's collapse read-out (issue 19): loss trend, per-layer bits and steps, warnings at the end of periods."""

import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from only_train_once.optimizer.training_health import (HealthThresholds, QuantizerSnapshot, TrainingCollapseWarning,
                                                       TrainingHealth)
from tests.optimizer.common import DigitsNet, batch, build

LAYERS = ("conv_a", "conv_b", "conv_c", "fc1")


def snapshot(weight_bits, activation_bits=None):
    activation_bits = activation_bits or {name: 8 for name in weight_bits}
    return QuantizerSnapshot(weight_bits=dict(weight_bits), activation_bits=activation_bits,
                             weight_step_sizes={n: 0.01 for n in weight_bits},
                             activation_step_sizes={n: 0.02 for n in activation_bits},
                             weight_floor=4, activation_floor=4)


def run_periods(health, losses_per_period, snapshots):
    problems = []
    for index, (losses, snap) in enumerate(zip(losses_per_period, snapshots), start=1):
        for loss in losses:
            health.record_loss(loss)
        problems += health.end_period("pruning", index, 10 * index, snap)
    return problems


def test_a_loss_jump_between_periods_is_reported_with_its_size():
    healthy = snapshot({n: 8 for n in LAYERS})
    problems = run_periods(TrainingHealth(), [[0.9, 0.7], [0.3, 0.3], [2.0, 1.6]], [healthy] * 3)
    assert len(problems) == 1
    assert all(part in problems[0] for part in ("end of pruning period 3", "jumped to 1.8", "6.0x the previous"))


def test_a_diverged_loss_is_reported():
    problems = run_periods(TrainingHealth(), [[0.5], [math.inf]], [snapshot({n: 8 for n in LAYERS})] * 2)
    assert len(problems) == 1 and "diverged" in problems[0]


def test_most_layers_at_the_bit_floor_are_reported_by_name():
    collapsed = snapshot({"conv_a": 4, "conv_b": 4, "conv_c": 4, "fc1": 9}, {"conv_a": 8, "conv_b": 4, "conv_c": 8,
                                                                          "fc1": 8})
    problems = run_periods(TrainingHealth(), [[0.4]], [collapsed])
    assert problems == ["step 10, end of pruning period 1: 3 of 4 layers have their weight bit width at the floor 4: "
                        "conv_a, conv_b, conv_c"]


def test_a_healthy_trend_and_a_minority_at_the_floor_are_not_reported():
    mixed = snapshot({"conv_a": 4, "conv_b": 4, "conv_c": 6, "fc1": 9})
    problems = run_periods(TrainingHealth(), [[2.0, 1.5], [0.8, 0.9], [0.5, 0.9], [0.6, 0.5], [0.9, 1.0]],
                           [mixed] * 5)
    assert problems == []


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="loss_jump_ratio"):
        HealthThresholds(loss_jump_ratio=1.0)
    with pytest.raises(ValueError, match="floor_fraction"):
        HealthThresholds(floor_fraction=1.0)


def test_the_end_of_period_line_is_logged_with_trend_bits_and_steps(caplog):
    health = TrainingHealth()
    with caplog.at_level(logging.INFO, logger="only_train_once.optimizer.training_health"):
        run_periods(health, [[1.0], [0.5]], [snapshot({"conv_a": 8})] * 2)
    line = caplog.records[-1].getMessage()
    assert "end of pruning period 2" in line and "trend [1, 0.5]" in line and "'conv_a': 8" in line
    assert "weight d {conv_a: 0.01}" in line


# -- in GETA ---------------------------------------------------------------------------------------------------
SCHEDULE = dict(variant="adam", lr=1e-3, lr_quant=1e-3, target_group_sparsity=0.25, start_projection_step=0,
                projection_steps=10, projection_periods=2, start_pruning_step=10, pruning_steps=10, pruning_periods=2,
                min_bit_wt=4, max_bit_wt=16, min_bit_act=4, max_bit_act=16)


def train_reporting(optimizer, model, steps, loss_scale=None, use_closure=False):
    for step in range(optimizer.num_steps, optimizer.num_steps + steps):
        inputs, targets = batch(step)

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            return loss if loss_scale is None else loss * loss_scale(step)

        if use_closure:
            optimizer.step(closure)
        else:
            optimizer.report_loss(closure())
            optimizer.step()


def collapse_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, TrainingCollapseWarning)]


def test_geta_metrics_report_the_loss_trend_and_every_layers_bits_and_steps():
    model, oto = build(DigitsNet)
    optimizer = oto.geta(**SCHEDULE)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train_reporting(optimizer, model, 22, use_closure=True)
    assert collapse_warnings(record) == []
    metrics = optimizer.compute_metrics()
    assert len(metrics.loss_trend) == 4 + 1  # 2 projection + 2 pruning periods, then the running one
    assert all(0 < loss < 5 for loss in metrics.loss_trend)
    names = {"conv_a", "conv_b", "conv_c", "fc1", "fc2"}
    assert set(metrics.weight_bits) == set(metrics.activation_bits) == set(metrics.weight_step_sizes) == names
    for name, module in model.named_modules():
        if name in names:
            assert metrics.weight_bits[name] == module.weight_bit
            assert metrics.activation_step_sizes[name] == pytest.approx(abs(float(module.d_quant_act.detach())))


def test_geta_warns_naming_the_layers_when_the_loss_jumps_and_bits_sit_at_the_floor():
    model, oto = build(DigitsNet)
    optimizer = oto.geta(**SCHEDULE)
    train_reporting(optimizer, model, 15)  # periods end at steps 5, 10 (projection) and 15 (pruning 1)
    names = ("conv_a", "conv_b", "conv_c", "fc1", "fc2")
    floor = SCHEDULE["min_bit_wt"]
    for name in names:  # a constructed collapse: every weight quantizer at the floor, the loss 10x
        module = getattr(model, name)
        module.d_quant_wt.data.copy_(module.q_m_wt.detach().abs() / (2 ** (floor - 1) - 1))
    with pytest.warns(TrainingCollapseWarning) as record:
        train_reporting(optimizer, model, 5, loss_scale=lambda step: 10.0, use_closure=True)
    messages = [str(w.message) for w in record]
    assert any(m.startswith("possible training collapse: step 20, end of pruning period 2: the mean training "
                            "loss jumped") for m in messages)
    floor_message = next(m for m in messages if "weight bit width at the floor 4" in m)
    assert "5 of 5 layers" in floor_message and all(name in floor_message for name in names)


def test_geta_checkpoints_keep_the_loss_trend():
    model, oto = build(DigitsNet)
    optimizer = oto.geta(**SCHEDULE)
    train_reporting(optimizer, model, 12)
    restored = build(DigitsNet)[1].geta(**SCHEDULE)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.health.loss_trend() == pytest.approx(optimizer.health.loss_trend())
    assert torch.isfinite(torch.tensor(restored.health.loss_trend())).all()


def test_a_fixed_bit_width_is_not_reported_as_a_collapse():
    """[8, 8] bits keep every layer at the floor by design (the MiniLM recipe); the loss check still runs."""
    fixed = QuantizerSnapshot(weight_bits={n: 8 for n in LAYERS}, activation_bits={n: 8 for n in LAYERS},
                              weight_floor=8, activation_floor=8, weight_ceiling=8, activation_ceiling=8)
    assert run_periods(TrainingHealth(), [[0.4], [0.3]], [fixed] * 2) == []
    assert len(run_periods(TrainingHealth(), [[0.4], [4.0]], [fixed] * 2)) == 1


def test_geta_with_fixed_bit_widths_trains_without_collapse_warnings():
    model, oto = build(DigitsNet)
    optimizer = oto.geta(**{**SCHEDULE, "min_bit_wt": 8, "max_bit_wt": 8, "min_bit_act": 8, "max_bit_act": 8})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train_reporting(optimizer, model, 22)
    assert collapse_warnings(record) == []
    assert set(optimizer.compute_metrics().weight_bits.values()) == {8}
