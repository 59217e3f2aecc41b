"""Bit packing of signed integers at any width from 1 to 32 bits.

Layout (the packed format's, and ONNX's for int4): element ``i`` occupies bits ``[i * bits, (i + 1) * bits)`` of
one little-endian bit stream, as its ``bits``-bit two's complement, least significant bit first; stream bit ``s``
is bit ``s % 8`` of byte ``s // 8``. The last byte is padded with zero bits. ``n`` values take
``ceil(n * bits / 8)`` bytes.

The bit shuffling runs in numpy's ``unpackbits``/``packbits``, block by block to bound the temporaries (one byte
per bit of the container).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["packed_size", "pack_bits", "unpack_bits"]

#: Elements per block; a multiple of 8, so that every block but the last fills whole bytes and blocks concatenate.
BLOCK = 1 << 20


def packed_size(numel: int, bits: int) -> int:
    """Bytes of ``numel`` packed ``bits``-bit values."""
    return (numel * bits + 7) // 8


def _container(bits: int) -> np.dtype:
    """Little-endian signed integer type of at least ``bits`` bits."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    return np.dtype("<i1" if bits <= 8 else "<i2" if bits <= 16 else "<i4")


def _bit_columns(values: np.ndarray) -> np.ndarray:
    """``[n, 8 * itemsize]`` bits of each value, least significant first."""
    return np.unpackbits(values.view(np.uint8).reshape(values.size, values.itemsize), axis=1, bitorder="little")


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack integer ``codes`` (any shape, values in ``[-2^(bits-1), 2^(bits-1) - 1]``) into a 1-D uint8 tensor.

    Values outside that range are not checked: they lose their high bits.
    """
    values = codes.detach().reshape(-1).cpu().numpy().astype(_container(bits))
    blocks = [np.packbits(_bit_columns(values[start: start + BLOCK])[:, :bits].reshape(-1), bitorder="little")
              for start in range(0, values.size, BLOCK)]
    return torch.from_numpy(np.concatenate(blocks) if blocks else np.zeros(0, np.uint8))


def unpack_bits(data: Tensor, bits: int, numel: int) -> Tensor:
    """The ``numel`` signed integers packed in uint8 ``data`` by :func:`pack_bits`: a 1-D tensor of the narrowest
    of int8, int16, int32 holding ``bits`` bits.

    Raises ``ValueError`` if ``data`` is not a 1-D uint8 tensor of :func:`packed_size` bytes.
    """
    container = _container(bits)
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != packed_size(numel, bits):
        raise ValueError(f"expected {packed_size(numel, bits)} packed uint8 bytes for {numel} values of {bits} bits, "
                         f"got a {data.dtype} tensor of shape {tuple(data.shape)}")
    stream = data.cpu().numpy()
    block_bytes = BLOCK * bits // 8
    blocks = []
    for start in range(0, numel, BLOCK):
        count = min(BLOCK, numel - start)
        offset = start // BLOCK * block_bytes
        columns = np.unpackbits(stream[offset: offset + packed_size(count, bits)], count=count * bits,
                                bitorder="little").reshape(count, bits)
        full = np.empty((count, 8 * container.itemsize), np.uint8)
        full[:, :bits] = columns
        full[:, bits:] = columns[:, bits - 1:]  # sign extension
        blocks.append(np.packbits(full, axis=1, bitorder="little").reshape(-1).view(container))
    return torch.from_numpy(np.concatenate(blocks) if blocks else np.zeros(0, container))
