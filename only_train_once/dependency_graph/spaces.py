"""Index spaces: the algebra behind pruning zero-invariant groups.

Every axis of every tensor in the traced graph is labelled with a :class:`Space`, an index set of fixed size.
Operators relate spaces: an elementwise add says that its inputs' channel axes are the *same* space
(:meth:`SpaceSet.union`); a convolution says that its output channel axis is the space of its weight's
dim 0; a ``view(B, L, H, D)`` says that a space of size ``H*D`` is the *product* of a head space and a
head-dim space (:meth:`SpaceSet.factor`); a concatenation says that its output space is the *sequence* of
its inputs' spaces (:meth:`SpaceSet.concat`). A space that cannot lose elements without changing what the
network computes (a model input or output, a normalised axis, an axis indexed by constants...) is
*pinned*, with the reason recorded.

After all operators have spoken, every unpinned root space that does not decompose further is a
*prunable unit space*: removing one of its indices removes one channel / head / GroupNorm group, and
:meth:`SpaceSet.resolve` maps every element of any space (a weight's dim 0, a fused qkv projection, a
flattened feature vector) to the ``(unit space, unit index)`` that owns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass(eq=False)
class Space:
    """One index set. Structure and pins live on the union-find root (see :class:`SpaceSet`)."""

    uid: int
    size: int
    origin: str
    parent: Optional["Space"] = None
    pinned: bool = False
    factors: Optional[List["Space"]] = None  # product structure, outermost first
    segments: Optional[List["Space"]] = None  # sequence structure (concatenation)
    from_concat: bool = False

    def __repr__(self) -> str:
        return f"Space#{self.uid}({self.size}, {self.origin})"


Owners = Tuple[np.ndarray, np.ndarray]


def _unowned(size: int) -> Owners:
    return np.full(size, -1, dtype=np.int64), np.full(size, -1, dtype=np.int64)


class SpaceSet:
    """Union-find over :class:`Space` objects with product and sequence structure.

    Deterministic: spaces are numbered in creation order and every tie is broken by that number.
    """

    def __init__(self) -> None:
        self.spaces: List[Space] = []
        self.pin_reasons: Dict[int, List[str]] = {}

    # -- creation and lookup ------------------------------------------------------------------------
    def new(self, size: int, origin: str, pinned: bool = False) -> Space:
        space = Space(len(self.spaces), int(size), origin)
        self.spaces.append(space)
        if pinned or size <= 1:
            space.pinned = True
        return space

    def find(self, space: Space) -> Space:
        root = space
        while root.parent is not None:
            root = root.parent
        while space.parent is not None and space.parent is not root:
            space.parent, space = root, space.parent
        return root

    # -- pins ---------------------------------------------------------------------------------------
    def pin(self, space: Space, reason: str) -> None:
        """Mark ``space`` (and everything it decomposes into) as not prunable."""
        stack = [self.find(space)]
        while stack:
            root = self.find(stack.pop())
            reasons = self.pin_reasons.setdefault(root.uid, [])
            if reason not in reasons:
                reasons.append(reason)
            if root.pinned:
                continue
            root.pinned = True
            stack.extend(root.factors or [])
            stack.extend(root.segments or [])

    def reasons(self, space: Space) -> List[str]:
        return self.pin_reasons.get(self.find(space).uid, [])

    # -- union --------------------------------------------------------------------------------------
    def union(self, a: Space, b: Space) -> Space:
        """Declare ``a`` and ``b`` the same index set (sizes must agree, else both are pinned)."""
        ra, rb = self.find(a), self.find(b)
        if ra is rb:
            return ra
        if ra.size != rb.size:
            self.pin(ra, f"size mismatch {ra.size} vs {rb.size}")
            self.pin(rb, f"size mismatch {ra.size} vs {rb.size}")
            return ra
        if rb.uid < ra.uid:
            ra, rb = rb, ra
        rb.parent = ra
        pinned = ra.pinned or rb.pinned
        reasons = self.pin_reasons.pop(rb.uid, [])
        if reasons:
            merged = self.pin_reasons.setdefault(ra.uid, [])
            merged.extend(r for r in reasons if r not in merged)
        ra.from_concat = ra.from_concat or rb.from_concat
        factors_a, factors_b = ra.factors, rb.factors
        segments_a, segments_b = ra.segments, rb.segments
        ra.factors = factors_a or factors_b
        ra.segments = segments_a or segments_b
        if factors_a and factors_b:
            self._unify_factors(ra, factors_a, factors_b)
        if segments_a and segments_b:
            self._unify_segments(ra, segments_a, segments_b)
        if (ra.factors and ra.segments):
            # Neither structure can be kept, so the parts of both are pinned too: a head factor of an attention
            # output tied to a concatenated residual (EdgeNeXt's cross-covariance attention) must not stay prunable.
            parts = ra.factors + ra.segments
            ra.factors, ra.segments = None, None
            self.pin(ra, "a space is both a product and a concatenation")
            for part in parts:
                self.pin(part, "a space is both a product and a concatenation")
        if pinned:
            ra.pinned = False
            self.pin(ra, "joined with a pinned space")
        return ra

    def _unify_factors(self, root: Space, fa: List[Space], fb: List[Space]) -> None:
        root.factors = fa
        pairs = list(zip(fa, fb)) if [f.size for f in fa] == [f.size for f in fb] else self._refined_pairs(fa, fb)
        if pairs is None:
            self.pin(root, f"incompatible factorizations {[f.size for f in fa]} vs {[f.size for f in fb]}")
            for f in fb:
                self.pin(f, "incompatible factorizations")
            return
        for x, y in pairs:
            self.union(x, y)

    def _refined_pairs(self, fa: List[Space], fb: List[Space]) -> Optional[List[Tuple[Space, Space]]]:
        """Both factorizations split to their common refinement, piece by piece (None if there is none)."""
        strides = _common_strides([f.size for f in fa], [f.size for f in fb])
        if strides is None:
            return None
        pieces_a, pieces_b = self._split_to(fa, strides, "refine"), self._split_to(fb, strides, "refine")
        if [p.size for p in pieces_a] != [p.size for p in pieces_b]:
            return None
        return list(zip(pieces_a, pieces_b))

    def _unify_segments(self, root: Space, sa: List[Space], sb: List[Space]) -> None:
        bounds = sorted(set(_boundaries(sa)) | set(_boundaries(sb)))
        refined_a = self._refine(sa, bounds)
        refined_b = self._refine(sb, bounds)
        if refined_a is None or refined_b is None:
            root.segments = sa
            self.pin(root, "incompatible concatenations")
            return
        root.segments = refined_a
        for x, y in zip(refined_a, refined_b):
            self.union(x, y)

    def _refine(self, segments: List[Space], bounds: List[int]) -> Optional[List[Space]]:
        refined: List[Space] = []
        start = 0
        for segment in segments:
            end = start + segment.size
            inner = [b - start for b in bounds if start < b < end]
            if inner:
                pieces = self.split(segment, _sizes_from_bounds(inner, segment.size))
                if pieces is None:
                    return None
                refined.extend(pieces)
            else:
                refined.append(segment)
            start = end
        return refined

    # -- structure ----------------------------------------------------------------------------------
    def factor(self, space: Space, sizes: Sequence[int], origin: str) -> List[Space]:
        """Declare ``space`` the product of spaces of ``sizes`` (outermost first) and return them."""
        root = self.find(space)
        sizes = [int(s) for s in sizes]
        if math.prod(sizes) != root.size:
            raise ValueError(f"cannot factor a space of size {root.size} into {sizes}")
        if sum(size > 1 for size in sizes) <= 1:
            # Trivial: the space times size-1 axes. Recording it as a factor of itself would make its product
            # structure cyclic (a segment of one block, later tied back to its own segment, recursed without end).
            whole = sizes.index(root.size)
            return [space if i == whole else self.new(1, origin) for i in range(len(sizes))]
        if root.factors is not None:
            current = self.flat_factors(root)
            if [f.size for f in current] == sizes:
                return current
            if [f.size for f in root.factors] == sizes:
                return list(root.factors)
            regrouped = self._regroup(current, sizes)
            if regrouped is not None:
                return regrouped
            refined = self._refine_factors(current, sizes, origin)
            if refined is not None:
                return refined
            self.pin(root, f"incompatible factorizations {[f.size for f in current]} vs {sizes}")
            return [self.new(s, origin, pinned=True) for s in sizes]
        if root.segments is not None:
            factors = self._factor_segments(root, sizes, origin)
            if factors is not None:
                return factors
            self.pin(root, "a concatenated space is reshaped")
            return [self.new(s, origin, pinned=True) for s in sizes]
        factors = [self.new(s, origin) for s in sizes]
        root.factors = factors
        if root.pinned:
            for f in factors:
                self.pin(f, "factor of a pinned space")
        return factors

    def _refine_factors(self, current: List[Space], sizes: List[int], origin: str) -> Optional[List[Space]]:
        """Reconcile a second factorization with the existing one (GroupNorm(2) and GroupNorm(4) over the same
        channels): split the existing factors down to the common refinement of both, then group it as ``sizes``
        asks. None when the two have no common refinement."""
        strides = _common_strides([f.size for f in current], sizes)
        if strides is None:
            return None
        return self._regroup(self._split_to(current, strides, origin), sizes)

    def _split_to(self, factors: List[Space], strides: List[int], origin: str) -> List[Space]:
        """``factors`` split at every stride of ``strides`` (descending, a refinement of theirs); size-1 spaces,
        which own no unit, are left out."""
        pieces: List[Space] = []
        stride = math.prod(f.size for f in factors)
        for factor in factors:
            inner = stride // factor.size
            bounds = [t for t in strides if inner <= t <= stride]
            sizes = [outer // next_inner for outer, next_inner in zip(bounds, bounds[1:])]
            pieces.extend(self.factor(factor, sizes, origin) if len(sizes) > 1 else [factor])
            stride = inner
        return [piece for piece in pieces if piece.size > 1]

    def _factor_segments(self, root: Space, sizes: List[int], origin: str) -> Optional[List[Space]]:
        """Factor a concatenation whose segments each cover whole outer blocks (GroupNorm or a grouped conv over
        concatenated channels): every segment is factored alike, the inner factors of all segments are one
        space, and the outer factor is the concatenation of the segments' outer factors. The root keeps its
        segments (each now a product), so resolution through them gives the same owners. None if a segment
        boundary falls inside a block."""
        block = math.prod(sizes[1:])
        segments = list(root.segments or [])
        if len(sizes) < 2 or any(segment.size % block for segment in segments):
            return None
        per_segment = [self.factor(segment, [segment.size // block] + sizes[1:], origin) for segment in segments]
        first = per_segment[0]
        for factors in per_segment[1:]:
            for shared, other in zip(first[1:], factors[1:]):
                self.union(shared, other)
        outer = self.concat([factors[0] for factors in per_segment], origin, from_concat=root.from_concat)
        return [outer] + first[1:]

    def _regroup(self, flat: List[Space], sizes: List[int]) -> Optional[List[Space]]:
        """Group consecutive flat factors into products of ``sizes`` (e.g. [3, H, D] as [3, H*D])."""
        result: List[Space] = []
        i = 0
        for size in sizes:
            group: List[Space] = []
            product = 1
            while i < len(flat) and product < size:
                group.append(flat[i])
                product *= flat[i].size
                i += 1
            if product != size:
                return None
            result.append(group[0] if len(group) == 1 else self.product(group, "regroup"))
        return result if i == len(flat) else None

    def product(self, parts: Sequence[Space], origin: str) -> Space:
        """A new space whose elements are the mixed-radix combinations of ``parts`` (flatten/merge)."""
        parts = [p for p in parts if p.size > 1] or list(parts[:1])
        if len(parts) == 1:
            return parts[0]
        merged = self.new(math.prod(p.size for p in parts), origin)
        merged.factors = list(parts)
        return merged

    def flat_factors(self, space: Space) -> List[Space]:
        """Fully expanded product structure of ``space`` (itself if it has none)."""
        root = self.find(space)
        if root.factors is None:
            return [space]
        flat: List[Space] = []
        for f in root.factors:
            flat.extend(self.flat_factors(f))
        return flat

    def split(self, space: Space, sizes: Sequence[int], origin: str = "split") -> Optional[List[Space]]:
        """Declare ``space`` the concatenation of spaces of ``sizes``; returns them (None if impossible)."""
        root = self.find(space)
        sizes = [int(s) for s in sizes]
        if sum(sizes) != root.size:
            raise ValueError(f"cannot split a space of size {root.size} into {sizes}")
        if len(sizes) == 1:
            return [space]
        if root.segments is not None:
            bounds = sorted(set(_boundaries(root.segments)) | set(_cumulative(sizes)))
            refined = self._refine(root.segments, bounds)
            if refined is None:
                return None
            root.segments = refined
            return self._group_segments(refined, sizes, origin)
        if root.factors is not None:
            outer = self.find(root.factors[0])
            block = root.size // outer.size
            if all(s % block == 0 for s in sizes) and outer.segments is None:
                outer_parts = self.split(root.factors[0], [s // block for s in sizes], origin)
                if outer_parts is None:
                    return None
                inner = root.factors[1:]
                return [self.product([p] + list(inner), origin) for p in outer_parts]
            self.pin(root, "a product space is split")
            return [self.new(s, origin, pinned=True) for s in sizes]
        parts = [self.new(s, origin) for s in sizes]
        root.segments = parts
        if root.pinned:
            for p in parts:
                self.pin(p, "segment of a pinned space")
        return parts

    def concat(self, parts: Sequence[Space], origin: str = "concat", from_concat: bool = True) -> Space:
        """A new space that is the sequence of ``parts`` (a channel concatenation)."""
        if len(parts) == 1:
            return parts[0]
        merged = self.new(sum(p.size for p in parts), origin)
        merged.segments = list(parts)
        merged.from_concat = from_concat
        return merged

    def _group_segments(self, segments: List[Space], sizes: List[int], origin: str) -> Optional[List[Space]]:
        """Cover consecutive ``segments`` with ranges of ``sizes`` (each range one space)."""
        grouped: List[Space] = []
        i = 0
        for size in sizes:
            group: List[Space] = []
            total = 0
            while total < size and i < len(segments):
                group.append(segments[i])
                total += segments[i].size
                i += 1
            if total != size:
                return None
            grouped.append(self.concat(group, origin, from_concat=False))
        return grouped

    # -- resolution ---------------------------------------------------------------------------------
    def resolve(self, space: Space, cache: Optional[Dict[int, "Owners"]] = None) -> "Owners":
        """For each element of ``space``: the uid of the prunable unit space owning it and the unit index.

        Returned as two int64 arrays ``(unit_uids, unit_indices)`` (uid -1 where no prunable unit owns the
        element). A product space is owned by its single prunable factor; a concatenation by its segments.
        Call :meth:`normalize` first so that every product has at most one prunable factor.
        """
        cache = cache if cache is not None else {}
        return self._resolve(space, cache, set())

    def _resolve(self, space: Space, cache: Dict[int, "Owners"], visiting: set) -> "Owners":
        root = self.find(space)
        known = cache.get(root.uid)
        if known is not None:
            return known
        if root.uid in visiting or root.pinned:
            owners = _unowned(root.size)
        elif root.segments is not None:
            visiting.add(root.uid)
            parts = [self._resolve(s, cache, visiting) for s in root.segments]
            visiting.discard(root.uid)
            owners = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        elif root.factors is not None:
            visiting.add(root.uid)
            owners = self._resolve_product(root, cache, visiting)
            visiting.discard(root.uid)
        else:
            owners = (np.full(root.size, root.uid, dtype=np.int64), np.arange(root.size, dtype=np.int64))
        cache[root.uid] = owners
        return owners

    def _resolve_product(self, root: Space, cache, visiting) -> "Owners":
        factors: List[Space] = root.factors or []
        factor_owners = [self._resolve(f, cache, visiting) for f in factors]
        prunable = [i for i, owners in enumerate(factor_owners) if (owners[0] >= 0).any()]
        if len(prunable) != 1:
            return _unowned(root.size)
        k = prunable[0]
        inner = math.prod(f.size for f in factors[k + 1:])
        positions = (np.arange(root.size, dtype=np.int64) // inner) % factors[k].size
        return factor_owners[k][0][positions], factor_owners[k][1][positions]

    def units(self, space: Space, cache: Optional[Dict[int, frozenset]] = None) -> frozenset:
        """uids of the prunable unit spaces owning some element of ``space`` (no per-element work)."""
        cache = cache if cache is not None else {}
        return self._units(space, cache, set())

    def _units(self, space: Space, cache: Dict[int, frozenset], visiting: set) -> frozenset:
        root = self.find(space)
        known = cache.get(root.uid)
        if known is not None:
            return known
        if root.uid in visiting or root.pinned:
            result: frozenset = frozenset()
        else:
            visiting.add(root.uid)
            if root.segments is not None:
                result = frozenset().union(*(self._units(s, cache, visiting) for s in root.segments))
            elif root.factors is not None:
                per_factor = [self._units(f, cache, visiting) for f in root.factors]
                owning = [u for u in per_factor if u]
                result = owning[0] if len(owning) == 1 else frozenset()
            else:
                result = frozenset([root.uid])
            visiting.discard(root.uid)
        cache[root.uid] = result
        return result

    def has_prunable(self, space: Space, visiting: Optional[set] = None) -> bool:
        """Whether some element of ``space`` can be owned by a prunable unit."""
        root = self.find(space)
        if root.pinned:
            return False
        visiting = visiting if visiting is not None else set()
        if root.uid in visiting:
            return False
        visiting.add(root.uid)
        try:
            if root.segments is not None:
                return any(self.has_prunable(s, visiting) for s in root.segments)
            if root.factors is not None:
                return any(self.has_prunable(f, visiting) for f in root.factors)
            return True
        finally:
            visiting.discard(root.uid)

    def normalize(self) -> None:
        """Make every product own at most one prunable factor (the outermost), so resolution is unique."""
        changed = True
        while changed:
            changed = False
            for space in self.spaces:
                root = self.find(space)
                if root is not space or root.pinned or root.factors is None:
                    continue
                prunable = [f for f in root.factors if self.has_prunable(f)]
                for extra in prunable[1:]:
                    self.pin(extra, "only one factor of a product space can be pruned")
                    changed = True


def _cumulative(sizes: Sequence[int]) -> List[int]:
    bounds, total = [], 0
    for s in sizes[:-1]:
        total += s
        bounds.append(total)
    return bounds


def _inner_products(sizes: Sequence[int]) -> List[int]:
    """The stride of every factor of a mixed-radix product of ``sizes`` (outermost first), and the total."""
    strides = [math.prod(sizes)]
    for size in sizes:
        strides.append(strides[-1] // size)
    return strides


def _common_strides(a: Sequence[int], b: Sequence[int]) -> Optional[List[int]]:
    """Strides (descending) of the common refinement of two factorizations of one size, or None if a stride of
    one does not divide the next (2 x 3 and 3 x 2 have none)."""
    strides = sorted(set(_inner_products(a)) | set(_inner_products(b)), reverse=True)
    if any(outer % inner for outer, inner in zip(strides, strides[1:])):
        return None
    return strides


def _boundaries(segments: Sequence[Space]) -> List[int]:
    return _cumulative([s.size for s in segments])


def _sizes_from_bounds(bounds: Sequence[int], total: int) -> List[int]:
    points = [0] + list(bounds) + [total]
    return [b - a for a, b in zip(points, points[1:])]
