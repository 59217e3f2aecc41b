"""Check the pruning groups at build time, so that an analyzer mistake costs compression, never a training run.

Random units of every prunable group are zeroed at once in the model itself (their values are saved and put back
bit for bit afterwards), the subnet is built in memory on a copy of the module tree that shares the tensors,
and compared with the zeroed model on the dummy input (:mod:`.verification`). Only when that one combined check
fails are the groups responsible found by bisection and left unprunable, with the reason recorded on the group
and one warning naming them. Nothing is traced again.

Cost while every group passes: one forward of the zeroed model, one of the (smaller) subnet, a copy of the
zeroed slices and of the subnet's tensors (``benchmarks/group_check.py``); a few more per group that fails.
"""

from __future__ import annotations

import copy
import logging
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..graph.pruning_axis import along
from .apply import apply_plan
from .plan import MaskLookup, plan_for_masks
from .verification import SubnetConstructionError, SubnetVerifier

logger = logging.getLogger(__name__)

#: Reason recorded on a group the check leaves unprunable.
REASON = ("build-time check: removing its zeroed units changed the model's output (an analyzer mistake; "
          "please report this model)")


def candidate_groups(graph) -> List:
    """Prunable unit groups with at least two units and a trainable parameter pruned with them."""
    return [g for g in graph.node_groups.values()
            if g.is_prunable and not g.is_auxiliary and g.num_units > 1
            and any(m.axis is not None and m.owners is not None for m in g.trainable_members())]


def choose_units(groups: Sequence, seed: int) -> Dict[int, np.ndarray]:
    """Per group key, a boolean mask of between one and all-but-one of its units, drawn at random."""
    rng = np.random.default_rng(seed)
    masks = {}
    for group in groups:
        size = group.num_units
        mask = np.zeros(size, dtype=bool)
        mask[rng.choice(size, int(rng.integers(1, size)), replace=False)] = True
        masks[group.key] = mask
    return masks


#: Zeroed slices, to put back: (tensor, axis, positions, values before zeroing).
Saved = List[Tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]


def zero_units(graph, tensors: Dict[str, torch.Tensor], masks: Dict[int, np.ndarray]) -> Saved:
    """Zero, in ``tensors`` (name -> tensor of the traced model), every parameter slice owned by a masked unit;
    returns what :func:`restore_units` needs to put the values back exactly."""
    saved: Saved = []
    lookup = MaskLookup(masks)
    with torch.no_grad():
        for group in graph.node_groups.values():
            for member in group.members:
                if not member.is_parameter or member.axis is None or member.owners is None:
                    continue
                hit = lookup.removed(*member.owners)
                if hit.any():
                    tensor, axis = along(tensors[member.name], member.axis)  # a view: writes reach the tensor
                    positions = torch.from_numpy(np.flatnonzero(hit)).to(tensor.device)
                    saved.append((tensor, axis, positions, tensor.index_select(axis, positions)))
                    tensor.index_fill_(axis, positions, 0)
    return saved


def restore_units(saved: Saved) -> None:
    """Undo :func:`zero_units` bit for bit (in reverse order: a tensor zeroed along two axes comes back whole)."""
    with torch.no_grad():
        for tensor, axis, positions, values in reversed(saved):
            tensor.index_copy_(axis, positions, values)


def named_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    tensors: Dict[str, torch.Tensor] = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    return tensors


def structural_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree that shares its parameters and buffers (no tensor data is copied): each
    module is copied shallowly with its own parameter, buffer and child dicts, so that ``apply_plan`` on the copy
    swaps in new, smaller tensors and attributes without touching the original."""
    copies: Dict[int, nn.Module] = {}

    def twin_of(module: nn.Module) -> nn.Module:
        if id(module) not in copies:  # a module used twice stays one module
            twin = copy.copy(module)
            copies[id(module)] = twin
            object.__setattr__(twin, "_parameters", dict(module._parameters))
            object.__setattr__(twin, "_buffers", dict(module._buffers))
            object.__setattr__(twin, "_modules", {name: None if child is None else twin_of(child)
                                                  for name, child in module._modules.items()})
        return copies[id(module)]

    return twin_of(model)


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
        chosen = {g.key: masks[g.key] for g in groups}
        saved = zero_units(self.graph, named_tensors(self.model), chosen)
        try:
            return self._subnet_matches(chosen)
        finally:
            restore_units(saved)

    def _subnet_matches(self, masks: Dict[int, np.ndarray]) -> bool:
        try:
            verifier = SubnetVerifier(self.model, self.graph.dummy_input, self.tolerance, fresh_inputs=0,
                                      rounding=False)
        except SubnetConstructionError:
            return True  # the zeroed full model is not finite: nothing to learn about the groups
        scratch = structural_copy(self.model)
        try:
            apply_plan(self.graph, scratch, plan_for_masks(self.graph, masks))
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


#: ``verify_groups="auto"`` checks a model whose parameters and buffers take at most this many bytes: while it
#: runs, the check holds about as much again (the zeroed slices and the subnet's tensors).
AUTO_MAX_BYTES = 1 << 30
VERIFY_GROUPS_CHOICES = (True, False, "auto")


def model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in named_tensors(model).values())


def wanted(verify_groups: Union[bool, str], model: nn.Module) -> bool:
    """Whether ``OTO(..., verify_groups=...)`` runs the check on ``model`` (``"auto"``: rule of
    :data:`AUTO_MAX_BYTES`; a model on the meta device has no values to check)."""
    if verify_groups not in VERIFY_GROUPS_CHOICES or not isinstance(verify_groups, (bool, str)):
        raise ValueError(f"verify_groups must be True, False or 'auto', got {verify_groups!r}")
    if verify_groups != "auto":
        return bool(verify_groups)
    if any(t.is_meta for t in named_tensors(model).values()):
        return False
    size = model_bytes(model)
    if size > AUTO_MAX_BYTES:
        logger.info("OTO: build-time group check skipped for a model of %.1f GiB (verify_groups='auto' checks models "
                    "up to %.0f GiB); pass verify_groups=True to run it", size / 2 ** 30, AUTO_MAX_BYTES / 2 ** 30)
        return False
    return True


def run_check(graph, model: nn.Module, tolerance: float = 1e-4, requested: bool = True) -> List:
    """:func:`check_groups`, except that a model the check cannot run is reported (a warning when the check was
    ``requested``, else an info line) and left as traced."""
    report = logger.warning if requested else logger.info
    if any(t.is_meta for t in model.parameters()):
        report("OTO: the build-time group check needs real tensor values; skipped for a model on the meta device")
        return []
    try:
        return check_groups(graph, model, tolerance)
    except Exception as error:
        report("OTO: the build-time group check could not run (%s: %s); groups are left as analysed. "
               "construct_subnet still verifies the compressed model", type(error).__name__, error)
        return []
