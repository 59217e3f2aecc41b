"""HESSOCRIC: HESSO with a sampled, loss-aware choice of the redundant units (SPEC 5.10).

Stages on the step counter ``n`` (``S = start_cric_step``):

1. **plain** ``n <= S``: ordinary steps.
2. **probing** (``proj_per_node_group``): for every prunable group and trial sparsity in ``(0.25, 0.5, 0.75)``,
   two steps: the first records the reference loss and zeroes the group's lowest-scored fraction of units, the
   second records the loss with them removed and restores them. A group's *loss sensitivity* is the mean of
   ``max(0, loss_trial / loss_reference - 1)``; it is the ``"loss"`` criterion of every unit of the group.
3. **sampling cycles**, one every ``sampling_steps`` steps: score the units (criteria averaged over the cycles so
   far), take the ``target_num_redundant_groups`` lowest as the candidate set; the *violating* units are those
   whose membership changed since the previous cycle. Sampling ends when at most ``tolerance`` units violate or
   after ``max_cycle_period`` cycles.
4. **hybrid training** (``hybrid_training_steps`` steps): the final candidates shrink linearly to zero, as in a
   HESSO period; afterwards they are held at zero.

The loss is read from ``step(closure)``'s return value or ``step(loss=...)``; without one, sensitivities are 0.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Union, cast

import torch
from torch import Tensor
from torch.optim.optimizer import required

from . import redundancy
from .base_hybrid_sparse_optimizer import BaseHybridSparseOptimizer
from .base_optimizer import DescentPlan
from .importance_score import DEFAULT_IMPORTANCE_WEIGHTS

logger = logging.getLogger(__name__)

TRIAL_SPARSITIES = (0.25, 0.5, 0.75)


class HESSOCRIC(BaseHybridSparseOptimizer):
    """The HESSOCRIC optimizer (module docstring). Not reachable from ``OTO``; build it on
    ``oto.get_param_groups()``."""

    def __init__(self, params, variant: str = "sgd", lr: float = cast(float, required),
                 first_momentum: Optional[float] = None,
                 second_momentum: Optional[float] = None, dampening: Optional[float] = None,
                 weight_decay: Optional[float] = None, target_group_sparsity: float = 0.5, tolerance: int = 0,
                 group_divisible: int = 1, start_cric_step: int = 0, max_cycle_period: int = 10,
                 sampling_steps: Optional[int] = None, hybrid_training_steps: Optional[int] = None,
                 importance_score_criteria: Union[str, Dict[str, float], None] = "default",
                 proj_per_node_group: bool = True, fixed_zero_groups: bool = True,
                 moment_initialization: str = "standard", non_finite: str = "raise"):
        for name, value in (("start_cric_step", start_cric_step), ("tolerance", tolerance)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name, count in (("max_cycle_period", max_cycle_period), ("sampling_steps", sampling_steps),
                            ("hybrid_training_steps", hybrid_training_steps)):
            if count is not None and (int(count) != count or count < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
        self._criteria_defaults = {**DEFAULT_IMPORTANCE_WEIGHTS, "loss": 1.0}
        super().__init__(params, variant=variant, lr=lr, first_momentum=first_momentum,
                         second_momentum=second_momentum, dampening=dampening, weight_decay=weight_decay,
                         target_group_sparsity=target_group_sparsity, group_divisible=group_divisible,
                         importance_score_criteria=importance_score_criteria, fixed_zero_groups=fixed_zero_groups,
                         moment_initialization=moment_initialization, non_finite=non_finite)
        if importance_score_criteria in (None, "default"):
            self.importance_score_criteria = dict(self._criteria_defaults)
        self.tolerance = int(tolerance)
        self.start_cric_step = int(start_cric_step)
        self.max_cycle_period = int(max_cycle_period)
        self.sampling_steps = int(sampling_steps or 1)
        self.hybrid_training_steps = int(hybrid_training_steps or 1)
        self.proj_per_node_group = bool(proj_per_node_group)
        self._setup_pruning_schedule(0, self.hybrid_training_steps, 1)
        self.stage = "plain"
        self.stage_start = self.start_cric_step
        self.probe_index = 0
        self.reference_loss: Optional[float] = None
        self.group_sensitivity: Dict[int, List[float]] = {}
        self.num_cycles = 0
        self.candidate_idxes: List[int] = []
        self.historical_violating_idxes: List[int] = []
        self.num_violating = 0
        self._score_sum: Optional[Tensor] = None
        self._probe_cache: List[tuple] = []
        self._trial_pending = False
        self._warned_no_loss = False

    def _extra_criteria(self) -> tuple:
        return ("loss",)

    # -- step -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None, loss=None):
        """One step; ``loss`` (or the closure's result) feeds the probing stage."""
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self.gradients_are_finite():
            return loss
        loss_value = None if loss is None else float(loss)
        self.num_steps += 1
        self.compute_grad_variant()
        if self.stage == "plain" and self.num_steps > self.start_cric_step:
            self._enter("probing" if self.proj_per_node_group else "sampling")
        if self.stage == "probing":
            self._probe(loss_value)
        if self.stage == "sampling" and (self.num_steps - self.stage_start - 1) % self.sampling_steps == 0:
            self._sample_cycle()
        if not self._descend():
            return loss
        if self.stage == "probing" and not self._trial_pending and self.reference_loss is not None:
            self._start_trial()
        if self.stage == "hybrid":
            position = self.num_steps - self.stage_start
            self._shrink_active((self.hybrid_training_steps - position) / (self.hybrid_training_steps - position + 1))
            if position >= self.hybrid_training_steps:
                self.commit_redundant_idxes()
                self._enter("pruned")
        self._hold_pruned_at_zero()
        self.seal_norm_bounds()
        return loss

    def _enter(self, stage: str) -> None:
        self.stage, self.stage_start = stage, self.num_steps - 1
        logger.info("HESSOCRIC step %d: %s stage", self.num_steps, stage)
        if stage == "hybrid":
            self._select_final()

    def _descend(self) -> bool:
        """The gradient step of every group; False (nothing written) when it would not stay finite."""
        plan = DescentPlan()
        for index, group in enumerate(self.param_groups):
            plan.add(group, [(j, group["lr"]) for j in range(len(group["params"]))], self._variants[index],
                     decay=group["variant"] == "adamw")
        if not self.update_is_finite(plan.unsafe_names(self.norm_bounds)):
            return False
        plan.run()
        return True

    # -- probing ----------------------------------------------------------------------------------------
    def _probes(self) -> List[tuple]:
        return [(index, sparsity) for index in self._unit_groups() for sparsity in TRIAL_SPARSITIES]

    def _probe(self, loss_value: Optional[float]) -> None:
        if loss_value is None and not self._warned_no_loss:
            logger.warning("HESSOCRIC probing needs the loss: call step(closure) or step(loss=loss)")
            self._warned_no_loss = True
        if self._trial_pending:  # the forward of this step saw the trial: record it and undo it
            index, sparsity = self._probes()[self.probe_index]
            ratio = 0.0 if not (loss_value and self.reference_loss) else loss_value / self.reference_loss - 1.0
            self.group_sensitivity.setdefault(index, []).append(max(0.0, ratio))
            for unit_slices, where, values in self._probe_cache:
                unit_slices.target.index_copy_(unit_slices.axis, where, values)
            self._probe_cache = []
            self._trial_pending = False
            self.reference_loss = None
            self.probe_index += 1
            if self.probe_index >= len(self._probes()):
                self._enter("sampling")
            return
        self.reference_loss = loss_value if loss_value else 1.0

    def _start_trial(self) -> None:
        index, sparsity = self._probes()[self.probe_index]
        start, count = self.layout.group_ranges[index]
        scores = self.compute_importance_scores()[start:start + count]
        chosen = (torch.argsort(scores, stable=True)[:int(count * sparsity)] + start).tolist()
        self._probe_cache = []
        for unit_slices, where in zip(self.layout.slices, self.layout.positions(chosen)):
            if where.numel():
                self._probe_cache.append((unit_slices, where, unit_slices.target.index_select(unit_slices.axis, where)))
                unit_slices.target.index_fill_(unit_slices.axis, where, 0)
        self._trial_pending = True

    # -- sampling ---------------------------------------------------------------------------------------
    def compute_importance_scores(self) -> Tensor:
        """Criteria scores plus the ``"loss"`` criterion (group loss sensitivity of each unit's group)."""
        weights = dict(self.importance_score_criteria)
        loss_weight = weights.pop("loss", 0.0)
        saved, self.importance_score_criteria = self.importance_score_criteria, weights
        try:
            overall = super().compute_importance_scores()
        finally:
            self.importance_score_criteria = saved
        if loss_weight and self.group_sensitivity:
            sensitivity = torch.zeros_like(overall)
            for index, values in self.group_sensitivity.items():
                start, count = self.layout.group_ranges[index]
                sensitivity[start:start + count] = sum(values) / len(values)
            scale = torch.sqrt(1e-8 + sensitivity.pow(2).sum()) + 1e-8
            overall = overall + loss_weight * sensitivity / scale
            self._scores = overall
        return overall

    def _candidates(self, scores: Tensor) -> List[int]:
        eligible = self._eligible_mask()
        room = {i: max(redundancy.allowed_counts(self.param_groups[i]["num_groups"], self.group_divisible,
                                                     self.max_group_sparsity))
                for i in self._unit_groups()}
        first = {i: self.param_groups[i]["num_groups"] % self.group_divisible if self.group_divisible > 1 else 0
                 for i in self._unit_groups()}
        return redundancy.select_units(scores, eligible, self.layout.unit_group, room, first,
                                       self.target_num_redundant_groups, self.group_divisible).tolist()

    def _sample_cycle(self) -> None:
        scores = self.compute_importance_scores()
        self._score_sum = scores.clone() if self._score_sum is None else self._score_sum + scores
        self.num_cycles += 1
        candidates = self._candidates(self._score_sum / self.num_cycles)
        violating = sorted(set(candidates) ^ set(self.candidate_idxes)) if self.num_cycles > 1 else candidates
        self.num_violating = len(violating)
        self.historical_violating_idxes = sorted(set(self.historical_violating_idxes) | set(violating))
        self.candidate_idxes = candidates
        if self.num_cycles > 1 and self.num_violating <= self.tolerance or self.num_cycles >= self.max_cycle_period:
            self._enter("hybrid")

    def _select_final(self) -> None:
        self.active_redundant_group_idxes = list(self.candidate_idxes)
        self._refresh_unit_sets()

    # -- metrics and state --------------------------------------------------------------------------------
    def compute_metrics(self):
        metrics = super().compute_metrics()
        metrics.num_violating_groups = self.num_violating
        metrics.num_trial_violating_groups = len(self.candidate_idxes)
        metrics.num_historical_violating_groups = len(self.historical_violating_idxes)
        return metrics

    def _state_keys(self) -> List[str]:
        return super()._state_keys() + [
            "tolerance", "start_cric_step", "max_cycle_period", "sampling_steps", "hybrid_training_steps",
            "proj_per_node_group", "stage", "stage_start", "probe_index", "reference_loss", "group_sensitivity",
            "num_cycles", "candidate_idxes", "historical_violating_idxes", "num_violating"]
