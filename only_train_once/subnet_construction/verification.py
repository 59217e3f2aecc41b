"""Does a compressed model compute what its full group-sparse original computes? Checked so it cannot be fooled.

* Each output leaf (tensors inside tuples, dicts, dataclasses, Hugging Face ``ModelOutput``s and caches) is
  compared on its own scale: ``|full - compressed| <= rtol * max|full leaf| + floor``. A fixed absolute bound
  would pass an 80% error on outputs of size 1e-4; the floor (``1e-8 * rtol``) only absorbs exact-zero leaves.
* ``rtol`` follows the dtype: float16/bfloat16 models round every product, so their bound is a few machine
  epsilons of the lowest precision the model computes in, never less than ``tolerance``.
* Both models run on the traced dummy input and on fresh random inputs of the same structure (an analyzer
  mistake can hide when the dummy input happens to zero the affected path).
* A non-finite value in either model is an error; every run gets a deep copy of its input.
* Weight+activation models are compared twice, as :mod:`quantization.rounding` explains: with activation
  rounding bypassed (exact, within ``rtol``) and with it (within a few activation steps: rounding flips). How far
  flips move the outputs depends on the model (a deep network amplifies one flip layer after layer), so the full
  model is also run with its quantizer inputs jittered by a summation-order-sized amount: its own flip noise,
  measured per output, widens the rounded bound to ``FLIP_NOISE_FACTOR`` times that noise.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from dataclasses import dataclass
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ..graph.inputs import copy_input, fresh_input_like
from ..quantization.rounding import ActivationRoundingBypassed, ActivationRoundingJittered, max_activation_step
from ..utils import eval_mode, run_model

logger = logging.getLogger(__name__)

#: Rounding flips allowed when comparing fake-quantized outputs, in activation quantization steps.
ROUNDING_FLIP_STEPS = 16
#: Relative jitter of the quantizer inputs that measures a model's own flip noise (float32 summation-order size).
FLIP_JITTER = 1e-6
#: Seeds of the jittered runs; the noise of a leaf is the largest difference any of them makes.
FLIP_JITTER_SEEDS = (0, 1)
#: A compressed model may differ with rounding on by this many times the full model's own flip noise.
FLIP_NOISE_FACTOR = 4.0
#: Machine epsilons of slack for float16/bfloat16 models (summation order changes after pruning).
LOW_PRECISION_EPSILONS = 32
#: The absolute floor, relative to the relative tolerance (only exact-zero outputs need it).
FLOOR_FACTOR = 1e-8
#: Fresh random inputs compared besides the dummy input.
FRESH_INPUTS = 1



class Leaf(NamedTuple):
    """One output tensor. ``in_state``: reached through a plain object's attributes (a cache, not a result), whose
    shapes may legitimately shrink with the model (fewer key/value heads): compared only where shapes agree."""

    path: str
    tensor: torch.Tensor
    in_state: bool = False


Leaves = List[Leaf]


class SubnetConstructionError(RuntimeError):
    """The compressed model would not compute what the full group-sparse model computes."""


def output_leaves(value: Any, path: str = "output", seen: Optional[set] = None, depth: int = 0,
                  in_state: bool = False) -> Leaves:
    """Every tensor inside a model output with its path (``output[0]``, ``output.logits``...), in a stable order."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        return [Leaf(path, value, in_state)]
    if depth > 12 or value is None or id(value) in seen or isinstance(
            value, (str, bytes, int, float, bool, complex, torch.dtype, torch.device, nn.Module, types.ModuleType,
                    type)):
        return []
    seen.add(id(value))
    found: Leaves = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += output_leaves(item, f"{path}.{key}", seen, depth + 1, in_state)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += output_leaves(item, f"{path}[{index}]", seen, depth + 1, in_state)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            found += output_leaves(getattr(value, f.name, None), f"{path}.{f.name}", seen, depth + 1, in_state)
    elif hasattr(value, "__dict__"):
        for key, item in vars(value).items():
            found += output_leaves(item, f"{path}.{key}", seen, depth + 1, True)
    return found


def relative_tolerance(tolerance: float, dtype: torch.dtype) -> float:
    """The relative bound for outputs computed in ``dtype``: ``tolerance``, or more for low precision."""
    if dtype in (torch.float16, torch.bfloat16):
        return max(tolerance, LOW_PRECISION_EPSILONS * torch.finfo(dtype).eps)
    return tolerance


def lowest_precision(model: nn.Module) -> torch.dtype:
    """The floating dtype with the largest epsilon among the model's parameters and buffers (float32 if none)."""
    dtypes = {t.dtype for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()}
    return max(dtypes, key=lambda d: torch.finfo(d).eps, default=torch.float32)


