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
