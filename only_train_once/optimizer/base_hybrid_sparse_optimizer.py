"""``BaseHybridSparseOptimizer``: the structured-pruning machinery shared by HESSO and GETA (SPEC 5.1, 5.4, 5.5).

It owns the unit bookkeeping: which units are prunable (``total_num_groups``), how many will be pruned
(``target_num_redundant_groups``, exact rule in :mod:`.redundancy`), the pruning-period schedule, the importance
scores, the redundant units of the current period and the pruned ones, and the index caches that let a step
shrink or zero them with one ``index_*`` kernel per parameter. Subclasses implement ``step``.

Unit sets are global ids (see :mod:`.unit_layout`), kept in two disjoint lists: ``committed_unit_ids``, the units
of ended periods, exactly zero from then on (``fixed_zero_groups``: held at zero at every later step too), and
``active_redundant_group_idxes``, the units the running period shrinks. ``pruned_unit_ids`` (the reference's
``pruned_group_idxes``) is their sorted union, derived on every read.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Dict, List, Optional, Sequence, Union, cast

import torch
from torch import Tensor
from torch.optim.optimizer import required

from ..compat import ReferenceOptimizerNames
from . import redundancy
from .base_optimizer import BaseOptimizer, check_choice
from .importance_score import (IMPORTANCE_NORMALIZATIONS, calculate_importance_score, resolve_criteria,
                               unit_statistics)
from .metrics import SparseOptimizerMetrics
from .unit_layout import UnitLayout

logger = logging.getLogger(__name__)

#: ``auxiliary_scaling`` values (SPEC 12.4 O7): ``"once"`` shrinks a concat-dependent (auxiliary) slice once per
#: step, like the slices it depends on; ``"per_param"`` reproduces the reference, which shrinks it once per
#: pruned parameter of the owning group (``factor ** k``).
AUXILIARY_SCALINGS = ("once", "per_param")

#: How every reason the optimizer records for a group it cannot prune begins (see ``_mark_small_groups_unprunable``).
OPTIMIZER_REASON = "not prunable by this optimizer"

#: Group keys that describe the model (rebuilt by ``OTO.get_param_groups``), not the optimizer's progress:
#: ``load_state_dict`` never overwrites them. ``params`` are copied into the live tensors by name.
STATIC_GROUP_KEYS = frozenset({
    "id", "num_groups", "is_prunable", "is_auxiliary", "p_names", "params", "p_transform", "op_names", "node_ids",
    "p_axes", "p_unit_index", "auxiliary_ngs", "op", "global_start_idx", "global_idxes", "grad_variant",
    "num_heads", "head_dim", "num_components", "lora_scaling", "unprunable_reasons",
})
#: Group keys not written to ``state_dict()`` (transient or not loadable with ``weights_only=True``).
UNSAVED_GROUP_KEYS = frozenset({"p_transform", "grad_variant", "p_unit_index"})


def _sorted_unique(values: Sequence[int]) -> List[int]:
    return sorted({int(v) for v in values})


class BaseHybridSparseOptimizer(ReferenceOptimizerNames, BaseOptimizer):
    """Pruning bookkeeping over OTO param groups (see module docstring).

    ``importance_normalization`` (:data:`.importance_score.IMPORTANCE_NORMALIZATIONS`): ``"per_unit"`` (default)
    sums each criterion over the unit's elements, as the reference does (SPEC 5.4); ``"per_parameter"`` divides
    every criterion by the unit's size so that units of different sizes (attention heads, FFN units, channels of
    layers of different widths) compete fairly. Not the default yet: on the 30-epoch digits recipe
    (``benchmarks/geta_long_run.py``, seed 0) it ended 1.3 points below dense against 0.9 with ``"per_unit"``.

    ``max_group_sparsity`` caps the fraction of any one group's units that may be pruned (default
    ``1 - (1 - target_group_sparsity) / 2``, :func:`.redundancy.default_max_group_sparsity`; ``1.0`` restores
    the reference's rule, which only keeps one unit per group).

    Numerics switches (both behaviours kept, defaults chosen by the digits benchmark, see README notes):
    ``redundant_selection`` (O16, :data:`.redundancy.SELECTION_ORDERS`), ``auxiliary_scaling`` (O7,
    :data:`AUXILIARY_SCALINGS`), ``moment_initialization`` (O15, :class:`.BaseOptimizer`).
    """

    def __init__(self, params, variant: str = "sgd", lr: float = cast(float, required),
                 first_momentum: Optional[float] = None,
                 second_momentum: Optional[float] = None, dampening: Optional[float] = None,
                 weight_decay: Optional[float] = None, target_group_sparsity: float = 0.0, group_divisible: int = 1,
                 additional_defaults: Optional[dict] = None,
                 importance_score_criteria: Union[str, Dict[str, float], None] = "default",
                 fixed_zero_groups: bool = True, redundant_selection: str = "score",
                 auxiliary_scaling: str = "once", moment_initialization: str = "standard",
                 max_group_sparsity: Optional[float] = None, non_finite: str = "raise",
                 importance_normalization: str = "per_unit"):
        if isinstance(target_group_sparsity, bool) or not 0.0 <= float(target_group_sparsity) < 1.0:
            raise ValueError(f"target_group_sparsity must be in [0, 1), got {target_group_sparsity!r}")
        if max_group_sparsity is None:
            max_group_sparsity = redundancy.default_max_group_sparsity(target_group_sparsity)
        if isinstance(max_group_sparsity, bool) or not 0.0 < float(max_group_sparsity) <= 1.0:
            raise ValueError(f"max_group_sparsity must be in (0, 1], got {max_group_sparsity!r}")
        if isinstance(group_divisible, bool) or int(group_divisible) != group_divisible or group_divisible < 1:
            raise ValueError(f"group_divisible must be an integer >= 1, got {group_divisible!r}")
        check_choice("redundant_selection", redundant_selection, redundancy.SELECTION_ORDERS)
        check_choice("auxiliary_scaling", auxiliary_scaling, AUXILIARY_SCALINGS)
        check_choice("importance_normalization", importance_normalization, IMPORTANCE_NORMALIZATIONS)
        super().__init__(params, variant=variant, lr=lr, first_momentum=first_momentum,
                         second_momentum=second_momentum, dampening=dampening, weight_decay=weight_decay,
                         additional_defaults=additional_defaults, moment_initialization=moment_initialization,
                         non_finite=non_finite)
        self.target_group_sparsity = float(target_group_sparsity)
        self.group_divisible = int(group_divisible)
        self.max_group_sparsity = float(max_group_sparsity)
        self.fixed_zero_groups = bool(fixed_zero_groups)
        self.redundant_selection = redundant_selection
        self.auxiliary_scaling = auxiliary_scaling
        self.importance_normalization = importance_normalization
        self.importance_score_criteria = resolve_criteria(importance_score_criteria, self._extra_criteria())
        self.opt_metrics = SparseOptimizerMetrics()
        self.layout = self._make_layout()
        self._mark_small_groups_unprunable()
        self.auxiliary_param_groups = {g["id"]: g for g in self.param_groups if g.get("is_auxiliary")}
        sizes = [self.param_groups[i]["num_groups"] for i in self._unit_groups()]
        self.total_num_groups = int(sum(sizes))
        requested = redundancy.requested_count(self.total_num_groups, self.target_group_sparsity)
        self.target_num_redundant_groups = redundancy.reachable_target(sizes, self.group_divisible, requested,
                                                                       self.max_group_sparsity)
        if self.target_num_redundant_groups < requested:
            logger.warning("target_group_sparsity=%s asks for %d of %d units; every group keeps >= %d unit(s)%s and "
                           "loses at most a fraction max_group_sparsity=%s, so %d will be pruned (sparsity %.4f)",
                           self.target_group_sparsity, requested, self.total_num_groups, max(1, self.group_divisible),
                           " in multiples of group_divisible" if self.group_divisible > 1 else "",
                           self.max_group_sparsity,
                           self.target_num_redundant_groups,
                           self.target_num_redundant_groups / max(self.total_num_groups, 1))
        self.committed_unit_ids: List[int] = []
        self.active_redundant_group_idxes: List[int] = []
        self.global_scores: List[Tensor] = []
        for group in self.param_groups:
            group["important_idxes"] = list(range(group["num_groups"]))
            group["active_redundant_idxes"] = []
            group["pruned_idxes"] = []
            group["importance_scores"] = {}
        self._owner_slice_count = torch.zeros(len(self.param_groups), dtype=torch.float64)
        for unit_slices in self.layout.own_slices():
            self._owner_slice_count[unit_slices.group_index] += 1
        self._refresh_unit_sets()

    def _extra_criteria(self) -> tuple:
        return ()

    def _make_layout(self) -> UnitLayout:
        """The unit index maps over ``param_groups`` (a sharded optimizer's maps cover its shards, :mod:`.fsdp`)."""
        return UnitLayout(self.param_groups)

    # -- prunable units -------------------------------------------------------------------------------
    def _mark_small_groups_unprunable(self) -> None:
        """Exclude the groups this optimizer cannot prune, recording why in the group's ``unprunable_reasons``
        (``OTO`` copies them onto its graph's groups, so both say the same)."""
        with_slices = {s.group_index for s in self.layout.own_slices()}
        for index, group in enumerate(self.param_groups):
            if not group.get("is_prunable") or group.get("is_auxiliary"):
                continue
            reason = None
            if index not in with_slices or index not in self.layout.group_ranges:
                reason = f"{OPTIMIZER_REASON}: no trainable parameter slice along the pruned axis"
            elif group["num_groups"] <= self.group_divisible:
                reason = (f"{OPTIMIZER_REASON}: {group['num_groups']} unit(s), too few to prune with "
                          f"group_divisible={self.group_divisible}")
            if reason is not None:
                group["is_prunable"] = False
                group.setdefault("unprunable_reasons", []).append(reason)
                logger.debug("group %s: %s", group["id"], reason)

    def _unit_groups(self) -> List[int]:
        """Indices of the prunable, non-auxiliary groups (the ones whose units may be pruned)."""
        return [i for i, g in enumerate(self.param_groups) if g.get("is_prunable") and not g.get("is_auxiliary")
                and i in self.layout.group_ranges]

    def _eligible_mask(self) -> Tensor:
        mask = torch.zeros(self.layout.num_units, dtype=torch.bool)
        for index in self._unit_groups():
            start, count = self.layout.group_ranges[index]
            mask[start:start + count] = True
        return mask

    # -- pruning schedule -------------------------------------------------------------------------------
    def _setup_pruning_schedule(self, start_pruning_step: int, pruning_steps: Optional[int],
                                pruning_periods: int) -> None:
        if isinstance(start_pruning_step, bool) or int(start_pruning_step) != start_pruning_step \
                or start_pruning_step < 0:
            raise ValueError(f"start_pruning_step must be an integer >= 0, got {start_pruning_step!r}")
        self.pruning_periods = int(max(1, pruning_periods))
        pruning_steps = self.pruning_periods if pruning_steps is None else pruning_steps
        if int(pruning_steps) != pruning_steps or pruning_steps < self.pruning_periods:
            raise ValueError(f"pruning_steps ({pruning_steps!r}) must be an integer >= pruning_periods "
                             f"({self.pruning_periods}): each pruning period needs at least one step")
        self.start_pruning_step = int(start_pruning_step)
        self.pruning_steps = int(pruning_steps)
        self.pruning_period_duration = self.pruning_steps // self.pruning_periods
        self.curr_pruning_period = 0
        self.active_num_redundant_groups = redundancy.period_budgets(self.target_num_redundant_groups,
                                                                     self.pruning_periods)

    def _pruning_period_starts(self, step: int) -> bool:
        duration = self.pruning_period_duration
        return (step >= self.start_pruning_step and self.curr_pruning_period < self.pruning_periods
                and (step - self.start_pruning_step - 1) % duration == 0)

    def _period_position(self, step: int) -> int:
        """``t = (n - start_pruning_step) mod P``: 1 at a period's first step, 0 at its last (plain) step."""
        return (step - self.start_pruning_step) % self.pruning_period_duration

    def _shrink_factor(self, position: int) -> float:
        """``(P - t - 1) / (P - t)``: after the shrinks of a period a redundant slice has reached 0."""
        remaining = self.pruning_period_duration - position
        return (remaining - 1) / remaining

    def _start_period_if_due(self, step: int) -> None:
        if self._pruning_period_starts(step):
            self.commit_redundant_idxes()
            self.compute_importance_scores()
            self.identify_redundant_groups()
            self.curr_pruning_period += 1

    def _commit_if_period_ends(self, step: int, position: int) -> None:
        if step >= self.start_pruning_step and position == self.pruning_period_duration - 1:
            self.commit_redundant_idxes()

    # -- importance scores and selection ----------------------------------------------------------------
    @torch.no_grad()
    def compute_importance_scores(self) -> Tensor:
        """Score every prunable unit (SPEC 5.4); returns the overall score vector over the global ids.

        Also sets ``global_scores`` (one vector per prunable group) and each group's ``importance_scores``
        (normalised, weighted criterion vectors) and ``global_idxes``. Under ``torch.distributed`` the scores of
        rank 0 are broadcast, so that every rank selects the same units whatever its kernels' rounding.
        """
        groups = self._unit_groups()
        slices = self.layout.own_slices(set(groups))
        grads = [self.grad_variant_of(s.group_index, s.param_index) for s in slices]
        stats = unit_statistics(self.layout, slices, grads)
        overall, parts = calculate_importance_score(self.importance_score_criteria, stats, self._eligible_mask(),
                                                     self.importance_normalization)
        overall = _broadcast_from_rank0(overall, self._first_device())
        self._scores = overall
        self.global_scores = []
        for index in groups:
            start, count = self.layout.group_ranges[index]
            group = self.param_groups[index]
            group["global_idxes"] = torch.arange(start, start + count)
            group["importance_scores"] = {name: part[start:start + count].clone() for name, part in parts.items()}
            self.global_scores.append(overall[start:start + count])
        return overall

    def identify_redundant_groups(self) -> List[int]:
        """Choose this period's redundant units (rule in :mod:`.redundancy`); returns their global ids."""
        if not hasattr(self, "_scores"):
            self.compute_importance_scores()
        period = min(self.curr_pruning_period, self.pruning_periods - 1)
        cumulative = sum(self.active_num_redundant_groups[:period + 1])
        committed = self.committed_unit_ids
        budget = max(cumulative - len(committed), 0)
        pruned_mask = self.layout.mask(committed)
        eligible = self._eligible_mask()
        if self.redundant_selection == "index":
            priority = redundancy.reference_priority(self._scores, eligible, pruned_mask, budget)
        else:
            priority = self._scores
        room, first_touch = {}, {}
        counts = torch.bincount(self.layout.unit_group[pruned_mask], minlength=len(self.param_groups)) \
            if pruned_mask.any() else torch.zeros(len(self.param_groups), dtype=torch.long)
        for index in self._unit_groups():
            size = self.param_groups[index]["num_groups"]
            done = int(counts[index])
            room[index] = max(redundancy.allowed_counts(size, self.group_divisible, self.max_group_sparsity)) - done
            first_touch[index] = size % self.group_divisible if done == 0 and self.group_divisible > 1 else 0
        chosen = redundancy.select_units(priority, eligible & ~pruned_mask, self.layout.unit_group, room,
                                         first_touch, budget, self.group_divisible).tolist()
        if len(chosen) < budget:
            logger.warning("pruning period %d: only %d of %d redundant units can be selected under "
                           "group_divisible=%d; the rest is carried to the next period", self.curr_pruning_period,
                           len(chosen), budget, self.group_divisible)
        self.active_redundant_group_idxes = chosen
        self._refresh_unit_sets()
        logger.info("pruning period %d: %d redundant units selected (%d pruned before)", self.curr_pruning_period,
                    len(chosen), len(committed))
        return chosen

    def commit_redundant_idxes(self) -> None:
        """End the running period: its redundant units become pruned and are set to exactly zero."""
        newly = self.active_redundant_group_idxes
        self.active_redundant_group_idxes = []
        self.committed_unit_ids = _sorted_unique(self.committed_unit_ids + newly)
        for group in self.param_groups:
            group["importance_scores"] = {}
        self._refresh_unit_sets()
        if newly:
            self._zero_units(self.layout.positions(newly))

    @property
    def pruned_unit_ids(self) -> List[int]:
        """Every unit selected so far (global ids): the committed ones and the running period's, sorted."""
        return _sorted_unique(self.committed_unit_ids + self.active_redundant_group_idxes)

    def _refresh_unit_sets(self) -> None:
        """Derive the per-group index lists and the per-parameter position caches from the two global sets."""
        committed = self.committed_unit_ids
        active = self.active_redundant_group_idxes
        committed_local: Dict[int, List[int]] = {}
        active_local: Dict[int, List[int]] = {}
        unit_group = self.layout.unit_group
        for ids, target in ((committed, committed_local), (active, active_local)):
            for unit in ids:
                index = int(unit_group[unit])
                target.setdefault(index, []).append(unit - self.layout.group_ranges[index][0])
        for index, group in enumerate(self.param_groups):
            if index not in self.layout.group_ranges or group.get("is_auxiliary"):
                continue
            pruned = committed_local.get(index, [])
            redundant = active_local.get(index, [])
            excluded = set(pruned) | set(redundant)
            group["pruned_idxes"] = pruned
            group["active_redundant_idxes"] = redundant
            group["important_idxes"] = [i for i in range(group["num_groups"]) if i not in excluded]
        self._pruned_positions = self.layout.positions(committed)
        self._active_positions = self.layout.positions(active)
        self._active_exponents = self._auxiliary_exponents()

    def _auxiliary_exponents(self) -> List[Optional[Tensor]]:
        """Per auxiliary slice and active position, how often the reference applies the shrink factor."""
        if self.auxiliary_scaling == "once":
            return [None] * len(self.layout.slices)
        exponents: List[Optional[Tensor]] = []
        for unit_slices, positions in zip(self.layout.slices, self._active_positions):
            if unit_slices.own_group or not positions.numel():
                exponents.append(None)
                continue
            owners = self.layout.unit_group[unit_slices.unit_index[positions].cpu()]
            exponents.append(self._owner_slice_count[owners].to(unit_slices.param.device))
        return exponents

    # -- slice operations -------------------------------------------------------------------------------
    @torch.no_grad()
    def _zero_units(self, positions: Sequence[Tensor]) -> None:
        for unit_slices, where in zip(self.layout.slices, positions):
            if where.numel():
                unit_slices.target.index_fill_(unit_slices.axis, where, 0)

    def _hold_pruned_at_zero(self) -> None:
        if self.fixed_zero_groups:
            self._zero_units(self._pruned_positions)

    @torch.no_grad()
    def _shrink_active(self, factor: float, own_groups: bool = True) -> None:
        """Multiply the active redundant slices by ``factor`` (auxiliary slices by ``factor ** k`` in
        ``"per_param"`` mode); ``own_groups=False`` leaves the unit-owning groups' slices alone."""
        for unit_slices, where, exponent in zip(self.layout.slices, self._active_positions, self._active_exponents):
            if not where.numel() or (unit_slices.own_group and not own_groups):
                continue
            param, axis = unit_slices.target, unit_slices.axis
            selected = param.index_select(axis, where)
            if exponent is None:
                selected.mul_(factor)
            else:
                shape = [1] * param.dim()
                shape[axis] = -1
                selected.mul_(torch.pow(factor, exponent).to(param.dtype).view(shape))
            param.index_copy_(axis, where, selected)

    def fix_pruned_groups_as_zeros(self, group: dict) -> None:
        """Set the committed pruned units of ``group`` to zero in every slice, auxiliary (concat) ones included."""
        index = self._group_index(group)
        if index in self.layout.group_ranges:
            start = self.layout.group_ranges[index][0]
            self._zero_units(self.layout.positions([start + i for i in group.get("pruned_idxes", [])]))

    def _first_device(self) -> torch.device:
        for group in self.param_groups:
            for param in group["params"]:
                return param.device
        return torch.device("cpu")

    # -- metrics ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_metrics(self) -> SparseOptimizerMetrics:
        """Refresh and return ``opt_metrics`` (SPEC 5.8) from the current parameter values."""
        groups = self._unit_groups()
        slices = self.layout.own_slices(set(groups))
        squares = [torch.linalg.vecdot(rows, rows, dim=1) for rows in (s.rows(s.param.detach()) for s in slices)]
        norms = self.layout.sum_over_ranks(self.layout.reduce_rows(slices, squares)).sqrt()
        eligible = self._eligible_mask()
        redundant = self.layout.mask(self.pruned_unit_ids) & eligible
        important = eligible & ~redundant
        metrics = self.opt_metrics
        metrics.reset()
        metrics.num_groups = self.total_num_groups
        metrics.num_zero_groups = int((norms[eligible] == 0).sum())
        metrics.norm_params = float(norms[eligible].sum())
        metrics.norm_important_groups = float(norms[important].sum())
        metrics.norm_redundant_groups = float(norms[redundant].sum())
        metrics.num_important_groups = int(important.sum())
        metrics.num_redundant_groups = int(redundant.sum())
        metrics.group_sparsity = metrics.num_zero_groups / (self.total_num_groups + 1e-8)
        return metrics

    # -- state --------------------------------------------------------------------------------------------
    def _state_keys(self) -> List[str]:
        return ["num_steps", "safe_guard", "first_moment_grads", "second_moment_grads", "moment_initialization",
                "group_divisible", "target_group_sparsity", "total_num_groups", "target_num_redundant_groups",
                "max_group_sparsity", "curr_pruning_period", "start_pruning_step", "pruning_periods", "pruning_steps",
                "pruning_period_duration", "pruned_group_idxes", "active_redundant_group_idxes",
                "active_num_redundant_groups", "importance_score_criteria", "fixed_zero_groups",
                "redundant_selection", "auxiliary_scaling", "importance_normalization"]

    def state_dict(self) -> dict:
        """Plain dict of the optimizer's progress (SPEC 5.9), loadable with ``torch.load(weights_only=True)``.

        ``param_groups`` are shallow copies of the live groups (parameter tensors included) without the
        transient ``grad_variant`` and the static index maps.
        """
        state = {key: getattr(self, key) for key in self._state_keys() if hasattr(self, key)}
        state["param_groups"] = [{k: v for k, v in g.items() if k not in UNSAVED_GROUP_KEYS}
                                 for g in self.param_groups]
        return state

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict) -> None:
        """Restore ``state_dict()`` output; groups are matched by ``id`` and parameters by name (SPEC 5.9, O12).

        Saved groups without a live counterpart, and live groups without a saved one, are reported with
        ``warnings.warn`` and skipped; moment buffers of parameters the model no longer has are dropped.
        """
        state = dict(state_dict)
        if "pruned_group_indices" in state and "pruned_group_idxes" not in state:
            state["pruned_group_idxes"] = state.pop("pruned_group_indices")
        if "pruned_group_idxes" in state:  # saved as the union, as the reference does
            active = set(state.get("active_redundant_group_idxes", self.active_redundant_group_idxes))
            state["committed_unit_ids"] = [u for u in state.pop("pruned_group_idxes") if u not in active]
        known = set(self._state_keys()) | {"committed_unit_ids"}
        for key, value in state.items():
            if key in known and key not in ("first_moment_grads", "second_moment_grads"):
                setattr(self, key, copy.deepcopy(value))
        params_by_name = {n: p for g in self.param_groups for n, p in zip(g["p_names"], g["params"])}
        for key in ("first_moment_grads", "second_moment_grads"):
            buffers = {}
            for name, tensor in state.get(key, {}).items():
                if name in params_by_name:
                    buffers[name] = tensor.detach().clone().to(params_by_name[name].device)
                else:
                    warnings.warn(f"load_state_dict: dropping the {key} buffer of unknown parameter {name!r}")
            setattr(self, key, buffers)
        self._load_param_groups(state.get("param_groups", []))
        self._refresh_unit_sets()

    def _load_param_groups(self, saved_groups: Sequence[dict]) -> None:
        saved_by_id = {g["id"]: g for g in saved_groups}
        for group in self.param_groups:
            saved = saved_by_id.pop(group["id"], None)
            if saved is None:
                warnings.warn(f"load_state_dict: no saved state for param group {group['id']!r}; it keeps its values")
                continue
            live = dict(zip(group["p_names"], group["params"]))
            for name, tensor in zip(saved.get("p_names", []), saved.get("params", [])):
                if name in live:
                    live[name].copy_(tensor)
            for key, value in saved.items():
                if key not in STATIC_GROUP_KEYS:
                    group[key] = copy.deepcopy(value)
        for group_id in saved_by_id:
            warnings.warn(f"load_state_dict: saved param group {group_id!r} matches no live group; skipped")


def _broadcast_from_rank0(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` of rank 0 on every rank when ``torch.distributed`` is initialised (else ``tensor`` itself)."""
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()) or distributed.get_world_size() == 1:
        return tensor
    on_device = tensor.to(device) if distributed.get_backend() == "nccl" else tensor.clone()
    distributed.broadcast(on_device, src=0)
    return on_device.to(tensor.device)
