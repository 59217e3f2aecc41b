"""Cosine criterion: how well the unit's weights align with the descent direction."""

from torch import Tensor

from .statistics import UnitStatistics


def cosine_similarity(stats: UnitStatistics) -> Tensor:
    """``<X_i, G_i> / ((||X_i|| + 1e-8) (||G_i|| + 1e-8)) + 1``, in ``[0, 2]`` (parameters with a gradient only)."""
    denominator = (stats.graded_param_sq_norm.sqrt() + 1e-8) * (stats.grad_sq_norm.sqrt() + 1e-8)
    return stats.param_grad_dot / denominator + 1.0
