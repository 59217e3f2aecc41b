"""``construct_subnet``: remove the zeroed groups, verify the result, write both models."""

from __future__ import annotations

import copy
import logging
import os
import pickle
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..graph.pruning_axis import is_flattened
from ..meta_device import check_materialized
from ..quantization.calibration import warn_if_uncalibrated
from ..utils import eval_mode
from .apply import apply_plan
from .graph_release import graph_releaser
from .huggingface import HuggingFaceExportError, fit_config_to_model, is_huggingface_model, save_huggingface
from .integrity import save_module
from .io import export_onnx, save_spec, save_weights
from .lora import merge_adapters, refresh_adapter_sizes, require_adapters
from .plan import PruningPlan, build_plan
from .verification import ROUNDING_FLIP_STEPS, SubnetConstructionError, SubnetVerifier  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

CKPT_FORMATS = ("torch", "onnx", "onnx_qdq", "safetensors")
#: File suffix of each ``ckpt_format``. ``"safetensors"`` writes the weights-only file alone (with the subnet JSON
#: for the compressed model): at 7B width about half of construct_subnet's time went to writing the model a second
#: time as a pickled ``.pt``.
SUFFIXES = {"torch": ".pt", "onnx": ".onnx", "onnx_qdq": ".onnx", "safetensors": ".safetensors"}


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


def _check_config_describes(plan) -> None:
    """A Hugging Face config has one size per layer kind: experts that kept different numbers of hidden units
    (pruned along a flattened (expert, unit) axis) cannot be written as a model directory."""
    ragged = [name for name, axes in plan.keep.items() if any(is_flattened(axis) for axis in axes)]
    if ragged:
        raise HuggingFaceExportError(f"the experts of {ragged[0]} (and {len(ragged) - 1} more) keep different numbers "
                                     "of hidden units, which a Hugging Face config cannot describe; save with "
                                     "ckpt_format='torch' or 'safetensors' (export_huggingface_format=False)")


def verify_subnet(verifier: SubnetVerifier, model: nn.Module) -> float:
    """Raise :class:`SubnetConstructionError` unless ``model`` (compressed) reproduces the outputs ``verifier``
    recorded on the full model (see :mod:`.verification`); returns the worst relative difference."""
    return verifier.verify(model)


def _save(model: nn.Module, path: str, ckpt_format: str, dummy_input: Any, export_float16: bool) -> None:
    """Write ``model`` to ``path``; raises :class:`_NotPicklable` after writing the weights-only file when the
    whole module cannot be pickled. Pickled models are written in eval mode (every module's flag is restored
    afterwards), so that ``torch.load``-ed models compare deterministically (Dropout, BatchNorm)."""
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
    checksums = save_weights(target, path.rsplit(".", 1)[0] + ".safetensors")  # reused for the .pt file
    if ckpt_format == "safetensors":
        return
    try:
        with eval_mode(target):
            save_module(target, path, checksums)
    except (pickle.PicklingError, AttributeError, TypeError, RuntimeError) as error:
        # weight_norm parametrizations, local hook functions, classes defined in a function cannot be pickled
        raise _NotPicklable(f"{type(error).__name__}: {error}") from error


class _NotPicklable(Exception):
    """The model cannot be pickled as a whole module; its weights-only files were written."""


def _save_all(model: nn.Module, path: str, ckpt_format: str, dummy_input: Any, export_float16: bool,
              unpicklable: list) -> str:
    """:func:`_save`; returns the path of the file that holds the model (the ``.safetensors`` one when the module
    cannot be pickled, with one warning per construct_subnet call)."""
    try:
        _save(model, path, ckpt_format, dummy_input, export_float16)
        return path
    except _NotPicklable as error:
        if not unpicklable:
            logger.warning("construct_subnet: the model cannot be pickled as a whole module (%s); wrote the "
                           "weights-only .safetensors files and the subnet JSON instead of the .pt files (load them "
                           "with subnet_construction.load_compressed_weights)", error)
        unpicklable.append(path)
        return path.rsplit(".", 1)[0] + ".safetensors"


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


class SubnetFiles(tuple):
    """``(compressed_model_path, full_group_sparse_model_path)``, as the reference returns them, and the
    :class:`~.plan.PruningPlan` that removed the units (``plan``)."""

    plan: PruningPlan

    def __new__(cls, compressed_path: str, full_path: Optional[str], plan: PruningPlan) -> "SubnetFiles":
        files = super().__new__(cls, (compressed_path, full_path))
        files.plan = plan
        return files


