"""The packed low-bit format: quantized weights bit-packed at their learned width, in one safetensors file.

A file holds, for each quantized layer ``L``:

* ``L.weight.packed`` (uint8): the weight integers ``k`` (``|k| <= n``, the quantizer's integer range), packed at
  ``n.bit_length() + 1`` bits, two's complement (layout in :mod:`.bitpack`); that width is the layer's
  ``weight_bit`` when its step comes from ``step_size_for_bits``;
* ``L.weight.scale`` (shape ``[1]``, the weight's dtype): the effective step ``d``; the weight is ``d * k``.

and every other tensor of the model's state dict under its own name and dtype, shared tensors once: biases,
normalisation parameters and running statistics, quantizer parameters, ``act_calibrated`` flags. The safetensors
metadata key ``only_train_once.packed`` holds a JSON header: ``format``, ``layers`` (per layer: quantized class,
``quant_type``, ``quant_mode``, ``bits``, weight ``shape`` and ``dtype``), ``aliases`` (state-dict name -> stored
name) and ``subnet`` (the compressed architecture description of ``construct_subnet``, or ``null``).

Size against ``compute_weight_size`` (which counts each module's parameters at its ``weight_bit``, 32 for float
modules): the weights take exactly the bits counted; a quantized layer's bias and quantizer scalars are float32
here but counted at ``weight_bit``; float modules' parameters are float32 in both. Not counted there: buffers
(BatchNorm running statistics, 64 bits per channel, ``num_batches_tracked``), the ``act_calibrated`` flags, the
per-layer scale, and the headers (about 90 bytes per tensor, plus the JSON header with the subnet description).
These are a few percent of a model of millions of weights (VGG7-BN, ResNet-18 compressed at 2..8 bits: 2-3%) but
dominate a model of a few ten thousand (ResNet-20 at those bits: the file is 1.6-1.8x the weight size).

:func:`load_packed` rebuilds the model from a fresh instance of the original class: it restores the compressed
architecture, replaces each quantized layer by its grid layer (:mod:`.grid_layers`) and dequantizes the weights
once, so the loaded model's outputs equal the saved model's bitwise.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, Optional, Set, Tuple, cast

import torch
from torch import Tensor, nn

from ..subnet_construction.apply import SubnetSpec, restore_subnet, set_submodule
from ..subnet_construction.integrity import CHECKSUM_KEY, digests, reading, verify_digests, write_atomically
from .bitpack import pack_bits, unpack_bits
from .grid_layers import GRID_LAYERS, to_grid_layer
from .integer_weights import integer_weight, quantized_layers

__all__ = ["PACKED_FORMAT", "save_packed", "load_packed"]

logger = logging.getLogger(__name__)

PACKED_FORMAT = "only_train_once.packed/1"
_METADATA_KEY = "only_train_once.packed"


def _key(module_name: str, attribute: str) -> str:
    return f"{module_name}.{attribute}" if module_name else attribute


def _quantized_class_name(layer: nn.Module) -> str:
    """Name of the quantized layer class ``layer`` is or derives from (a grid layer maps to its quantized class)."""
    return next(cls.__name__ for cls in type(layer).__mro__ if cls.__name__ in GRID_LAYERS)


def _storage_key(tensor: Tensor) -> Tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()),
            tensor.dtype, tensor.device)


def _float_state(model: nn.Module, packed_weights: Set[str]) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """The state-dict tensors other than the packed weights, each storage once, and the aliases of the others."""
    tensors: Dict[str, Tensor] = {}
    aliases: Dict[str, str] = {}
    stored_as: Dict[Tuple, str] = {}
    for name, tensor in model.state_dict().items():
        if name in packed_weights:
            continue
        first = stored_as.setdefault(_storage_key(tensor), name)
        if first != name:
            aliases[name] = first
        else:
            tensors[name] = tensor.detach().cpu().contiguous().clone()  # safetensors refuses shared storage
    return tensors, aliases


def save_packed(model: nn.Module, path: str, subnet_spec: Optional[SubnetSpec] = None) -> str:
    """Write ``model`` (with quantized layers, compressed or not) in the packed format to ``path``; returns ``path``.

    ``subnet_spec``: the compressed architecture (``<Name>_compressed_subnet.json`` of ``construct_subnet``), stored
    so that :func:`load_packed` can rebuild the compressed model from a fresh instance of the original class; omit
    it for a model whose architecture is the original one. Raises ``NoQuantizedLayersError`` for a model without
    quantized layers and ``UnsupportedBitWidthError`` for a weight needing more than 32 bits.
    """
    from safetensors.torch import save_file

    layers = quantized_layers(model)
    tensors: Dict[str, Tensor] = {}
    records: Dict[str, dict] = {}
    for name, layer in layers.items():
        weight = integer_weight(layer, name)
        shape = cast(Tensor, layer.weight).shape
        tensors[_key(name, "weight.packed")] = pack_bits(weight.codes, weight.bits)
        tensors[_key(name, "weight.scale")] = weight.scale.detach().cpu().clone()
        records[name] = {"class": _quantized_class_name(layer), "quant_type": layer.quant_type.value,
                         "quant_mode": layer.quant_mode.value, "bits": weight.bits,
                         "shape": list(shape), "dtype": str(layer.weight.dtype).replace("torch.", "")}
    float_tensors, aliases = _float_state(model, {_key(name, "weight") for name in layers})
    tensors.update(float_tensors)
    header = {"format": PACKED_FORMAT, "layers": records, "aliases": aliases,
              "subnet": None if subnet_spec is None else subnet_spec.to_dict()}
    metadata = {_METADATA_KEY: json.dumps(header, separators=(",", ":")), CHECKSUM_KEY: json.dumps(digests(tensors))}
    write_atomically(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))
    logger.info("wrote %s: %d quantized layers at %s bits, %d bytes", path, len(records),
                sorted({r["bits"] for r in records.values()}), os.path.getsize(path))
    return path


def _read(path: str) -> Tuple[dict, Dict[str, Tensor]]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no packed model file at {path}")
    with reading(path, "a packed model (safetensors) written by save_packed"):
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = json.loads(metadata[_METADATA_KEY]) if _METADATA_KEY in metadata else {}
        expected = json.loads(metadata[CHECKSUM_KEY]) if CHECKSUM_KEY in metadata else None
    verify_digests(path, expected, tensors)
    if header.get("format") != PACKED_FORMAT:
        raise ValueError(f"{path} is not an only_train_once packed model (no {PACKED_FORMAT!r} header); weights-only "
                         "files of construct_subnet load with subnet_construction.load_compressed_weights")
    return header, tensors


def _replace_module(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``name`` in ``model``; returns the (possibly new) root."""
    if not name:
        return module
    set_submodule(model, name, module)
    return model


