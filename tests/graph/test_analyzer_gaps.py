"""Layouts the analyzer once got wrong (issue 11, item 2): each channel is either pruned correctly or pinned.

Every model scales its output by 1e-4, so an absolute tolerance would hide any error; the compressed model is
compared with its full group-sparse twin relative to the outputs' own scale, on the dummy input and a fresh one.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from tests.compression_check import compress_and_compare

SMALL = 1e-4
TOKENS = (2, 3, 8)
IMAGE = (2, 3, 5, 5)


class TokenMixSmallOut(nn.Module):
    """A Linear over the token axis (MLP-Mixer): its bias makes zeroed channels nonzero."""

    def __init__(self, bias: bool = True):
        super().__init__()
        self.pre, self.mix, self.post = nn.Linear(8, 8), nn.Linear(3, 3, bias=bias), nn.Linear(8, 2)

    def forward(self, x):
        y = self.pre(x)
        y = self.mix(y.transpose(1, 2)).transpose(1, 2)
        return self.post(y) * SMALL


class FeaturePool(nn.Module):
    """1d pooling over the feature axis of (B, L, D) tokens: pooled channels are mixed."""

    def __init__(self, pool: str):
        super().__init__()
        self.pool, self.pre, self.post = pool, nn.Linear(8, 8), nn.Linear(4, 2)

    def forward(self, x):
        y = self.pre(x)
        if self.pool == "adaptive_avg_pool1d":
            y = F.adaptive_avg_pool1d(y, 4)
        elif self.pool == "avg_pool1d":
            y = F.avg_pool1d(y, 2)
        else:
            y = F.max_pool1d(y, 2)
        return self.post(y) * SMALL


class ChannelPool3d(nn.Module):
    """avg_pool3d over (B, 1, C, H, W): pools pairs of channels."""

    def __init__(self):
        super().__init__()
        self.conv, self.post = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = F.avg_pool3d(self.conv(x).unsqueeze(1), (2, 1, 1)).squeeze(1)
        return self.post(y) * SMALL


class ViewWrite(nn.Module):
    """An in-place write into a view of the conv output."""

    def __init__(self, write: str):
        super().__init__()
        self.write, self.conv, self.post = write, nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        b, _, h, w = y.shape
        if self.write == "select_add_":
            y.select(1, 3).add_(1)
        elif self.write == "transpose_getitem_iadd":
            y.transpose(1, 3)[..., 0] += 2
        elif self.write == "narrow_fill_":
            y.narrow(1, 6, 2).fill_(0.7)
        elif self.write == "view_getitem_iadd":
            y.view(b, 2, 4, h, w)[:, 1] += 1
        elif self.write == "spatial_narrow_mul_":
            y.narrow(2, 0, 2).mul_(3)  # scales rows of every channel: zeros stay zero
        elif self.write == "spatial_narrow_add_":
            y.narrow(2, 0, 2).add_(3)  # adds to rows of every channel: pruned channels become 3
        return self.post(y) * SMALL


def _compress(model, shape, tmp_path, quantize=False):
    torch.manual_seed(0)
    dummy, fresh = torch.randn(shape), torch.randn(shape)
    return compress_and_compare(model.eval(), dummy, str(tmp_path), fresh, quantize=quantize)


def _conv_channels_prunable(model, shape) -> bool:
    oto = OTO(model.eval(), torch.randn(shape))
    return any(group["is_prunable"] and any(n.startswith("conv.") for n in group["p_names"])
               for group in oto.get_param_groups())


@pytest.mark.parametrize("quantize", [False, True], ids=["float", "weight_and_activation"])
def test_token_mixing_linear_with_bias_pins_the_channels_it_carries(tmp_path, quantize):
    torch.manual_seed(0)
    result = _compress(TokenMixSmallOut(), TOKENS, tmp_path, quantize)
    assert result.lossless, result
    assert result.prunable_groups == 0


def test_token_mixing_linear_without_bias_keeps_channels_prunable(tmp_path):
    torch.manual_seed(0)
    result = _compress(TokenMixSmallOut(bias=False), TOKENS, tmp_path)
    assert result.lossless, result
    assert result.smaller


@pytest.mark.parametrize("pool", ["adaptive_avg_pool1d", "avg_pool1d", "max_pool1d"])
def test_pooling_over_the_feature_axis_pins_the_pooled_channels(tmp_path, pool):
    torch.manual_seed(0)
    result = _compress(FeaturePool(pool), TOKENS, tmp_path)
    assert result.lossless, result
    assert result.prunable_groups == 0


def test_avg_pool3d_over_channels_pins_them(tmp_path):
    torch.manual_seed(0)
    result = _compress(ChannelPool3d(), IMAGE, tmp_path)
    assert result.lossless, result
    assert result.prunable_groups == 0


@pytest.mark.parametrize("write", ["select_add_", "transpose_getitem_iadd", "narrow_fill_", "view_getitem_iadd",
                                   "spatial_narrow_add_"])
def test_in_place_writes_through_views_that_touch_pruned_channels_pin_them(tmp_path, write):
    torch.manual_seed(0)
    assert not _conv_channels_prunable(ViewWrite(write), IMAGE)
    torch.manual_seed(0)
    result = _compress(ViewWrite(write), IMAGE, tmp_path)
    assert result.lossless, result


def test_zero_preserving_write_through_a_view_keeps_channels_prunable(tmp_path):
    torch.manual_seed(0)
    result = _compress(ViewWrite("spatial_narrow_mul_"), IMAGE, tmp_path)
    assert result.lossless, result
    assert result.smaller
