"""GETA and HESSO settings as data: frozen dataclasses validated once, when they are built.

    from only_train_once.optimizer.config import BitRange, GetaConfig, Schedule
    config = GetaConfig(lr=1e-3, variant="adam", target_group_sparsity=0.5,
                        projection=Schedule(start=0, steps=100, periods=5),
                        pruning=Schedule(start=100, steps=100, periods=5), weight_bits=BitRange(4, 16))
    optimizer = oto.geta(config=config)

The reference's keyword form (``oto.geta(lr=..., start_pruning_step=..., min_bit_wt=...)``) is a thin shim:
:meth:`GetaConfig.from_keywords` / :meth:`HessoConfig.from_keywords` map its names onto these fields, and an error
raised while building a part names the keywords the caller wrote.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

from .base_hybrid_sparse_optimizer import AUXILIARY_SCALINGS
from .finite import NON_FINITE_POLICIES
from .geta import FORGET_RATE_GUARDS
from .hyperparameter import MOMENT_INITIALIZATIONS, SUPPORT_GRADIENT_ESTIMATES
from .redundancy import SELECTION_ORDERS
from .training_health import HealthThresholds

#: The device the optimizers record when none is given (the reference's default; the state follows each parameter).
RECORDED_DEVICE = "cuda"

Criteria = Union[str, Mapping[str, float], None]


def _is_integer(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and float(value).is_integer()


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _require(condition: bool, name: str, expectation: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"{name} must be {expectation}, got {value!r}")


def _require_choice(name: str, value: Any, choices) -> None:
    _require(value in choices, name, f"one of {list(choices)}", value)


def _require_fraction(name: str, value: Any, upper_inclusive: bool) -> None:
    inside = _is_number(value) and (0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0)
    _require(inside, name, "a number in [0, 1]" if upper_inclusive else "a number in [0, 1)", value)


def parse_flag(name: str, value: Union[bool, str]) -> bool:
    """``True``/``False`` or the reference's strings ``"True"``/``"False"`` (any case) as a bool.

    The reference passes ``verbose="False"``, a non-empty string that plain ``bool()`` reads as True.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name} must be True, False, 'True' or 'False', got {value!r}")


@dataclass(frozen=True)
class Schedule:
    """A training phase: ``periods`` equal periods over ``steps`` optimizer steps, the first starting after step
    ``start``. ``steps=None`` gives each period one step. (GETA's projection and pruning phases; HESSO's pruning.)"""

    start: int = 0
    steps: Optional[int] = None
    periods: int = 1

    def __post_init__(self) -> None:
        _require(_is_integer(self.start) and self.start >= 0, "Schedule.start", "an integer >= 0", self.start)
        _require(_is_integer(self.periods) and self.periods >= 1, "Schedule.periods", "an integer >= 1",
                 self.periods)
        if self.steps is not None:
            _require(_is_integer(self.steps) and self.steps >= self.periods, "Schedule.steps",
                     f"None or an integer >= Schedule.periods ({self.periods}): each period needs a step", self.steps)

    @property
    def total_steps(self) -> int:
        """``steps``, or one step per period when it was left None."""
        return int(self.periods if self.steps is None else self.steps)


@dataclass(frozen=True)
class BitRange:
    """The bit widths a quantizer may learn, ``min_bits <= bits <= max_bits`` (a quantizer needs at least 2)."""

    min_bits: int = 2
    max_bits: int = 16

    def __post_init__(self) -> None:
        for name, value in (("BitRange.min_bits", self.min_bits), ("BitRange.max_bits", self.max_bits)):
            _require(_is_number(value) and value >= 2, name, "a number >= 2 (a quantizer needs more than 1 bit)",
                     value)
        _require(self.min_bits <= self.max_bits, "BitRange.min_bits", f"<= BitRange.max_bits ({self.max_bits})",
                 self.min_bits)


