"""Compress a model with random zero groups and compare it with its full group-sparse twin, relatively.

Shared by the analyzer-gap tests, the operator-registration tests and the third-party zoo. The comparison is
relative to each output's own scale (with a floor far below any real signal), so a model whose outputs are
around 1e-4 cannot pass with an absolute error as large as the outputs themselves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np
from safetensors import torch as safetensors_torch
import torch
from torch import nn

from only_train_once import OTO, utils
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.quantization.rounding import ActivationRoundingBypassed
from only_train_once.subnet_construction import load_compressed_weights, load_model

RELATIVE_TOLERANCE = 1e-4
SCALE_FLOOR = 1e-30


@dataclass
class CompressionResult:
    """What one compression measured: relative output errors and how much was prunable and removed."""

    relative_error: float  # on the dummy input
    fresh_relative_error: float  # on an input the trace never saw
    prunable_groups: int
    prunable_param_fraction: float  # parameters in prunable groups / all trainable parameters
    params_before: int
    params_after: int

    @property
    def smaller(self) -> bool:
        return self.params_after < self.params_before

    @property
    def lossless(self) -> bool:
        return max(self.relative_error, self.fresh_relative_error) <= RELATIVE_TOLERANCE


def model_outputs(model: nn.Module, model_input: Any) -> List[torch.Tensor]:
    """Floating outputs in eval mode, activation rounding bypassed (exact float / quantized equivalence)."""
    model.eval()  # callers compare later forwards too: the model stays in eval mode
    with ActivationRoundingBypassed():
        found = utils.model_outputs(model, copy.deepcopy(model_input))
    return [t for t in found if t.is_floating_point()]


def relative_error(reference: List[torch.Tensor], other: List[torch.Tensor]) -> float:
    """max over outputs of ``max|a - b| / max|a|``; inf when shapes differ or a value is not finite."""
    if len(reference) != len(other):
        return float("inf")
    worst = 0.0
    for a, b in zip(reference, other):
        if a.shape != b.shape or not torch.isfinite(b).all():
            return float("inf")
        if a.numel():
            scale = max(a.double().abs().max().item(), SCALE_FLOOR)
            worst = max(worst, (a.double() - b.double()).abs().max().item() / scale)
    return worst


def prunable_param_fraction(oto: OTO, model: nn.Module) -> float:
    """Fraction of the trainable parameters that prunable groups prune along an axis."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    pruned = {id(p): p.numel() for group in oto.get_param_groups() if group["is_prunable"]
              for p, axis in zip(group["params"], group["p_axes"]) if axis is not None}
    return sum(pruned.values()) / total if total else 0.0


def prunable_group_count(oto: OTO) -> int:
    return sum(1 for group in oto.get_param_groups() if group["is_prunable"])


def _reload(path: str, architecture: nn.Module, pruned: bool) -> nn.Module:
    """Load a saved model; a model that cannot be pickled was written weights-only (``.safetensors``), and is
    rebuilt on a copy of its original architecture (with the subnet description when it was pruned)."""
    if not path.endswith(".safetensors"):
        return load_model(path)
    fresh = copy.deepcopy(architecture)
    if pruned:
        return load_compressed_weights(fresh, path)
    safetensors_torch.load_model(fresh, path)
    return fresh


def compress_and_compare(model: nn.Module, dummy_input: Any, out_dir: str, fresh_input: Optional[Any] = None,
                         quantize: bool = False, seed: int = 0, sparsity: float = 0.5,
                         before_zeroing: Optional[Callable[[OTO], None]] = None) -> CompressionResult:
    """OTO -> random_set_zero_groups -> construct_subnet -> reload both files -> compare outputs."""
    model = model.eval()
    if quantize:
        model_to_quantize_model(model, quant_mode="weight_and_activation")
    # A fresh instance for models that can only be saved weights-only, copied before the trace: tracing runs the
    # model with autograd on, and eval-mode caches (timm LeViT's attention biases) then hold non-leaf tensors,
    # which deepcopy refuses.
    architecture = copy.deepcopy(model)
    oto = OTO(model, dummy_input)
    if before_zeroing is not None:
        before_zeroing(oto)
    groups = prunable_group_count(oto)
    fraction = prunable_param_fraction(oto, model)
    before = sum(p.numel() for p in model.parameters())
    np.random.seed(seed)
    oto.random_set_zero_groups(sparsity)
    oto.construct_subnet(out_dir=out_dir)
    full = _reload(oto.full_group_sparse_model_path, architecture, pruned=False)
    compressed = _reload(oto.compressed_model_path, architecture, pruned=True)
    error = relative_error(model_outputs(full, dummy_input), model_outputs(compressed, dummy_input))
    fresh_error = 0.0
    if fresh_input is not None:
        fresh_error = relative_error(model_outputs(full, fresh_input), model_outputs(compressed, fresh_input))
    after = sum(p.numel() for p in compressed.parameters())
    return CompressionResult(error, fresh_error, groups, fraction, before, after)
