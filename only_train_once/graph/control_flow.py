"""Detect data-dependent control flow: trace again on other inputs and compare the recorded call sequences.

The graph records one execution path, the one the dummy input takes. A model whose ``if``/loop depends on tensor
values (``if x.sum() > 0``, ``for _ in range(int(x.max()))``) can take another path on other inputs; pruning
groups derived from the traced path are then wrong there and the compressed model may fail or differ. This pass
runs the model on the negated dummy input and on fresh random inputs of its structure, and reports the first
place where the sequence of torch calls (with the module running each) differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .inputs import fresh_input_like, map_tensors
from .trace import GraphCaptureError, capture

logger = logging.getLogger(__name__)

Signature = List[Tuple[Tuple[str, ...], str]]


@dataclass
class PathDivergence:
    """Where another input's run first left the traced path."""

    module: str
    traced_call: Optional[str]
    other_call: Optional[str]
    input_described: str


def call_sequence(model: nn.Module, model_input: Any, module_names, tensor_names) -> Signature:
    """The (module scope, call name) of every torch call the model makes on ``model_input``."""
    return [(call.scope, call.name) for call in capture(model, model_input, module_names, tensor_names).calls]


def other_inputs(dummy_input: Any, count: int = 2, seed: int = 0) -> List[Tuple[str, Any]]:
    """The negated dummy input (flips sign tests) and ``count`` fresh random inputs."""
    generator = torch.Generator().manual_seed(seed)
    negated = map_tensors(dummy_input, lambda t: -t.detach() if t.is_floating_point() else t.clone())
    return [("the negated dummy input", negated)] + [
        (f"fresh random input {i + 1}", fresh_input_like(dummy_input, generator)) for i in range(count)]


def _common_scope(first: Tuple[str, ...], second: Tuple[str, ...]) -> Tuple[str, ...]:
    common = []
    for mine, theirs in zip(first, second):
        if mine != theirs:
            break
        common.append(mine)
    return tuple(common)


def _describe(entry: Optional[Tuple[Tuple[str, ...], str]]) -> Optional[str]:
    if entry is None:
        return None
    scope, name = entry
    module = scope[-1] if scope else ""
    return f"{module}: {name}" if module else name


def first_divergence(traced: Signature, other: Signature, described: str) -> Optional[PathDivergence]:
    """The first differing call; the module named is the innermost one running both the traced call and the other
    (or, where one run simply stops, the last call both made): the module whose forward took the decision."""
    for index in range(max(len(traced), len(other))):
        mine = traced[index] if index < len(traced) else None
        theirs = other[index] if index < len(other) else None
        if mine == theirs:
            continue
        previous = traced[index - 1][0] if index else ()
        scope = _common_scope(mine[0] if mine else previous, theirs[0] if theirs else previous)
        return PathDivergence((scope[-1] if scope else "") or "<model>", _describe(mine), _describe(theirs),
                              described)
    return None


def find_divergence(model: nn.Module, dummy_input: Any, module_names, tensor_names,
                    inputs: Optional[Sequence[Tuple[str, Any]]] = None) -> Optional[PathDivergence]:
    """The first place another input leaves the dummy input's path (None when every input follows it).

    Inputs the model cannot run on are skipped.
    """
    traced = call_sequence(model, dummy_input, module_names, tensor_names)
    for described, model_input in inputs if inputs is not None else other_inputs(dummy_input):
        try:
            other = call_sequence(model, model_input, module_names, tensor_names)
        except GraphCaptureError as error:
            logger.debug("control-flow check: the model does not run on %s (%s)", described, error)
            continue
        divergence = first_divergence(traced, other, described)
        if divergence is not None:
            return divergence
    return None


def warn_about_control_flow(model: nn.Module, dummy_input: Any, module_names, tensor_names) -> Optional[str]:
    """One warning naming the module whose control flow depends on input values; returns that module's name."""
    divergence = find_divergence(model, dummy_input, module_names, tensor_names)
    if divergence is None:
        return None
    logger.warning("OTO: the model's control flow depends on input values: in module %r, %s ran %s where the "
                   "dummy input ran %s (an `if` or loop on tensor values). The pruning groups follow the dummy "
                   "input's path only; on inputs taking another path the compressed model may fail or differ. Make "
                   "that control flow independent of tensor values, or mark the module's parameters unprunable",
                   divergence.module, divergence.input_described, divergence.other_call or "nothing more",
                   divergence.traced_call or "nothing more")
    return divergence.module