@dataclass(frozen=True)
class SparseOptimizerConfig:
    """What HESSO and GETA share: the gradient step, the pruning target and the redundant-group selection.

    ``device`` is accepted for the reference's scripts and ignored (the optimizer's state follows each parameter;
    giving it warns once). ``extra``: further optimizer keywords, passed to the constructor unchanged.
    """

    lr: float = 0.1
    variant: str = "sgd"
    weight_decay: Optional[float] = None
    first_momentum: Optional[float] = None
    second_momentum: Optional[float] = None
    dampening: Optional[float] = None
    target_group_sparsity: float = 0.5
    max_group_sparsity: Optional[float] = None
    group_divisible: int = 1
    fixed_zero_groups: bool = True
    importance_score_criteria: Criteria = "default"
    redundant_selection: str = "score"
    auxiliary_scaling: str = "once"
    moment_initialization: str = "standard"
    non_finite: str = "raise"
    device: Optional[str] = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = type(self).__name__
        _require(_is_number(self.lr) and self.lr >= 0, f"{name}.lr", "a number >= 0", self.lr)
        _require_choice(f"{name}.variant", self.variant, SUPPORT_GRADIENT_ESTIMATES)
        for hyper in ("weight_decay", "first_momentum", "second_momentum", "dampening"):
            value = getattr(self, hyper)
            _require(value is None or (_is_number(value) and value >= 0), f"{name}.{hyper}", "None or a number >= 0",
                     value)
        _require_fraction(f"{name}.target_group_sparsity", self.target_group_sparsity, upper_inclusive=False)
        if self.max_group_sparsity is not None:
            _require(_is_number(self.max_group_sparsity) and 0.0 < self.max_group_sparsity <= 1.0,
                     f"{name}.max_group_sparsity", "None or a number in (0, 1]", self.max_group_sparsity)
        _require(_is_integer(self.group_divisible) and self.group_divisible >= 1, f"{name}.group_divisible",
                 "an integer >= 1", self.group_divisible)
        _require_choice(f"{name}.redundant_selection", self.redundant_selection, SELECTION_ORDERS)
        _require_choice(f"{name}.auxiliary_scaling", self.auxiliary_scaling, AUXILIARY_SCALINGS)
        _require_choice(f"{name}.moment_initialization", self.moment_initialization, MOMENT_INITIALIZATIONS)
        _require_choice(f"{name}.non_finite", self.non_finite, NON_FINITE_POLICIES)
        object.__setattr__(self, "fixed_zero_groups", parse_flag(f"{name}.fixed_zero_groups", self.fixed_zero_groups))
        object.__setattr__(self, "extra", dict(self.extra))

    def _shared_keywords(self) -> Dict[str, Any]:
        keywords = dict(lr=self.lr, variant=self.variant, weight_decay=self.weight_decay,
                        first_momentum=self.first_momentum, second_momentum=self.second_momentum,
                        dampening=self.dampening, target_group_sparsity=self.target_group_sparsity,
                        max_group_sparsity=self.max_group_sparsity, group_divisible=self.group_divisible,
                        fixed_zero_groups=self.fixed_zero_groups,
                        importance_score_criteria=self.importance_score_criteria,
                        redundant_selection=self.redundant_selection, auxiliary_scaling=self.auxiliary_scaling,
                        moment_initialization=self.moment_initialization, non_finite=self.non_finite,
                        device=RECORDED_DEVICE if self.device is None else self.device)
        keywords.update(self.extra)
        return keywords


