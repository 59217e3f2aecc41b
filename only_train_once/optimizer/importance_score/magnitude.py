"""Magnitude criteria: a unit with small weights contributes little."""

from torch import Tensor

from .statistics import UnitStatistics


def magnitude(stats: UnitStatistics) -> Tensor:
    """``sqrt(sum_p ||X_p,i||^2)``: the L2 norm of the unit's slices."""
    return stats.param_sq_norm.sqrt()


def avg_magnitude(stats: UnitStatistics) -> Tensor:
    """The unit's L2 norm divided by its number of elements (``+ 1e-6``)."""
    return stats.param_sq_norm.sqrt() / (stats.num_elements + 1e-6)
