"""model_to_quantize_model and the quantizer read-outs (SPEC 3.4)."""
import copy
import io
import logging
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from only_train_once.quantization.quant_layers import (
    QuantizationMode,
    QuantizationType,
    QuantizeConv1d,
    QuantizeConv2d,
    QuantizeEmbedding,
    QuantizeLinear,
    QuantizeMixin,
)
from only_train_once.quantization.quant_model import (
    get_bitwidth_dict,
    get_quant_param_dict,
    model_to_quantize_model,
)


class ScaledLinear(nn.Linear):
    """A subclass with another class name: the reference skips it, we convert it."""


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.head = nn.Sequential(ScaledLinear(32, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def make_net(seed=0):
    torch.manual_seed(seed)
    return SmallNet().eval()


def example_input():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_converts_every_linear_and_conv2d_including_subclasses_in_place():
    model = make_net()
    same = model_to_quantize_model(model)
    assert same is model
    assert isinstance(model.features[0], QuantizeConv2d) and isinstance(model.features[3], QuantizeConv2d)
    assert isinstance(model.head[0], QuantizeLinear) and isinstance(model.head[2], QuantizeLinear)
    assert sum(isinstance(m, QuantizeMixin) for m in model.modules()) == 4
    assert isinstance(model.features[1], nn.BatchNorm2d)


def test_defaults_are_16_bit_nonlinear_weight_only():
    model = model_to_quantize_model(make_net())
    for layer in (m for m in model.modules() if isinstance(m, QuantizeMixin)):
        assert layer.quant_type is QuantizationType.SYMMETRIC_NONLINEAR
        assert layer.weight_bit == 16 and layer.activation_bit == 32 and layer.t_quant_wt.item() == 1.0


@pytest.mark.parametrize("mode", ["weight_only", QuantizationMode.WEIGHT_AND_ACTIVATION])
@pytest.mark.parametrize("quant_type", ["symmetric+linear", QuantizationType.SYMMETRIC_NONLINEAR, "dge"])
def test_outputs_equal_float_model_at_16_bits(mode, quant_type):
    reference = make_net()
    model = model_to_quantize_model(copy.deepcopy(reference), quant_type=quant_type, quant_mode=mode)
    x = example_input()
    model.train()
    model.features[1].eval()  # calibration batch without touching the BatchNorm statistics
    model(x)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-3, atol=1e-4)


def test_positional_call_as_scripts_use_it():
    model = model_to_quantize_model(make_net(), 1e-5, 1.0, 10.0)
    assert isinstance(model.head[2], QuantizeLinear) and model.head[2].weight_bit == 16


def test_explicit_initial_values_without_init_by_module():
    model = model_to_quantize_model(make_net(), 1e-4, 1.0, 10.0, False, quant_type="symmetric+linear")
    assert model.head[2].q_m_wt.item() == 10.0 and model.head[2].weight_bit == 18


@pytest.mark.parametrize(
    "kwargs, valid",
    [
        ({"quant_type": "invalid_type"}, "'symmetric+linear', 'symmetric+nonlinear', 'dge'"),
        ({"quant_mode": "invalid_mode"}, "'weight_only', 'weight_and_activation'"),
    ],
)
def test_unknown_strings_raise_value_error_naming_valid_values(kwargs, valid):
    model = make_net()
    with pytest.raises(ValueError, match=re.escape(valid)):
        model_to_quantize_model(model, **kwargs)
    assert not any(isinstance(m, QuantizeMixin) for m in model.modules())  # nothing converted


def test_filter_fn_chooses_layers():
    model = model_to_quantize_model(make_net(), filter_fn=lambda module, name: name.startswith("head"))
    assert isinstance(model.head[0], QuantizeLinear) and isinstance(model.head[2], QuantizeLinear)
    assert type(model.features[0]) is nn.Conv2d


def test_filter_fn_opts_in_new_layer_kinds():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Conv1d(4, 4, 1), nn.Linear(4, 2))
    model_to_quantize_model(copy.deepcopy(model))
    assert type(model[0]) is nn.Embedding and type(model[1]) is nn.Conv1d  # default: the reference's layer kinds
    model_to_quantize_model(model, filter_fn=lambda module, name: True)
    assert isinstance(model[0], QuantizeEmbedding) and isinstance(model[1], QuantizeConv1d)


