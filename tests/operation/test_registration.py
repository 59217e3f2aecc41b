"""register_operator / register_module: a user teaches the analyzer a layer, and pruning goes through it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO, register_module, register_operator
from only_train_once.operation import AFFINE_NORM, STEM, catalogue, registry
from tests.compression_check import compress_and_compare

SMALL = 1e-4
TOKENS = (2, 4, 3)
IMAGE = (2, 3, 5, 5)


@pytest.fixture(autouse=True)
def restore_registries():
    saved = (dict(catalogue.OP_KINDS), dict(registry.MODULE_SHRINKS), dict(registry.OPAQUE_MODULES))
    yield
    for live, copy in zip((catalogue.OP_KINDS, registry.MODULE_SHRINKS, registry.OPAQUE_MODULES), saved):
        live.clear()
        live.update(copy)


class TensorDotLinear(nn.Module):
    """A linear layer written with tensordot, which the analyzer does not read on its own."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features ** 0.5)
        self.bias = nn.Parameter(torch.randn(out_features))

    def forward(self, x):
        return torch.tensordot(x, self.weight, dims=([-1], [1])) + self.bias


class TensorDotNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.custom, self.head = TensorDotLinear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(F.relu(self.custom(x))) * SMALL


def tensordot_linear_rule(ctx, node):
    x, weight, bias = node.value_arg(0, "input"), node.value_arg(-1, "weight"), node.value_arg(-1, "bias")
    ctx.claim(weight, 0, node)
    ctx.claim(bias, 0, node)
    ctx.spaces.union(ctx.axes(x)[-1], ctx.axes(weight)[1])
    ctx.spaces.union(ctx.axes(bias)[0], ctx.axes(weight)[0])
    ctx.set_axes(node.outputs[0], ctx.axes(x)[:-1] + [ctx.axes(weight)[0]])


def linear_features(module, node, kept_in):
    return {"in_features": module.weight.shape[1], "out_features": module.weight.shape[0]}


def _prunable_names(model, shape):
    torch.manual_seed(0)
    oto = OTO(model.eval(), torch.randn(shape))
    return {name for group in oto.get_param_groups() if group["is_prunable"] for name in group["p_names"]}


def test_an_unregistered_layer_is_left_unprunable():
    torch.manual_seed(0)
    assert "custom.weight" not in _prunable_names(TensorDotNet(), TOKENS)


def test_a_registered_module_is_pruned_through_and_its_attributes_follow(tmp_path):
    register_module(TensorDotLinear, tensordot_linear_rule, zero=STEM, update=linear_features,
                    input_channel_axis=-1)
    torch.manual_seed(0)
    assert {"custom.weight", "custom.bias"} <= _prunable_names(TensorDotNet(), TOKENS)
    torch.manual_seed(0)
    model = TensorDotNet()
    torch.manual_seed(1)
    result = compress_and_compare(model, torch.randn(TOKENS), str(tmp_path), torch.randn(TOKENS))
    assert result.lossless and result.smaller, result
    assert model.custom.out_features == model.custom.weight.shape[0] < 8


class FunctionalTensorDot(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(F.relu(torch.tensordot(x, self.weight, dims=([-1], [1])))) * SMALL


def tensordot_rule(ctx, node):
    x, weight = node.value_arg(0, "a"), node.value_arg(1, "b")
    if node.arg(2, "dims") != ([-1], [1]) or ctx.kind(weight) != "param":
        return ctx.unknown(node, "only tensordot(x, weight, dims=([-1], [1])) is registered")
    ctx.claim(weight, 0, node)
    ctx.spaces.union(ctx.axes(x)[-1], ctx.axes(weight)[1])
    ctx.set_axes(node.outputs[0], ctx.axes(x)[:-1] + [ctx.axes(weight)[0]])


def test_a_registered_function_is_pruned_through(tmp_path):
    register_operator("tensordot", tensordot_rule, zero=STEM, is_stem=True)
    torch.manual_seed(0)
    assert "weight" in _prunable_names(FunctionalTensorDot(), TOKENS)
    torch.manual_seed(1)
    result = compress_and_compare(FunctionalTensorDot(), torch.randn(TOKENS), str(tmp_path), torch.randn(TOKENS))
    assert result.lossless and result.smaller, result


class ChannelNorm(nn.Module):
    """A user's affine per-channel normalisation (instance statistics, then weight and bias)."""

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.weight, self.bias = nn.Parameter(torch.rand(channels) + 0.5), nn.Parameter(torch.randn(channels))

    def forward(self, x):
        centred = x - x.mean((2, 3), keepdim=True)
        scaled = centred / (centred.pow(2).mean((2, 3), keepdim=True) + 1e-5).sqrt()
        return scaled * self.weight[:, None, None] + self.bias[:, None, None]


def channel_norm_rule(ctx, node):
    x = node.value_arg(0, "input")
    axes = ctx.axes(x)
    for name in ("weight", "bias"):
        ctx.spaces.union(ctx.axes(node.value_arg(-1, name))[0], axes[1])
        ctx.claim(node.value_arg(-1, name), 0, node)
    for axis in axes[2:]:
        ctx.pin(axis, "ChannelNorm averages over it")
    ctx.set_axes(node.outputs[0], axes)


class NormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(3, 8, 3, padding=1), ChannelNorm(8), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.norm(self.conv(x)))) * SMALL


