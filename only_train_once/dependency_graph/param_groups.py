"""Parameter groups for the optimizers, trainability, and group-level zeroing helpers."""

from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from ..graph.pruning_axis import along
from ..meta_device import check_materialized

logger = logging.getLogger(__name__)


def emitted_groups(graph) -> List:
    """Trainable node groups in the order the optimizers see them (sorted by id, as in the reference)."""
    return [g for _, g in sorted(graph.node_groups.items()) if g.is_trainable and g.trainable_members()]


def unit_offsets(groups: Sequence) -> Dict[int, int]:
    """Global id of the first unit of every prunable, non-auxiliary group, laid out in ``groups`` order."""
    offsets: Dict[int, int] = {}
    start = 0
    for group in groups:
        if group.is_prunable and not group.is_auxiliary:
            offsets[group.key] = start
            start += group.num_units
    return offsets


class StaleParametersError(RuntimeError):
    """The model's parameters were replaced after OTO traced it, so its groups point at tensors it no longer uses."""


def check_parameters_current(graph, allowed: Iterable[str] = ()) -> None:
    """Raise :class:`StaleParametersError` if a traced parameter is no longer the model's parameter of that name.

    Anything that swaps in new ``nn.Parameter`` objects does this: an optimizer over the traced parameters would
    then train tensors the model no longer uses, and prune nothing, silently. ``allowed`` names replacements the
    caller handles (FSDP2's sharded parameters, :mod:`only_train_once.optimizer.fsdp`).
    """
    current = dict(graph.root_module.named_parameters())
    allowed = set(allowed)
    stale = [name for name, tensor in graph.parameters.items()
             if name in current and current[name] is not tensor and name not in allowed]
    if stale:
        kind = type(current[stale[0]]).__name__
        raise StaleParametersError(
            f"{len(stale)} parameters of the model (e.g. {stale[0]}, now a {kind}) were replaced after OTO traced "
            "it; OTO's optimizers would train the old tensors. Build OTO(model, dummy_input) on the model as it is "
            "trained (FSDP2's fully_shard is the exception: shard after OTO, see docs/distributed.md)")


def get_param_groups(graph) -> List[dict]:
    """One dict per trainable node group (SPEC section 5.3 schema).

    Besides the reference keys, every dict carries ``p_axes`` (the pruned axis of each parameter, None for
    quantizer scalars) and ``p_unit_index`` (a LongTensor per parameter giving the global unit id of each
    index along that axis, -1 where none: the graph's unit map laid out by
    :func:`~only_train_once.graph.unit_map.global_unit_ids`), ``unprunable_reasons``, and ``global_start_idx`` for
    prunable non-auxiliary groups. The groups hold the traced parameters, which must still be the model's
    (:func:`check_parameters_current`).
    """
    check_parameters_current(graph)
    return traced_param_groups(graph)


def traced_param_groups(graph) -> List[dict]:
    """:func:`get_param_groups` without the check that the traced parameters are still the model's."""
    groups = emitted_groups(graph)
    offsets = unit_offsets(groups)
    param_groups = []
    for group in groups:
        param_group = group.get_param_groups(offsets)
        if group.key in offsets and group.is_prunable and not group.is_auxiliary:
            param_group["global_start_idx"] = offsets[group.key]
        param_groups.append(param_group)
    return param_groups


def set_trainable(graph) -> None:
    """Recompute trainability from ``requires_grad`` (SPEC 6.6); groups without trainable params are unprunable.

    (``graph.params_grad`` / ``params_no_grad`` are derived from ``requires_grad`` on every read.)
    """
    for group in graph.node_groups.values():
        group.is_trainable = bool(group.trainable_members())
        if not group.is_trainable:
            group.mark_unprunable("no trainable parameters")


def zero_global_units(param_groups: Iterable[dict], pruned: torch.Tensor) -> None:
    """Set to zero every parameter slice owned by a unit whose global id is in ``pruned``."""
    if pruned.numel() == 0:
        return
    with torch.no_grad():
        for param_group in param_groups:
            for param, axis, index in zip(param_group["params"], param_group["p_axes"], param_group["p_unit_index"]):
                if index is None:
                    continue
                positions = torch.nonzero(torch.isin(index, pruned.to(index.device)), as_tuple=True)[0]
                if positions.numel():
                    view, dim = along(param, axis)
                    view.index_fill_(dim, positions, 0)


