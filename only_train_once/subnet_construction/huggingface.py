"""Hugging Face in and out: compressed decoders as ``save_pretrained`` directories, and back.

Pruning is usually uneven across layers (GPT-2's first layer keeps 862 of 1024 MLP units, the next 790), which one
``config.json`` value cannot describe. The exported directory therefore holds, next to ``config.json`` and the
safetensors weights, :data:`SUBNET_FILE`: every changed tensor shape and module attribute (a
:class:`~only_train_once.subnet_construction.apply.SubnetSpec`). :func:`load_pretrained` rebuilds the model class
named in ``config.json`` from the config, applies those shapes and loads the weights; no remote code runs.

Where every layer kept the same sizes, :func:`fit_config_to_model` rewrites the config's size fields
(``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads``...) so that the model class's own
``from_pretrained`` rebuilds the compressed model from ``config.json`` alone. Which field drives which tensor axis is
not hard-coded per architecture: it is measured by building the model class on the meta device with each field
changed (no memory, no initialisation).
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .apply import SubnetSpec, restore_subnet
from .integrity import (CHECKSUM_KEY, read_json_document, reading, tensor_digest, verify_digests,
                        write_json_document)

logger = logging.getLogger(__name__)

SUBNET_FILE = "only_train_once_subnet.json"
# Config fields that set layer widths in Hugging Face decoders (those absent from a config are skipped).
SIZE_FIELDS = ("intermediate_size", "n_inner", "ffn_dim", "num_attention_heads", "num_key_value_heads", "n_head",
               "multi_query_group_num")

Shapes = Dict[str, Tuple[int, ...]]


class HuggingFaceExportError(ValueError):
    """The model cannot be written as a Hugging Face model directory."""


def is_huggingface_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (recognised without importing transformers)."""
    return any(cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers")
               for cls in type(model).__mro__)


def _tensor_shapes(model: nn.Module) -> Shapes:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _meta_shapes(model: nn.Module, config) -> Optional[Shapes]:
    """Tensor shapes of ``type(model)(config)``, built on the meta device (None if the class refuses the config)."""
    try:
        with torch.device("meta"):
            return _tensor_shapes(type(model)(config))
    except (ValueError, TypeError, AssertionError, RuntimeError, ZeroDivisionError):
        return None


def _solve_field(base: Shapes, probed: Shapes, compressed: Shapes, value: int) -> Optional[int]:
    """The value of one size field that gives the compressed shapes, if one value fits every axis it drives.

    ``base`` holds the shapes at ``value``, ``probed`` at ``2 * value``: each axis the field drives has size
    ``a * value + b``; the compressed size ``c`` then asks for ``(c - b) / a``.
    """
    solutions = set()
    for name, shape in base.items():
        other, kept = probed.get(name), compressed.get(name)
        if other is None or kept is None or len(other) != len(shape):
            continue
        for size, doubled, now in zip(shape, other, kept):
            if size == doubled:
                continue
            slope = (doubled - size) // value
            solution, remainder = divmod(now - (size - slope * value), slope)
            solutions.add(solution if remainder == 0 and solution > 0 else None)
    return solutions.pop() if len(solutions) == 1 else None


def fit_config_to_model(model: nn.Module) -> bool:
    """Rewrite ``model.config``'s size fields to the compressed sizes when one value per field fits every layer.

    Returns True when the class built from the rewritten config has exactly the model's tensor shapes (so
    ``from_pretrained`` works from ``config.json`` alone); otherwise the config is left unchanged and False returned.
    """
    config = model.config
    compressed = _tensor_shapes(model)
    base = _meta_shapes(model, config)
    if base is None:
        return False
    if base == compressed:
        return True
    fitted = copy.deepcopy(config)
    for field in SIZE_FIELDS:
        value = getattr(config, field, None)
        if type(value) is not int or value <= 0:
            continue
        probe = copy.deepcopy(config)
        setattr(probe, field, 2 * value)
        probed = _meta_shapes(model, probe)
        solution = _solve_field(base, probed, compressed, value) if probed is not None else None
        if solution is not None:
            setattr(fitted, field, solution)
    if _meta_shapes(model, fitted) != compressed:
        return False
    for field in SIZE_FIELDS:
        if hasattr(fitted, field):
            setattr(config, field, getattr(fitted, field))
    return True


