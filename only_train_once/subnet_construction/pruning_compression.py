"""``construct_subnet``: remove the zeroed groups, verify the result, write both models."""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..graph.trace import run_model
from ..quantization.rounding import ActivationRoundingBypassed, max_activation_step
from .apply import apply_plan
from .lora import merge_adapters, refresh_adapter_sizes, require_adapters
from .huggingface import HuggingFaceExportError, fit_config_to_model, is_huggingface_model, save_huggingface
from .io import eval_mode, export_onnx, save_spec, save_weights
from .plan import build_plan

logger = logging.getLogger(__name__)

CKPT_FORMATS = ("torch", "onnx", "onnx_qdq")
# Rounding flips allowed when comparing fake-quantized outputs, in activation quantization steps.
ROUNDING_FLIP_STEPS = 16


class SubnetConstructionError(RuntimeError):
    """The compressed model would not compute what the full group-sparse model computes."""


def _prepare_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(f"cannot write to {path}: choose another out_dir / *_model_dir")
    return path


def _check_unchanged(graph, model: nn.Module) -> None:
    if model is not graph.root_module:
        raise ValueError("construct_subnet must be called on the model OTO traced")
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for value in graph.values.values():
        if value.kind in ("param", "buffer") and value.name is not None:
            tensor = tensors.get(value.name)
            if tensor is None or tuple(tensor.shape) != value.shape:
                raise ValueError(f"the model changed since OTO traced it ('{value.name}' is now "
                                 f"{None if tensor is None else tuple(tensor.shape)}, was {value.shape}); build a "
                                 "new OTO(model, dummy_input) before construct_subnet")


def _outputs(model: nn.Module, dummy_input: Any):
    from ..graph.trace import _flatten_structure

    with eval_mode(model), torch.no_grad():
        found = []
        _flatten_structure(run_model(model, dummy_input), found, set())
        return found


def max_output_difference(reference, candidate) -> float:
    """Largest absolute difference between two lists of output tensors (inf if shapes differ)."""
    if len(reference) != len(candidate):
        return float("inf")
    worst = 0.0
    for a, b in zip(reference, candidate):
        if a.shape != b.shape:
            return float("inf")
        if a.numel():
            worst = max(worst, (a.double() - b.double()).abs().max().item())
    return worst


def reference_outputs(model: nn.Module, dummy_input: Any) -> Tuple[list, list]:
    """The model's outputs with and without activation rounding (see :mod:`quantization.rounding`)."""
    with ActivationRoundingBypassed():
        exact = _outputs(model, dummy_input)
    return exact, _outputs(model, dummy_input)


def verify_subnet(full_outputs: Tuple[list, list], model: nn.Module, dummy_input: Any, tolerance: float) -> float:
    """Raise :class:`SubnetConstructionError` unless the compressed model reproduces the full outputs.

    ``full_outputs`` comes from :func:`reference_outputs` on the full model. With activation rounding bypassed
    the outputs must agree within ``tolerance x max(1, |output|)``; with rounding, within that or a few
    activation quantization steps (rounding flips). Returns the difference without rounding.
    """
    full_exact, full_rounded = full_outputs
    try:
        exact, rounded = reference_outputs(model, dummy_input)
    except Exception as error:
        raise SubnetConstructionError(f"the compressed model fails to run ({type(error).__name__}: {error}); please "
                                      "report this model: the analyzer should have left these groups unprunable") \
            from error
    scale = max(1.0, max((t.abs().max().item() for t in full_exact if t.numel() and t.is_floating_point()),
                         default=1.0))
    difference = max_output_difference(full_exact, exact)
    rounding = max_output_difference(full_rounded, rounded)
    flips = ROUNDING_FLIP_STEPS * max_activation_step(model)
    if not difference <= tolerance * scale or not rounding <= max(tolerance, flips) * scale:
        raise SubnetConstructionError(f"the compressed model differs from the full group-sparse model by "
                                      f"{difference:.3g} ({rounding:.3g} with activation rounding; allowed "
                                      f"{tolerance:.1g} x max(1, |output|)); please report this model: the analyzer "
                                      "should have left these groups unprunable")
    return difference


