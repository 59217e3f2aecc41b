"""The IDX file format of (Fashion-)MNIST: 2 zero bytes, a type code, the number of dimensions, each dimension
as a big-endian uint32, then the data in big-endian order. Gzip-compressed files are read transparently."""

from __future__ import annotations

import gzip
import struct
from typing import Dict

import numpy as np

#: IDX type code -> numpy dtype (big-endian where it matters).
IDX_DTYPES: Dict[int, np.dtype] = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
                                   0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(raw: bytes) -> np.ndarray:
    """The array held by the uncompressed IDX bytes ``raw``, in native byte order.

    Raises ``ValueError`` when the header is malformed or the data size does not match the dimensions.
    """
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError("not an IDX file: it must start with two zero bytes")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"unknown IDX type code 0x{type_code:02x}; known: {sorted(hex(c) for c in IDX_DTYPES)}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(f"truncated IDX header: {ndim} dimensions need {header_end} bytes, got {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(f"IDX data of shape {shape} needs {expected} bytes, the file holds {len(raw) - header_end}")
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
    """The array stored in the IDX file at ``path`` (gzip-compressed or not)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    return parse_idx(gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw)


def write_idx(path: str, array: np.ndarray, compress: bool = True) -> str:
    """Write ``array`` (a dtype of :data:`IDX_DTYPES`) as an IDX file, gzip-compressed if ``compress``."""
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(str(d) for d in codes)}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(IDX_DTYPES[codes[dtype]]).tobytes()
    with open(path, "wb") as handle:
        handle.write(gzip.compress(raw) if compress else raw)
    return path
