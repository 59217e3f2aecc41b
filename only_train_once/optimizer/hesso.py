"""HESSO: structured pruning by progressively shrinking the least important units to zero (SPEC 5.6)."""

from __future__ import annotations

import logging
from typing import Callable, Dict, Optional, Union, cast

import torch
from torch.optim.optimizer import required

from .base_hybrid_sparse_optimizer import BaseHybridSparseOptimizer
from .base_optimizer import DescentPlan

logger = logging.getLogger(__name__)


class HESSO(BaseHybridSparseOptimizer):
    """Half-space stochastic pruning optimizer: plain SGD/Adam(W) steps plus a pruning schedule.

    Schedule (``S = start_pruning_step``, ``P = pruning_steps // pruning_periods``): period ``k`` starts at step
    ``S + 1 + k P`` (at ``S + k`` when ``P = 1``) by scoring the units and selecting its share of the
    ``target_num_redundant_groups`` lowest-scored ones; at its ``t``-th step (``t = 1 .. P-1``) their slices are
    multiplied by ``(P - t - 1) / (P - t)`` after the gradient step, so that they reach exactly zero at the
    period's end, where they are committed; committed units are held at zero afterwards. After the last period
    exactly ``target_num_redundant_groups`` units are zero (see :mod:`.redundancy` for the count rule).

    Quantized models are trained as any other: quantizer parameters are ordinary parameters here (use GETA to
    learn bit widths). ``pruning_steps=None`` means one step per period. ``device`` is accepted for
    compatibility and unused (tensors stay where the model is).
    """

    def __init__(self, params, variant: str = "sgd", lr: float = cast(float, required),
                 first_momentum: Optional[float] = None,
                 second_momentum: Optional[float] = None, dampening: Optional[float] = None,
                 weight_decay: Optional[float] = None, target_group_sparsity: float = 0.5,
                 start_pruning_step: int = 0, pruning_steps: Optional[int] = None, pruning_periods: int = 1,
                 group_divisible: int = 1, importance_score_criteria: Union[str, Dict[str, float], None] = "default",
                 device: str = "cuda", fixed_zero_groups: bool = True, redundant_selection: str = "score",
                 auxiliary_scaling: str = "once", moment_initialization: str = "standard",
                 max_group_sparsity: Optional[float] = None, non_finite: str = "raise",
                 importance_normalization: str = "per_unit"):
        super().__init__(params, variant=variant, lr=lr, first_momentum=first_momentum,
                         second_momentum=second_momentum, dampening=dampening, weight_decay=weight_decay,
                         target_group_sparsity=target_group_sparsity, group_divisible=group_divisible,
                         importance_score_criteria=importance_score_criteria, fixed_zero_groups=fixed_zero_groups,
                         redundant_selection=redundant_selection, auxiliary_scaling=auxiliary_scaling,
                         moment_initialization=moment_initialization, max_group_sparsity=max_group_sparsity,
                         non_finite=non_finite, importance_normalization=importance_normalization)
        self.device = device
        self._setup_pruning_schedule(start_pruning_step, pruning_steps, pruning_periods)
        logger.info("Setup HESSO: %d prunable units, target %d redundant (sparsity %s), periods %d x %d steps from "
                    "step %d", self.total_num_groups, self.target_num_redundant_groups, self.target_group_sparsity,
                    self.pruning_periods, self.pruning_period_duration, self.start_pruning_step)
        logger.info("Target redundant groups per period: %s", self.active_num_redundant_groups)

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        """One training step: gradient step, then the pruning schedule (class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self.gradients_are_finite():
            return loss
        self.num_steps += 1
        step = self.num_steps
        self.compute_grad_variant()
        self._start_period_if_due(step)
        position = self._period_position(step)
        plan = DescentPlan()
        for index, group in enumerate(self.param_groups):
            lr = group["lr"]
            plan.add(group, [(j, lr) for j in range(len(group["params"]))], self._variants[index],
                     decay=group["variant"] == "adamw")
        if not self.update_is_finite(plan.unsafe_names(self.norm_bounds)):
            return loss
        plan.run()
        # The shrink multiplies by a factor in [0, 1] and the hold writes zeros: both keep the values finite.
        if self.active_redundant_group_idxes:
            self._shrink_active(self._shrink_factor(position))
        self._hold_pruned_at_zero()
        self._commit_if_period_ends(step, position)
        self.seal_norm_bounds()
        return loss

    def _state_keys(self):
        return super()._state_keys() + ["device"]