def _save(model: nn.Module, path: str, ckpt_format: str, dummy_input: Any, export_float16: bool) -> None:
    """Write ``model`` in ``ckpt_format``. Pickled models are written in eval mode (every module's flag is
    restored afterwards), so that ``torch.load``-ed models compare deterministically (Dropout, BatchNorm)."""
    if ckpt_format == "onnx_qdq":
        from ..export import export_qdq_onnx  # the export package builds on this one

        export_qdq_onnx(model, dummy_input, path)
        return
    target = copy.deepcopy(model).half() if export_float16 else model
    if ckpt_format == "onnx":
        inputs = dummy_input
        if export_float16:
            inputs = _cast_floats(dummy_input, torch.float16)
        export_onnx(target, inputs, path)
        return
    with eval_mode(target):
        torch.save(target, path)
    save_weights(target, path.rsplit(".", 1)[0] + ".safetensors")


def _check_qdq_exportable(model: nn.Module, export_float16: bool) -> None:
    """Fail before pruning when the QDQ export would fail after it."""
    from ..export import quantized_layers

    if export_float16:
        raise ValueError("ckpt_format='onnx_qdq' stores float32 scales and has no float16 form; drop export_float16")
    quantized_layers(model)  # raises NoQuantizedLayersError


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_cast_floats(v, dtype) for v in value)
    if isinstance(value, list):
        return [_cast_floats(v, dtype) for v in value]
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


def automated_pruning_compression(graph, model: nn.Module, merge_lora_to_base: bool = False,
                                  unmerge_lora_to_base: bool = False, export_huggingface_format: bool = False,
                                  export_float16: bool = False, full_group_sparse_model_dir: str = "./",
                                  compressed_model_dir: str = "./", save_full_group_sparse_model: bool = True,
                                  ckpt_format: str = "torch", verify: bool = True,
                                  tolerance: float = 1e-4) -> Tuple[str, Optional[str]]:
    """Prune ``model`` in place to its compressed form and save it.

    Returns ``(compressed_model_path, full_group_sparse_model_path)`` (the latter None when not saved).
    With ``verify`` (default) the compressed model is run on the traced dummy input and must match the full
    group-sparse model within ``tolerance`` (relative to the output magnitude); otherwise
    :class:`SubnetConstructionError` is raised.
    """
    if ckpt_format not in CKPT_FORMATS:
        raise ValueError(f"ckpt_format must be one of {CKPT_FORMATS}, got {ckpt_format!r}")
    if merge_lora_to_base and unmerge_lora_to_base:
        raise ValueError("choose one of merge_lora_to_base (adapters merged into the base weights) and "
                         "unmerge_lora_to_base (adapters kept separate)")
    if merge_lora_to_base or unmerge_lora_to_base:
        require_adapters(model)
    if export_huggingface_format and unmerge_lora_to_base:
        raise HuggingFaceExportError("a Hugging Face model directory holds no separate adapters: use "
                                     "merge_lora_to_base=True with export_huggingface_format")
    if export_huggingface_format and not merge_lora_to_base and not is_huggingface_model(model):
        raise HuggingFaceExportError(f"export_huggingface_format needs a transformers PreTrainedModel, got "
                                     f"{type(model).__name__}; use ckpt_format='torch' or 'onnx'")
    if graph.analysis is None:
        raise RuntimeError("the graph has no pruning groups yet: build it with OTO(model, dummy_input)")
    _check_unchanged(graph, model)
    if ckpt_format == "onnx_qdq":
        _check_qdq_exportable(model, export_float16)
    prefix = getattr(model, "name", None) or type(model).__name__
    suffix = ".onnx" if ckpt_format in ("onnx", "onnx_qdq") else ".pt"
    full_path = os.path.join(_prepare_dir(full_group_sparse_model_dir), f"{prefix}_full_group_sparse{suffix}")
    compressed_path = os.path.join(_prepare_dir(compressed_model_dir), f"{prefix}_compressed{suffix}")

    full_outputs = reference_outputs(model, graph.dummy_input) if verify else None
    if save_full_group_sparse_model:
        _save(model, full_path, ckpt_format, graph.dummy_input, export_float16)
    plan = build_plan(graph)
    spec = apply_plan(graph, model, plan)
    graph.pruning_plan = plan
    if refresh_adapter_sizes(model) and merge_lora_to_base:
        model = merge_adapters(model)
    if is_huggingface_model(model):
        fit_config_to_model(model)
    if verify:
        difference = verify_subnet(full_outputs, model, graph.dummy_input, tolerance)
        logger.info("compressed model matches the full group-sparse model (max |difference| %.3g)", difference)
    if export_huggingface_format:
        hf_dir = _prepare_dir(os.path.join(compressed_model_dir, f"{prefix}_compressed_hf"))
        compressed_path = save_huggingface(model, spec, hf_dir, export_float16)
    else:
        _save(model, compressed_path, ckpt_format, graph.dummy_input, export_float16)
        save_spec(spec, compressed_path.rsplit(".", 1)[0] + "_subnet.json")
    return compressed_path, (full_path if save_full_group_sparse_model else None)


