"""Operator rules that third-party families need (issue 14): each layout compresses losslessly where pruning keeps
the function, and pins exactly the channels it must. Outputs are scaled by 1e-4 and compared relatively."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from tests.compression_check import compress_and_compare

SMALL = 1e-4
IMAGE = (2, 3, 5, 5)
TOKENS = (2, 4, 8)


class ChunkThenConcat(nn.Module):
    """Half the channels go through a conv, half pass (CSP / GhostNet / HGNet style)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        kept, processed = self.a(x).chunk(2, 1)
        return self.c(torch.cat([kept, F.relu(self.b(processed))], 1)) * SMALL


class L2Normalised(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how, self.a, self.c = how, nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.a(x)
        if self.how == "normalize":
            y = F.normalize(y, dim=1)
        elif self.how == "norm":
            y = y / y.norm(dim=1, keepdim=True)
        else:
            y = y / torch.linalg.vector_norm(y, 2, 1, True)
        return self.c(y) * SMALL


class EinsumAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.out = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        q, k = self.q(x), self.k(x)
        weights = torch.einsum("bnd,bmd->bnm", q, k).softmax(-1)
        return self.out(torch.einsum("...nm,...md->...nd", weights, q)) * SMALL


class EinsumNonzeroContraction(nn.Module):
    """The contracted channels meet a constant-one operand: pruned zeros would be summed away only in one
    operand's slices, which is fine; here both operands are nonzero there, so the channels are pinned."""

    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Linear(8, 8), nn.Linear(4, 2)

    def forward(self, x):
        y = torch.sigmoid(self.a(x))  # sigmoid(0) = 0.5: pruned channels are not zero here
        return self.c(torch.einsum("bnd,bmd->bnm", y, y)) * SMALL


class StdConv(nn.Conv2d):
    """A weight-standardised conv without an ``eps`` attribute: the subnet constructor has nothing to bake its
    standardisation from, so its input channels stay pinned."""

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                              momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias)


