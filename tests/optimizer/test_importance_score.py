"""Importance criteria (SPEC 5.4): values, normalisation, weights, validation."""

import pytest
import torch

from only_train_once.optimizer.importance_score import (
    CRITERIA,
    DEFAULT_IMPORTANCE_WEIGHTS,
    UnitStatistics,
    calculate_importance_score,
    resolve_criteria,
)
from tests.optimizer.common import TinyMLP, build, train


def _stats():
    return UnitStatistics(param_sq_norm=torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64),
                          num_elements=torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64),
                          graded_param_sq_norm=torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64),
                          grad_sq_norm=torch.tensor([1.0, 4.0, 1.0], dtype=torch.float64),
                          param_grad_dot=torch.tensor([-2.0, 1.0, 0.0], dtype=torch.float64))


def test_each_criterion_is_its_formula():
    stats = _stats()
    values = {name: CRITERIA[name](stats) for name in CRITERIA}
    torch.testing.assert_close(values["magnitude"], torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(values["avg_magnitude"], torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64) / (2 + 1e-6))
    torch.testing.assert_close(values["cosine_similarity"], torch.tensor([0.0, 1.5, 1.0], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(values["taylor_first_order"], torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(values["taylor_second_order"], torch.tensor([2.0, 0.5, 0.0], dtype=torch.float64))


def test_scores_are_normalised_per_criterion_over_eligible_units():
    stats = _stats()
    eligible = torch.tensor([True, True, False])
    overall, parts = calculate_importance_score({"magnitude": 1.0}, stats, eligible)
    expected = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64) / (torch.sqrt(torch.tensor(5.0 + 1e-8)) + 1e-8)
    torch.testing.assert_close(overall, expected.to(torch.float64))
    assert set(parts) == {"magnitude"}


def test_default_and_custom_weights():
    assert resolve_criteria("default") == DEFAULT_IMPORTANCE_WEIGHTS == {name: 0.2 for name in CRITERIA}
    assert resolve_criteria(None) == DEFAULT_IMPORTANCE_WEIGHTS
    assert resolve_criteria({"magnitude": 1, "taylor_first_order": 0.5}) == {"magnitude": 1.0,
                                                                            "taylor_first_order": 0.5}
    with pytest.raises(ValueError, match="unknown criteria"):
        resolve_criteria({"magnitud": 1.0})
    with pytest.raises(ValueError, match="must be a number"):
        resolve_criteria({"magnitude": "high"})


def test_magnitude_only_criteria_prune_the_smallest_units():
    model, oto = build(TinyMLP, quantized=False)
    with torch.no_grad():
        model.fc1.weight[3].mul_(1e-3)
        model.fc1.bias[3] = 0.0
        model.fc2.weight[5].mul_(1e-3)
        model.fc2.bias[5] = 0.0
    optimizer = oto.hesso(lr=0.0, target_group_sparsity=2 / 24, importance_score_criteria={"magnitude": 1.0})
    train(model, optimizer, 1)
    fc1_start = next(g["global_start_idx"] for g in optimizer.param_groups if "fc1.weight" in g["p_names"])
    fc2_start = next(g["global_start_idx"] for g in optimizer.param_groups if "fc2.weight" in g["p_names"])
    assert optimizer.pruned_group_idxes == sorted([fc1_start + 3, fc2_start + 5])


# -- per-parameter normalisation: units of different sizes compete fairly ------------------------------------
def _uniform_units(sizes, value=0.5, grad=0.1):
    """Statistics of units whose every element is ``value`` with gradient ``grad`` (sizes in elements)."""
    n = torch.tensor(sizes, dtype=torch.float64)
    return UnitStatistics(param_sq_norm=n * value ** 2, num_elements=n, graded_param_sq_norm=n * value ** 2,
                          grad_sq_norm=n * grad ** 2, param_grad_dot=n * value * grad)


def test_per_parameter_scores_do_not_depend_on_unit_size():
    stats = _uniform_units([98304.0, 768.0, 65.0])
    eligible = torch.ones(3, dtype=torch.bool)
    overall, parts = calculate_importance_score(DEFAULT_IMPORTANCE_WEIGHTS, stats, eligible)
    for name, part in parts.items():
        torch.testing.assert_close(part, part[:1].expand(3), msg=name)
    per_unit, _ = calculate_importance_score(DEFAULT_IMPORTANCE_WEIGHTS, stats, eligible, "per_unit")
    assert per_unit[0] > 3 * per_unit[1]  # the reference's sums: the biggest unit wins


def test_unknown_normalization_is_refused():
    stats = _uniform_units([4.0])
    with pytest.raises(ValueError, match="importance_normalization must be one of"):
        calculate_importance_score({"magnitude": 1.0}, stats, torch.ones(1, dtype=torch.bool), "per_head")
    model, oto = build(TinyMLP, quantized=False)
    with pytest.raises(ValueError, match="importance_normalization"):
        oto.hesso(lr=0.0, importance_normalization="per_head")


class AttentionBlock(torch.nn.Module):
    """One transformer block on 8 tokens: 4 heads of 8 (a head owns 3 x 8 x 32 + 8 x 32 weights) and an FFN of
    64 units (a unit owns 2 x 32 weights)."""

    def __init__(self, dim=32, num_heads=4, hidden=64):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.embed = torch.nn.Linear(8, dim)
        self.q, self.k, self.v = (torch.nn.Linear(dim, dim) for _ in range(3))
        self.proj = torch.nn.Linear(dim, dim)
        self.fc1, self.fc2 = torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, dim)
        self.head = torch.nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x.reshape(x.shape[0], 8, 8))
        b, n, _ = x.shape
        q, k, v = (layer(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
                   for layer in (self.q, self.k, self.v))
        attention = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(b, n, -1))
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(1))


def _set_unit_magnitudes(model):
    """Every weight of head h is +-(h + 1) / 4 and of FFN unit j +-(1 + 3 j / 63) / 4 (random signs, no biases):
    per parameter, the heads and the FFN units span the same range of magnitudes."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (model.q, model.k, model.v, model.proj, model.fc1, model.fc2):
            layer.bias.zero_()
            layer.weight.copy_(torch.randint(0, 2, layer.weight.shape, generator=generator).float() * 2 - 1)
        head_scale = (torch.arange(4).float() + 1).repeat_interleave(8) / 4
        for layer in (model.q, model.k, model.v):
            layer.weight.mul_(head_scale[:, None])
        model.proj.weight.mul_(head_scale[None, :])
        unit_scale = (1 + 3 * torch.arange(64).float() / 63) / 4
        model.fc1.weight.mul_(unit_scale[:, None])
        model.fc2.weight.mul_(unit_scale[None, :])


def _pruned_heads_and_units(normalization):
    model, oto = build(AttentionBlock, quantized=False)
    _set_unit_magnitudes(model)
    optimizer = oto.hesso(lr=0.0, target_group_sparsity=0.25, importance_normalization=normalization,
                          importance_score_criteria={"magnitude": 1.0})
    train(model, optimizer, 1)
    heads = (model.q.weight.view(4, -1).abs().sum(1) == 0).sum().item()
    units = (model.fc1.weight.abs().sum(1) == 0).sum().item()
    return heads, units


def test_head_and_ffn_units_of_equal_per_parameter_magnitude_are_both_pruned():
    heads, units = _pruned_heads_and_units("per_parameter")
    assert heads >= 1 and units >= 1
    heads, units = _pruned_heads_and_units("per_unit")
    assert heads == 0 and units >= 1  # the reference's sums: a head outscores every FFN unit