def random_set_zero_groups(graph, target_group_sparsity: Optional[float] = None, num_group_divisible: int = 2) -> None:
    """Zero a random subset of units in every prunable group (sanity checks of subnet construction).

    Per group of ``G`` units, ``z = max(min(floor(s * G) // q * q, G - 1), 0)`` units are zeroed (``q`` =
    ``num_group_divisible``), with ``s`` the target sparsity or a uniform draw per group; numpy's global RNG
    chooses them, so ``np.random.seed`` makes the choice reproducible.
    """
    if target_group_sparsity is not None and not 0 <= target_group_sparsity < 1:
        raise ValueError(f"target_group_sparsity must be in [0, 1), got {target_group_sparsity}")
    check_materialized(graph.parameters.values(), "random_set_zero_groups")
    param_groups = get_param_groups(graph)
    pruned: List[np.ndarray] = []
    for param_group in param_groups:
        if not param_group["is_prunable"] or param_group["is_auxiliary"]:
            continue
        if not any(index is not None for index in param_group["p_unit_index"]):
            continue
        units = param_group["num_groups"]
        sparsity = target_group_sparsity if target_group_sparsity is not None else np.random.rand()
        count = max(min(int(np.floor(sparsity * units)) // num_group_divisible * num_group_divisible, units - 1), 0)
        chosen = np.sort(np.random.choice(units, count, replace=False)) if count else np.empty(0, dtype=np.int64)
        pruned.append(chosen + param_group["global_start_idx"])
    flat = np.concatenate(pruned) if pruned else np.empty(0, dtype=np.int64)
    zero_global_units(param_groups, torch.from_numpy(flat.astype(np.int64)))
    logger.info("random_set_zero_groups: zeroed %d units", flat.size)


def zero_units_by_group(graph, tensors: Optional[Dict[str, torch.Tensor]] = None) -> Dict[int, np.ndarray]:
    """For every prunable unit group, the sorted unit indices whose parameter slices are all exactly zero.

    ``tensors`` (name -> tensor) reads the parameters of another copy of the model instead of the traced one.
    """
    result: Dict[int, np.ndarray] = {}
    for group in graph.node_groups.values():
        if not group.is_prunable or group.is_auxiliary:
            continue
        nonzeros = torch.zeros(group.num_units, dtype=torch.int64)
        counted = False
        for member in group.members:
            if member.axis is None or member.owners is None or not member.is_parameter:
                continue
            keys, indices = member.owners
            mine = keys == group.key
            if not mine.any():
                continue
            source = member.tensor if tensors is None else tensors[member.name]
            # whether each slice has a nonzero element (NaN counts as nonzero): any() of the comparison needs no
            # wider copy of the tensor; sum() cast every element to int64 first (+360 MB for a 7B-width embedding)
            view, dim = along(source.detach(), member.axis)
            nonzero = (view != 0).movedim(dim, 0).reshape(keys.size, -1).any(dim=1).cpu()
            nonzeros.index_add_(0, torch.from_numpy(indices[mine]), nonzero[torch.from_numpy(mine)].to(torch.int64))
            counted = True
        if counted:
            result[group.key] = np.flatnonzero(nonzeros.numpy() == 0)
    return result


def cluster_node_groups(graph, num_clusters: int = 1) -> Dict[int, list]:
    """Cluster prunable, trainable groups by size (k-means, scikit-learn); one cluster when ``num_clusters <= 1``.

    Returns cluster id -> groups (``Graph.cluster_node_groups`` records it as ``graph.node_group_clusters``).
    """
    candidates = [g for g in graph.node_groups.values() if g.is_prunable and g.is_trainable]
    if num_clusters <= 1 or len(candidates) <= num_clusters:
        return {0: candidates}
    try:
        from sklearn.cluster import KMeans
    except ImportError as error:
        raise ImportError("cluster_node_groups(num_clusters > 1) needs scikit-learn: pip install scikit-learn") \
            from error
    features = [[float(g.num_units), 1.0] for g in candidates]
    labels = KMeans(n_clusters=num_clusters, random_state=0, n_init="auto").fit(features).labels_
    clusters: Dict[int, list] = {}
    for label, group in zip(labels, candidates):
        clusters.setdefault(int(label), []).append(group)
    return clusters