class ScaledStdConv(nn.Conv2d):
    """timm's ScaledStdConv2d layout: the weight standardised per output channel, times ``gain * scale``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps, self.scale = 1e-6, self.weight[0].numel() ** -0.5
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                              eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class WeightStandardised(nn.Module):
    def __init__(self, conv=StdConv, padding=0):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), conv(8, 8, 3, padding=padding), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c(F.relu(self.b(F.relu(self.a(x))))) * SMALL


class SplitBySections(nn.Module):
    """``split(x, self.split_indices)`` into parts of different sizes, each refined by its own depthwise conv
    (MambaOut's gated block): the parts' channels are prunable and the constructor rewrites the sections."""

    def __init__(self):
        super().__init__()
        self.split_indices = (3, 5)
        self.a, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)
        self.dw_first, self.dw_second = nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.Conv2d(5, 5, 3, padding=1, groups=5)

    def forward(self, x):
        first, second = torch.split(self.a(x), self.split_indices, dim=1)
        return self.c(torch.cat([self.dw_first(first), self.dw_second(second)], 1)) * SMALL


def _prunable_prefixes(model, shape):
    torch.manual_seed(0)
    oto = OTO(model.eval(), torch.randn(shape))
    return {name.split(".")[0] for group in oto.get_param_groups() if group["is_prunable"]
            for name in group["p_names"]}


def _compress(model, shape, tmp_path):
    torch.manual_seed(1)
    return compress_and_compare(model.eval(), torch.randn(shape), str(tmp_path), torch.randn(shape))


@pytest.mark.parametrize("model, shape, prunable", [
    (ChunkThenConcat, IMAGE, {"a", "b"}),
    (lambda: L2Normalised("normalize"), IMAGE, {"a"}),
    (lambda: L2Normalised("norm"), IMAGE, {"a"}),
    (lambda: L2Normalised("vector_norm"), IMAGE, {"a"}),
    (EinsumAttention, TOKENS, {"q", "k"}),
    (WeightStandardised, IMAGE, {"b"}),
    (lambda: WeightStandardised(ScaledStdConv, 1), IMAGE, {"a", "b"}),
    (SplitBySections, IMAGE, {"a", "dw_first", "dw_second"}),
], ids=["chunk_then_concat", "normalize", "x_over_norm", "vector_norm", "einsum", "weight_standardised_no_eps",
        "weight_standardised", "split_by_sections"])
def test_layout_is_pruned_losslessly(tmp_path, model, shape, prunable):
    torch.manual_seed(0)
    assert _prunable_prefixes(model(), shape) == prunable
    torch.manual_seed(0)
    result = _compress(model(), shape, tmp_path)
    assert result.lossless and result.smaller, result


def test_einsum_contraction_over_nonzero_pruned_slices_is_pinned(tmp_path):
    torch.manual_seed(0)
    assert _prunable_prefixes(EinsumNonzeroContraction(), TOKENS) == set()
    result = _compress(EinsumNonzeroContraction(), TOKENS, tmp_path)
    assert result.lossless, result


def test_normalize_with_a_negative_order_pins_the_axis():
    class NegativeOrder(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.c(F.normalize(self.a(x), p=-1.0, dim=1))

    assert _prunable_prefixes(NegativeOrder(), IMAGE) == set()


class HeadBiasAttention(nn.Module):
    """Per-head relative-position bias gathered from a table and passed as the attention mask (Swin, MaxViT)."""

    def __init__(self, tokens=4, heads=4, head_dim=2):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv, self.proj = nn.Linear(8, 3 * heads * head_dim), nn.Linear(heads * head_dim, 2)
        self.table = nn.Parameter(torch.randn(2 * tokens - 1, heads))
        positions = torch.arange(tokens)
        self.register_buffer("index", (positions[:, None] - positions[None, :] + tokens - 1).flatten())

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.table[self.index].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)) * SMALL


def test_per_head_bias_table_is_pruned_with_its_heads(tmp_path):
    torch.manual_seed(0)
    oto = OTO(HeadBiasAttention().eval(), torch.randn(TOKENS))
    heads = [g for g in oto.get_param_groups() if g["is_prunable"] and "table" in g["p_names"]]
    assert len(heads) == 1 and heads[0]["num_groups"] == 4
    assert heads[0]["p_axes"][heads[0]["p_names"].index("table")] == 1
    torch.manual_seed(0)
    result = _compress(HeadBiasAttention(), TOKENS, tmp_path)
    assert result.lossless and result.smaller, result


def test_a_space_both_product_and_concatenation_pins_the_factors():
    from only_train_once.dependency_graph.spaces import SpaceSet

    spaces = SpaceSet()
    heads, head_dim = spaces.new(4, "heads"), spaces.new(12, "head dim", pinned=True)
    merged = spaces.product([heads, head_dim], "attention output")
    residual = spaces.concat([spaces.new(24, "a"), spaces.new(24, "b")])
    spaces.union(residual, merged)
    assert spaces.find(heads).pinned


def test_a_standardised_conv_losing_inputs_is_baked_and_reloads_weights_only(tmp_path):
    """The compressed conv holds the standardisation of the full weight (a recomputed one over the kept inputs
    would differ), and a fresh instance of the architecture rebuilt from the subnet description computes the
    same outputs."""
    import numpy as np

    from only_train_once.subnet_construction import load_compressed_weights
    from only_train_once.subnet_construction.modules import StandardisedConv2d

    torch.manual_seed(0)
    model = WeightStandardised(ScaledStdConv, 1).eval()
    x = torch.randn(IMAGE)
    oto = OTO(model, x)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    assert isinstance(compressed.b, StandardisedConv2d) and compressed.b.in_channels < 8
    expected = model(x)
    torch.testing.assert_close(compressed(x), expected, rtol=1e-4, atol=1e-9)
    torch.manual_seed(3)
    rebuilt = load_compressed_weights(WeightStandardised(ScaledStdConv, 1).eval(),
                                      oto.compressed_model_path.replace(".pt", ".safetensors"))
    torch.testing.assert_close(rebuilt(x), expected, rtol=1e-4, atol=1e-9)


def test_split_sections_read_from_an_attribute_follow_pruning(tmp_path):
    import numpy as np

    torch.manual_seed(0)
    model = SplitBySections().eval()
    oto = OTO(model, torch.randn(IMAGE))
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    assert compressed.split_indices == (compressed.dw_first.in_channels, compressed.dw_second.in_channels)
    assert sum(compressed.split_indices) < 8


class SelectiveScan(nn.Module):
    """A recurrent scan over time from a zero state sized by the input (Mamba's ``ssm_state``): the inner
    channels stay prunable, since the zero state and the zeroed inputs keep pruned slices zero at every step."""

    def __init__(self):
        super().__init__()
        self.inner, self.decay, self.out = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x):
        u, a = self.inner(x), torch.sigmoid(self.decay(x))
        state = torch.zeros(x.shape[0], u.shape[-1])
        states = []
        for step in range(x.shape[1]):
            state = a[:, step] * state + u[:, step]
            states.append(state)
        return self.out(torch.stack(states, dim=1)) * SMALL


def test_a_scan_from_a_zero_state_sized_by_the_input_is_pruned_losslessly(tmp_path):
    torch.manual_seed(0)
    assert _prunable_prefixes(SelectiveScan(), TOKENS) == {"inner", "decay"}  # one group: the decay gates it
    torch.manual_seed(0)
    result = _compress(SelectiveScan(), TOKENS, tmp_path)
    assert result.lossless and result.smaller, result


class GrnMlp(nn.Module):
    """ConvNeXt-V2's MLP (channels last): fc1 -> GELU -> timm's GlobalResponseNorm -> fc2."""

    def __init__(self):
        super().__init__()
        from tests.thirdparty import import_module

        grn = import_module("timm.layers.grn")
        self.fc1, self.norm, self.fc2 = nn.Linear(4, 8), grn.GlobalResponseNorm(8), nn.Linear(8, 2)
        with torch.no_grad():
            self.norm.weight.normal_()
            self.norm.bias.normal_()

    def forward(self, x):
        return self.fc2(self.norm(F.gelu(self.fc1(x)))) * SMALL


def test_global_response_norm_hidden_units_are_pruned_and_keep_their_channel_mean(tmp_path):
    """The channel mean keeps dividing by the original count (a recomputed mean over the kept channels would
    change every output), in the pickled model and in a weights-only rebuild."""
    import numpy as np

    from only_train_once.operation.thirdparty import ChannelCountGlobalResponseNorm
    from only_train_once.subnet_construction import load_compressed_weights

    from tests.thirdparty import import_or_skip

    import_or_skip("timm")
    model_class = GrnMlp
    shape = (2, 3, 3, 4)
    torch.manual_seed(0)
    assert _prunable_prefixes(model_class(), shape) == {"fc1", "norm"}
    torch.manual_seed(0)
    model, x = model_class().eval(), torch.randn(shape)
    oto = OTO(model, x)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    assert isinstance(compressed.norm, ChannelCountGlobalResponseNorm) and compressed.norm.weight.numel() < 8
    expected = model(x)
    torch.testing.assert_close(compressed(x), expected, rtol=1e-4, atol=1e-10)
    rebuilt = load_compressed_weights(model_class().eval(), oto.compressed_model_path.replace(".pt", ".safetensors"))
    torch.testing.assert_close(rebuilt(x), expected, rtol=1e-4, atol=1e-10)


class SharedBiasActivation(nn.Module):
    """PoolFormer-V2's StarReLU, ``scale * relu(x) ** 2 + bias`` with one bias for every channel, read by a padded
    3x3 conv: a pruned hidden channel is the constant ``bias``, which the border positions see only in part, so it
    must stay; the reason names the call that made it nonzero and why the conv cannot absorb it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 3, padding=1)
        self.bias = nn.Parameter(torch.tensor([0.3]))

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) ** 2 + self.bias) * SMALL


