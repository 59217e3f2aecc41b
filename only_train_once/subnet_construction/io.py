"""Saving and loading models written by ``construct_subnet``.

Each model is written as a whole pickled module (``.pt``, the reference's format) *and* as weights only
(``.safetensors``). The compressed model also gets ``<Name>_compressed_subnet.json``: the new tensor shapes
and module attributes, which rebuild the compressed architecture from a fresh instance of the original class.

Every file carries checksums of its data, verified on load (see :mod:`.integrity`).

Loading a pickled module runs code from the file: since torch 2.6 ``torch.load`` refuses it by default
(``weights_only=True``). :func:`load_model` passes ``weights_only=False`` for you; use it only on files you
trust, or load the weights-only form with :func:`load_compressed_weights`.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..utils import eval_mode
from .apply import SubnetSpec, restore_subnet
from .integrity import (CHECKSUM_KEY, CorruptFileError, digests, read_json_document, reading, recorded_module_digests,
                        state_tensors, verify_digests, write_atomically, write_json_document)
from .onnx_integrity import write_onnx_atomically
from .safetensors_stream import stream_state_dict

logger = logging.getLogger(__name__)


def load_model(path: str, map_location: Union[str, torch.device, None] = "cpu") -> nn.Module:
    """Load a whole-module ``.pt`` file written by ``construct_subnet`` (trusted files only); checks its checksums.

    Raises :class:`CorruptFileError` for a damaged, truncated or foreign file.
    """
    with reading(path, "a whole-module .pt file written by construct_subnet"):
        model = torch.load(path, map_location=map_location, weights_only=False)
        expected = recorded_module_digests(path)
    if not isinstance(model, nn.Module):
        raise CorruptFileError(f"{path} holds a {type(model).__name__}, not a model: expected a whole-module .pt file "
                               "written by construct_subnet")
    verify_digests(path, expected, state_tensors(model))
    return model


def save_weights(model: nn.Module, path: str) -> Dict[str, str]:
    """Write the model's state dict as safetensors (tied tensors are stored once), with per-tensor checksums;
    returns the checksum of every state-dict entry.

    One streaming pass (:mod:`.safetensors_stream`): each tensor is hashed while it is written, and no copy of the
    whole model is made; state dicts with unusual memory sharing go through ``safetensors.torch.save_model``.
    """
    state = state_tensors(model)
    written: Dict[str, Dict[str, str]] = {}

    def write(temporary: str) -> None:
        checksums = stream_state_dict(temporary, state)
        if checksums is None:
            from safetensors.torch import save_model

            checksums = digests(state)
            save_model(model, temporary, metadata={CHECKSUM_KEY: json.dumps(checksums)})
        written["checksums"] = checksums

    write_atomically(path, write)
    return written["checksums"]


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file written by :func:`save_weights`, checksums verified."""
    from safetensors import safe_open

    with reading(path, "a safetensors weights file written by construct_subnet"):
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        expected = json.loads(metadata[CHECKSUM_KEY]) if CHECKSUM_KEY in metadata else None
    verify_digests(path, expected, tensors)
    return tensors


def save_spec(spec: SubnetSpec, path: str) -> None:
    write_json_document(path, spec.to_dict())


def load_spec(path: str) -> SubnetSpec:
    expected = "a subnet description (JSON) written by construct_subnet"
    data = read_json_document(path, expected)
    with reading(path, expected):
        return SubnetSpec.from_dict(data)


def load_compressed_weights(model: nn.Module, weights_path: str, spec_path: Optional[str] = None,
                            strict: bool = True) -> nn.Module:
    """Turn a fresh instance of the original architecture into the compressed model, without unpickling.

    ``spec_path`` defaults to the ``_subnet.json`` file next to ``weights_path``. Returns ``model``. Checksums of
    both files are verified (:class:`CorruptFileError` on a damaged file).
    """
    if spec_path is None:
        spec_path = weights_path.rsplit(".", 1)[0] + "_subnet.json"
    from safetensors.torch import load_model as load_safetensors

    spec = load_spec(spec_path)
    read_weights(weights_path)  # verifies the checksums before anything is changed
    restore_subnet(model, spec)
    load_safetensors(model, weights_path, strict=strict)
    return model


def export_onnx(model: nn.Module, dummy_input: Any, path: str) -> None:
    """Export ``model`` to ONNX (opset 17) and return when the file is written (atomically, with checksums of its
    tensors in its metadata: :func:`.onnx_integrity.verify_onnx_file` checks them).

    The TorchScript exporter is tried first: it is fast and lowers each quantizer through its ``symbolic``.
    Models it cannot export (it lacks some operators) go through the ``torch.export``-based exporter, which
    needs the ``onnxscript`` package.
    """
    args = tuple(dummy_input.values()) if isinstance(dummy_input, dict) else dummy_input
    args = args if isinstance(args, tuple) else (args,)
    with eval_mode(model), torch.no_grad():
        write_onnx_atomically(path, lambda temporary: _export_either_way(model, args, temporary))


def _export_either_way(model: nn.Module, args: tuple, path: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, args, path, opset_version=17, dynamo=False)
    except Exception as error:
        logger.info("TorchScript ONNX export failed (%s); trying the torch.export-based exporter", error)
        try:
            import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        except ImportError as missing:
            raise RuntimeError(f"ONNX export of this model needs the torch.export-based exporter: "
                               f"pip install onnxscript (TorchScript exporter error: {error})") from missing
        torch.onnx.export(model, args, path, dynamo=True)
