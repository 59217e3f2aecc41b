"""Bit widths: projection into the allowed range, the joint step's step size, frozen bits (SPEC 5.7)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once.optimizer import GETA
from only_train_once.optimizer.geta import backoffs_needed
from only_train_once.quantization import QuantizeMixin
from tests.optimizer.common import DigitsNet, TinyMLP, build, train


def _layer_bits(model):
    return {name: (m.weight_bit, m.activation_bit) for name, m in model.named_modules()
            if isinstance(m, QuantizeMixin)}


def _unrounded_weight_bits(module):
    t = getattr(module, "t_quant_wt", None)
    return float(GETA._bit_width_helper(module.d_quant_wt.detach(), module.q_m_wt.detach(),
                                        None if t is None else t.detach()))


def test_projection_keeps_every_bit_width_inside_the_range():
    model, oto = build(DigitsNet)
    assert set(_layer_bits(model).values()) == {(16, 16)}
    optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-2, target_group_sparsity=0.5, start_projection_step=1,
                         projection_steps=6, projection_periods=3, start_pruning_step=7, pruning_steps=4,
                         pruning_periods=2, min_bit_wt=3, max_bit_wt=8, bit_reduction=2, min_bit_act=4, max_bit_act=6)

    def check(step):
        if optimizer.phase(step) == "warmup":
            return
        for name, module in model.named_modules():
            if isinstance(module, QuantizeMixin):
                bits = _unrounded_weight_bits(module)
                assert 3 - 1e-4 <= bits <= optimizer.max_bit_wt + 1e-4, (step, name, bits)
                assert 4 <= module.activation_bit <= 6, (step, name)
    train(model, optimizer, 16, on_step=check)
    assert optimizer.max_bit_wt == 4  # 8 -> 6 -> 4 at the starts of projection periods 1 and 2
    for weight_bits, act_bits in _layer_bits(model).values():
        assert 3 <= weight_bits <= 4 and 4 <= act_bits <= 6


def test_the_bit_range_never_drops_below_min_bit_wt():
    model, oto = build(TinyMLP)
    optimizer = oto.geta(lr=1e-3, start_projection_step=0, projection_steps=20, projection_periods=20,
                         start_pruning_step=20, min_bit_wt=6, max_bit_wt=16, bit_reduction=3)
    train(model, optimizer, 22)
    assert optimizer.max_bit_wt == 6
    assert all(w >= 6 for w, _ in _layer_bits(model).values())


def test_fixed_phase_freezes_bit_widths_while_ranges_train():
    model, oto = build(DigitsNet)
    optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-2, target_group_sparsity=0.25,
                         start_projection_step=0, projection_steps=2, start_pruning_step=2, pruning_steps=2,
                         min_bit_wt=4, max_bit_wt=8)
    train(model, optimizer, 5)
    assert optimizer.phase() == "fixed"
    frozen = {name: bits["weight"] for name, bits in optimizer.bit_layers.items()}
    ranges = model.conv_b.q_m_wt.detach().clone()
    train(model, optimizer, 10, first_step=5)
    assert not torch.equal(model.conv_b.q_m_wt.detach(), ranges)
    for name, module in model.named_modules():
        if isinstance(module, QuantizeMixin):
            assert _unrounded_weight_bits(module) == pytest.approx(frozen[name], abs=1e-4)
    assert set(optimizer.get_bitwidth_dict(optimizer.param_groups[0])) <= set(optimizer.bit_layers)


class TwoBranches(nn.Module):
    """Two linear layers whose outputs are added: one pruning group holding two quantized layers."""

    def __init__(self):
        super().__init__()
        self.left = nn.Linear(64, 16)
        self.right = nn.Linear(64, 16)
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            self.right.weight.mul_(0.25)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(F.relu(self.left(x) + self.right(x)))


def test_the_joint_step_keeps_every_layer_of_a_group_in_range_and_never_coarsens_it():
    model, oto = build(TwoBranches)
    optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, target_group_sparsity=0.25,
                         start_projection_step=0, projection_steps=1, start_pruning_step=1, pruning_steps=4,
                         min_bit_wt=4, max_bit_wt=10)
    train(model, optimizer, 1)
    before = _unrounded_weight_bits(model.left), _unrounded_weight_bits(model.right)
    train(model, optimizer, 1, first_step=1)  # step 2 is the first joint step (P = 4, t = 1)
    assert optimizer.active_redundant_group_idxes
    after = _unrounded_weight_bits(model.left), _unrounded_weight_bits(model.right)
    for old, new in zip(before, after):
        # the rule's step is a bound (issue 19): a layer keeps its width or gets finer; q_m moves a little
        assert 4 - 1e-4 <= new <= 10 + 1e-4 and new >= old - 0.05


def _joint_ready(lr=1e-3):
    model, oto = build(TinyMLP)
    optimizer = oto.geta(variant="sgd", lr=lr, lr_quant=1e-3, target_group_sparsity=0.25, start_projection_step=0,
                         projection_steps=1, start_pruning_step=1, pruning_steps=4)
    train(model, optimizer, 2)
    group = next(g for g in optimizer.param_groups if g["active_redundant_idxes"])
    return optimizer, group


def test_cosines_a_hair_outside_the_unit_interval_do_not_crash(monkeypatch):
    optimizer, group = _joint_ready()
    # <x_c, g> slightly larger than |x_c| |g|, as rounding can produce
    monkeypatch.setattr(optimizer, "_redundant_sums",
                        lambda *_: [1.0 + 1e-7, 1.0, -0.5, 1.0, 1.0, 1.0, 4.0])
    gamma, step = optimizer.compute_gamma_d(group)
    assert gamma == pytest.approx(1 / (optimizer.pruning_period_duration - optimizer._period_position(2)))
    monkeypatch.setattr(optimizer, "_redundant_sums",
                        lambda *_: [-1.0 - 1e-7, 1.0, -0.5, 1.0, 1.0, 1.0, 4.0])
    gamma, step = optimizer.compute_gamma_d(group)
    assert math.isfinite(gamma) and gamma >= 0 and step > 0


def test_zero_learning_rate_terminates_with_the_finest_step():
    optimizer, group = _joint_ready(lr=0.0)
    layers = list(optimizer._quant_groups[optimizer._group_index(group)].layers)
    gamma, step = optimizer._step_size(group, layers, 0.5, -0.3, 1.0, 1.0, 0.0, (4, 8), apply=False)
    power = float(optimizer._weight_table.range_powers(optimizer._weight_table.select(layers)).max())
    assert gamma == 0.0 and step == pytest.approx(power / (2 ** 7 - 1))
    assert backoffs_needed(1e-300, 1.0) > 0  # closed form, no loop over 0.8 factors


def test_training_with_zero_learning_rate_still_prunes_on_schedule():
    model, oto = build(DigitsNet)
    optimizer = oto.geta(variant="adam", lr=0.0, lr_quant=0.0, target_group_sparsity=0.5, start_projection_step=0,
                         projection_steps=1, start_pruning_step=1, pruning_steps=6, pruning_periods=2)
    train(model, optimizer, 8)
    assert optimizer.compute_metrics().num_zero_groups == 32


def test_quantizer_helpers_agree_with_each_other():
    torch.manual_seed(0)
    weight = torch.randn(6, 5)
    d, q_m, t = torch.tensor([0.05]), torch.tensor([1.2]), torch.tensor([0.9])
    clipped = GETA._clip_helper(weight, q_m, t)
    torch.testing.assert_close(clipped, torch.sign(weight) * weight.abs().clamp(max=1.2).pow(0.9))
    residual = GETA._residual_helper(weight, d, q_m, t)
    torch.testing.assert_close(residual, torch.round(clipped / d) - clipped / d, atol=1e-5, rtol=0)
    torch.testing.assert_close(GETA._quantize_helper(weight, d, q_m, t), d * torch.round(clipped / d),
                               atol=1e-5, rtol=0)
    step = GETA._d_quant_helper(6, q_m, t)
    assert float(GETA._bit_width_helper(step, q_m, t)) == pytest.approx(6.0)


def test_per_group_helpers_quantize_project_and_fix(tmp_path):
    model, oto = build(TinyMLP)
    optimizer = oto.geta(lr=1e-3, lr_quant=1e-3, min_bit_wt=3, max_bit_wt=6, min_bit_act=5, max_bit_act=7,
                         log_dir=str(tmp_path))
    train(model, optimizer, 1)
    group = next(g for g in optimizer.param_groups if "fc1.weight" in g["p_names"])
    found, quantized = optimizer.quantize_weight(group, "fc1.weight")
    assert found and quantized.shape == model.fc1.weight.shape
    assert optimizer.quantize_weight(group, "fc1.bias") == (False, None)
    optimizer.partial_projected_gradient_descent_step_range_wt(group)
    optimizer.partial_projected_gradient_descent_step_range_act(group)
    assert model.fc1.weight_bit <= 6 and 5 <= model.fc1.activation_bit <= 7
    optimizer.partial_projected_gradient_descent_step_fix(group, {"fc1": {"weight": 4, "activation": 6}})
    assert (model.fc1.weight_bit, model.fc1.activation_bit) == (4, 6)
    assert (tmp_path / "projection_qm_1.txt").exists() is False
    assert optimizer.log_qm_projection() == str(tmp_path / "projection_qm_1.txt")
    assert "fc1" in (tmp_path / "projection_qm_1.txt").read_text()