def test_a_pinned_group_names_the_call_that_made_its_pruned_channels_nonzero():
    torch.manual_seed(0)
    oto = OTO(SharedBiasActivation().eval(), torch.randn(IMAGE))
    (hidden,) = [g for g in oto.groups if "fc1.weight" in g.param_names]
    assert not hidden.is_prunable
    assert "made nonzero by 'add' in the model" in hidden.unprunable_reasons[0]
    assert "it pads its input" in hidden.unprunable_reasons[0]


class SplitBySharedIntAttributes(nn.Module):
    """Two heads each ``split([self.key_dim, self.val_dim])`` (EfficientViT-M's cascaded attention), each part
    refined by its own depthwise conv: one int attribute serves both heads, whose channels are pruned differently
    (the second head's mean pins its keys), so no single rewrite follows pruning; the sections stay pinned."""

    def __init__(self):
        super().__init__()
        self.key_dim, self.val_dim = 4, 4
        self.heads = nn.ModuleList(nn.Conv2d(3, 8, 1) for _ in range(2))
        self.keys = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1, groups=4) for _ in range(2))
        self.values = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1, groups=4) for _ in range(2))
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        total = 0
        for index in range(2):
            k, v = self.heads[index](x).split([self.key_dim, self.val_dim], dim=1)
            k, v = self.keys[index](k), self.values[index](v)
            score = k.sum(1, keepdim=True) if index == 0 else k.mean(1, keepdim=True)
            total = total + v * score
        return self.out(total) * SMALL