def load_packed(model: nn.Module, path: str) -> nn.Module:
    """Rebuild the saved model from ``model``, a fresh instance of the original class, and the packed file ``path``.

    The original class may be float (its layers are replaced) or already converted by ``model_to_quantize_model``.
    Each saved quantized layer becomes its grid layer (:mod:`.grid_layers`): same activation quantizers, weight
    dequantized once from its integers, frozen. Returns the model (``model`` itself unless the model is a single
    quantized layer), whose outputs equal the saved model's bitwise. Raises ``ValueError`` if the file is not a
    packed model or does not match ``model``'s architecture.
    """
    header, tensors = _read(path)
    if header["subnet"] is not None:
        restore_subnet(model, SubnetSpec.from_dict(header["subnet"]))
    layers = header["layers"]
    for name, record in layers.items():
        grid = to_grid_layer(model.get_submodule(name), record["class"], record["quant_type"], record["quant_mode"])
        model = _replace_module(model, name, grid)
    packed_keys = {_key(name, suffix) for name in layers for suffix in ("weight.packed", "weight.scale")}
    state = {key: tensor for key, tensor in tensors.items() if key not in packed_keys}
    state.update({alias: state[stored] for alias, stored in header["aliases"].items()})
    result = model.load_state_dict(state, strict=False)
    weights = {_key(name, "weight") for name in layers}
    if set(result.missing_keys) != weights or result.unexpected_keys:
        raise ValueError(f"{path} does not match {type(model).__name__}: missing "
                         f"{sorted(set(result.missing_keys) - weights)[:5]}, unexpected {result.unexpected_keys[:5]}; "
                         "pass a fresh instance of the class that was saved")
    for name, record in layers.items():
        layer = model.get_submodule(name)
        shape, bits = record["shape"], record["bits"]
        codes = unpack_bits(tensors[_key(name, "weight.packed")], bits, int(torch.Size(shape).numel()))
        scale = tensors[_key(name, "weight.scale")]
        weight = codes.view(shape).to(getattr(torch, record["dtype"])) * scale
        layer.weight = nn.Parameter(weight.to(cast(Tensor, layer.weight).device), requires_grad=False)
    logger.info("loaded %s: %d quantized layers", path, len(layers))
    return model