def save_huggingface(model: nn.Module, spec: SubnetSpec, out_dir: str, export_float16: bool = False) -> str:
    """Write ``model`` (compressed in place) as a Hugging Face model directory; returns ``out_dir``.

    ``save_pretrained`` layout (``config.json``, ``model.safetensors``, generation config) plus :data:`SUBNET_FILE`.
    ``export_float16`` writes float16 weights; a bfloat16 or float16 model is written in its own dtype.
    """
    if not is_huggingface_model(model):
        raise HuggingFaceExportError(f"export_huggingface_format needs a transformers PreTrainedModel, got "
                                     f"{type(model).__name__}; use ckpt_format='torch' or 'onnx'")
    _refuse_quantized(model)
    uniform = fit_config_to_model(model)
    target: Any = copy.deepcopy(model).half() if export_float16 else model  # a transformers PreTrainedModel
    target.save_pretrained(out_dir, safe_serialization=True)
    # The digests are taken from the files as written, so they also catch a damaged write.
    write_json_document(os.path.join(out_dir, SUBNET_FILE),
                        {**spec.to_dict(), "uniform": uniform, CHECKSUM_KEY: _written_digests(out_dir)})
    if uniform:
        logger.info("every layer kept the same sizes: %s/config.json alone rebuilds the compressed model "
                    "(from_pretrained)", out_dir)
    else:
        logger.info("pruning is uneven across layers: load %s with only_train_once.load_pretrained (config.json "
                    "keeps the original sizes, %s holds each layer's)", out_dir, SUBNET_FILE)
    return out_dir


def _refuse_quantized(model: nn.Module) -> None:
    from ..quantization.quant_layers import QuantizeMixin

    quantized = [name for name, module in model.named_modules() if isinstance(module, QuantizeMixin)]
    if quantized:
        raise HuggingFaceExportError(f"{len(quantized)} layers are quantized layers (e.g. {quantized[0]}), which a "
                                     "Hugging Face model class cannot hold; use ckpt_format='onnx_qdq' or "
                                     "oto.save_packed for quantized models")


def _weight_files(path: str) -> List[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    return [os.path.join(path, shard) for shard in shards]


def _written_digests(path: str) -> Dict[str, str]:
    """Digest of every tensor in the directory's safetensors files, read one tensor at a time."""
    from safetensors import safe_open

    result: Dict[str, str] = {}
    for shard in _weight_files(path):
        with safe_open(shard, framework="pt") as handle:
            for key in handle.keys():
                result[key] = tensor_digest(handle.get_tensor(key))
    return result


def _read_weights(path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: Dict[str, torch.Tensor] = {}
    for shard in _weight_files(path):
        with reading(shard, "safetensors weights written by construct_subnet(export_huggingface_format=True)"):
            weights.update(load_file(shard))
    return weights


def load_pretrained(path: str, device: str = "cpu") -> nn.Module:
    """Rebuild a compressed model written with ``construct_subnet(export_huggingface_format=True)``.

    Builds the class named in ``config.json`` (``architectures``) from the config, gives it the compressed shapes
    and attributes of :data:`SUBNET_FILE`, loads the safetensors weights in their stored dtype and returns it in
    eval mode. A directory without :data:`SUBNET_FILE` is loaded with the class's own ``from_pretrained``.
    """
    transformers = importlib.import_module("transformers")
    config = transformers.AutoConfig.from_pretrained(path)
    architectures = getattr(config, "architectures", None) or []
    if not architectures or not hasattr(transformers, architectures[0]):
        raise HuggingFaceExportError(f"{path}/config.json names no transformers model class (architectures: "
                                     f"{architectures}); load it with the model class's from_pretrained")
    model_class = getattr(transformers, architectures[0])
    subnet_path = os.path.join(path, SUBNET_FILE)
    if not os.path.exists(subnet_path):
        return model_class.from_pretrained(path).to(device).eval()
    record = read_json_document(subnet_path, "the subnet description written by construct_subnet("
                                             "export_huggingface_format=True)")
    spec = SubnetSpec.from_dict(record)
    weights = _read_weights(path)
    verify_digests(path, record.get(CHECKSUM_KEY), weights)
    dtype = next(t.dtype for t in weights.values() if t.is_floating_point())
    model = model_class(config).to(dtype)
    restore_subnet(model, spec)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    untied = [key for key in missing if key not in tied and not _is_tied(model, key)]
    if untied or unexpected:
        raise HuggingFaceExportError(f"{path} does not match its model class: missing {untied[:5]}, unexpected "
                                     f"{unexpected[:5]}")
    return model.to(device).eval()


def _is_tied(model: nn.Module, key: str) -> bool:
    """Whether state-dict entry ``key`` shares its storage with another entry (a tied ``lm_head.weight``)."""
    state = model.state_dict(keep_vars=True)
    tensor = state[key]
    return any(other is not tensor and other.data_ptr() == tensor.data_ptr() for other in state.values())