def automated_erasing_compression(graph, model: nn.Module, full_group_sparse_model_dir: str = "./",
                                  compressed_model_dir: str = "./", save_full_group_sparse_model: bool = True,
                                  ckpt_format: str = "torch", export_float16: bool = False, verify: bool = True,
                                  tolerance: float = 1e-4) -> Tuple[str, Optional[str], int]:
    """``compress_mode="erase"``: keep the architecture, erase the zero groups in place.

    Every unit of a prunable group whose parameter slices are all zero (the units the prune mode would
    remove) has every parameter slice it owns set exactly to zero; nothing is removed or reshaped, so the
    "compressed" model has the full model's architecture and state-dict shapes and computes the same outputs.
    Returns ``(compressed_model_path, full_group_sparse_model_path, erased_unit_count)``.
    """
    from ..dependency_graph.param_groups import (emitted_groups, get_param_groups, unit_offsets, zero_global_units,
                                                 zero_units_by_group)

    if ckpt_format not in ("torch", "onnx"):
        raise ValueError(f"compress_mode='erase' saves with ckpt_format 'torch' or 'onnx', got {ckpt_format!r}")
    if graph.analysis is None:
        raise RuntimeError("the graph has no pruning groups yet: build it with OTO(model, dummy_input)")
    _check_unchanged(graph, model)
    prefix = getattr(model, "name", None) or type(model).__name__
    suffix = ".onnx" if ckpt_format == "onnx" else ".pt"
    full_path = os.path.join(_prepare_dir(full_group_sparse_model_dir), f"{prefix}_full_group_sparse{suffix}")
    erased_path = os.path.join(_prepare_dir(compressed_model_dir), f"{prefix}_compressed{suffix}")
    full_outputs = reference_outputs(model, graph.dummy_input) if verify else None
    if save_full_group_sparse_model:
        _save(model, full_path, ckpt_format, graph.dummy_input, export_float16)
    param_groups = get_param_groups(graph)
    offsets = unit_offsets(emitted_groups(graph))
    zero_units = zero_units_by_group(graph)
    erased = [torch.from_numpy(units.astype(np.int64)) + offsets[key]
              for key, units in zero_units.items() if key in offsets and units.size]
    erased_ids = torch.cat(erased) if erased else torch.empty(0, dtype=torch.int64)
    zero_global_units(param_groups, erased_ids)
    if verify:
        difference = verify_subnet(full_outputs, model, graph.dummy_input, tolerance)
        logger.info("erased model matches the full group-sparse model (max |difference| %.3g)", difference)
    _save(model, erased_path, ckpt_format, graph.dummy_input, export_float16)
    logger.info("compress_mode='erase': %d zero units kept in place at exactly zero", erased_ids.numel())
    return erased_path, (full_path if save_full_group_sparse_model else None), int(erased_ids.numel())
