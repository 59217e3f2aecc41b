"""``BaseOptimizer``: argument checks, defaults and the gradient variant shared by every optimizer (SPEC 5.2).

The gradient variant ``g`` of a parameter is what the optimizers step along: the (weight-decayed) gradient for
plain SGD, the momentum buffer for momentum SGD, the bias-corrected Adam direction ``m̂ / (sqrt(v̂) + 1e-8)`` for
Adam/AdamW. It is computed once per ``step()`` for every parameter that has a gradient, with ``torch._foreach_*``
kernels over all parameters sharing hyper-parameters (no Python work per element).

Moment buffers are keyed by parameter name (``p_names`` of the group; ``group<i>.param<j>`` for groups without
names), so that a checkpoint loads into an optimizer whose groups are ordered differently.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, cast

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, required

from ..meta_device import check_materialized
from .finite import NON_FINITE_POLICIES, NonFiniteError, NormBounds, describe, non_finite_names, unsafe_descent_names
from .fused_kernels import fused_adam_directions, fused_applicable, fused_decay_and_step, fused_descent_applicable
from .hyperparameter import DEFAULT_OPT_PARAMS, MOMENT_INITIALIZATIONS, SUPPORT_GRADIENT_ESTIMATES

logger = logging.getLogger(__name__)

#: Keys of ``param_groups`` that hold the hyper-parameters of the gradient variant.
HYPER_PARAMETER_KEYS = ("variant", "first_momentum", "second_momentum", "dampening", "weight_decay")


def check_choice(name: str, value, choices: Sequence) -> None:
    """``ValueError`` naming the argument unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_non_negative(name: str, value) -> None:
    if value is None or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


class BaseOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` over OTO parameter groups that computes gradient variants (SPEC 5.2).

    ``moment_initialization`` (SPEC 12.4 O15): ``"standard"`` (default, measured better, see the optimizer README
    notes) starts Adam's moments at zero as ``torch.optim.Adam`` does; ``"reference"`` starts them at the first
    gradient (and its square), as the reference implementation does.

    ``non_finite`` (:mod:`.finite`): ``"raise"`` (default) raises :class:`NonFiniteError` naming the parameters
    whose gradient is NaN/inf, or that the step would make NaN/inf, before anything is written; ``"skip"`` skips
    such steps with a warning.

    Memory: the gradient variant is computed in place in each parameter's ``.grad`` (weight decay added, then Adam's
    direction), so the optimizer holds no parameter-sized tensor beyond its moments, as ``torch.optim.AdamW``.
    After ``step()`` a ``.grad`` therefore holds that step's update direction, not the raw gradient; read or clip
    gradients before ``step()``.
    """

    def __init__(self, params, variant: str = "sgd", lr: float = cast(float, required),
                 first_momentum: Optional[float] = None,
                 second_momentum: Optional[float] = None, dampening: Optional[float] = None,
                 weight_decay: Optional[float] = None, additional_defaults: Optional[dict] = None,
                 moment_initialization: str = "standard", non_finite: str = "raise"):
        check_choice("variant", variant, SUPPORT_GRADIENT_ESTIMATES)
        check_choice("moment_initialization", moment_initialization, MOMENT_INITIALIZATIONS)
        check_choice("non_finite", non_finite, NON_FINITE_POLICIES)
        params = list(params)
        check_materialized((t for g in params for t in (g["params"] if isinstance(g, dict) else [g])),
                           type(self).__name__)
        if not params:
            raise ValueError(f"{type(self).__name__} got no parameters to train: the model has no parameters (or "
                             "none that require grad). Give OTO a model with trainable parameters")
        if lr is required:
            raise ValueError("lr is required: pass the learning rate, e.g. lr=1e-3")
        check_non_negative("lr", lr)
        fallback = DEFAULT_OPT_PARAMS[variant]
        first_momentum = fallback["first_momentum"] if first_momentum is None else first_momentum
        second_momentum = fallback["second_momentum"] if second_momentum is None else second_momentum
        dampening = fallback["dampening"] if dampening is None else dampening
        weight_decay = fallback["weight_decay"] if weight_decay is None else weight_decay
        for name, value in (("first_momentum", first_momentum), ("second_momentum", second_momentum),
                            ("dampening", dampening), ("weight_decay", weight_decay)):
            check_non_negative(name, value)
        defaults = dict(lr=lr, weight_decay=weight_decay, first_momentum=first_momentum,
                        second_momentum=second_momentum, dampening=dampening, variant=variant, grad_variant={},
                        global_start_idx=0, global_idx=0)
        defaults.update(additional_defaults or {})
        super().__init__(params, defaults)
        for index, group in enumerate(self.param_groups):
            group["grad_variant"] = {}  # torch shares the default dict object between groups
            group.setdefault("p_names", [f"group{index}.param{j}" for j in range(len(group["params"]))])
            if len(group["p_names"]) != len(group["params"]):
                raise ValueError(f"param group {index}: p_names and params differ in length")
        names = [name for group in self.param_groups for name in group["p_names"]]
        if len(set(names)) != len(names):
            raise ValueError("parameter names (p_names) must be unique over all param groups")
        self.moment_initialization = moment_initialization
        self.non_finite = non_finite
        self.norm_bounds = NormBounds()  # of the parameters' norms, for the finiteness check of each update
        self.num_steps = 0
        self.safe_guard = 1e-8
        self.first_moment_grads: Dict[str, Tensor] = {}
        self.second_moment_grads: Dict[str, Tensor] = {}
        # Gradient variants of the current step, aligned with each group's params (None: no gradient).
        self._variants: List[List[Optional[Tensor]]] = [[None] * len(g["params"]) for g in self.param_groups]
        # (group index, param index) of parameters that never take weight decay (GETA: the quantizers' d, q_m, t).
        self._decay_exempt: set = set()

    # -- learning rate ------------------------------------------------------------------------------
    def set_learning_rate(self, lr: float) -> None:
        """Set ``lr`` of every param group."""
        check_non_negative("lr", lr)
        for group in self.param_groups:
            group["lr"] = lr

    def get_learning_rate(self) -> float:
        """``lr`` of the last param group (the reference's convention)."""
        return self.param_groups[-1]["lr"]

    # -- non-finite values ------------------------------------------------------------------------------
    def _named_gradients(self) -> tuple:
        pairs = [(p.grad, name) for group in self.param_groups
                 for p, name in zip(group["params"], group["p_names"]) if p.grad is not None]
        return [t for t, _ in pairs], [n for _, n in pairs]

    def gradients_are_finite(self) -> bool:
        """True when every gradient is finite; otherwise raise :class:`NonFiniteError` (``non_finite="raise"``)
        or log and return False so that the step is skipped (``non_finite="skip"``). See :mod:`.finite`."""
        bad = non_finite_names(*self._named_gradients())
        if not bad:
            return True
        message = (f"NaN or inf in the gradient of {describe(bad)} before step {self.num_steps + 1}; no parameter "
                   "was changed. Check the loss and the inputs of this batch for NaN/inf, lower the learning rate, "
                   "or pass non_finite='skip' to skip such steps")
        if self.non_finite == "raise":
            raise NonFiniteError(message)
        logger.warning("%s: skipping the step (non_finite='skip')", message.split("; no parameter")[0])
        return False

    def update_is_finite(self, unsafe: Sequence[str]) -> bool:
        """True when ``unsafe`` (parameters this step would make NaN/inf, found before writing) is empty; otherwise
        raise :class:`NonFiniteError` naming them (``non_finite="raise"``) or log and return False so that the
        caller writes nothing (``non_finite="skip"``; the step counter and moment estimates have advanced)."""
        if not unsafe:
            return True
        message = (f"step {self.num_steps} would write NaN or inf (or values within a factor 4 of overflow) into "
                   f"{describe(list(unsafe))} from finite gradients; no parameter was changed. Lower the learning "
                   "rate (lr, and lr_quant for quantizer parameters), or pass non_finite='skip' to skip such steps")
        if self.non_finite == "raise":
            raise NonFiniteError(message)
        logger.warning("%s: skipping the update (non_finite='skip')", message.split("; no parameter")[0])
        return False

    # -- gradient variant -----------------------------------------------------------------------------
    def compute_grad_variant(self) -> None:
        """Fill ``group["grad_variant"]`` (name -> tensor) for every parameter with a gradient (SPEC 5.2)."""
        buckets: Dict[tuple, List[tuple]] = defaultdict(list)
        for group_index, group in enumerate(self.param_groups):
            group["grad_variant"] = {}
            self._variants[group_index] = [None] * len(group["params"])
            key = tuple(group[k] for k in HYPER_PARAMETER_KEYS)
            exempt_key = tuple(0.0 if k == "weight_decay" else group[k] for k in HYPER_PARAMETER_KEYS)
            for param_index, param in enumerate(group["params"]):
                if param.grad is not None:
                    undecayed = (group_index, param_index) in self._decay_exempt
                    buckets[exempt_key if undecayed else key].append((group_index, param_index))
        for key, members in buckets.items():
            hyper = dict(zip(HYPER_PARAMETER_KEYS, key))
            params = [self.param_groups[i]["params"][j] for i, j in members]
            names = [self.param_groups[i]["p_names"][j] for i, j in members]
            variants = self._bucket_variants(hyper, params, names)
            for (i, j), name, variant in zip(members, names, variants):
                self._variants[i][j] = variant
                self.param_groups[i]["grad_variant"][name] = variant

    def _bucket_variants(self, hyper: dict, params: List[Tensor], names: List[str]) -> List[Tensor]:
        grads = [cast(Tensor, p.grad) for p in params]  # compute_grad_variant buckets parameters with a gradient
        decay = hyper["weight_decay"]
        if decay and hyper["variant"] != "adamw":
            torch._foreach_add_(grads, params, alpha=decay)
        if hyper["variant"] == "sgd":
            return self._momentum(grads, names, hyper["first_momentum"], hyper["dampening"])
        return self._adam(grads, names, hyper["first_momentum"], hyper["second_momentum"])

    def _momentum(self, grads: List[Tensor], names: List[str], momentum: float, dampening: float) -> List[Tensor]:
        if not momentum > 0:
            return grads
        fresh = [name not in self.first_moment_grads for name in names]
        for name, grad, new in zip(names, grads, fresh):
            if new:
                self.first_moment_grads[name] = grad.detach().clone()
        old = [(self.first_moment_grads[n], g) for n, g, new in zip(names, grads, fresh) if not new]
        if old:
            buffers, old_grads = map(list, zip(*old))
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, old_grads, alpha=1.0 - dampening)
        return [self.first_moment_grads[name] for name in names]

    def _adam(self, grads: List[Tensor], names: List[str], beta1: float, beta2: float) -> List[Tensor]:
        reference = self.moment_initialization == "reference"
        fresh = [name not in self.first_moment_grads for name in names]
        for name, grad, new in zip(names, grads, fresh):
            if not new:
                continue
            if reference:
                self.first_moment_grads[name] = grad.detach().clone()
                self.second_moment_grads[name] = grad.detach() * grad.detach()
            else:
                self.first_moment_grads[name] = torch.zeros_like(grad)
                self.second_moment_grads[name] = torch.zeros_like(grad)
        first = [self.first_moment_grads[n] for n in names]
        second = [self.second_moment_grads[n] for n in names]
        step = max(self.num_steps, 1)
        if not reference and fused_applicable(grads + first + second):
            return fused_adam_directions(grads, first, second, beta1, beta2, self.safe_guard, step)
        update = [(n, g) for n, g, new in zip(names, grads, fresh) if not (reference and new)]
        if update:
            update_first = [self.first_moment_grads[n] for n, _ in update]
            update_second = [self.second_moment_grads[n] for n, _ in update]
            update_grads = [g for _, g in update]
            torch._foreach_lerp_(update_first, update_grads, 1.0 - beta1)
            torch._foreach_mul_(update_second, beta2)
            torch._foreach_addcmul_(update_second, update_grads, update_grads, value=1.0 - beta2)
        # (m / c1) / (sqrt(v / c2) + eps) == (m * sqrt(c2) / c1) / (sqrt(v) + eps * sqrt(c2)), computed in place
        # in the gradients, which the moments no longer need: the state stays the two moments, as AdamW's.
        root_correction2 = math.sqrt(1.0 - beta2 ** step)
        correction1 = 1.0 - beta1 ** step
        directions = grads
        for direction, moment in zip(directions, second):
            torch.sqrt(moment, out=direction)
        torch._foreach_add_(directions, self.safe_guard * root_correction2)
        for direction, moment in zip(directions, first):
            torch.div(moment, direction, out=direction)
        if correction1 > 0 and root_correction2 > 0:
            torch._foreach_mul_(directions, root_correction2 / correction1)
        return directions

    def grad_variant_of(self, group_index: int, param_index: int) -> Optional[Tensor]:
        """The current step's gradient variant of ``param_groups[group_index]["params"][param_index]``."""
        return self._variants[group_index][param_index]

    # -- descent ----------------------------------------------------------------------------------------
    def gradient_descent_step(self, group: dict) -> None:
        """``p <- p - lr * g`` for every parameter of ``group`` with a gradient variant (adamw: decoupled decay)."""
        index = self._group_index(group)
        plan = DescentPlan()
        plan.add(group, [(j, group["lr"]) for j in range(len(group["params"]))], self._variants[index],
                 decay=group["variant"] == "adamw")
        if self.update_is_finite(plan.unsafe_names(self.norm_bounds)):
            plan.run()

    def seal_norm_bounds(self) -> None:
        """End of a step: the norm bounds hold for the parameters as they are now (:class:`.finite.NormBounds`)."""
        self.norm_bounds.seal(p for group in self.param_groups for p in group["params"])

    def _group_index(self, group: dict) -> int:
        for index, candidate in enumerate(self.param_groups):
            if candidate is group:
                return index
        raise ValueError("the group is not one of this optimizer's param_groups")


class DescentPlan:
    """Collects ``p <- p - lr * g`` updates (and decoupled decays) and runs them as few foreach kernels;
    :meth:`unsafe_names` says, before :meth:`run`, which would not stay finite."""

    def __init__(self) -> None:
        self._steps: Dict[float, Tuple[List[Tensor], List[Tensor]]] = defaultdict(lambda: ([], []))
        self._decays: Dict[float, List[Tensor]] = defaultdict(list)
        # decayed updates run as one fused kernel per (lr, weight decay) (:mod:`.fused_kernels`)
        self._fused: Dict[Tuple[float, float], Tuple[List[Tensor], List[Tensor]]] = defaultdict(lambda: ([], []))
        # (param, variant, name, decay factor, lr) of every queued update, for the finiteness check
        self._updates: List[Tuple[Tensor, Tensor, str, float, float]] = []

    def add(self, group: dict, entries: Iterable[Tuple[int, float]], variants: Sequence[Optional[Tensor]],
            decay: bool = False) -> None:
        """Queue param ``j`` of ``group`` with learning rate ``lr`` for every ``(j, lr)`` in ``entries``."""
        params = group["params"]
        weight_decay = group["weight_decay"] if decay else 0.0
        for j, lr in entries:
            variant = variants[j]
            if variant is None or not lr:
                continue
            factor = 1.0 - lr * weight_decay
            if weight_decay and fused_descent_applicable(params[j], variant):
                step_params, step_variants = self._fused[(lr, weight_decay)]
            else:
                if weight_decay:
                    self._decays[factor].append(params[j])
                step_params, step_variants = self._steps[lr]
            step_params.append(params[j])
            step_variants.append(variant)
            self._updates.append((params[j], variant, group["p_names"][j], factor, lr))

    def unsafe_names(self, bounds: NormBounds) -> List[str]:
        """Names of the queued parameters whose update would not stay finite (:func:`.finite.unsafe_descent_names`;
        ``bounds``: the optimizer's :class:`.finite.NormBounds`, updated for the values after :meth:`run`)."""
        if not self._updates:
            return []
        params, variants, names, factors, lrs = map(list, zip(*self._updates))
        return unsafe_descent_names(params, variants, names, factors, lrs, bounds)

    def run(self) -> None:
        with torch.no_grad():
            for (lr, weight_decay), (params, variants) in self._fused.items():
                fused_decay_and_step(params, variants, lr, weight_decay)
            for factor, params in self._decays.items():
                torch._foreach_mul_(params, factor)
            for lr, (params, variants) in self._steps.items():
                torch._foreach_add_(params, variants, alpha=-lr)