def test_a_new_affine_norm_registers_without_error_and_prunes(tmp_path):
    register_module(ChannelNorm, channel_norm_rule, zero=AFFINE_NORM,
                    update=lambda module, node, kept_in: {"channels": kept_in})
    torch.manual_seed(0)
    assert {"conv.weight", "norm.weight", "norm.bias"} <= _prunable_names(NormNet(), IMAGE)
    torch.manual_seed(0)
    model = NormNet()
    torch.manual_seed(1)
    result = compress_and_compare(model, torch.randn(IMAGE), str(tmp_path), torch.randn(IMAGE))
    assert result.lossless and result.smaller, result
    assert model.norm.channels == model.norm.weight.numel() < 8


def test_registration_rejects_bad_arguments():
    with pytest.raises(ValueError, match="call names"):
        register_operator([], tensordot_rule)
    with pytest.raises(ValueError, match="zero must be one of"):
        register_operator("tensordot", tensordot_rule, zero="sometimes")
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_module(int, tensordot_rule)
    with pytest.raises(ValueError, match="class path names its module"):
        register_module("GlobalResponseNorm", tensordot_rule)


def test_a_module_registered_by_class_path_is_matched_without_importing_it():
    from only_train_once.operation.registry import OPAQUE_MODULES, opaque_call_name

    class Local(nn.Module):
        pass

    path = f"{Local.__module__}.{Local.__qualname__}"
    register_module(path, tensordot_rule, op_name="local_by_path")
    assert path in OPAQUE_MODULES
    assert opaque_call_name(Local()) == "module:Local"
    assert opaque_call_name(nn.Linear(2, 2)) is None


class MeanScaled(nn.Module):
    """``weight * x / mean(|x|)`` over the channels: zero channels add nothing to the sum, but the mean divides by
    the channel count, so the pruned layer needs a stand-in that keeps dividing by the original count."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x):
        return self.weight * x / (x.abs().mean(-1, keepdim=True) + 1e-3)


class CountedMeanScaled(nn.Module):
    def __init__(self, weight, channels):
        super().__init__()
        self.weight, self.channels = weight, channels

    def forward(self, x):
        return self.weight * x / (x.abs().sum(-1, keepdim=True) / self.channels + 1e-3)


def mean_scaled_rule(ctx, node):
    x, weight = node.value_arg(0, "x"), node.value_arg(-1, "weight")
    ctx.claim(weight, 0, node)
    ctx.spaces.union(ctx.axes(weight)[0], ctx.axes(x)[-1])
    ctx.set_axes(node.outputs[0], ctx.axes(x))


class MeanScaledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(3, 8), MeanScaled(8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.norm(F.relu(self.fc1(x)))) * SMALL


def test_a_registered_replacement_keeps_what_the_pruned_module_computed(tmp_path):
    register_module(MeanScaled, mean_scaled_rule, update=lambda module, node, kept_in: {}, input_channel_axis=-1,
                    replace=lambda module, full_size: CountedMeanScaled(module.weight, full_size))
    torch.manual_seed(0)
    assert {"fc1.weight", "norm.weight"} <= _prunable_names(MeanScaledNet(), TOKENS)
    torch.manual_seed(0)
    model = MeanScaledNet()
    torch.manual_seed(1)
    result = compress_and_compare(model, torch.randn(TOKENS), str(tmp_path), torch.randn(TOKENS))
    assert result.lossless and result.smaller, result
    compressed = torch.load(next(tmp_path.glob("*compressed*.pt")), weights_only=False)
    assert isinstance(compressed.norm, CountedMeanScaled) and compressed.norm.channels == 8
