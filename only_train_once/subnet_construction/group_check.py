"""Check the pruning groups at build time, so that an analyzer mistake costs compression, never a training run.

On a scratch copy of the model, random units of every prunable group are zeroed (as ``random_set_zero_groups``
does), the subnet is built in memory and compared with the zeroed copy (:mod:`.verification`). When it differs,
the groups responsible are found by bisection and left unprunable, with the reason recorded on the group and
one warning naming them. The traced model is never touched.

Cost: one deep copy of the model, one in-memory subnet construction and two forwards on the dummy input (a
randomly initialised model shows analyzer mistakes there; ``construct_subnet`` later also compares on a fresh
input) while every group passes; a few more per group that fails.
"""

from __future__ import annotations

import copy
import logging
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .apply import apply_plan
from .plan import build_plan
from .verification import SubnetConstructionError, SubnetVerifier

logger = logging.getLogger(__name__)

#: Reason recorded on a group the check leaves unprunable.
REASON = ("build-time check: removing its zeroed units changed the model's output (an analyzer mistake; "
          "please report this model)")


def candidate_groups(graph) -> List:
    """Prunable unit groups with at least two units and a trainable parameter pruned with them."""
    return [g for g in graph.node_groups.values()
            if g.is_prunable and not g.is_auxiliary and g.num_groups > 1
            and any(m.axis is not None and m.owners is not None for m in g.trainable_members())]


def choose_units(groups: Sequence, seed: int) -> Dict[int, np.ndarray]:
    """Per group key, a boolean mask of between one and all-but-one of its units, drawn at random."""
    rng = np.random.default_rng(seed)
    masks = {}
    for group in groups:
        size = group.num_groups
        mask = np.zeros(size, dtype=bool)
        mask[rng.choice(size, int(rng.integers(1, size)), replace=False)] = True
        masks[group.key] = mask
    return masks


#: Zeroed slices, to put back: (tensor, axis, positions, values before zeroing).
Saved = List[Tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]


def zero_units(graph, tensors: Dict[str, torch.Tensor], masks: Dict[int, np.ndarray]) -> Saved:
    """Zero, in ``tensors`` (name -> tensor of the traced model), every trainable slice owned by a masked unit;
    returns what :func:`restore_units` needs to put the values back exactly."""
    saved: Saved = []
    with torch.no_grad():
        for group in graph.node_groups.values():
            for member in group.trainable_members():
                if member.axis is None or member.owners is None:
                    continue
                keys, indices = member.owners
                hit = np.zeros(keys.shape, dtype=bool)
                for key, mask in masks.items():
                    mine = keys == key
                    if mine.any():
                        hit[mine] = mask[indices[mine]]
                if hit.any():
                    tensor = tensors[member.name]
                    positions = torch.from_numpy(np.flatnonzero(hit)).to(tensor.device)
                    saved.append((tensor, member.axis, positions, tensor.index_select(member.axis, positions)))
                    tensor.index_fill_(member.axis, positions, 0)
    return saved


def restore_units(saved: Saved) -> None:
    """Undo :func:`zero_units` bit for bit (in reverse order: a tensor zeroed along two axes comes back whole)."""
    with torch.no_grad():
        for tensor, axis, positions, values in reversed(saved):
            tensor.index_copy_(axis, positions, values)


def named_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    return tensors


def structural_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules that shares its parameters and buffers (no tensor data is copied).
    ``apply_plan`` on the copy replaces the copy's tensors by new, smaller ones; the original keeps its own."""
    shared = {id(tensor): tensor for tensor in named_tensors(model).values()}
    return copy.deepcopy(model, memo=shared)


class GroupChecker:
    """Builds scratch subnets of a traced model with the units of chosen groups removed."""

    def __init__(self, graph, model: nn.Module, tolerance: float, seed: int):
        self.graph = graph
        self.model = model
        self.tolerance = tolerance
        self.seed = seed
        self.trials = 0

    def passes(self, groups: Sequence, masks: Dict[int, np.ndarray]) -> bool:
        """Zero the units of ``groups`` in the model (restored exactly afterwards), build the subnet on a copy of
        the modules that shares the tensors, compare on the dummy input; True when equivalent."""
        self.trials += 1
        saved = zero_units(self.graph, named_tensors(self.model), {g.key: masks[g.key] for g in groups})
        try:
            return self._subnet_matches()
        finally:
            restore_units(saved)

    def _subnet_matches(self) -> bool:
        try:
            verifier = SubnetVerifier(self.model, self.graph.dummy_input, self.tolerance, fresh_inputs=0,
                                      rounding=False)
        except SubnetConstructionError:
            return True  # the zeroed full model is not finite: nothing to learn about the groups
        scratch = structural_copy(self.model)
        try:
            apply_plan(self.graph, scratch, build_plan(self.graph, named_tensors(scratch)))
        except Exception as error:  # a subnet that cannot even be built fails the check
            logger.debug("scratch subnet construction failed: %s: %s", type(error).__name__, error)
            return False
        return verifier.passes(scratch)

    def culprits(self, groups: List, masks: Dict[int, np.ndarray]) -> List:
        """The groups of a failing set that fail alone; the whole set when only their combination fails."""
        if len(groups) == 1:
            return list(groups)
        half = len(groups) // 2
        found = []
        for part in (groups[:half], groups[half:]):
            if not self.passes(part, masks):
                found += self.culprits(part, masks)
        return found or list(groups)


def check_groups(graph, model: nn.Module, tolerance: float = 1e-4, seed: int = 0) -> List:
    """Leave unprunable every group whose pruning breaks equivalence on a scratch copy; returns those groups."""
    groups = candidate_groups(graph)
    if not groups:
        return []
    masks = choose_units(groups, seed)
    checker = GroupChecker(graph, model, tolerance, seed)
    failed: List = []
    while groups and not checker.passes(groups, masks):
        bad = checker.culprits(groups, masks)
        failed += bad
        groups = [g for g in groups if g not in bad]
    for group in failed:
        group.mark_unprunable(REASON)
    if failed:
        logger.warning("OTO: %d pruning group(s) left unprunable because removing their zeroed units changed the "
                       "model's output (an analyzer mistake; please report this model): %s", len(failed),
                       ", ".join(f"{g.id} (params {', '.join(g.param_names[:4])})" for g in failed))
    logger.debug("group check: %d trial subnets", checker.trials)
    return failed


def run_check(graph, model: nn.Module, tolerance: float = 1e-4) -> List:
    """:func:`check_groups`, except that a model the check cannot run is reported and left as traced."""
    if any(t.is_meta for t in model.parameters()):
        logger.warning("OTO: the build-time group check needs real tensor values; skipped for a model on the meta "
                       "device")
        return []
    try:
        return check_groups(graph, model, tolerance)
    except Exception as error:
        logger.warning("OTO: the build-time group check could not run (%s: %s); groups are left as analysed. "
                       "construct_subnet still verifies the compressed model", type(error).__name__, error)
        return []