def test_already_quantized_layers_are_not_converted_again():
    model = model_to_quantize_model(make_net(), quant_mode="weight_and_activation")
    layers = [m for m in model.modules() if isinstance(m, QuantizeMixin)]
    model_to_quantize_model(model, quant_mode="weight_only")
    assert [m for m in model.modules() if isinstance(m, QuantizeMixin)] == layers


def test_conversion_shares_parameters_so_tied_weights_stay_tied():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    weight = model[0].weight
    model_to_quantize_model(model)
    assert model[0].weight is weight and model[2].weight is weight


def test_module_registered_twice_is_converted_everywhere():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    model_to_quantize_model(model)
    assert isinstance(model[0], QuantizeLinear) and model[0] is model[2]


class LinearWithAdapter(nn.Linear):
    def __init__(self):
        super().__init__(4, 4)
        self.adapter = nn.Linear(4, 4)


def test_children_of_a_converted_layer_are_not_visited():
    model = nn.Sequential(LinearWithAdapter())
    model_to_quantize_model(model)
    assert isinstance(model[0], QuantizeLinear) and not hasattr(model[0], "adapter")


def test_multihead_attention_out_proj_is_left_alone():
    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    model_to_quantize_model(model, filter_fn=lambda module, name: True)
    assert not isinstance(model[0].out_proj, QuantizeMixin)


def test_root_module_cannot_be_replaced_in_place():
    with pytest.raises(ValueError, match="from_module"):
        model_to_quantize_model(nn.Linear(4, 2))


def test_logs_number_of_converted_layers(caplog):
    with caplog.at_level(logging.INFO, logger="only_train_once.quantization.quant_model"):
        model_to_quantize_model(make_net())
    assert "Converted 4 layers" in caplog.text


def test_state_dict_round_trip_into_freshly_converted_model():
    trained = model_to_quantize_model(make_net(), quant_mode="weight_and_activation", num_bits=8).train()
    trained.features[1].eval()
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        trained(example_input()).square().mean().backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    fresh = model_to_quantize_model(make_net(seed=7), quant_mode="weight_and_activation", num_bits=8)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    trained.eval(), fresh.eval()
    x = example_input()
    with torch.no_grad():
        assert torch.equal(fresh(x), trained(x))
    assert get_quant_param_dict(fresh) == get_quant_param_dict(trained)


def test_quant_param_and_bitwidth_dicts():
    model = model_to_quantize_model(make_net(), quant_mode="weight_and_activation", num_bits=8)
    params = get_quant_param_dict(model)
    assert set(params) == {"features.0", "features.3", "head.0", "head.2"}
    assert list(params["head.0"]) == ["d_quant_wt", "q_m_wt", "t_quant_wt", "d_quant_act", "q_m_act", "t_quant_act"]
    assert params["head.0"]["q_m_wt"] == pytest.approx(model.head[0].weight.abs().max().item())
    bits = get_bitwidth_dict(params)
    assert set(bits["head.0"]) == {"weight", "activation"}
    assert isinstance(bits["head.0"]["weight"], float) and bits["head.0"]["weight"] == pytest.approx(8.0, abs=1e-6)
    weight_only = get_bitwidth_dict(get_quant_param_dict(model_to_quantize_model(make_net())))
    assert set(weight_only["head.0"]) == {"weight"}


