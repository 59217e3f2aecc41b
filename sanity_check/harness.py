"""One sanity case: trace a backbone (float, W-only or W+A), zero random groups, build the subnet, compare.

``max_diff`` compares full and compressed outputs with activation rounding bypassed (exact equivalence, see
:mod:`only_train_once.quantization.rounding`); ``rounded_max_diff`` with it (a few quantization steps at most).
``onnx_max_diff`` compares the ONNX file in onnxruntime with the full model; activation rounding cannot be bypassed
there, so for weight+activation models it is held to the bound ``construct_subnet`` verifies with rounding on.

Shared by the pytest suite (``sanity_check/test_sanity.py``) and the runner (``python -m sanity_check``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np
import torch

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.quantization.rounding import ActivationRoundingBypassed, max_activation_step
from only_train_once.subnet_construction import load_model
from only_train_once.subnet_construction.pruning_compression import ROUNDING_FLIP_STEPS
from only_train_once.utils import flatten_tensors, model_outputs

MODES = ("float", "weight_only", "weight_and_activation")


@dataclass
class CaseResult:
    """What one sanity case measured (reductions are ``1 - compressed / full``)."""

    backbone: str
    mode: str
    nodes: int = 0
    groups: int = 0
    prunable: int = 0
    param_reduction: float = 0.0
    mac_reduction: float = 0.0
    bop_reduction: float = 0.0
    weight_size_reduction: float = 0.0
    max_diff: float = float("nan")
    rounded_max_diff: float = float("nan")
    onnx_max_diff: Optional[float] = None
    onnx_bound: float = 1e-4
    seconds: float = 0.0
    passed: bool = False
    error: str = ""
    tolerance: float = 1e-4
    notes: List[str] = field(default_factory=list)


def _outputs(model: torch.nn.Module, dummy_input: Any, rounding: bool = False) -> List[torch.Tensor]:
    """Outputs in eval mode; activation rounding is bypassed unless ``rounding`` (see quantization.rounding)."""
    model.eval()  # the harness compares later forwards too: the model stays in eval mode
    if rounding:
        return model_outputs(model, dummy_input)
    with ActivationRoundingBypassed():
        return model_outputs(model, dummy_input)


def _max_diff(reference: List[torch.Tensor], other: List[torch.Tensor]) -> float:
    if len(reference) != len(other) or any(a.shape != b.shape for a, b in zip(reference, other)):
        return float("inf")
    return max(((a.double() - b.double()).abs().max().item() for a, b in zip(reference, other) if a.numel()),
               default=0.0)


def _reduction(full: float, compressed: float) -> float:
    return 1.0 - compressed / full if full else 0.0


def _metrics(oto: OTO) -> dict:
    return {"params": oto.compute_num_params(), "macs": oto.compute_macs()["total"],
            "bops": oto.compute_bops()["total"], "weight_size": oto.compute_weight_size()["total"]}


def _onnx_diff(path: str, expected: List[torch.Tensor], dummy_input: Any) -> float:
    """Run the ONNX file in onnxruntime on ``dummy_input`` and compare with ``expected``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    tensors = flatten_tensors(dummy_input)
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), tensors)}
    results = [torch.from_numpy(r) for r in session.run(None, feeds)]
    return _max_diff(expected, results)


def run_case(backbone, mode: str, out_dir: str, seed: int = 0, sparsity: Optional[float] = None,
             visualize: bool = True, onnx: bool = False, reference_marks: bool = True) -> CaseResult:
    """Run one case; never raises (failures are recorded in the result).

    ``reference_marks=False`` skips the backbone's ``unprunable_param_*`` lists (the reference tests' own marks),
    so that everything the analyzer finds prunable is pruned and checked.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    result = CaseResult(backbone.name, mode, tolerance=backbone.tolerance)
    start = time.perf_counter()
    try:
        _run(backbone, mode, out_dir, seed, sparsity, visualize, onnx, reference_marks, result)
        result.passed = result.max_diff <= backbone.tolerance and (
            result.onnx_max_diff is None or result.onnx_max_diff <= result.onnx_bound)
    except Exception as error:  # a sanity runner reports every failure instead of stopping at the first
        result.error = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    return result


def _run(backbone, mode, out_dir, seed, sparsity, visualize, onnx, reference_marks, result: CaseResult) -> None:
    case_dir = os.path.join(out_dir, f"{backbone.name}_{mode}")
    os.makedirs(case_dir, exist_ok=True)
    model = backbone.build(seed).eval()
    if mode != "float":
        model_to_quantize_model(model, quant_mode=mode)
    dummy_input = backbone.example_input(seed)
    oto = OTO(model, dummy_input)
    unprunable = backbone.unprunable_names(model) if reference_marks else []
    if unprunable:
        oto.mark_unprunable_by_param_names(unprunable)
    groups = oto.groups
    result.nodes, result.groups = len(oto.graph.nodes), len(groups)
    result.prunable = sum(g.is_prunable for g in groups)
    if visualize:
        oto.visualize(view=False, out_dir=case_dir)
    before = _metrics(oto)
    np.random.seed(seed)
    oto.random_set_zero_groups(sparsity)
    full_outputs = _outputs(model, dummy_input)
    full_rounded = _outputs(model, dummy_input, rounding=True)
    oto.construct_subnet(out_dir=case_dir, ckpt_format="onnx" if onnx else "torch",
                         tolerance=backbone.tolerance)
    if onnx:
        result.onnx_max_diff = _onnx_diff(oto.compressed_model_path, full_rounded, dummy_input)
        result.onnx_bound = max(backbone.tolerance, 1e-4, ROUNDING_FLIP_STEPS * max_activation_step(model))
        compressed = model
    else:
        full_outputs = _outputs(load_model(oto.full_group_sparse_model_path), dummy_input)
        compressed = load_model(oto.compressed_model_path)
    result.max_diff = _max_diff(full_outputs, _outputs(compressed, dummy_input))
    result.rounded_max_diff = _max_diff(full_rounded, _outputs(compressed, dummy_input, rounding=True))
    after = _metrics(OTO(compressed, dummy_input))
    result.param_reduction = _reduction(before["params"], after["params"])
    result.mac_reduction = _reduction(before["macs"], after["macs"])
    result.bop_reduction = _reduction(before["bops"], after["bops"])
    result.weight_size_reduction = _reduction(before["weight_size"], after["weight_size"])
