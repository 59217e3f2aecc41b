"""Checksums of the ONNX files the library writes, stored in the model's ``metadata_props``, and their check.

Every tensor of the top-level graph (initializers and ``Constant`` node values, external data included) gets the
digest :func:`.integrity.data_digest` computes for every other file: BLAKE2b over dtype, shape and bytes. The
digests go, as JSON, into the ``metadata_props`` entry :data:`.integrity.CHECKSUM_KEY`, which onnxruntime and
other ONNX tools ignore. :func:`verify_onnx_file` checks a file: a changed tensor, a truncated, empty or foreign
file raises :class:`.integrity.CorruptFileError` naming the file. Files are written under a temporary name and
renamed when complete (:func:`.integrity.write_atomically`).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Tuple

from .integrity import CHECKSUM_KEY, CorruptFileError, data_digest, reading, write_atomically

if TYPE_CHECKING:  # onnx is an optional dependency, imported where it is used
    from onnx import TensorProto

__all__ = ["verify_onnx_file", "save_onnx", "write_onnx_atomically", "add_onnx_checksums"]

#: What :func:`verify_onnx_file` expects, for its error messages.
EXPECTED = "an ONNX model file written by only_train_once"


def _graph_tensors(model) -> Iterator[Tuple[str, TensorProto]]:
    """``(key, TensorProto)`` of every initializer and ``Constant`` node value of the top-level graph."""
    for tensor in model.graph.initializer:
        yield tensor.name, tensor
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    yield f"Constant:{node.output[0]}", attribute.t


def onnx_digests(model, folder: str) -> Dict[str, str]:
    """Digest of every graph tensor of ``model``; external data is read relative to ``folder``."""
    from onnx import numpy_helper

    digests = {}
    for key, tensor in _graph_tensors(model):
        array = numpy_helper.to_array(tensor, base_dir=folder)
        digests[key] = data_digest(str(array.dtype), array.shape, array.tobytes())
    return digests


def add_onnx_checksums(model, folder: str) -> None:
    """Record the digests of ``model``'s tensors in its ``metadata_props`` (replacing an older record)."""
    record = json.dumps(onnx_digests(model, folder), sort_keys=True)
    kept = [entry for entry in model.metadata_props if entry.key != CHECKSUM_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = CHECKSUM_KEY, record


def _stamp(path: str) -> None:
    """Add checksums to the ONNX file at ``path`` (rewrites the graph file; external data files are kept)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    add_onnx_checksums(model, os.path.dirname(os.path.abspath(path)))
    onnx.save(model, path)


def write_onnx_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(temporary_path)`` (an exporter writing an ONNX file), add checksums, rename to ``path``; on failure
    nothing is left under either name."""
    def write_and_stamp(temporary: str) -> None:
        write(temporary)
        _stamp(temporary)

    write_atomically(path, write_and_stamp)


def save_onnx(model, path: str) -> None:
    """``onnx.save(model, path)`` with checksums, atomically."""
    import onnx

    add_onnx_checksums(model, os.path.dirname(os.path.abspath(path)))
    write_atomically(path, lambda temporary: onnx.save(model, temporary))


def verify_onnx_file(path: str) -> int:
    """Check an ONNX file written by the library; returns how many tensors were verified.

    Raises :class:`CorruptFileError` naming ``path`` when a tensor does not match its recorded checksum, or when
    the file is empty, truncated or not a valid ONNX model, and ``FileNotFoundError`` when it does not exist.
    Files written without checksums (other tools, older versions) are only checked to be valid ONNX (0 returned).
    """
    import onnx

    with reading(path, EXPECTED):
        if os.path.getsize(path) == 0:
            raise ValueError("no bytes")
        model = onnx.load(path, load_external_data=False)
        onnx.checker.check_model(model)
        record = {entry.key: entry.value for entry in model.metadata_props}.get(CHECKSUM_KEY)
        expected = None if record is None else json.loads(record)
        actual = onnx_digests(model, os.path.dirname(os.path.abspath(path)))
    if expected is None:
        return 0
    changed = sorted(key for key in set(expected) | set(actual) if expected.get(key) != actual.get(key))
    if changed:
        raise CorruptFileError(f"{path}: the data of tensor(s) {', '.join(map(repr, changed[:5]))} does not match "
                               "its checksum (the file was damaged after it was written); export it again from the "
                               "model")
    return len(actual)
