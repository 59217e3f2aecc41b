"""Write a state dict as a safetensors file in one streaming pass, hashing each tensor as it is written.

``safetensors.torch.save_model`` took 6.4 s to write a 1.5 GB compressed 7B-width layer here, against 0.8 s for
plain ``file.write`` calls of the same bytes, and its checksums had to be computed in a separate pass before it.
This writer lays the file out as safetensors does (8-byte little-endian header length, a JSON header padded with
spaces to a multiple of 8, then the tensors' bytes, widest dtype first so every tensor is aligned to its element
size) and writes each tensor once: moved to the CPU and made contiguous one at a time (never a copy of the whole
model), checksummed (CRC-32) chunk by chunk right after the same chunk is written. The checksums go into the
header: it is written first with placeholder digests of the final length, then rewritten in place at the end.

State dicts whose tensors share memory in ways other than plain tied weights (one complete tensor under several
names) are left to ``safetensors.torch.save_model``: :func:`stream_state_dict` returns None for them.
"""

from __future__ import annotations

import json
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .integrity import CHECKSUM_KEY, CRC_PREFIX, crc_digest_of_chunks

#: safetensors' dtype names.
DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL", torch.complex64: "C64"}
#: Bytes hashed and written at a time: small enough to stay in cache between the two.
CHUNK_BYTES = 1 << 22
_PLACEHOLDER_DIGEST = CRC_PREFIX + "0" * 8


def _storage_key(tensor: torch.Tensor) -> Optional[Tuple]:
    """Tensors with the same key share memory (None: no memory to share)."""
    storage = tensor.untyped_storage()
    if storage.data_ptr() == 0 or storage.nbytes() == 0:
        return None
    return tensor.device, storage.data_ptr(), storage.nbytes()


def _covers_storage(tensor: torch.Tensor) -> bool:
    storage = tensor.untyped_storage()
    return tensor.data_ptr() == storage.data_ptr() and tensor.numel() * tensor.element_size() == storage.nbytes()


def unique_tensors(state: Mapping[str, torch.Tensor]) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, str]]]:
    """``(tensors to write, {dropped name: kept name})``: of names holding one complete tensor (tied weights) the
    alphabetically first is kept, as ``safetensors.torch.save_model`` keeps it. None when tensors share memory
    otherwise (overlapping views), or have a dtype safetensors cannot store."""
    by_storage: Dict[Tuple, List[str]] = {}
    for name, tensor in state.items():
        if tensor.dtype not in DTYPE_NAMES:
            return None
        key = _storage_key(tensor)
        if key is not None:
            by_storage.setdefault(key, []).append(name)
    dropped: Dict[str, str] = {}
    for names in by_storage.values():
        if len(names) < 2:
            continue
        first = state[names[0]]
        if not all(_covers_storage(state[n]) and state[n].shape == first.shape and state[n].dtype == first.dtype
                   for n in names):
            return None
        kept = sorted(names)[0]
        dropped.update({name: kept for name in names if name != kept})
    return {name: t for name, t in state.items() if name not in dropped}, dropped


def _layout(tensors: Mapping[str, torch.Tensor]) -> Tuple[List[str], Dict[str, dict], int]:
    """Write order (widest element first, then by name), the header entries and the data length in bytes."""
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    entries, offset = {}, 0
    for name in order:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        entries[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                         "data_offsets": [offset, offset + size]}
        offset += size
    return order, entries, offset


def _header(entries: Dict[str, dict], metadata: Dict[str, str]) -> bytes:
    text = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def _tensor_chunks(tensor: torch.Tensor):
    """The bytes of ``tensor`` (on the CPU, contiguous: a copy of this one tensor at most) in chunks."""
    data = tensor.detach().cpu().contiguous().reshape(-1)
    if not data.numel():
        return
    # numpy's stubs declare ndarray's buffer protocol (``__buffer__``) only from Python 3.12 on
    flat = memoryview(data.view(torch.uint8).numpy())  # type: ignore[arg-type]
    for start in range(0, len(flat), CHUNK_BYTES):
        yield flat[start:start + CHUNK_BYTES]


def write_tensors(path: str, tensors: Mapping[str, torch.Tensor], metadata: Dict[str, str]) -> Dict[str, str]:
    """Write ``tensors`` (no shared memory) to ``path`` as safetensors, their checksums in ``metadata`` under
    :data:`CHECKSUM_KEY`; returns those checksums (:func:`.integrity.crc_digest_of_chunks`, which
    :func:`.integrity.verify_digests` checks)."""
    order, entries, _ = _layout(tensors)
    placeholder = _header(entries, {**metadata, CHECKSUM_KEY: json.dumps({n: _PLACEHOLDER_DIGEST for n in order})})
    checksums: Dict[str, str] = {}
    with open(path, "wb") as handle:
        handle.write(placeholder)
        for name in order:
            tensor = tensors[name]
            checksums[name] = crc_digest_of_chunks(str(tensor.dtype), tuple(tensor.shape),
                                               _written(handle, _tensor_chunks(tensor)))
        final = _header(entries, {**metadata, CHECKSUM_KEY: json.dumps(checksums)})
        if len(final) != len(placeholder):
            raise RuntimeError("safetensors header changed length while streaming (a checksum of another length)")
        handle.seek(0)
        handle.write(final)
    return checksums


def _written(handle, chunks):
    """Pass each chunk on after writing it (so that it is hashed while it is still in cache)."""
    for chunk in chunks:
        handle.write(chunk)
        yield chunk


def stream_state_dict(path: str, state: Mapping[str, torch.Tensor]) -> Optional[Dict[str, str]]:
    """Write the state dict ``state`` to ``path`` as ``safetensors.torch.save_model`` would (tied weights stored once,
    the dropped names recorded in the metadata); returns every name's checksum (a dropped name has its kept
    tensor's), or None, writing nothing, when the state dict needs ``save_model`` (see :func:`unique_tensors`)."""
    split = unique_tensors(state)
    if split is None:
        return None
    tensors, dropped = split
    checksums = write_tensors(path, tensors, dict(dropped))
    return {name: checksums[dropped.get(name, name)] for name in state}
