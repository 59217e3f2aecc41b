"""The unit map: which prunable unit owns each index of every axis of every parameter and buffer.

Computed once, by the ``build_groups`` pass, from the index-space analysis (``graph.unit_map`` shows it). Every
consumer reads it instead of asking the analysis again: the groups' members (the axis each is pruned along),
the optimizers (as global unit ids, ``p_unit_index``, see :func:`global_unit_ids`), the group check and the
pruning plan of subnet construction (every axis that loses elements, output and input sides alike).

A unit is named by its group's key and its index inside the group; ``-1`` keys mark indices no unit owns. An axis
is a dimension or, for a mixture of experts' tensors, a pair of dimensions read as one flattened axis
(:mod:`.pruning_axis`, mapped by the analysis's ``mapped_axes``).
"""

from __future__ import annotations

from typing import Dict, Iterator, Mapping, Tuple

import numpy as np

from .pruning_axis import PruningAxis

#: ``(unit group keys, unit indices)``, two int64 arrays over the indices of one axis.
Owners = Tuple[np.ndarray, np.ndarray]


class UnitMap:
    """Tensor name -> the :data:`Owners` of each of its axes (see module docstring)."""

    def __init__(self, axes: Mapping[str, Mapping[PruningAxis, Owners]]):
        self._axes: Dict[str, Dict[PruningAxis, Owners]] = {name: dict(owners) for name, owners in axes.items()}

    @classmethod
    def of_graph(cls, graph, analysis) -> "UnitMap":
        """The owners of every axis (and mapped flattened axis) of the graph's traced parameters and buffers (the
        first value of a name)."""
        axes: Dict[str, Dict[PruningAxis, Owners]] = {}
        for value in graph.values.values():
            if value.kind in ("param", "buffer") and value.name is not None and value.name not in axes:
                owners: Dict[PruningAxis, Owners] = {
                    axis: analysis.owners(space) for axis, space in enumerate(analysis.axes(value.id))}
                for mapped in analysis.mapped_axes(value.id):
                    owners[mapped.axis] = analysis.mapped_owners(mapped)
                axes[value.name] = owners
        return cls(axes)

    def owners(self, name: str, axis: PruningAxis) -> Owners:
        """Who owns each index along ``axis`` of tensor ``name``."""
        return self._axes[name][axis]

    def __contains__(self, name: str) -> bool:
        return name in self._axes

    def __iter__(self) -> Iterator[Tuple[str, PruningAxis, Owners]]:
        """``(tensor name, axis, owners)`` for every axis with at least one owned index."""
        for name, axes in self._axes.items():
            for axis, owners in axes.items():
                if (owners[0] >= 0).any():
                    yield name, axis, owners


def global_unit_ids(owners: Owners, unit_offsets: Mapping[int, int]) -> np.ndarray:
    """The global unit id of each index (``unit_offsets[key] + index``; -1 where no group of ``unit_offsets`` owns
    it): the numbering the optimizers use, over the prunable groups laid out one after another."""
    keys, indices = owners
    ids = np.full(keys.shape, -1, dtype=np.int64)
    for key in np.unique(keys[keys >= 0]):
        offset = unit_offsets.get(int(key))
        if offset is not None:
            mask = keys == key
            ids[mask] = offset + indices[mask]
    return ids
