"""The index-space algebra (dependency_graph/spaces.py) on its own: unions, products, concatenations, pins and
resolution, plus a seeded fuzzer checking that every element resolves to exactly one owner on every path."""

import math
import random

import numpy as np
import pytest

from only_train_once.dependency_graph.spaces import SpaceSet


def owners(spaces, space):
    uids, indices = spaces.resolve(space)
    return list(zip(uids.tolist(), indices.tolist()))


def test_a_bare_space_is_its_own_unit():
    spaces = SpaceSet()
    a = spaces.new(4, "a")
    assert owners(spaces, a) == [(a.uid, i) for i in range(4)]
    assert spaces.units(a) == frozenset([a.uid])


def test_size_one_spaces_are_pinned_at_creation():
    spaces = SpaceSet()
    assert spaces.new(1, "scalar").pinned and spaces.units(spaces.new(1, "scalar")) == frozenset()


def test_union_makes_one_root_the_lower_uid_and_one_owner():
    spaces = SpaceSet()
    a, b, c = spaces.new(3, "a"), spaces.new(3, "b"), spaces.new(3, "c")
    spaces.union(c, b)
    spaces.union(b, a)
    assert spaces.find(c) is spaces.find(b) is spaces.find(a) is a
    assert owners(spaces, c) == owners(spaces, a) == [(a.uid, i) for i in range(3)]


def test_union_of_different_sizes_pins_both_with_the_reason():
    spaces = SpaceSet()
    a, b = spaces.new(3, "a"), spaces.new(4, "b")
    spaces.union(a, b)
    assert spaces.find(a) is not spaces.find(b)
    assert a.pinned and b.pinned and spaces.reasons(a) == ["size mismatch 3 vs 4"]
    assert owners(spaces, a) == [(-1, -1)] * 3


def test_a_pin_reaches_factors_and_segments_and_survives_a_union():
    spaces = SpaceSet()
    product = spaces.new(6, "p")
    heads, dims = spaces.factor(product, [2, 3], "heads")
    joined = spaces.concat([spaces.new(2, "x"), spaces.new(3, "y")])
    spaces.pin(product, "model output")
    assert heads.pinned and dims.pinned and spaces.reasons(heads) == ["model output"]
    other = spaces.new(5, "z")
    spaces.pin(other, "normalised")
    spaces.union(joined, other)
    assert all(s.pinned for s in spaces.find(joined).segments)
    assert "joined with a pinned space" in spaces.reasons(joined)


