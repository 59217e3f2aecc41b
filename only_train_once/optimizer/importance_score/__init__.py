"""Importance scores of the prunable units (SPEC 5.4): low score = redundant.

Each criterion is a function of the per-unit :class:`UnitStatistics`; :func:`calculate_importance_score`
normalises every criterion over all eligible units and returns their weighted sum.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from .cosine_similarity import cosine_similarity
from .magnitude import avg_magnitude, magnitude
from .statistics import UnitStatistics, unit_statistics
from .taylor import taylor_first_order, taylor_second_order

Criterion = Callable[[UnitStatistics], Tensor]

CRITERIA: Dict[str, Criterion] = {
    "magnitude": magnitude,
    "avg_magnitude": avg_magnitude,
    "cosine_similarity": cosine_similarity,
    "taylor_first_order": taylor_first_order,
    "taylor_second_order": taylor_second_order,
}

#: ``importance_score_criteria="default"``: every criterion with weight 0.2.
DEFAULT_IMPORTANCE_WEIGHTS: Dict[str, float] = {name: 0.2 for name in CRITERIA}

#: How each criterion grows with a unit's number of parameter elements ``n`` when every element has the same
#: magnitude and gradient (``magnitude`` ~ sqrt(n), ``taylor_first_order`` ~ n, ...). ``"per_parameter"``
#: normalisation divides the criterion by ``n ** exponent``, so that units of different sizes compete on their
#: per-parameter values: summed over 4 x 32 x 384 weights, a MiniLM attention head otherwise outscored every FFN
#: unit (2 x 384 weights) about 64x and was never pruned.
SIZE_EXPONENTS: Dict[str, float] = {"magnitude": 0.5, "avg_magnitude": -0.5, "cosine_similarity": 0.0,
                                    "taylor_first_order": 1.0, "taylor_second_order": 2.0}

#: ``importance_normalization`` values: ``"per_parameter"`` (criteria divided by the unit's size, see
#: :data:`SIZE_EXPONENTS`) or ``"per_unit"`` (the reference's sums over the unit's elements, SPEC 5.4).
IMPORTANCE_NORMALIZATIONS = ("per_parameter", "per_unit")

__all__ = [
    "CRITERIA",
    "DEFAULT_IMPORTANCE_WEIGHTS",
    "IMPORTANCE_NORMALIZATIONS",
    "SIZE_EXPONENTS",
    "UnitStatistics",
    "unit_statistics",
    "resolve_criteria",
    "calculate_importance_score",
    "magnitude",
    "avg_magnitude",
    "cosine_similarity",
    "taylor_first_order",
    "taylor_second_order",
]


def resolve_criteria(criteria: Union[None, str, Mapping[str, float]], extra: Iterable[str] = (),
                     defaults: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
    """``{criterion: weight}`` from ``"default"`` / ``None`` (the defaults) or a user dict.

    ``ValueError`` for an unknown criterion name or a non-numeric weight; ``extra`` names are accepted too
    (optimizer-specific criteria such as HESSOCRIC's ``"loss"``).
    """
    if criteria is None or criteria == "default":
        return dict(DEFAULT_IMPORTANCE_WEIGHTS if defaults is None else defaults)
    if not isinstance(criteria, Mapping):
        raise ValueError("importance_score_criteria must be 'default' or a dict {criterion: weight}, "
                         f"got {criteria!r}")
    known = set(CRITERIA) | set(extra)
    unknown = sorted(set(criteria) - known)
    if unknown:
        raise ValueError(f"importance_score_criteria: unknown criteria {unknown}; valid names are {sorted(known)}")
    for name, weight in criteria.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"importance_score_criteria[{name!r}] must be a number, got {weight!r}")
    return {name: float(weight) for name, weight in criteria.items()}


def calculate_importance_score(criteria: Mapping[str, float], stats: UnitStatistics, eligible: Tensor,
                               normalization: str = "per_parameter") -> Tuple[Tensor, Dict[str, Tensor]]:
    """Overall score per unit and the normalised, weighted score of each criterion (float64 vectors).

    With ``normalization="per_parameter"`` criterion ``c`` is first divided by ``n_i ** SIZE_EXPONENTS[c]``
    (``n_i``: the unit's number of parameter elements); ``"per_unit"`` keeps the raw sums. Then it is divided
    by ``D_c = sqrt(1e-8 + sum of its squares over eligible units) + 1e-8`` and weighted by ``criteria[c]``;
    the overall score is the sum. Units outside ``eligible`` score 0.
    """
    if normalization not in IMPORTANCE_NORMALIZATIONS:
        raise ValueError(f"importance_normalization must be one of {IMPORTANCE_NORMALIZATIONS}, "
                         f"got {normalization!r}")
    overall = torch.zeros_like(stats.param_sq_norm)
    parts: Dict[str, Tensor] = {}
    sizes = stats.num_elements.clamp_min(1.0)
    for name, weight in criteria.items():
        if name not in CRITERIA:
            continue
        raw = CRITERIA[name](stats)
        if normalization == "per_parameter":
            raw = raw / sizes.pow(SIZE_EXPONENTS[name])
        raw = torch.where(eligible, raw, torch.zeros_like(overall))
        scale = torch.sqrt(1e-8 + raw.pow(2).sum()) + 1e-8
        parts[name] = raw / scale * weight
        overall += parts[name]
    return overall, parts
