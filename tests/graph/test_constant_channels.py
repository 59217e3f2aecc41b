"""Pruned channels that come out as a shared constant (PoolFormer-V2's StarReLU, HGNetV2's LearnableAffineBlock):
removed exactly where the reading layer can fold the constant into its bias, pinned with the reason where it
cannot. Outputs are compared with the unpruned model, float and weight+activation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from tests.compression_check import compress_and_compare

IMAGE = (2, 3, 5, 5)


class StarReLU(nn.Module):
    """``scale * relu(x) ** 2 + bias`` with one scale and one bias for every channel (timm's StarReLU)."""

    def __init__(self):
        super().__init__()
        self.scale, self.bias = nn.Parameter(torch.tensor([0.8])), nn.Parameter(torch.tensor([0.3]))

    def forward(self, x):
        return self.scale * F.relu(x) ** 2 + self.bias


class ConstantChannelBlock(nn.Module):
    """fc1 -> StarReLU -> reader, for a reader that is a bias-free Linear, a bias-free unpadded 3x3 conv, or a
    padded 3x3 conv (``reader`` names which)."""

    def __init__(self, reader: str):
        super().__init__()
        self.reader = reader
        if reader == "linear":
            self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(8, 2, bias=False)
        else:
            self.fc1 = nn.Conv2d(3, 8, 1)
            self.fc2 = nn.Conv2d(8, 2, 3, padding=1 if reader == "padded_conv" else 0, bias=False)
        self.act = StarReLU()

    def forward(self, x):
        if self.reader == "linear":
            x = x.flatten(2).transpose(1, 2)
        return self.fc2(self.act(self.fc1(x)))


class AffineBlockStack(nn.Module):
    """HGNetV2's ConvBNAct with a LearnableAffineBlock, twice, then a 1x1 squeeze over the concatenation: the first
    block's output also feeds the second block's padded 3x3 conv (pinned), the second's only the 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv_b, self.bn_b = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.scale, self.shift = nn.Parameter(torch.tensor([1.3])), nn.Parameter(torch.tensor([-0.4]))
        self.squeeze = nn.Conv2d(12, 2, 1, bias=False)
        with torch.no_grad():
            for bn in (self.bn_a, self.bn_b):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        a = self.scale * F.relu(self.bn_a(self.conv_a(x))) + self.shift
        b = self.scale * F.relu(self.bn_b(self.conv_b(a))) + self.shift
        return self.squeeze(torch.cat([a, b], 1))


def _groups(model, shape):
    torch.manual_seed(0)
    return OTO(model.eval(), torch.randn(shape)).groups


def _compress(model, shape, tmp_path, quantize):
    torch.manual_seed(1)
    return compress_and_compare(model.eval(), torch.randn(shape), str(tmp_path), torch.randn(shape),
                                quantize=quantize)


@pytest.mark.parametrize("quantize", [False, True], ids=["float", "weight_and_activation"])
@pytest.mark.parametrize("reader, shape", [("linear", IMAGE), ("conv", IMAGE)])
def test_constant_channels_read_by_a_linear_or_unpadded_conv_are_removed_exactly(tmp_path, reader, shape, quantize):
    torch.manual_seed(0)
    (hidden,) = [g for g in _groups(ConstantChannelBlock(reader), shape) if "fc1.weight" in g.param_names]
    assert hidden.is_prunable, hidden.unprunable_reasons
    torch.manual_seed(0)
    result = _compress(ConstantChannelBlock(reader), shape, tmp_path, quantize)
    assert result.lossless and result.smaller, result


def test_constant_channels_read_by_a_padded_conv_stay_with_the_reason():
    torch.manual_seed(0)
    (hidden,) = [g for g in _groups(ConstantChannelBlock("padded_conv"), IMAGE) if "fc1.weight" in g.param_names]
    assert not hidden.is_prunable
    assert "without being zero there (made nonzero by 'add' in act): a constant" in hidden.unprunable_reasons[0]
    assert "it pads its input" in hidden.unprunable_reasons[0]


@pytest.mark.parametrize("quantize", [False, True], ids=["float", "weight_and_activation"])
def test_affine_blocks_fold_where_only_a_1x1_conv_reads_them(tmp_path, quantize):
    torch.manual_seed(0)
    groups = {g.param_names[0]: g for g in _groups(AffineBlockStack(), IMAGE) if g.param_names}
    assert groups["conv_b.weight"].is_prunable
    assert not groups["conv_a.weight"].is_prunable and "it pads its input" in \
        groups["conv_a.weight"].unprunable_reasons[0]
    torch.manual_seed(0)
    result = _compress(AffineBlockStack(), IMAGE, tmp_path, quantize)
    assert result.lossless and result.smaller, result


def test_a_folded_layer_gets_a_bias_that_a_weights_only_reload_restores(tmp_path):
    from only_train_once.subnet_construction import load_compressed_weights

    torch.manual_seed(0)
    model, x = ConstantChannelBlock("conv").eval(), torch.randn(IMAGE)
    oto = OTO(model, x)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    assert compressed.fc2.bias is not None and compressed.fc2.in_channels < 8
    expected = model(x)
    torch.testing.assert_close(compressed(x), expected, rtol=1e-5, atol=1e-6)
    torch.manual_seed(3)
    rebuilt = load_compressed_weights(ConstantChannelBlock("conv").eval(),
                                      oto.compressed_model_path.replace(".pt", ".safetensors"))
    torch.testing.assert_close(rebuilt(x), expected, rtol=1e-5, atol=1e-6)


def test_a_constant_that_varies_with_the_position_is_not_folded():
    """A per-position table added after the zeroed group (a positional embedding) makes the pruned channels
    input-independent but different at every token: a Linear cannot absorb them into one bias."""

    class PositionalAfterGroup(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(8, 2)
            self.table = nn.Parameter(torch.randn(4, 1))

        def forward(self, x):
            return self.fc2(self.fc1(x) + self.table)

    (hidden,) = [g for g in _groups(PositionalAfterGroup(), (2, 4, 3)) if "fc1.weight" in g.param_names]
    assert not hidden.is_prunable


def test_a_folded_constant_stays_exact_with_activation_rounding_on_and_bypassed(tmp_path):
    """The folding layer quantizes its input coarsely, so the constant 0.3 rounds to 0.28: the compressed model
    matches the full one both as deployed (rounding on) and as the verifier's exact check runs it (bypassed)."""
    import contextlib

    from only_train_once.quantization import model_to_quantize_model
    from only_train_once.quantization.rounding import ActivationRoundingBypassed

    torch.manual_seed(0)
    model, x = ConstantChannelBlock("linear").eval(), torch.randn(IMAGE)
    model_to_quantize_model(model, quant_mode="weight_and_activation")
    with torch.no_grad():
        model.fc2.d_quant_act.fill_(0.07)
    oto = OTO(model, x)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    assert compressed.fc2.in_features < 8
    for mode in (contextlib.nullcontext, ActivationRoundingBypassed):
        with mode(), torch.no_grad():
            torch.testing.assert_close(compressed(x), model(x), rtol=1e-4, atol=1e-7)
