"""Training-health read-out of GETA: loss trend, per-layer bit widths and step sizes, collapse warnings (issue 19).

GETA calls :meth:`TrainingHealth.record_loss` with every loss it is given (``step(closure)`` or
``report_loss(loss)``), and :meth:`TrainingHealth.end_period` at the last step of every projection and pruning
period with a :class:`QuantizerSnapshot`. ``end_period`` logs one line and returns the collapse warnings it
found, which GETA logs and raises with ``warnings.warn(..., TrainingCollapseWarning)``:

- *loss jump*: the mean loss of the period just ended exceeds ``loss_jump_ratio`` times that of the previous
  period (on the issue 19 recipe a healthy run's period means moved by at most ~1.5x from one period to the
  next while pruning, and a collapse multiplies them many times), or is not finite;
- *bit floor*: more than ``floor_fraction`` of the layers have their weight (or activation) bit width at the
  floor of the bit range, which is where GETA's step-size rule puts layers it can no longer fit. A range with
  no room (floor == ceiling, for example 8-bit weights fixed) keeps every layer at its floor by design and is not
  checked.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)


class TrainingCollapseWarning(UserWarning):
    """GETA's end-of-period check found a loss jump or most layers at their lowest bit width."""


@dataclass(frozen=True)
class HealthThresholds:
    """When :class:`TrainingHealth` warns. ``loss_jump_ratio > 1``; ``0 < floor_fraction < 1``."""

    loss_jump_ratio: float = 2.0
    floor_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not self.loss_jump_ratio > 1.0:
            raise ValueError(f"loss_jump_ratio must be > 1, got {self.loss_jump_ratio!r}")
        if not 0.0 < self.floor_fraction < 1.0:
            raise ValueError(f"floor_fraction must be in (0, 1), got {self.floor_fraction!r}")


@dataclass
class QuantizerSnapshot:
    """Per-layer rounded bit widths and step sizes ``d`` of the weight and activation quantizers, with the floors
    (lowest allowed bit widths) they are checked against and the ceilings (highest allowed)."""

    weight_bits: Dict[str, int] = field(default_factory=dict)
    activation_bits: Dict[str, int] = field(default_factory=dict)
    weight_step_sizes: Dict[str, float] = field(default_factory=dict)
    activation_step_sizes: Dict[str, float] = field(default_factory=dict)
    weight_floor: float = 2.0
    activation_floor: float = 2.0
    weight_ceiling: float = math.inf
    activation_ceiling: float = math.inf

    def has_room(self, kind: str) -> bool:
        """Whether ``kind``'s bit range leaves GETA a width above the floor to choose."""
        if kind == "weight":
            return math.ceil(self.weight_floor) < self.weight_ceiling
        return math.ceil(self.activation_floor) < self.activation_ceiling

    def layers_at_floor(self, kind: str) -> List[str]:
        """Layers whose ``kind`` (``"weight"`` / ``"activation"``) bit width is at its floor."""
        bits = self.weight_bits if kind == "weight" else self.activation_bits
        floor = math.ceil(self.weight_floor if kind == "weight" else self.activation_floor)
        return [name for name, value in bits.items() if value <= floor]


@dataclass
class PeriodRecord:
    """One ended period: its kind (``"projection"`` / ``"pruning"``), index (1-based), last step, mean loss
    (NaN when no loss was reported)."""

    kind: str
    index: int
    step: int
    mean_loss: float


class TrainingHealth:
    """Loss trend over periods and collapse detection (module docstring)."""

    def __init__(self, thresholds: Optional[HealthThresholds] = None):
        self.thresholds = thresholds or HealthThresholds()
        self.periods: List[PeriodRecord] = []
        self._loss_sum = 0.0
        self._loss_count = 0
        self.last_loss = math.nan

    def record_loss(self, loss: float) -> None:
        """Add one step's loss (a Python float) to the running period; non-finite losses count as a jump."""
        self.last_loss = loss
        self._loss_sum += loss
        self._loss_count += 1

    def running_mean_loss(self) -> float:
        """Mean loss reported since the last period ended (NaN if none)."""
        return self._loss_sum / self._loss_count if self._loss_count else math.nan

    def loss_trend(self) -> List[float]:
        """Mean loss of every ended period, in order, then that of the running one."""
        return [p.mean_loss for p in self.periods] + [self.running_mean_loss()]

    def end_period(self, kind: str, index: int, step: int, snapshot: QuantizerSnapshot) -> List[str]:
        """Close the running period: log its summary line and return the collapse warnings (may be empty)."""
        record = PeriodRecord(kind, index, step, self.running_mean_loss())
        problems = self._loss_problems(record) + self._bit_floor_problems(snapshot)
        self.periods.append(record)
        self._loss_sum, self._loss_count = 0.0, 0
        logger.info("step %d: end of %s period %d: mean loss %.4g (trend %s); weight bits %s; activation bits %s; "
                    "weight d %s; activation d %s", step, kind, index, record.mean_loss,
                    _format_trend(self.loss_trend()[:-1]), snapshot.weight_bits, snapshot.activation_bits,
                    _format_steps(snapshot.weight_step_sizes), _format_steps(snapshot.activation_step_sizes))
        return [f"step {step}, end of {kind} period {index}: {problem}" for problem in problems]

    def _loss_problems(self, record: PeriodRecord) -> List[str]:
        loss = record.mean_loss
        if math.isnan(loss) and not self._loss_count:
            return []
        if not math.isfinite(loss):
            return [f"the mean training loss is {loss} (the run has diverged)"]
        earlier = [p.mean_loss for p in self.periods if math.isfinite(p.mean_loss)]
        if earlier and loss > self.thresholds.loss_jump_ratio * earlier[-1]:
            return [f"the mean training loss jumped to {loss:.4g}, {loss / earlier[-1]:.1f}x the previous "
                    f"period's {earlier[-1]:.4g}"]
        return []

    def _bit_floor_problems(self, snapshot: QuantizerSnapshot) -> List[str]:
        problems = []
        for kind, bits, floor in (("weight", snapshot.weight_bits, snapshot.weight_floor),
                                  ("activation", snapshot.activation_bits, snapshot.activation_floor)):
            if not snapshot.has_room(kind):
                continue
            at_floor = snapshot.layers_at_floor(kind)
            if bits and len(at_floor) > self.thresholds.floor_fraction * len(bits):
                problems.append(f"{len(at_floor)} of {len(bits)} layers have their {kind} bit width at the floor "
                                f"{math.ceil(floor)}: {', '.join(at_floor)}")
        return problems

    def state_dict(self) -> dict:
        return {"periods": [vars(p).copy() for p in self.periods], "loss_sum": self._loss_sum,
                "loss_count": self._loss_count}

    def load_state_dict(self, state: dict) -> None:
        self.periods = [PeriodRecord(**p) for p in state.get("periods", [])]
        self._loss_sum = float(state.get("loss_sum", 0.0))
        self._loss_count = int(state.get("loss_count", 0))


def _format_trend(values: List[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values[-6:]) + "]"


def _format_steps(steps: Dict[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {value:.3g}" for name, value in steps.items()) + "}"