@dataclass
class Snapshot:
    """A model's output leaves on every verification input: ``exact`` with activation rounding bypassed,
    ``rounded`` as the model runs (the same lists for models without activation quantizers)."""

    exact: List[Leaves]
    rounded: List[Leaves]
    dtype: torch.dtype
    flip_noise: Optional[List[List[float]]] = None  # per input and leaf: what jittered rounding changes (full model)


def verification_inputs(dummy_input: Any, count: int = FRESH_INPUTS, seed: int = 0) -> List[Any]:
    """The dummy input followed by ``count`` fresh random inputs of its structure (seeded: reproducible)."""
    generator = torch.Generator().manual_seed(seed)
    return [dummy_input] + [fresh_input_like(dummy_input, generator) for _ in range(count)]


def _run(model: nn.Module, model_input: Any) -> Leaves:
    with eval_mode(model), torch.no_grad():
        return [leaf._replace(tensor=leaf.tensor.detach())
                for leaf in output_leaves(run_model(model, copy_input(model_input)))]


def snapshot(model: nn.Module, inputs: Sequence[Any], rounding: bool = True) -> Snapshot:
    """Run ``model`` on copies of ``inputs`` (eval mode, no grad); without ``rounding`` only the exact run."""
    quantized = any(hasattr(m, "d_quant_act") for m in model.modules())
    if quantized and not rounding:
        with ActivationRoundingBypassed():
            exact = [_run(model, x) for x in inputs]
        return Snapshot(exact, exact, lowest_precision(model))
    rounded = [_run(model, x) for x in inputs]
    if not quantized:
        return Snapshot(rounded, rounded, lowest_precision(model))
    with ActivationRoundingBypassed():
        exact = [_run(model, x) for x in inputs]
    return Snapshot(exact, rounded, lowest_precision(model))


def flip_noise(model: nn.Module, inputs: Sequence[Any], rounded: List[Leaves]) -> List[List[float]]:
    """Per input and output leaf, the largest change jittered activation rounding makes to ``rounded``."""
    noise = [[0.0] * len(leaves) for leaves in rounded]
    for seed in FLIP_JITTER_SEEDS:
        with ActivationRoundingJittered(FLIP_JITTER, seed):
            jittered = [_run(model, x) for x in inputs]
        for index, (reference, moved) in enumerate(zip(rounded, jittered)):
            for k, (a, b) in enumerate(zip(reference, moved)):
                if a.tensor.shape == b.tensor.shape and a.tensor.is_floating_point() and a.tensor.numel():
                    difference = float((a.tensor.double() - b.tensor.double()).abs().max())
                    noise[index][k] = max(noise[index][k], difference)
    return noise


def _non_finite(leaves: Leaves) -> Optional[str]:
    for path, tensor, _ in leaves:
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                return path
    return None


def check_finite(full: Snapshot, inputs_described: Sequence[str]) -> List[int]:
    """Raise unless the full model is finite on the dummy input; returns the inputs to compare on (fresh inputs
    on which the full model itself is not finite say nothing about the compressed model and are dropped)."""
    usable = []
    for index, leaves in enumerate(full.rounded):
        bad = _non_finite(leaves) or _non_finite(full.exact[index])
        if bad is None:
            usable.append(index)
        elif index == 0:
            raise SubnetConstructionError(f"the full group-sparse model's {bad} contains NaN or inf on the dummy "
                                          "input: the model has diverged; the compressed model was not written. "
                                          "Check the training run (learning rate, loss scale) or the weights you "
                                          "loaded")
        else:
            logger.info("skipping %s in the subnet check: the full model's %s is not finite there",
                        inputs_described[index], bad)
    return usable


@dataclass
class Mismatch:
    """The worst leaf of a comparison: ``difference / allowed`` above 1 is a failure."""

    ratio: float = 0.0
    where: str = ""
    difference: float = 0.0
    scale: float = 0.0


def _compare_leaves(reference: Leaves, candidate: Leaves, rtol: float, flips: float, described: str,
                    noise: Optional[List[float]] = None) -> Mismatch:
    if [leaf.path for leaf in reference] != [leaf.path for leaf in candidate]:
        return Mismatch(float("inf"), f"{described}: output structure ({len(candidate)} tensors instead of "
                                      f"{len(reference)})", float("inf"))
    worst = Mismatch()
    for index, ((path, full, in_state), (_, small, _)) in enumerate(zip(reference, candidate)):
        if full.shape != small.shape and in_state:
            continue  # a cache of the compressed model holds fewer heads/channels
        if full.shape != small.shape:
            return Mismatch(float("inf"), f"{described}: {path} shape {tuple(small.shape)} instead of "
                                          f"{tuple(full.shape)}", float("inf"))
        if not full.numel() or not (full.is_floating_point() or full.is_complex()):
            if not torch.equal(full, small):
                return Mismatch(float("inf"), f"{described}: {path} (non-float) differs", float("inf"))
            continue
        if not bool(torch.isfinite(small).all()):
            return Mismatch(float("inf"), f"{described}: {path} is NaN/inf in the compressed model", float("inf"))
        difference = float((full.double() - small.double()).abs().max())
        scale = float(full.double().abs().max())
        measured = FLIP_NOISE_FACTOR * noise[index] if noise else 0.0
        allowed = max(rtol * scale, flips * max(1.0, scale), measured) + FLOOR_FACTOR * rtol
        ratio = difference / allowed
        if ratio > worst.ratio:
            worst = Mismatch(ratio, f"{described}: {path}", difference, scale)
    return worst