@dataclass(frozen=True)
class HessoConfig(SparseOptimizerConfig):
    """HESSO (pruning only): the shared settings plus the pruning schedule."""

    pruning: Schedule = Schedule(start=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(isinstance(self.pruning, Schedule), "HessoConfig.pruning", "a Schedule", self.pruning)

    def optimizer_keywords(self) -> Dict[str, Any]:
        """The keyword arguments of :class:`~only_train_once.optimizer.HESSO` (all but ``params``)."""
        return dict(self._shared_keywords(), start_pruning_step=self.pruning.start,
                    pruning_steps=self.pruning.total_steps, pruning_periods=self.pruning.periods)

    @classmethod
    def from_keywords(cls, **keywords: Any) -> "HessoConfig":
        """Build from the reference's ``oto.hesso(...)`` keywords (and this library's extra switches)."""
        parts = {"pruning": _part(_default(cls, "pruning"), keywords, start="start_pruning_step",
                                  steps="pruning_steps", periods="pruning_periods")}
        return _build(cls, parts, keywords)


@dataclass(frozen=True)
class GetaConfig(SparseOptimizerConfig):
    """GETA (pruning and bit-width learning): the shared settings plus the projection and pruning schedules, the
    bit ranges of weights and activations, gradient clipping and diagnostics.

    ``verbose`` (a bool, or the reference's ``"True"``/``"False"``) writes per-step diagnostics to
    ``<log_dir>/geta_diagnostics.txt``; the clipping bounds apply only with ``enable_grad_clipping``.
    """

    lr_quant: float = 1e-3
    projection: Schedule = Schedule(start=0)
    pruning: Schedule = Schedule(start=1)
    bit_reduction: int = 2
    weight_bits: BitRange = BitRange()
    activation_bits: BitRange = BitRange()
    grad_clip_min: float = -1.0
    grad_clip_max: float = 1.0
    enable_grad_clipping: bool = False
    forget_rate_guard: str = "magnitude"
    health_thresholds: Optional[HealthThresholds] = None
    verbose: Union[bool, str] = False
    log_dir: str = "outputs"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(_is_number(self.lr_quant) and self.lr_quant >= 0, "GetaConfig.lr_quant", "a number >= 0",
                 self.lr_quant)
        for name in ("projection", "pruning"):
            _require(isinstance(getattr(self, name), Schedule), f"GetaConfig.{name}", "a Schedule",
                     getattr(self, name))
        for name in ("weight_bits", "activation_bits"):
            _require(isinstance(getattr(self, name), BitRange), f"GetaConfig.{name}", "a BitRange",
                     getattr(self, name))
        _require(_is_integer(self.bit_reduction) and self.bit_reduction >= 0, "GetaConfig.bit_reduction",
                 "an integer >= 0", self.bit_reduction)
        _require(_is_number(self.grad_clip_min) and _is_number(self.grad_clip_max)
                 and self.grad_clip_min < self.grad_clip_max, "GetaConfig.grad_clip_min",
                 f"a number smaller than GetaConfig.grad_clip_max ({self.grad_clip_max})", self.grad_clip_min)
        _require_choice("GetaConfig.forget_rate_guard", self.forget_rate_guard, FORGET_RATE_GUARDS)
        object.__setattr__(self, "verbose", parse_flag("GetaConfig.verbose", self.verbose))
        object.__setattr__(self, "enable_grad_clipping",
                           parse_flag("GetaConfig.enable_grad_clipping", self.enable_grad_clipping))

    def optimizer_keywords(self) -> Dict[str, Any]:
        """The keyword arguments of :class:`~only_train_once.optimizer.GETA` (all but ``params``).

        ``verbose`` goes over in the reference's string form (``"True"``/``"False"``), which scripts compare with.
        """
        return dict(self._shared_keywords(), lr_quant=self.lr_quant,
                    start_projection_step=self.projection.start, projection_steps=self.projection.total_steps,
                    projection_periods=self.projection.periods, start_pruning_step=self.pruning.start,
                    pruning_steps=self.pruning.total_steps, pruning_periods=self.pruning.periods,
                    bit_reduction=self.bit_reduction, min_bit_wt=self.weight_bits.min_bits,
                    max_bit_wt=self.weight_bits.max_bits, min_bit_act=self.activation_bits.min_bits,
                    max_bit_act=self.activation_bits.max_bits, grad_clip_min=self.grad_clip_min,
                    grad_clip_max=self.grad_clip_max, enable_grad_clipping=self.enable_grad_clipping,
                    forget_rate_guard=self.forget_rate_guard, health_thresholds=self.health_thresholds,
                    verbose=str(self.verbose), log_dir=self.log_dir)

    @classmethod
    def from_keywords(cls, **keywords: Any) -> "GetaConfig":
        """Build from the reference's ``oto.geta(...)`` keywords (and this library's extra switches)."""
        parts = {
            "projection": _part(_default(cls, "projection"), keywords, start="start_projection_step",
                                steps="projection_steps", periods="projection_periods"),
            "pruning": _part(_default(cls, "pruning"), keywords, start="start_pruning_step", steps="pruning_steps",
                             periods="pruning_periods"),
            "weight_bits": _part(_default(cls, "weight_bits"), keywords, min_bits="min_bit_wt",
                                 max_bits="max_bit_wt"),
            "activation_bits": _part(_default(cls, "activation_bits"), keywords, min_bits="min_bit_act",
                                     max_bits="max_bit_act"),
        }
        return _build(cls, parts, keywords)


def _part(default: Any, keywords: Dict[str, Any], **reference_names: str) -> Any:
    """Pop the reference keywords of one part (``field="keyword"``) from ``keywords`` and apply them to the part's
    default (``start_pruning_step=5`` alone keeps the default steps and periods). Errors name the caller's keywords."""
    given = {part_field: keywords.pop(keyword) for part_field, keyword in reference_names.items()
             if keyword in keywords}
    try:
        return dataclasses.replace(default, **given)
    except ValueError as error:
        raise ValueError(f"{', '.join(reference_names.values())}: {error}") from error


def _build(config_class, parts: Dict[str, Any], keywords: Dict[str, Any]):
    """The config from its built parts, its own fields among ``keywords``, and the other keywords as ``extra``."""
    names = {f.name for f in dataclasses.fields(config_class)} - {"extra"} - set(parts)
    own = {name: keywords.pop(name) for name in list(keywords) if name in names}
    return config_class(**own, **parts, extra=keywords)


def _default(config_class, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(config_class) if f.name == name)
