"""Taylor criteria: the first- and second-order estimates of the loss change when the unit is removed."""

from torch import Tensor

from .statistics import UnitStatistics


def taylor_first_order(stats: UnitStatistics) -> Tensor:
    """``|sum_p <X_p,i, G_p,i>|``."""
    return stats.param_grad_dot.abs()


def taylor_second_order(stats: UnitStatistics) -> Tensor:
    """``0.5 * (sum_p <X_p,i, G_p,i>)^2``."""
    return 0.5 * stats.param_grad_dot.pow(2)
