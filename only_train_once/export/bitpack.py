"""Bit packing of signed integers at any width from 1 to 32 bits.

Layout (the packed format's, and ONNX's for int4): element ``i`` occupies bits ``[i * bits, (i + 1) * bits)`` of
one little-endian bit stream, as its ``bits``-bit two's complement, least significant bit first; stream bit ``s``
is bit ``s % 8`` of byte ``s // 8``. The last byte is padded with zero bits. ``n`` values take
``ceil(n * bits / 8)`` bytes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["packed_size", "pack_bits", "unpack_bits"]

#: Elements per block: bounds the bit-matrix temporaries (block x bits int64); a multiple of 8, so that every
#: block but the last fills whole bytes and blocks concatenate.
BLOCK = 1 << 16

_BYTE_SHIFTS = torch.arange(8, dtype=torch.int64)


def packed_size(numel: int, bits: int) -> int:
    """Bytes of ``numel`` packed ``bits``-bit values."""
    return (numel * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")


def _pack_block(values: Tensor, bits: int) -> Tensor:
    unsigned = values.to(torch.int64) & ((1 << bits) - 1)
    stream = ((unsigned.unsqueeze(1) >> torch.arange(bits, dtype=torch.int64)) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)])
    return (stream.view(-1, 8) << _BYTE_SHIFTS).sum(1).to(torch.uint8)


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack integer ``codes`` (any shape, values in ``[-2^(bits-1), 2^(bits-1) - 1]``) into a 1-D uint8 tensor.

    Values outside that range are not checked: they lose their high bits.
    """
    _check_bits(bits)
    flat = codes.detach().reshape(-1).cpu()
    if flat.numel() == 0:
        return torch.zeros(0, dtype=torch.uint8)
    return torch.cat([_pack_block(block, bits) for block in flat.split(BLOCK)])


def _unpack_block(data: Tensor, bits: int, count: int) -> Tensor:
    stream = ((data.to(torch.int64).unsqueeze(1) >> _BYTE_SHIFTS) & 1).reshape(-1)[: count * bits]
    unsigned = (stream.view(count, bits) << torch.arange(bits, dtype=torch.int64)).sum(1)
    return unsigned - (((unsigned >> (bits - 1)) & 1) << bits)  # sign extension


def unpack_bits(data: Tensor, bits: int, numel: int) -> Tensor:
    """The ``numel`` signed integers packed in uint8 ``data`` by :func:`pack_bits`, as a 1-D int64 tensor.

    Raises ``ValueError`` if ``data`` does not have :func:`packed_size` bytes.
    """
    _check_bits(bits)
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != packed_size(numel, bits):
        raise ValueError(f"expected {packed_size(numel, bits)} packed uint8 bytes for {numel} values of {bits} bits, "
                         f"got a {data.dtype} tensor of shape {tuple(data.shape)}")
    block_bytes = BLOCK * bits // 8
    blocks = []
    for start in range(0, numel, BLOCK):
        count = min(BLOCK, numel - start)
        offset = start // BLOCK * block_bytes
        blocks.append(_unpack_block(data[offset: offset + packed_size(count, bits)], bits, count))
    return torch.cat(blocks) if blocks else torch.zeros(0, dtype=torch.int64)