def compare(full: Snapshot, compressed: Snapshot, tolerance: float, activation_step: float,
            inputs_described: Sequence[str]) -> Tuple[Mismatch, Mismatch]:
    """Worst leaf without and with activation rounding over every input of the snapshots."""
    rtol = relative_tolerance(tolerance, full.dtype)
    flips = ROUNDING_FLIP_STEPS * activation_step
    exact, rounded = Mismatch(), Mismatch()
    for index, described in enumerate(inputs_described):
        found = _compare_leaves(full.exact[index], compressed.exact[index], rtol, 0.0, described)
        exact = found if found.ratio > exact.ratio else exact
        if compressed.rounded is not compressed.exact:
            noise = full.flip_noise[index] if full.flip_noise else None
            found = _compare_leaves(full.rounded[index], compressed.rounded[index], rtol, flips, described, noise)
            rounded = found if found.ratio > rounded.ratio else rounded
    return exact, rounded


def describe_inputs(count: int) -> List[str]:
    return ["dummy input"] + [f"fresh random input {i + 1}" for i in range(count - 1)]


class SubnetVerifier:
    """Record the full model's outputs once, then check any number of compressed candidates against them.

    Raises :class:`SubnetConstructionError` at construction when the full model is not finite on the dummy input.
    ``fresh_inputs``: random inputs compared besides the dummy input; ``rounding=False`` compares weight+activation
    models with activation rounding bypassed only (the strict comparison; rounding flips are noise).
    """

    def __init__(self, full_model: nn.Module, dummy_input: Any, tolerance: float = 1e-4,
                 fresh_inputs: int = FRESH_INPUTS, seed: int = 0, rounding: bool = True):
        if not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
        self.tolerance = tolerance
        self.rounding = rounding
        inputs = verification_inputs(dummy_input, fresh_inputs, seed)
        described = describe_inputs(len(inputs))
        full = snapshot(full_model, inputs, rounding)
        usable = check_finite(full, described)
        self.inputs = [inputs[i] for i in usable]
        self.described = [described[i] for i in usable]
        rounded = [full.rounded[i] for i in usable]
        noise = flip_noise(full_model, self.inputs, rounded) if full.rounded is not full.exact else None
        self.full = Snapshot([full.exact[i] for i in usable], rounded, full.dtype, noise)

    def mismatch(self, compressed_model: nn.Module) -> Tuple[Mismatch, Mismatch]:
        """Worst leaves (exact, rounded); ratios above 1 fail. Raises if the compressed model cannot run."""
        compressed = snapshot(compressed_model, self.inputs, self.rounding)
        return compare(self.full, compressed, self.tolerance, max_activation_step(compressed_model), self.described)

    def passes(self, compressed_model: nn.Module) -> bool:
        """True when the compressed model runs and matches on every usable input (never raises for a mismatch)."""
        try:
            exact, rounded = self.mismatch(compressed_model)
        except Exception as error:  # a broken candidate is a failed candidate
            logger.debug("candidate fails to run: %s: %s", type(error).__name__, error)
            return False
        return exact.ratio <= 1.0 and rounded.ratio <= 1.0

    def verify(self, compressed_model: nn.Module) -> float:
        """Raise :class:`SubnetConstructionError` unless the compressed model matches; returns the worst
        difference without rounding, relative to its leaf's scale."""
        try:
            exact, rounded = self.mismatch(compressed_model)
        except SubnetConstructionError:
            raise
        except Exception as error:
            raise SubnetConstructionError(f"the compressed model fails to run ({type(error).__name__}: {error}); "
                                          "please report this model: the analyzer should have left these groups "
                                          "unprunable") from error
        rtol = relative_tolerance(self.tolerance, self.full.dtype)
        for found, kind in ((exact, ""), (rounded, " with activation rounding")):
            if found.ratio > 1.0:
                raise SubnetConstructionError(
                    f"the compressed model differs from the full group-sparse model{kind} at {found.where}: "
                    f"max |difference| {found.difference:.3g} where the output's own scale is {found.scale:.3g} "
                    f"(allowed {rtol:.1g} relative to it); the compressed model was not written. Please report this "
                    "model: the analyzer should have left these groups unprunable")
        return exact.difference / max(exact.scale, 1e-30)
