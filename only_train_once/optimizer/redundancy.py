"""How many units to prune, and which: the exact-count rule shared by HESSO and GETA (SPEC 5.5, fixes O16).

The rule, over the ``N`` units of the prunable groups (``total_num_groups``) and a target sparsity ``s``:

1. The requested count is ``floor(N * s)``, with ``s`` taken as the decimal number it is written as (so
   ``0.29 * 100`` is 29, not 28) and a ``1e-9`` allowance for fractions without a finite decimal form (so
   ``(2 / 24) * 24`` is 2).
2. Every group keeps at least ``q = max(1, group_divisible)`` units, and with ``q > 1`` the number of units a
   group keeps is a multiple of ``q`` unless the group is left untouched. No group loses more than
   ``floor(size * max_group_sparsity)`` units (:func:`group_cap`; issue 19: scores are not comparable across
   layers, and the global ranking once took 31 of a 32-channel layer's units, cutting the network to a
   1-channel bottleneck). The target ``T`` is the largest
   count ``<= floor(N * s)`` that these constraints allow (a warning is logged when ``T < floor(N * s)``).
3. The pruning periods get budgets ``floor(T/K)`` and the remainder in the last one; a period that cannot use
   all of its budget passes the rest on, so that after the last period exactly ``T`` units are pruned.
4. Within a period the chosen units are the lowest-scored units the constraints allow (for ``q = 1``: the
   lowest-scored not-yet-pruned units, skipping a group's units once it would otherwise be emptied; for
   ``q > 1``: whole chunks of ``q`` units, lowest mean score first).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Dict, List, Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

#: ``redundant_selection`` values (SPEC 12.4 O16): ``"score"`` orders the candidates by importance score;
#: ``"index"`` reproduces the reference, which takes the ``len(pruned) + a`` lowest scores, drops the already
#: pruned ones and keeps the first ``a`` in index order.
SELECTION_ORDERS = ("score", "index")


def requested_count(num_units: int, sparsity: float) -> int:
    """``floor(num_units * sparsity + 1e-9)`` with ``sparsity`` read as its decimal representation."""
    return int(Fraction(repr(float(sparsity))) * num_units + Fraction(1, 10 ** 9))


def default_max_group_sparsity(target_sparsity: float) -> float:
    """``1 - (1 - s) / 2``: every group keeps at least half the fraction of units the model as a whole keeps."""
    return 1.0 - (1.0 - float(target_sparsity)) / 2.0


def group_cap(size: int, max_group_sparsity: float = 1.0) -> int:
    """Most units a group of ``size`` units may lose: ``floor(size * max_group_sparsity)`` (decimal reading)."""
    return requested_count(size, max_group_sparsity) if max_group_sparsity < 1.0 else size


def allowed_counts(size: int, divisible: int, max_group_sparsity: float = 1.0) -> List[int]:
    """Numbers of units a group of ``size`` units may have pruned in total (rule 2 of the module docstring)."""
    keep = max(1, divisible)
    cap = group_cap(size, max_group_sparsity)
    if size <= keep:
        return [0]
    if keep == 1:
        return list(range(min(size, cap + 1)))
    first = size % keep
    counts = list(range(first, size - keep + 1, keep))
    counts = counts if counts and counts[0] == 0 else [0] + counts
    return [count for count in counts if count <= cap]


def reachable_target(group_sizes: Sequence[int], divisible: int, requested: int,
                     max_group_sparsity: float = 1.0) -> int:
    """Largest total ``<= requested`` reachable by per-group allowed counts (a subset-sum over bit sets)."""
    if requested <= 0:
        return 0
    if max(1, divisible) == 1:
        return min(requested, sum(max(allowed_counts(size, 1, max_group_sparsity)) for size in group_sizes))
    limit = (1 << (requested + 1)) - 1
    reachable = 1
    for size in group_sizes:
        combined = 0
        for count in allowed_counts(size, divisible, max_group_sparsity):
            if count > requested:
                break
            combined |= reachable << count
        reachable = combined & limit
    return reachable.bit_length() - 1


def period_budgets(total: int, periods: int) -> List[int]:
    """``floor(total / periods)`` for all periods but the last, which takes the rest (SPEC 5.1)."""
    share = total // periods
    return [share] * (periods - 1) + [total - share * (periods - 1)]


def reference_priority(scores: Tensor, eligible: Tensor, pruned: Tensor, budget: int) -> Tensor:
    """Priorities reproducing the reference's candidate order (``redundant_selection="index"``).

    Candidates among the ``len(pruned) + budget`` lowest scores come first, by index; the remaining ones follow
    by score, so that the constraints can still be met exactly.
    """
    ids = torch.nonzero(eligible).flatten()
    order = ids[torch.argsort(scores[ids], stable=True)]
    count = int(pruned.sum()) + budget
    head = order[:count]
    head = torch.sort(head[~pruned[head]]).values
    tail = order[count:]
    tail = tail[~pruned[tail]]
    priority = torch.full_like(scores, float("inf"))
    ranked = torch.cat([head, tail])
    priority[ranked] = torch.arange(ranked.numel(), dtype=scores.dtype)
    return priority


def select_units(priority: Tensor, candidates: Tensor, unit_group: Tensor, room: Dict[int, int],
                 first_touch: Dict[int, int], budget: int, divisible: int) -> Tensor:
    """Global ids (sorted) of at most ``budget`` candidate units, lowest ``priority`` first.

    ``room[g]`` is how many more units group ``g`` may lose; ``first_touch[g]`` is the size of the group's
    first chunk when it has nothing pruned yet (``size % q``; 0 means chunks of ``q`` from the start).
    """
    if budget <= 0:
        return torch.empty(0, dtype=torch.long)
    ids = torch.nonzero(candidates).flatten()
    ids = ids[torch.argsort(priority[ids], stable=True)]
    if max(1, divisible) == 1:
        return _select_single_units(ids, unit_group, room, budget)
    return _select_chunks(ids, priority, unit_group, room, first_touch, budget, divisible)


def _select_single_units(ids: Tensor, unit_group: Tensor, room: Dict[int, int], budget: int) -> Tensor:
    groups = unit_group[ids]
    by_group = torch.argsort(groups, stable=True)
    _, counts = torch.unique_consecutive(groups[by_group], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.empty_like(ids)
    rank[by_group] = torch.arange(ids.numel()) - starts
    limit = torch.zeros(int(unit_group.max()) + 1 if unit_group.numel() else 1, dtype=torch.long)
    for group, space in room.items():
        limit[group] = space
    chosen = ids[rank < limit[groups]][:budget]
    return torch.sort(chosen).values


def _select_chunks(ids: Tensor, priority: Tensor, unit_group: Tensor, room: Dict[int, int],
                   first_touch: Dict[int, int], budget: int, divisible: int) -> Tensor:
    per_group: Dict[int, List[int]] = {}
    for unit, group in zip(ids.tolist(), unit_group[ids].tolist()):
        per_group.setdefault(group, []).append(unit)
    chunks = []  # (mean priority, group, chunk number, units)
    for group, units in per_group.items():
        limit = min(room.get(group, 0), len(units))
        size, start, number = first_touch.get(group, 0) or divisible, 0, 0
        while start + size <= limit:
            members = units[start:start + size]
            chunks.append((float(priority[members].mean()), group, number, members))
            start, size, number = start + size, divisible, number + 1
    chunks.sort(key=lambda chunk: (chunk[0], chunk[1], chunk[2]))
    expected: Dict[int, int] = {}
    blocked = set()
    chosen: List[int] = []
    for _, group, number, members in chunks:
        if group in blocked or number != expected.get(group, 0):
            continue
        if len(chosen) + len(members) > budget:
            blocked.add(group)
            continue
        chosen.extend(members)
        expected[group] = number + 1
    return torch.sort(torch.tensor(chosen, dtype=torch.long)).values