def automated_pruning_compression(graph, model: nn.Module, merge_lora_to_base: bool = False,
                                  unmerge_lora_to_base: bool = False, export_huggingface_format: bool = False,
                                  export_float16: bool = False, full_group_sparse_model_dir: str = "./",
                                  compressed_model_dir: str = "./", save_full_group_sparse_model: bool = True,
                                  ckpt_format: str = "torch", verify: bool = True,
                                  tolerance: float = 1e-4) -> SubnetFiles:
    """Prune ``model`` in place to its compressed form and save it.

    Returns ``(compressed_model_path, full_group_sparse_model_path)`` (the latter None when not saved), with the
    pruning plan it applied as ``.plan`` (:class:`SubnetFiles`); for a model
    that cannot be pickled (weight_norm parametrizations, local hooks, classes defined in a function) these are the
    weights-only ``.safetensors`` files, written with the subnet JSON, and one warning says so.
    With ``verify`` (default) the compressed model is run on the traced dummy input and on a fresh random input
    of the same structure and must match the full group-sparse model, output leaf by output leaf, within
    ``tolerance`` relative to each leaf's own scale (more for float16/bfloat16 models, see
    :mod:`.verification`); otherwise :class:`SubnetConstructionError` is raised and the compressed model is not
    written. A full model whose outputs are NaN/inf is refused the same way.
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
    check_materialized(list(model.parameters()) + list(model.buffers()), "construct_subnet")
    warn_if_uncalibrated(model, "construct_subnet")
    if ckpt_format == "onnx_qdq":
        _check_qdq_exportable(model, export_float16)
    prefix = getattr(model, "name", None) or type(model).__name__
    suffix = SUFFIXES[ckpt_format]
    full_path = os.path.join(_prepare_dir(full_group_sparse_model_dir), f"{prefix}_full_group_sparse{suffix}")
    compressed_path = os.path.join(_prepare_dir(compressed_model_dir), f"{prefix}_compressed{suffix}")

    verifier = SubnetVerifier(model, graph.dummy_input, tolerance) if verify else None
    unpicklable: list = []
    if save_full_group_sparse_model:
        full_path = _save_all(model, full_path, ckpt_format, graph.dummy_input, export_float16, unpicklable)
    plan = build_plan(graph)
    if export_huggingface_format:
        _check_config_describes(plan)
    spec = apply_plan(graph, model, plan, on_replaced=graph_releaser(graph))
    for node in graph.nodes.values():
        node.pruned_status = {"out_dim": True, "in_dim": True}
    if refresh_adapter_sizes(model) and merge_lora_to_base:
        model = merge_adapters(model)
    if is_huggingface_model(model):
        fit_config_to_model(model)
    if verifier is not None:  # made when verify is set
        difference = verify_subnet(verifier, model)
        logger.info("compressed model matches the full group-sparse model (worst relative difference %.3g)",
                    difference)
    if export_huggingface_format:
        hf_dir = _prepare_dir(os.path.join(compressed_model_dir, f"{prefix}_compressed_hf"))
        compressed_path = save_huggingface(model, spec, hf_dir, export_float16)
    else:
        compressed_path = _save_all(model, compressed_path, ckpt_format, graph.dummy_input, export_float16,
                                    unpicklable)
        save_spec(spec, compressed_path.rsplit(".", 1)[0] + "_subnet.json")
    return SubnetFiles(compressed_path, full_path if save_full_group_sparse_model else None, plan)


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

    if ckpt_format not in ("torch", "onnx", "safetensors"):
        raise ValueError(f"compress_mode='erase' saves with ckpt_format 'torch', 'onnx' or 'safetensors', got "
                         f"{ckpt_format!r}")
    if graph.analysis is None:
        raise RuntimeError("the graph has no pruning groups yet: build it with OTO(model, dummy_input)")
    _check_unchanged(graph, model)
    prefix = getattr(model, "name", None) or type(model).__name__
    suffix = SUFFIXES[ckpt_format]
    full_path = os.path.join(_prepare_dir(full_group_sparse_model_dir), f"{prefix}_full_group_sparse{suffix}")
    erased_path = os.path.join(_prepare_dir(compressed_model_dir), f"{prefix}_compressed{suffix}")
    check_materialized(list(model.parameters()) + list(model.buffers()), "construct_subnet")
    verifier = SubnetVerifier(model, graph.dummy_input, tolerance) if verify else None
    unpicklable: list = []
    if save_full_group_sparse_model:
        full_path = _save_all(model, full_path, ckpt_format, graph.dummy_input, export_float16, unpicklable)
    param_groups = get_param_groups(graph)
    offsets = unit_offsets(emitted_groups(graph))
    zero_units = zero_units_by_group(graph)
    erased = [torch.from_numpy(units.astype(np.int64)) + offsets[key]
              for key, units in zero_units.items() if key in offsets and units.size]
    erased_ids = torch.cat(erased) if erased else torch.empty(0, dtype=torch.int64)
    zero_global_units(param_groups, erased_ids)
    if verifier is not None:  # made when verify is set
        difference = verify_subnet(verifier, model)
        logger.info("erased model matches the full group-sparse model (worst relative difference %.3g)", difference)
    erased_path = _save_all(model, erased_path, ckpt_format, graph.dummy_input, export_float16, unpicklable)
    logger.info("compress_mode='erase': %d zero units kept in place at exactly zero", erased_ids.numel())
    return erased_path, (full_path if save_full_group_sparse_model else None), int(erased_ids.numel())