def test_reparametrized_weights_stay_float_with_a_warning(caplog):
    import logging

    model = nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(3, 4, 3)), nn.ReLU(),
                          nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)), nn.Conv2d(4, 2, 1))
    with caplog.at_level(logging.WARNING):
        model_to_quantize_model(model)
    assert type(model[0]) is nn.Conv2d and parametrize.is_parametrized(model[2])
    assert type(model[3]).__name__ == "QuantizeConv2d"
    assert sum("re-parametrization" in r.message for r in caplog.records) == 2


class StandardisedConv(nn.Conv2d):
    """A conv whose forward normalises its weight per output channel (timm's ScaledStdConv2d does this)."""

    def forward(self, x):
        weight = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, weight, self.bias)


def test_a_layer_overriding_forward_stays_float_with_a_warning(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(StandardisedConv(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(1, 3, 6, 6)
    expected = model(x)
    with caplog.at_level(logging.WARNING):
        model_to_quantize_model(model, num_bits=16)
    assert type(model[0]) is StandardisedConv and isinstance(model[2], QuantizeConv2d)
    assert any("StandardisedConv (Conv2d): 1 (e.g. 0)" in r.message and "stay float" in r.message
               for r in caplog.records)
    torch.testing.assert_close(model(x), expected, rtol=1e-3, atol=1e-3)


class SharedBranches(nn.Module):
    """Blocks whose two parents reach the same list of convs (CoaT's shared crpe): converting the first parent
    frees the float convs, and a freed layer's id, reused by a new quantized layer, must not be mistaken for it
    when the second parent is visited (on the old code about 8 of 100 shared lists came back swapped)."""

    def __init__(self, blocks=20):
        super().__init__()
        self.blocks = nn.ModuleList()
        for width in range(2, blocks + 2):
            shared = nn.ModuleList([nn.Conv2d(width, width, 1), nn.Conv2d(width + 1, width + 1, 1)])
            self.blocks.append(nn.ModuleList([nn.ModuleDict({"convs": shared}), nn.ModuleDict({"convs": shared})]))


def test_a_shared_parent_visited_twice_keeps_its_own_layers():
    for _ in range(5):
        model = model_to_quantize_model(SharedBranches())
        for width, (first, second) in enumerate(model.blocks, start=2):
            assert first["convs"] is second["convs"]
            assert [conv.weight.shape[0] for conv in second["convs"]] == [width, width + 1]
            assert all(isinstance(conv, QuantizeConv2d) for conv in second["convs"])


def activation_input_gradient(**kwargs):
    """Input gradient of a W+A Linear whose activation range is calibrated to 6 (|x| = 3 and 5 lie inside it)."""
    torch.manual_seed(0)
    layer = model_to_quantize_model(nn.Sequential(nn.Linear(3, 4)), quant_mode="weight_and_activation",
                                    **kwargs)[0]
    layer.calibrate_activation_range(torch.tensor([[6.0, 0.0, 0.0]]))
    x = torch.tensor([[3.0, -5.0, 1.0]], requires_grad=True)
    layer(x).sum().backward()
    return x.grad[0]


def test_activation_window_is_the_reference_one_unless_widened():
    reference = activation_input_gradient()
    assert reference[0] == 0 and reference[1] == 0 and reference[2] != 0  # (-2, 2): zero inside q_m_act
    widened = activation_input_gradient(act_clip_val=(-float("inf"), float("inf")))
    assert bool((widened != 0).all()) and widened[2] == reference[2]


def test_activation_window_leaves_weights_and_the_initial_range_alone():
    layer = model_to_quantize_model(nn.Sequential(nn.Linear(3, 4)), quant_mode="weight_and_activation",
                                    act_clip_val=(-float("inf"), float("inf")))[0]
    assert layer.weight_clip_val == (-2.0, 2.0) and layer.act_clip_val == (-float("inf"), float("inf"))
    assert layer.q_m_act.item() == 2.0 and not layer.act_calibrated  # the finite data-free range, as before
    with pytest.raises(ValueError, match="act_clip_val"):
        model_to_quantize_model(nn.Sequential(nn.Linear(3, 4)), act_clip_val=(1.0, -1.0))