def test_split_sections_sharing_an_int_attribute_stay_exact(tmp_path):
    torch.manual_seed(0)
    result = _compress(SplitBySharedIntAttributes(), IMAGE, tmp_path)
    assert result.lossless, result


class GatedSplitTwoSpaces(nn.Module):
    """MambaOut's gated block: fc1's output splits into a gate ``g``, an identity part ``i`` and a part ``c`` refined
    by a depthwise conv, and ``act(g)`` multiplies ``cat(i, c)``: fc1's rows hold the units of two spaces (``i``'s
    and ``c``'s), each twice (in the gate, then in its own part); each part is pruned in its own space."""

    def __init__(self):
        super().__init__()
        self.split_indices = (8, 5, 3)
        self.fc1, self.fc2 = nn.Conv2d(3, 16, 1), nn.Conv2d(8, 2, 1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1, groups=3)

    def forward(self, x):
        g, i, c = torch.split(self.fc1(x), self.split_indices, dim=1)
        return self.fc2(F.gelu(g) * torch.cat([i, self.conv(c)], 1)) * SMALL


def test_rows_of_two_unit_spaces_are_pruned_each_in_its_own_space(tmp_path):
    torch.manual_seed(0)
    oto = OTO(GatedSplitTwoSpaces().eval(), torch.randn(IMAGE))
    fc1 = [g for g in oto.get_param_groups() if "fc1.weight" in g["p_names"]]
    assert len(fc1) == 1 and fc1[0]["is_prunable"]
    units = fc1[0]["p_unit_index"][fc1[0]["p_names"].index("fc1.weight")]
    assert (units >= 0).all() and torch.equal(units[:8], units[8:])  # the gate's units again in (i, c)
    torch.manual_seed(0)
    result = _compress(GatedSplitTwoSpaces(), IMAGE, tmp_path)
    assert result.lossless and result.smaller, result


def test_an_optimizer_prunes_rows_of_two_unit_spaces_losslessly(tmp_path):
    torch.manual_seed(0)
    model, x = GatedSplitTwoSpaces(), torch.randn(IMAGE)
    oto = OTO(model, x)
    optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.5, start_pruning_step=0, pruning_steps=2)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().sum().backward()
        optimizer.step()
    oto.construct_subnet(out_dir=str(tmp_path))
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    # half of the 8 units (5 of i, 3 of c) go; with i's units pinned only c's 3 could
    assert compressed.split_indices == (4, 3, 1) and compressed.fc1.out_channels == 8
    torch.testing.assert_close(compressed.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-9)
