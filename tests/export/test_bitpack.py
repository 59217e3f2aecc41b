"""Bit packing: exact round trip at every width, ceil(n * bits / 8) bytes, ONNX's int4 nibble order."""

import pytest
import torch

from only_train_once.export import bitpack
from only_train_once.export.bitpack import pack_bits, packed_size, unpack_bits


@pytest.mark.parametrize("bits", range(1, 33))
def test_round_trip_is_exact_at_every_width_including_the_extremes(bits):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    codes = torch.randint(low, high + 1, (1001,), generator=torch.Generator().manual_seed(bits), dtype=torch.int64)
    codes[:2] = torch.tensor([low, high])
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_size(1001, bits) == (1001 * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, 1001).long(), codes)


def test_blocks_concatenate_without_gaps(monkeypatch):
    monkeypatch.setattr(bitpack, "BLOCK", 16)
    codes = torch.arange(-50, 51)
    for bits in (3, 7, 13):
        assert torch.equal(unpack_bits(pack_bits(codes % (2 ** (bits - 1)), bits), bits, 101).long(),
                           codes % (2 ** (bits - 1)))


def test_int4_packs_the_first_element_in_the_low_nibble_as_onnx_does():
    assert pack_bits(torch.tensor([1, -2, 3]), 4).tolist() == [0xE1, 0x03]


def test_a_wrong_byte_count_is_refused():
    with pytest.raises(ValueError, match="expected 2 packed uint8 bytes"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 4, 3)
    with pytest.raises(ValueError, match="bits must be in 1..32"):
        pack_bits(torch.zeros(3, dtype=torch.int64), 33)