def test_a_product_is_owned_by_its_outermost_prunable_factor():
    spaces = SpaceSet()
    fused = spaces.new(12, "qkv")
    heads, dims = spaces.factor(fused, [3, 4], "heads")
    spaces.normalize()
    assert not heads.pinned and dims.pinned  # only one factor of a product can be pruned
    assert owners(spaces, fused) == [(heads.uid, e // 4) for e in range(12)]


def test_factoring_twice_with_the_same_sizes_returns_the_same_factors():
    spaces = SpaceSet()
    space = spaces.new(8, "s")
    assert spaces.factor(space, [2, 4], "a") == spaces.factor(space, [2, 4], "b")


def test_two_group_norms_factor_to_their_common_refinement():
    spaces = SpaceSet()
    channels = spaces.new(12, "c")
    outer2, _ = spaces.factor(channels, [2, 6], "gn2")
    outer4, inner3 = spaces.factor(channels, [4, 3], "gn4")
    assert [f.size for f in spaces.flat_factors(channels)] == [2, 2, 3]
    spaces.pin(inner3, "inside a group")
    spaces.normalize()
    # A GroupNorm(4) group is half a GroupNorm(2) group: removing it alone would unbalance the GroupNorm(2) groups,
    # so the units are the 2 outer groups of 6 channels.
    resolved = owners(spaces, channels)
    assert [index for _, index in resolved] == [e // 6 for e in range(12)] and len({u for u, _ in resolved}) == 1
    assert resolved[0][0] >= 0 and [o for o in resolved[::6]] == owners(spaces, outer2)


def test_incompatible_factorizations_pin_the_space():
    spaces = SpaceSet()
    space = spaces.new(6, "s")
    spaces.factor(space, [2, 3], "a")
    spaces.factor(space, [3, 2], "b")
    assert spaces.find(space).pinned and owners(spaces, space) == [(-1, -1)] * 6


def test_a_concatenation_is_owned_by_its_segments_in_order():
    spaces = SpaceSet()
    a, b = spaces.new(2, "a"), spaces.new(3, "b")
    joined = spaces.concat([a, b])
    assert owners(spaces, joined) == [(a.uid, 0), (a.uid, 1), (b.uid, 0), (b.uid, 1), (b.uid, 2)]


def test_splitting_a_concatenation_refines_its_segments():
    spaces = SpaceSet()
    a, b = spaces.new(4, "a"), spaces.new(4, "b")
    joined = spaces.concat([a, b])
    left, right = spaces.split(joined, [2, 6])
    assert left.size == 2 and right.size == 6
    assert owners(spaces, left) + owners(spaces, right) == owners(spaces, joined)
    assert [owner[0] for owner in owners(spaces, joined)] != [a.uid] * 4 + [b.uid] * 4  # a was split in two


def test_a_space_that_is_both_product_and_concatenation_is_pinned():
    spaces = SpaceSet()
    product, joined = spaces.new(4, "p"), spaces.concat([spaces.new(2, "x"), spaces.new(2, "y")])
    spaces.factor(product, [2, 2], "heads")
    spaces.union(product, joined)
    assert spaces.find(product).pinned
    assert "a space is both a product and a concatenation" in spaces.reasons(product)


def test_factor_rejects_sizes_whose_product_differs():
    with pytest.raises(ValueError, match="cannot factor"):
        SpaceSet().factor(SpaceSet().new(6, "s"), [4, 2], "bad")


# -- fuzzer ---------------------------------------------------------------------------------------------------

def _factorizations(size, rng):
    divisors = [d for d in range(2, size) if size % d == 0]
    if not divisors:
        return None
    first = rng.choice(divisors)
    rest = size // first
    inner = [d for d in range(2, rest) if rest % d == 0]
    if inner and rng.random() < 0.3:
        second = rng.choice(inner)
        return [first, second, rest // second]
    return [first, rest]


def _composition(size, rng):
    """Parts of at least 2 (a size-1 space is pinned at creation and owns nothing)."""
    cuts = [c for c in range(2, size - 1)]
    if not cuts:
        return None
    cut = rng.choice(cuts)
    return [cut, size - cut]


class _Families:
    """Which original spaces each space is built from. Axes of different tensors are what the catalogue unions
    and concatenates; a space is never declared equal to, or concatenated with, a piece of itself (that makes the
    structure cyclic: ``factor`` then recurses without end, a limitation these tests leave out)."""

    def __init__(self):
        self.parent = {}
        self.of = {}

    def root(self, family):
        while self.parent.get(family, family) != family:
            family = self.parent[family]
        return family

    def add(self, space, families):
        self.of[space.uid] = set(families)

    def roots(self, space):
        return {self.root(f) for f in self.of[space.uid]}

    def may_union(self, a, b):
        return not self.roots(a) & self.roots(b)

    def merge(self, a, b):
        first, *rest = sorted(self.roots(a) | self.roots(b))
        for family in rest:
            self.parent[family] = first


def _random_algebra(seed):
    """Random operations like the catalogue's, recorded as relations that resolution must respect."""
    rng = random.Random(seed)
    spaces = SpaceSet()
    families = _Families()
    pool = []

    def fresh(size, origin):
        space = spaces.new(size, origin)
        families.add(space, [space.uid])
        pool.append(space)

    for i in range(6):
        fresh(rng.choice([2, 3, 4, 6, 8, 12]), f"s{i}")
    unions, products, sequences = [], [], []
    for _ in range(40):
        op = rng.random()
        space = rng.choice(pool)
        if op < 0.35:
            same = [s for s in pool if s.size == space.size and families.may_union(s, space)]
            if same:
                other = rng.choice(same)
                spaces.union(space, other)
                families.merge(space, other)
                unions.append((space, other))
        elif op < 0.6:
            sizes = _factorizations(space.size, rng)
            if sizes:
                factors = spaces.factor(space, sizes, "factor")
                products.append((space, factors))
                for factor in factors:
                    families.add(factor, families.roots(space))
                pool.extend(factors)
        elif op < 0.75:
            parts = rng.sample(pool, 2)
            if not families.may_union(*parts):
                continue  # concatenating a tensor with a piece of itself: see the report of issue 18
            joined = spaces.concat(parts)
            families.add(joined, families.roots(parts[0]) | families.roots(parts[1]))
            sequences.append((joined, parts))
            pool.append(joined)
        elif op < 0.9:
            sizes = _composition(space.size, rng)
            parts = spaces.split(space, sizes) if sizes else None
            if parts is not None:
                sequences.append((space, parts))
                for part in parts:
                    families.add(part, families.roots(space))
                pool.extend(parts)
        elif op < 0.95:
            spaces.pin(space, "pinned by the fuzzer")
        else:
            fresh(rng.choice([2, 3, 4, 6]), "fresh")
    spaces.normalize()
    return spaces, unions, products, sequences


def _agree(composite, part):
    """No element has two owners: where both views own an element, they name the same unit and index."""
    both = (composite[0] >= 0) & (part[0] >= 0)
    assert np.array_equal(composite[0][both], part[0][both]) and np.array_equal(composite[1][both], part[1][both])
    assert np.all(part[0][composite[0] >= 0] >= 0)  # an element owned through the whole is owned through its part


def _coordinate(factors, k, size):
    inner = math.prod(f.size for f in factors[k + 1:])
    return (np.arange(size) // inner) % factors[k].size


@pytest.mark.parametrize("seed", range(200))
def test_after_random_unions_and_factorizations_every_element_has_exactly_one_owner(seed):
    spaces, unions, products, sequences = _random_algebra(seed)
    roots = [spaces.find(s) for s in spaces.spaces]
    assert all(root.parent is None and spaces.find(root) is root for root in roots)  # one class per space
    units = {root.uid: root for root in roots if not root.pinned and root.factors is None and root.segments is None}
    for space in spaces.spaces:
        uids, indices = spaces.resolve(space)
        assert uids.shape == indices.shape == (space.size,)
        assert np.array_equal(uids < 0, indices < 0)
        for uid, index in zip(uids[uids >= 0].tolist(), indices[uids >= 0].tolist()):
            assert uid in units and 0 <= index < units[uid].size
        if spaces.find(space).uid in units:
            assert owners(spaces, space) == [(spaces.find(space).uid, i) for i in range(space.size)]
        assert spaces.units(space) == frozenset(uids[uids >= 0].tolist())
    for a, b in unions:
        if a.size == b.size:
            assert owners(spaces, a) == owners(spaces, b)
    for space, factors in products:
        whole = spaces.resolve(space)
        for k, factor in enumerate(factors):
            uids, indices = spaces.resolve(factor)
            coordinate = _coordinate(factors, k, space.size)
            through = (uids[coordinate], indices[coordinate])
            both = (whole[0] >= 0) & (through[0] >= 0)
            assert np.array_equal(whole[0][both], through[0][both]) and np.array_equal(whole[1][both],
                                                                                        through[1][both])
    for joined, parts in sequences:
        whole = spaces.resolve(joined)
        offset = 0
        for part in parts:
            _agree(tuple(w[offset:offset + part.size] for w in whole), spaces.resolve(part))
            offset += part.size
