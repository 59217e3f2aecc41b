"""GETA (QASSO): joint structured pruning and bit-width learning while training (SPEC 5.7).

Phases on the step counter ``n`` (``S_q, T_q, K_q``: start, length and periods of the projection stage;
``S_p, T_p, K_p``: those of the pruning stage; ``D = T_q // K_q``, ``P = T_p // K_p``):

- **warm-up** ``n <= S_q``: plain steps, quantizer parameters with ``lr_quant``, the others with ``lr``; a weight
  step ``d_quant_wt`` moves by ``lr_quant`` of itself (its gradient variant times ``|d|``) and no quantizer parameter
  takes weight decay (issue 19; the reference steps ``d`` by ``lr_quant`` and decays everything);
- **projection** ``S_q < n <= S_p + T_p``: the same steps, then every layer's weight step ``d`` is projected into
  ``[d(max_bit_wt), d(min_bit_wt)]`` and its activation step into ``[d(max_bit_act), d(min_bit_act)]`` (for its
  own range ``q_m`` and exponent ``t``). At the start of projection periods ``1 .. K_q - 1`` (steps
  ``S_q + 1 + k D``) ``max_bit_wt`` drops by ``bit_reduction``, never below ``min_bit_wt``;
- **pruning periods** inside it, exactly as HESSO's (same selection rule, :mod:`.redundancy`): a group with
  redundant units takes the *joint step* instead -- its weight ranges/exponents learn with ``lr_quant``, a forget
  rate ``gamma`` and a weight step ``d`` come from :meth:`GETA.compute_gamma_d`; every quantized layer of the group
  keeps its step unless that ``d`` is finer (a bound, never a coarsening; issue 19), and the redundant slices
  become ``(x - gamma * Q(x) - lr * g) * (P - t - 1) / (P - t)`` (``Q`` the layer's quantizer, identity for float
  tensors; the factor is HESSO's fade). At the end of a period its units are exactly zero and stay so;
- **fixed bits** ``n > S_p + T_p``: at its first step each layer's rounded bit widths are recorded in
  ``bit_layers``; afterwards every step keeps ``d`` at those bit widths while ``q_m`` and ``t`` train on.

Float groups (no quantized layer: a float model, a BatchNorm-only group, an unconverted layer) go through the
same phases; the joint step shrinks their redundant slices with ``gamma`` and skips everything about bits.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import Tensor, nn
from torch.optim.optimizer import required

from ..quantization.quantizer import (MIN_MAGNITUDE, QuantizationType, bit_width, fake_quantize, power_of_log,
                                      step_size_for_bits)
from .base_hybrid_sparse_optimizer import BaseHybridSparseOptimizer
from .base_optimizer import DescentPlan, check_choice, check_non_negative
from .finite import NormBounds, TensorSnapshot, non_finite_names, slice_norms, within_headroom
from .metrics import SparseOptimizerMetrics
from .quant_groups import QuantGroup, QuantLayer, QuantLayerTable, classify_group, unit_step
from .unit_layout import UnitSlices
from .training_health import HealthThresholds, QuantizerSnapshot, TrainingCollapseWarning, TrainingHealth
from .utils import safe_open_file

logger = logging.getLogger(__name__)

#: ``forget_rate_guard`` values (SPEC 12.4 O5): the forget rate is 0 when the redundant slices' clipped values
#: are already (near) zero. ``"magnitude"`` tests their root mean square ``sqrt(mean(x_c^2)) < 1e-8``;
#: ``"signed_mean"`` reproduces the reference's ``mean(x_c) < 1e-8``, which holds for about half of all
#: zero-mean weight slices.
FORGET_RATE_GUARDS = ("magnitude", "signed_mean")

#: Constants of the forget-rate and step-size rules (SPEC 5.7): ``eta`` bounds the forget step against the
#: gradient step, ``zeta`` the quantization residual step, ``backoff`` is the factor by which ``gamma`` shrinks
#: while the step size is below its lower bound.
ETA, ZETA, BACKOFF = 0.999, 0.9, 0.8

PHASES = ("warmup", "projection", "fixed")


class _RedundantPart:
    """Redundant slices of one parameter in a joint step: values before the step, gradient variant, role.

    ``clipped`` is ``C(W)`` of a quantized weight's slices (set by :meth:`GETA._redundant_sums`), reused to
    requantize them with the new step.
    """

    __slots__ = ("slice_index", "values", "grad", "layer", "clipped")

    def __init__(self, slice_index: int, values: Tensor, grad: Tensor, layer: Optional[QuantLayer]):
        self.slice_index = slice_index
        self.values = values
        self.grad = grad
        self.layer = layer
        self.clipped: Optional[Tensor] = None


class _Forgetting:
    """The forget term of one group's joint step, computed before anything is written: ``slices -= gamma * Q(x)``
    for each redundant slice, applied after the gradient step once it is known to stay finite."""

    def __init__(self, gamma: float):
        self.gamma = gamma
        self.terms: List[Tuple[UnitSlices, Tensor, Tensor, str]] = []  # (unit slices, positions, Q(x), param name)
        self.norms: List[float] = []

    def add(self, unit_slices: UnitSlices, positions: Tensor, forgotten: Tensor, name: str) -> None:
        self.terms.append((unit_slices, positions, forgotten, name))

    def unsafe_names(self) -> List[str]:
        """Parameters whose term ``gamma * Q(x)`` is not finite or not within the headroom (:mod:`.finite`)."""
        self.norms = [abs(self.gamma) * norm for norm in slice_norms([t for _, _, t, _ in self.terms])]
        return [name for (_, _, t, name), norm in zip(self.terms, self.norms) if not within_headroom(norm, t.dtype)]

    def apply(self, bounds: NormBounds) -> None:
        for (unit_slices, positions, forgotten, _), norm in zip(self.terms, self.norms):
            unit_slices.target.index_add_(unit_slices.axis, positions, forgotten, alpha=-self.gamma)
            bounds.grow(unit_slices.param, norm)


class GETA(BaseHybridSparseOptimizer):
    """The GETA optimizer (module docstring). Reference signature (SPEC 5.1) plus, keyword-only in spirit:

    ``fixed_zero_groups`` (hold pruned units at zero after their period, default True);
    ``enable_grad_clipping`` (clamp every ``.grad`` into ``[grad_clip_min, grad_clip_max]`` before each step;
    the reference defines the bounds but never clips, so the default is False); ``forget_rate_guard`` (O5,
    :data:`FORGET_RATE_GUARDS`) and the switches of :class:`BaseHybridSparseOptimizer`.
    ``health_thresholds`` (:class:`.training_health.HealthThresholds`) sets when the end-of-period check warns of
    a collapse; give the optimizer the training loss with ``step(closure)`` or :meth:`report_loss` for its loss
    trend. ``verbose`` (``True`` or ``"True"``) writes per-step diagnostics to ``<log_dir>/geta_diagnostics.txt``;
    nothing is written otherwise. ``device`` is kept for compatibility and unused.
    """

    def __init__(self, params, variant: str = "sgd", lr: float = cast(float, required), lr_quant: float = 1e-3,
                 first_momentum: Optional[float] = None, second_momentum: Optional[float] = None,
                 dampening: Optional[float] = None, weight_decay: Optional[float] = None,
                 target_group_sparsity: float = 0.5, start_projection_step: int = 0, projection_steps: int = 1,
                 projection_periods: int = 1, start_pruning_step: int = 1, pruning_steps: int = 1,
                 pruning_periods: int = 1, group_divisible: int = 1,
                 importance_score_criteria: Union[str, Dict[str, float], None] = "default", bit_reduction: int = 2,
                 min_bit_wt: int = 2, max_bit_wt: int = 16, min_bit_act: int = 2, max_bit_act: int = 16,
                 grad_clip_min: float = -1.0, grad_clip_max: float = 1.0, verbose: Union[str, bool] = "False",
                 device: str = "cuda", log_dir: str = "outputs", fixed_zero_groups: bool = True,
                 enable_grad_clipping: bool = False, forget_rate_guard: str = "magnitude",
                 redundant_selection: str = "score", auxiliary_scaling: str = "once",
                 moment_initialization: str = "standard", health_thresholds: Optional[HealthThresholds] = None,
                 max_group_sparsity: Optional[float] = None, non_finite: str = "raise",
                 importance_normalization: str = "per_unit"):
        check_non_negative("lr_quant", lr_quant)
        check_choice("forget_rate_guard", forget_rate_guard, FORGET_RATE_GUARDS)
        _check_bits("min_bit_wt", "max_bit_wt", min_bit_wt, max_bit_wt)
        _check_bits("min_bit_act", "max_bit_act", min_bit_act, max_bit_act)
        if isinstance(bit_reduction, bool) or not bit_reduction >= 0:
            raise ValueError(f"bit_reduction must be >= 0, got {bit_reduction!r}")
        if not grad_clip_min < grad_clip_max:
            raise ValueError(f"grad_clip_min ({grad_clip_min}) must be smaller than grad_clip_max ({grad_clip_max})")
        super().__init__(params, variant=variant, lr=lr, first_momentum=first_momentum,
                         second_momentum=second_momentum, dampening=dampening, weight_decay=weight_decay,
                         target_group_sparsity=target_group_sparsity, group_divisible=group_divisible,
                         additional_defaults={"lr_quant": lr_quant},
                         importance_score_criteria=importance_score_criteria, fixed_zero_groups=fixed_zero_groups,
                         redundant_selection=redundant_selection, auxiliary_scaling=auxiliary_scaling,
                         moment_initialization=moment_initialization, max_group_sparsity=max_group_sparsity,
                         non_finite=non_finite, importance_normalization=importance_normalization)
        self._setup_pruning_schedule(start_pruning_step, pruning_steps, pruning_periods)
        self._setup_projection_schedule(start_projection_step, projection_steps, projection_periods)
        self.lr_quant = lr_quant
        self.bit_reduction = bit_reduction
        self.min_bit_wt, self.max_bit_wt = min_bit_wt, max_bit_wt
        self.min_bit_act, self.max_bit_act = min_bit_act, max_bit_act
        self.initial_max_bit_wt = max_bit_wt
        self.grad_clip_min, self.grad_clip_max = grad_clip_min, grad_clip_max
        self.enable_grad_clipping = bool(enable_grad_clipping)
        self.forget_rate_guard = forget_rate_guard
        self.verbose = verbose
        self.device = device
        self.log_dir = log_dir
        self.logger = logger
        self.gamma = 0.0
        self.d_quant: Optional[float] = 0.0
        self.bit_layers: Dict[str, Dict[str, int]] = {}
        self._diagnostics: Optional[logging.Logger] = None
        self._quant_groups: List[QuantGroup] = [classify_group(g, i) for i, g in enumerate(self.param_groups)]
        layers = [layer for quant_group in self._quant_groups for layer in quant_group.layers]
        self._layers_by_name = {layer.name: layer for layer in layers}
        # Quantizer parameters take no weight decay: their loss gradient is ~0 once the bits are fixed, so a coupled
        # decay under Adam became a unit-size step pulling every activation range q_m down (issue 19).
        self._decay_exempt = {(index, j) for index, quant_group in enumerate(self._quant_groups)
                              for j in quant_group.quant}
        self._weight_table = QuantLayerTable(self.param_groups, layers, "wt")
        self._act_table = QuantLayerTable(self.param_groups, layers, "act")
        self._own_slices_by_group: Dict[int, List[int]] = {}
        for k, unit_slices in enumerate(self.layout.slices):
            if unit_slices.own_group:
                self._own_slices_by_group.setdefault(unit_slices.group_index, []).append(k)
        self._weight_layer_of_param = {(layer.group_index, layer.weight): layer for layer in layers
                                       if layer.weight is not None and layer.has_weight_quantizer}
        self._frozen_steps: Dict[str, Tensor] = {}
        self.health = TrainingHealth(health_thresholds)
        logger.info("Setup GETA: %d quantized layers, %d prunable units, target %d redundant (sparsity %s); "
                    "projection %d x %d steps from step %d, pruning %d x %d steps from step %d, weight bits [%d, %d], "
                    "activation bits [%d, %d]", len(layers), self.total_num_groups, self.target_num_redundant_groups,
                    self.target_group_sparsity, self.projection_periods, self.projection_period_duration,
                    self.start_projection_step, self.pruning_periods, self.pruning_period_duration,
                    self.start_pruning_step, min_bit_wt, max_bit_wt, min_bit_act, max_bit_act)
        logger.info("Target redundant groups per period: %s", self.active_num_redundant_groups)

    def _setup_projection_schedule(self, start: int, steps: int, periods: int) -> None:
        if isinstance(start, bool) or int(start) != start or start < 0:
            raise ValueError(f"start_projection_step must be an integer >= 0, got {start!r}")
        self.projection_periods = int(max(1, periods))
        if int(steps) != steps or steps < self.projection_periods:
            raise ValueError(f"projection_steps ({steps!r}) must be an integer >= projection_periods "
                             f"({self.projection_periods}): each projection period needs at least one step")
        self.start_projection_step = int(start)
        self.projection_steps = int(steps)
        self.projection_period_duration = self.projection_steps // self.projection_periods

    # -- schedule ---------------------------------------------------------------------------------------
    def phase(self, step: Optional[int] = None) -> str:
        """``"warmup"``, ``"projection"`` or ``"fixed"`` at ``step`` (default: the last step taken)."""
        step = self.num_steps if step is None else step
        if step <= self.start_projection_step:
            return "warmup"
        if step > self.start_pruning_step + self.pruning_steps:
            return "fixed"
        return "projection"

    def _reduce_bit_range_if_due(self, step: int) -> None:
        offset = step - self.start_projection_step - 1
        duration = self.projection_period_duration
        if offset > 0 and offset % duration == 0 and offset // duration <= self.projection_periods - 1:
            reduced = max(self.max_bit_wt - self.bit_reduction, self.min_bit_wt)
            if reduced != self.max_bit_wt:
                logger.info("step %d: weight bit range [%s, %s] -> [%s, %s]", step, self.min_bit_wt,
                            self.max_bit_wt, self.min_bit_wt, reduced)
            self.max_bit_wt = reduced

    # -- step -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        """One training step (module docstring). The closure's loss, if any, is reported (:meth:`report_loss`)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            self.report_loss(loss)
        if not self.gradients_are_finite():
            return loss
        self.num_steps += 1
        step = self.num_steps
        if self.enable_grad_clipping:
            self.grad_clipping()
        self.compute_grad_variant()
        self._reduce_bit_range_if_due(step)
        self._start_period_if_due(step)
        position = self._period_position(step)
        phase = self.phase(step)
        joint = [i for i, g in enumerate(self.param_groups) if g.get("active_redundant_idxes")]
        captured = {index: self._capture_redundant(index) for index in joint}
        # The quantizer parameters (small) are updated first and restored if anything would not be finite; the
        # weights are written only after every check passed (see :mod:`.finite`).
        snapshot = TensorSnapshot(self._quantizer_parameters())
        self._descent_plan(joint, quantizers=True).run()
        sums = self._joint_sums(joint, captured)
        forgetting = [self._joint_forgetting(index, captured[index], position, sums[index]) for index in joint]
        self._project_bits(phase, set(joint))
        weights = self._descent_plan(joint, quantizers=False)
        unsafe = self._unsafe_update_names(weights, forgetting)
        if unsafe:
            snapshot.restore()
        if not self.update_is_finite(unsafe):
            return loss
        weights.run()
        for forget in forgetting:
            forget.apply(self.norm_bounds)
        if self.active_redundant_group_idxes:
            # Every redundant slice, the groups' own included, fades by (P - t - 1) / (P - t), as in HESSO: the
            # forget rate alone is capped near lr * 1e-3 when the gradient opposes it, so the commit at the
            # period's end used to remove units at full strength (issue 19).
            self._shrink_active(self._shrink_factor(position))
        self._hold_pruned_at_zero()
        self._commit_if_period_ends(step, position)
        self.seal_norm_bounds()
        self._check_health_if_period_ends(step)
        return loss

    def _quantizer_parameters(self) -> List[Tensor]:
        return [group["params"][j] for group, quant_group in zip(self.param_groups, self._quant_groups)
                for j in quant_group.quant]

    def _unsafe_update_names(self, weights: DescentPlan, forgetting: List["_Forgetting"]) -> List[str]:
        """Parameters this step would make NaN/inf: quantizer parameters already updated (they are small), the
        weights' descent and the forget terms of the joint step, checked before they are written."""
        names = [name for group, quant_group in zip(self.param_groups, self._quant_groups)
                 for name in (group["p_names"][j] for j in quant_group.quant)]
        unsafe = non_finite_names(self._quantizer_parameters(), names)
        unsafe += weights.unsafe_names(self.norm_bounds)
        for forget in forgetting:
            unsafe += forget.unsafe_names()
        return list(dict.fromkeys(unsafe))

    # -- training health (issue 19) -------------------------------------------------------------------------
    def report_loss(self, loss: Union[Tensor, float]) -> None:
        """Give GETA one step's training loss (a tensor or a number) for its loss trend and collapse check.

        Call it once per step (``step(closure)`` calls it with the closure's loss). Reads the value on the host.
        """
        self.health.record_loss(float(loss.detach()) if isinstance(loss, Tensor) else float(loss))

    def quantizer_snapshot(self) -> QuantizerSnapshot:
        """Every quantized layer's rounded weight/activation bit width and step size ``d`` now."""
        snapshot = QuantizerSnapshot(weight_floor=self.min_bit_wt, activation_floor=self.min_bit_act,
                                     weight_ceiling=self.initial_max_bit_wt,
                                     activation_ceiling=self.max_bit_act)
        for table, bits, steps in ((self._weight_table, snapshot.weight_bits, snapshot.weight_step_sizes),
                                   (self._act_table, snapshot.activation_bits, snapshot.activation_step_sizes)):
            rows = list(range(len(table)))
            if not rows:
                continue
            widths = table.bit_widths(rows).round().tolist()
            sizes = torch.cat([table.steps[k].detach() for k in rows]).abs().tolist()
            for layer, width, size in zip(table.layers, widths, sizes):
                bits[layer.name], steps[layer.name] = int(width), size
        return snapshot

    def _periods_ending_at(self, step: int) -> List[Tuple[str, int]]:
        """``(kind, 1-based index)`` of the projection and pruning periods whose last step is ``step``."""
        ended = []
        for kind, start, duration, periods in (
                ("projection", self.start_projection_step, self.projection_period_duration, self.projection_periods),
                ("pruning", self.start_pruning_step, self.pruning_period_duration, self.pruning_periods)):
            offset = step - start
            if offset > 0 and offset % duration == 0 and offset // duration <= periods:
                ended.append((kind, offset // duration))
        return ended

    def _check_health_if_period_ends(self, step: int) -> None:
        ended = self._periods_ending_at(step)
        if not ended:
            return
        kind = " and ".join(kind for kind, _ in ended)
        for problem in self.health.end_period(kind, ended[-1][1], step, self.quantizer_snapshot()):
            logger.warning("possible training collapse: %s", problem)
            warnings.warn(f"possible training collapse: {problem}", TrainingCollapseWarning, stacklevel=4)

    @torch.no_grad()
    def compute_metrics(self) -> SparseOptimizerMetrics:
        """Sparsity metrics (SPEC 5.8) plus ``loss_trend`` (mean loss per ended period, then the running one) and
        the per-layer ``weight_bits``, ``activation_bits``, ``weight_step_sizes``, ``activation_step_sizes``."""
        metrics = super().compute_metrics()
        snapshot = self.quantizer_snapshot()
        metrics.loss_trend = self.health.loss_trend()
        metrics.weight_bits, metrics.activation_bits = snapshot.weight_bits, snapshot.activation_bits
        metrics.weight_step_sizes = snapshot.weight_step_sizes
        metrics.activation_step_sizes = snapshot.activation_step_sizes
        return metrics

    def _descent_plan(self, joint: Sequence[int], quantizers: bool) -> DescentPlan:
        """The gradient step of the quantizer parameters (``quantizers``) or of every other parameter."""
        plan = DescentPlan()
        for index, group in enumerate(self.param_groups):
            quant_group = self._quant_groups[index]
            lr, lr_quant = group["lr"], group["lr_quant"]
            if not quantizers:
                plan.add(group, [(j, lr) for j in quant_group.plain], self._variants[index],
                         decay=group["variant"] == "adamw" and index not in joint)
            elif index in joint:
                plan.add(group, [(j, lr_quant) for j in quant_group.range_exponent_wt], self._variants[index],
                         decay=False)
            else:
                plan.add(group, [(j, lr_quant) for j in quant_group.quant], self._relative_step_variants(index),
                         decay=False)
        return plan

    def _relative_step_variants(self, index: int) -> List[Optional[Tensor]]:
        """Group ``index``'s gradient variants with each weight step size's scaled by ``|d_quant_wt|``.

        A weight step then moves by ``lr_quant`` *of itself* per step. Adam normalises a gradient to about one, so an
        absolute step moved ``d_quant_wt`` by ``lr_quant`` (1e-3) per step, about ``d`` itself for an 8-bit layer,
        across its whole projected bit range. Activation steps keep the absolute step: making them relative too
        froze activations at 16 bits and measured worse on the 30-epoch recipe (benchmarks/RESULTS.md, issue 19).
        """
        params, variants = self.param_groups[index]["params"], list(self._variants[index])
        for j in self._quant_groups[index].weight_steps:
            if variants[j] is not None:
                variants[j] = variants[j] * params[j].detach().abs()
        return variants

    def _project_bits(self, phase: str, joint: set) -> None:
        layers = [l for l in self._weight_table.layers + self._act_table.layers if l.group_index not in joint]
        if phase == "projection":
            self._weight_table.clamp_bits(self._weight_table.select(layers), self.min_bit_wt, self.max_bit_wt)
            self._act_table.clamp_bits(self._act_table.select(layers), self.min_bit_act, self.max_bit_act)
        elif phase == "fixed":
            self._freeze_bit_widths({l.group_index for l in layers})
            for table, key in ((self._weight_table, "weight"), (self._act_table, "activation")):
                rows = table.select(layers)
                if rows:
                    table.set_bits(rows, self._frozen_unit_steps(table, key)[rows])

    def _freeze_bit_widths(self, group_indices: set) -> None:
        missing = {l.group_index for l in self._weight_table.layers + self._act_table.layers
                   if l.name not in self.bit_layers and l.group_index in group_indices}
        for index in sorted(missing):
            self.bit_layers.update(self.get_bitwidth_dict(self.param_groups[index]))
        if missing:
            self._frozen_steps.clear()

    def _frozen_unit_steps(self, table: QuantLayerTable, key: str) -> Tensor:
        """``unit_step(bits)`` per layer of ``table`` from ``bit_layers`` (NaN for layers not frozen yet)."""
        if key not in self._frozen_steps:
            self._frozen_steps[key] = torch.tensor(
                [unit_step(self.bit_layers[l.name][key]) if key in self.bit_layers.get(l.name, {}) else math.nan
                 for l in table.layers], dtype=torch.float64)
        return self._frozen_steps[key]

    # -- joint step -------------------------------------------------------------------------------------
    def _capture_redundant(self, index: int,
                           positions: Optional[Sequence[Tensor]] = None) -> List[_RedundantPart]:
        """The redundant slices of group ``index``'s parameters (copies) with their gradient variants."""
        positions = self._active_positions if positions is None else positions
        parts = []
        for k in self._own_slices_by_group.get(index, []):
            where = positions[k]
            if not where.numel():
                continue
            unit_slices = self.layout.slices[k]
            values = unit_slices.target.detach().index_select(unit_slices.axis, where)
            variant = self._variants[index][unit_slices.param_index]
            grad = (torch.zeros_like(values) if variant is None
                    else unit_slices.along(variant).index_select(unit_slices.axis, where))
            layer = self._weight_layer_of_param.get((index, unit_slices.param_index))
            parts.append(_RedundantPart(k, values, grad, layer))
        return parts

    def _joint_sums(self, joint: Sequence[int], captured: Dict[int, List[_RedundantPart]]) -> Dict[int, List[float]]:
        """:meth:`_redundant_sums` of every joint group, summed over the shards in one reduction (:mod:`.fsdp`)."""
        if not joint:
            return {}
        local = torch.tensor([self._redundant_sums(self.param_groups[i], captured[i]) for i in joint],
                             dtype=torch.float64)
        return dict(zip(joint, self.layout.sum_over_ranks(local).tolist()))

    def _joint_forgetting(self, index: int, parts: List[_RedundantPart], position: int,
                          sums: Sequence[float]) -> "_Forgetting":
        """The joint step's forget term of group ``index`` (``x`` the redundant slices' values before the step,
        ``sums`` their :meth:`_joint_sums`): ``gamma`` and ``Q(x)``, with the group's new weight steps written;
        the slices change in :meth:`_Forgetting.apply`, after the gradient step."""
        group = self.param_groups[index]
        gamma, step_size = self._gamma_and_step(index, sums, position, (self.min_bit_wt, self.max_bit_wt))
        self.gamma, self.d_quant = gamma, step_size
        forget = _Forgetting(gamma)
        if not gamma:
            return forget
        params = group["params"]
        for part in parts:
            unit_slices = self.layout.slices[part.slice_index]
            forgotten = part.values
            if part.layer is not None:
                clipped = part.clipped
                assert clipped is not None  # set by _redundant_sums for every quantized weight
                step = _magnitude(params[part.layer.index("d_quant_wt")], clipped)
                # Q(W) = d * round(C(W) / d) (round is odd-symmetric), with the new step d.
                forgotten = clipped.div_(step).round_().mul_(step)
            forget.add(unit_slices, self._active_positions[part.slice_index], forgotten,
                       group["p_names"][unit_slices.param_index])
        return forget

    def compute_gamma_d(self, param_group: dict, active_redundant_idxes: Optional[Sequence[int]] = None,
                        bit_range: Optional[Sequence[float]] = None) -> Tuple[float, Optional[float]]:
        """Forget rate ``gamma`` and weight step ``d`` for the redundant units of ``param_group`` (SPEC 5.7).

        ``active_redundant_idxes`` are group-local unit indices (default: the group's current ones), ``bit_range``
        ``[b_lo, b_hi]`` (default ``[min_bit_wt, max_bit_wt]``). Reads the parameters and the current step's
        gradient variants; changes nothing. ``d`` is None for a group without quantized layers. Rules:
        ``cos_c = <x_c, g> / (max(||x_c||, 1e-8) ||g||)`` over the clipped redundant values ``x_c`` (clamped into
        [-1, 1]; NaN -> gamma 0); ``gamma = 1 / (P - t)`` if ``cos_c >= 0`` else
        ``min(1 / (P - t), (1 - eta) lr ||g|| / (|cos_c| ||x_c||))``; ``gamma = 0`` if the slices are already zero
        (``forget_rate_guard``). ``d = d(b_lo)`` if ``cos_r >= 0`` (``r`` the quantization residuals) or
        ``gamma = 0``, else ``-zeta eta lr ||g|| / (gamma cos_r ||r||)`` with ``gamma`` reduced by 0.8 as often as
        needed to bring ``d`` up to ``d(b_hi)`` (in closed form; ``d <= 0``, e.g. ``lr = 0``, gives ``gamma = 0``,
        ``d = d(b_hi)``), then capped at ``d(b_lo)``.
        """
        index = self._group_index(param_group)
        if active_redundant_idxes is None:
            positions = self._active_positions
        else:
            start = self.layout.group_ranges[index][0]
            positions = self.layout.positions([start + int(i) for i in active_redundant_idxes])
        sums = self._joint_sums([index], {index: self._capture_redundant(index, positions)})[index]
        bit_range = (self.min_bit_wt, self.max_bit_wt) if bit_range is None else bit_range
        return self._gamma_and_step(index, sums, self._period_position(max(self.num_steps, 1)), bit_range,
                                    apply=False)

    def _gamma_and_step(self, index: int, sums: Sequence[float], position: int,
                        bit_range: Sequence[float], apply: bool = True) -> Tuple[float, Optional[float]]:
        group = self.param_groups[index]
        lr = group["lr"]
        clip_grad, clip_sq, residual_grad, residual_sq, grad_sq, clip_sum, count = sums
        clip_norm, residual_norm, grad_norm = math.sqrt(clip_sq), math.sqrt(residual_sq), math.sqrt(grad_sq)
        cos_clip = _ratio(clip_grad, max(clip_norm, 1e-8) * grad_norm)
        cos_residual = _ratio(residual_grad, max(residual_norm, 1e-8) * grad_norm)
        schedule_rate = 1.0 / max(self.pruning_period_duration - position, 1)
        if self.forget_rate_guard == "magnitude":
            negligible = count == 0 or math.sqrt(clip_sq / count) < 1e-8
        else:
            negligible = count == 0 or clip_sum / count < 1e-8
        if negligible or not math.isfinite(cos_clip):
            if count and not math.isfinite(cos_clip):
                logger.debug("group %s: cos(x_c, g) is not finite; forget rate 0", group["id"])
            gamma = 0.0
        else:
            cos_clip = min(max(cos_clip, -1.0), 1.0)
            if cos_clip >= 0:
                gamma = schedule_rate
            else:
                gamma = min(schedule_rate, -(1.0 - ETA) * lr * grad_norm / (cos_clip * clip_norm))
        layers = [l for l in self._quant_groups[index].layers if l.has_weight_quantizer]
        step_size = None
        if layers:
            gamma, step_size = self._step_size(group, layers, gamma, cos_residual, residual_norm, grad_norm, lr,
                                               bit_range, apply)
        if self._verbose_enabled():
            self._diagnose(group, cos_clip, cos_residual, gamma, step_size)
        return gamma, step_size

    def _step_size(self, group: dict, layers: List[QuantLayer], gamma: float, cos_residual: float,
                   residual_norm: float, grad_norm: float, lr: float, bit_range: Sequence[float],
                   apply: bool) -> Tuple[float, float]:
        rows = self._weight_table.select(layers)
        powers = self._weight_table.range_powers(rows).to(torch.float64)
        widest = float(powers.max())
        low_bits, high_bits = bit_range
        coarsest, finest = widest * unit_step(low_bits), widest * unit_step(high_bits)
        if not math.isfinite(cos_residual) or cos_residual >= 0 or gamma == 0:
            step_size = coarsest
        else:
            step_size = -ZETA * ETA * lr * grad_norm / (gamma * cos_residual * residual_norm)
            if not (step_size > 0 and math.isfinite(step_size)):
                gamma, step_size = 0.0, finest
            elif step_size < finest:
                backoffs = backoffs_needed(step_size, finest)
                gamma *= BACKOFF ** backoffs
                step_size /= BACKOFF ** backoffs
            step_size = min(coarsest, step_size)
        if apply:
            self._bound_joint_steps(rows, powers / widest * step_size, bit_range)
        return gamma, step_size

    @torch.no_grad()
    def _bound_joint_steps(self, rows: List[int], bounds: Tensor, bit_range: Sequence[float]) -> None:
        """Hold each layer's weight step at or below its share ``bounds[k]`` of the joint rule's step, within the
        bit range: ``d <- clamp(min(d, bound), d(b_hi), d(b_lo))``.

        The rule's step is the largest ``d`` for which the forget term stays a descent step (SPEC 5.7); the
        reference assigned it, which re-quantized the whole layer, important units included, at the coarsest
        width whenever the forget rate was small or ``cos_r >= 0`` (issue 19: most pruning steps, and back up
        whenever it was not), and the model degraded over the pruning periods. As a bound it only refines.
        """
        table = self._weight_table
        steps = torch.cat([table.steps[k].detach() for k in rows]).abs()
        powers = table.range_powers(rows)
        low_bits, high_bits = bit_range
        held = torch.minimum(steps, bounds.to(steps.dtype))
        held = torch.minimum(torch.maximum(held, powers * unit_step(high_bits)), powers * unit_step(low_bits))
        torch._foreach_copy_([table.steps[k] for k in rows], list(held.to(steps.dtype).split(1)))

    def _redundant_sums(self, group: dict, parts: List[_RedundantPart]) -> List[float]:
        """``<x_c,g>, |x_c|^2, <r,g>, |r|^2, |g|^2, sum x_c, count`` over the redundant slices (``sum x_c`` only
        for the ``"signed_mean"`` guard).

        For a quantized weight ``x_c = C(W)`` and ``r = Res(W)`` (see :meth:`_clip_helper`,
        :meth:`_residual_helper`), both derived from one computation of ``v = min(|W|, q_m)^t`` that the update
        reuses; other tensors contribute ``x_c = x`` and ``r = 0``.
        """
        if not parts:
            return [0.0] * 7
        rows = []
        params = group["params"]
        signed = self.forget_rate_guard == "signed_mean"
        for part in parts:
            grad = part.grad.reshape(-1)
            values = part.values
            zero = values.new_zeros(())
            if part.layer is not None:
                layer = part.layer
                t_index = layer.index("t_quant_wt")
                clipped = self._clip_helper(values, params[layer.index("q_m_wt")].detach(),
                                            None if t_index is None else params[t_index].detach())
                part.clipped = clipped
                residual = _residual_of_clipped(clipped, params[layer.index("d_quant_wt")]).reshape(-1)
                residual_grad, residual_sq = torch.dot(residual, grad), torch.dot(residual, residual)
            else:
                clipped = values
                residual_grad = residual_sq = zero
            flat = clipped.reshape(-1)
            rows.append(torch.stack([torch.dot(flat, grad), torch.dot(flat, flat), residual_grad, residual_sq,
                                     torch.dot(grad, grad), flat.sum() if signed else zero,
                                     values.new_tensor(float(values.numel()))]))
        return torch.stack(rows).to(torch.float64).sum(dim=0).tolist()

    # -- per-group steps (SPEC 5.7; step() runs the same updates for all groups at once) ---------------------
    def quantize_weight(self, param_group: dict, name: str) -> Tuple[bool, Optional[Tensor]]:
        """``(True, Q(weight))`` if ``name`` is the weight of a quantized layer of ``param_group``, else
        ``(False, None)``."""
        index = self._group_index(param_group)
        params = param_group["params"]
        for layer in self._quant_groups[index].layers:
            if layer.weight is not None and layer.has_weight_quantizer and param_group["p_names"][layer.weight] == name:
                t_index = layer.index("t_quant_wt")
                return True, self._quantize_helper(params[layer.weight], params[layer.index("d_quant_wt")],
                                                   params[layer.index("q_m_wt")],
                                                   None if t_index is None else params[t_index])
        return False, None

    def _plain_group_step(self, param_group: dict) -> List[QuantLayer]:
        index = self._group_index(param_group)
        quant_group = self._quant_groups[index]
        lr, lr_quant = param_group["lr"], param_group["lr_quant"]
        plan = DescentPlan()
        plan.add(param_group, [(j, lr_quant) for j in quant_group.quant], self._relative_step_variants(index),
                 decay=False)
        plan.add(param_group, [(j, lr) for j in quant_group.plain], self._variants[index],
                 decay=param_group["variant"] == "adamw")
        if self.update_is_finite(plan.unsafe_names(self.norm_bounds)):
            plan.run()
        return quant_group.layers

    def partial_projected_gradient_descent_step_range_wt(self, param_group: dict) -> None:
        """Gradient step of ``param_group``, then its weight steps projected into the weight bit range."""
        layers = self._plain_group_step(param_group)
        self._weight_table.clamp_bits(self._weight_table.select(layers), self.min_bit_wt, self.max_bit_wt)

    def partial_projected_gradient_descent_step_range_act(self, param_group: dict) -> None:
        """Gradient step of ``param_group``, then its activation steps projected into the activation bit range."""
        layers = self._plain_group_step(param_group)
        self._act_table.clamp_bits(self._act_table.select(layers), self.min_bit_act, self.max_bit_act)

    def partial_projected_gradient_descent_step_fix(self, param_group: dict, bit_dict: Dict[str, dict]) -> None:
        """Gradient step of ``param_group``, then every layer in ``bit_dict`` held at its bit widths."""
        layers = [l for l in self._plain_group_step(param_group) if l.name in bit_dict]
        for table, key in ((self._weight_table, "weight"), (self._act_table, "activation")):
            rows = table.select([l for l in layers if key in bit_dict[l.name]])
            if rows:
                table.set_bits(rows, torch.tensor([unit_step(bit_dict[table.layers[k].name][key]) for k in rows],
                                                  dtype=torch.float64))

    safe_open_file = staticmethod(safe_open_file)

    # -- quantizer helpers (SPEC 4.4) -----------------------------------------------------------------------
    @staticmethod
    def _bit_width_helper(d_quant, q_m, t_quant=None):
        """Unrounded bit width ``log2(|q_m|^t / |d| + 1) + 1``."""
        return bit_width(d_quant, q_m, t_quant)

    @staticmethod
    def _d_quant_helper(bit_width_value, q_m, t_quant=None):
        """Step size giving ``bit_width_value`` bits for range ``q_m`` (max over a tensor) and exponent ``t``."""
        return step_size_for_bits(bit_width_value, q_m, t_quant)

    @staticmethod
    def _quantize_helper(weight: Tensor, d_quant: Tensor, q_m: Tensor, t_quant: Optional[Tensor] = None) -> Tensor:
        """``Q(weight)`` with the given quantizer parameters (no autograd)."""
        quant_type = QuantizationType.SYMMETRIC_LINEAR if t_quant is None else QuantizationType.SYMMETRIC_NONLINEAR
        with torch.no_grad():
            return fake_quantize(weight.detach(), d_quant.detach(), q_m.detach(),
                                 None if t_quant is None else t_quant.detach(), quant_type=quant_type)

    @staticmethod
    def _clip_helper(weight: Tensor, q_m: Tensor, t_quant: Optional[Tensor] = None) -> Tensor:
        """``C(W) = sign(W) * min(|W|, |q_m|)^t`` (``|q_m|`` floored as in the quantizer; ~0 where ``W = 0``)."""
        q = float(_magnitude(q_m, weight))
        exponent = None if t_quant is None else float(t_quant.detach())
        if exponent is None or exponent == 1.0:
            return torch.clamp(weight, -q, q)  # Python bounds: the fast scalar kernel
        # v = exp(t * ln|W|) with |W| floored at the smallest normal number and the exponent floored above the
        # subnormal range, as the quantizer computes it (a non-integer pow is ~4x slower on CPU, a subnormal exp
        # ~60x: pruned weights are exact zeros); the floors leave ~3e-38 instead of 0 at W = 0.
        magnitude = weight.abs().clamp_(torch.finfo(weight.dtype).tiny, q)
        return power_of_log(magnitude.log_(), exponent, magnitude).copysign_(weight)

    @staticmethod
    def _residual_helper(weight: Tensor, d_quant: Tensor, q_m: Tensor, t_quant: Optional[Tensor] = None) -> Tensor:
        """``Res(W) = round(C(W)/d) - C(W)/d`` (``= sign(W) * (round(v/d) - v/d)``, ``v = min(|W|, q_m)^t``)."""
        return _residual_of_clipped(GETA._clip_helper(weight, q_m, t_quant), d_quant)

    # -- bit widths ---------------------------------------------------------------------------------------
    def get_bitwidth_dict(self, param_group: dict) -> Dict[str, Dict[str, int]]:
        """``{layer: {"weight": bits, "activation": bits}}`` (rounded; keys only where the quantizer exists)."""
        index = self._group_index(param_group)
        layers = self._quant_groups[index].layers
        result: Dict[str, Dict[str, int]] = {layer.name: {} for layer in layers
                                             if layer.has_weight_quantizer or layer.has_act_quantizer}
        bounds = {"weight": (self.min_bit_wt, self.max_bit_wt), "activation": (self.min_bit_act, self.max_bit_act)}
        for table, key in ((self._weight_table, "weight"), (self._act_table, "activation")):
            rows = table.select(layers)
            if not rows:
                continue
            low, high = bounds[key]
            for layer, bits in zip((table.layers[k] for k in rows), table.bit_widths(rows).tolist()):
                result[layer.name][key] = min(max(int(round(bits)), math.ceil(low)), math.floor(high))
        return result

    def grad_clipping(self) -> None:
        """Clamp every parameter's ``.grad`` into ``[grad_clip_min, grad_clip_max]`` in place."""
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            torch._foreach_clamp_min_(grads, self.grad_clip_min)
            torch._foreach_clamp_max_(grads, self.grad_clip_max)

    # -- checkpoints and logs -------------------------------------------------------------------------------
    def create_checkpoint(self, model: nn.Module, epoch, loss) -> dict:
        """``{"model_state_dict", "optimizer_state_dict", "epoch", "loss"}`` for :func:`.utils.save_checkpoint`."""
        return {"model_state_dict": model.state_dict(), "optimizer_state_dict": self.state_dict(), "epoch": epoch,
                "loss": loss}

    def log_qm_projection(self) -> str:
        """Write every layer's ``q_m_wt``, ``d_quant_wt`` and weight bit width to
        ``<log_dir>/projection_qm_<step>.txt``; returns the path."""
        path = os.path.join(self.log_dir, f"projection_qm_{self.num_steps}.txt")
        rows = list(range(len(self._weight_table)))
        bits = self._weight_table.bit_widths(rows).tolist() if rows else []
        with safe_open_file(path, "w") as handle:
            for k, layer in enumerate(self._weight_table.layers):
                handle.write(f"{layer.name}\tq_m={float(self._weight_table.ranges[k].detach()):.6g}\t"
                             f"d={float(self._weight_table.steps[k].detach()):.6g}\tbits={bits[k]:.3f}\n")
        return path

    def _verbose_enabled(self) -> bool:
        return self.verbose is True or str(self.verbose).lower() == "true"

    def _diagnose(self, group: dict, cos_clip: float, cos_residual: float, gamma: float,
                  step_size: Optional[float]) -> None:
        if self._diagnostics is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._diagnostics = logging.getLogger(f"{__name__}.diagnostics.{id(self)}")
            self._diagnostics.propagate = False
            self._diagnostics.setLevel(logging.INFO)
            handler = logging.FileHandler(os.path.join(self.log_dir, "geta_diagnostics.txt"))
            self._diagnostics.addHandler(handler)
        self._diagnostics.info("step %d group %s cos_c %.6g cos_r %.6g gamma %.6g d %s", self.num_steps, group["id"],
                               cos_clip, cos_residual, gamma, "-" if step_size is None else f"{step_size:.6g}")

    # -- state ------------------------------------------------------------------------------------------
    def _state_keys(self) -> List[str]:
        return super()._state_keys() + [
            "start_projection_step", "projection_periods", "projection_steps", "projection_period_duration",
            "bit_layers", "min_bit_wt", "max_bit_wt", "initial_max_bit_wt", "min_bit_act", "max_bit_act",
            "bit_reduction", "lr_quant", "gamma", "d_quant", "grad_clip_min", "grad_clip_max",
            "enable_grad_clipping", "forget_rate_guard", "device"]

    def state_dict(self, debug: bool = False) -> dict:
        """SPEC 5.9 keys; ``pruned_group_indices`` (the reference's key) is written as an alias of
        ``pruned_group_idxes``."""
        state = super().state_dict()
        state["pruned_group_indices"] = list(state["pruned_group_idxes"])
        state["training_health"] = self.health.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.health.load_state_dict(state_dict.get("training_health", {}))
        self._frozen_steps.clear()


def _magnitude(scalar: Tensor, like: Tensor) -> Tensor:
    """``max(|scalar|, MIN_MAGNITUDE)`` in ``like``'s dtype and device: how the quantizer reads ``d`` and ``q_m``."""
    return scalar.detach().to(device=like.device, dtype=like.dtype).abs().clamp_min(MIN_MAGNITUDE)


def _residual_of_clipped(clipped: Tensor, d_quant: Tensor) -> Tensor:
    """``round(C/d) - C/d`` for clipped values ``C`` (a new tensor; ``clipped`` is left as it is)."""
    scaled = torch.div(clipped, _magnitude(d_quant, clipped))
    return torch.round(scaled).sub_(scaled)


def _check_bits(low_name: str, high_name: str, low, high) -> None:
    for name, value in ((low_name, low), (high_name, high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 2:
            raise ValueError(f"{name} must be a number >= 2 (a quantizer needs more than 1 bit), got {value!r}")
    if low > high:
        raise ValueError(f"{low_name} ({low}) must not exceed {high_name} ({high})")


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return math.nan if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / denominator


def backoffs_needed(step_size: float, lower: float) -> int:
    """Smallest ``k >= 0`` with ``step_size / BACKOFF**k >= lower`` (the reference's loop, in closed form)."""
    k = max(0, math.ceil(math.log(lower / step_size) / math.log(1.0 / BACKOFF)))
    while step_size / BACKOFF ** k < lower:
        k += 1
    while k > 0 and step_size / BACKOFF ** (k - 1) >= lower:
        k -= 1
    return k
