"""Activation-range calibration: find layers whose range was never calibrated, calibrate them on one input.

A freshly quantized weight+activation layer starts with a default activation range and calibrates it on its first
training-mode forward (see :mod:`.quant_layers`). Until then its eval outputs are off (by 0.1-0.3 on the sanity
models): a model compressed or exported before any training step would be saved with those ranges.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, List

import torch
from torch import nn

from ..utils import eval_mode, run_model

logger = logging.getLogger(__name__)


def uncalibrated_layers(model: nn.Module) -> List[str]:
    """Names of the quantized layers whose activation range is not calibrated yet."""
    return [name for name, module in model.named_modules()
            if getattr(module, "quantizes_activation", False) and not getattr(module, "act_calibrated", True)]


def calibrate_activations(model: nn.Module, inputs: Any) -> List[str]:
    """Calibrate every uncalibrated activation range on ``inputs`` (one eval-mode forward, no gradient, running
    statistics untouched); each layer sees the output of the already calibrated layers before it. Returns the
    names of the layers calibrated."""
    names = uncalibrated_layers(model)
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(lambda module, args: module.calibrate_activation_range(args[0]))
               for name in names]
    try:
        with eval_mode(model), torch.no_grad():
            run_model(model, copy.deepcopy(inputs))
    finally:
        for handle in handles:
            handle.remove()
    return names


def warn_if_uncalibrated(model: nn.Module, operation: str) -> None:
    """One warning naming the uncalibrated layers, if any, for an ``operation`` that saves the model as it is."""
    names = uncalibrated_layers(model)
    if names:
        logger.warning("%s: %d activation quantizer(s) were never calibrated (%s%s): the model's outputs are off "
                       "until a training-mode forward calibrates them. Train at least one step first, or call "
                       "only_train_once.quantization.calibrate_activations(model, inputs) / "
                       "oto.calibrate_activations() on representative inputs", operation, len(names),
                       ", ".join(names[:4]), "..." if len(names) > 4 else "")
