"""Quantized layers: reference surface, float equivalence at 16 bits, calibration, from_module, tracing contract."""
import copy
import io

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from only_train_once.quantization.quant_layers import (
    LAYER_TO_QUANTLAYER,
    QuantizationMode,
    QuantizationType,
    QuantizeConv1d,
    QuantizeConv2d,
    QuantizeConvTranspose2d,
    QuantizeEmbedding,
    QuantizeLinear,
    QuantizeMixin,
    initialize_quant_layer,
)
from only_train_once.quantization.quantizer import fake_quantize

W_AND_A = QuantizationMode.WEIGHT_AND_ACTIVATION
NONLINEAR = QuantizationType.SYMMETRIC_NONLINEAR


def seeded(seed=0):
    torch.manual_seed(seed)


def assert_close_reference(actual, expected, rtol=1e-4):
    """The reference's tolerance: allclose(rtol) or, failing that, max |diff| <= rtol."""
    if not torch.allclose(actual, expected, rtol=rtol, atol=1e-8):
        assert (actual - expected).abs().max().item() <= rtol


def test_enum_string_values():
    assert {m.name: m.value for m in QuantizationType} == {
        "SYMMETRIC_LINEAR": "symmetric+linear", "SYMMETRIC_NONLINEAR": "symmetric+nonlinear", "DGE": "dge"
    }
    assert {m.name: m.value for m in QuantizationMode} == {
        "WEIGHT_ONLY": "weight_only", "WEIGHT_AND_ACTIVATION": "weight_and_activation"
    }


def test_parameter_names_and_registration_order():
    layer = QuantizeLinear(4, 3, quant_type=NONLINEAR, quant_mode=W_AND_A)
    assert [n for n, _ in layer.named_parameters()] == [
        "weight", "bias", "d_quant_wt", "q_m_wt", "t_quant_wt", "d_quant_act", "q_m_act", "t_quant_act"
    ]
    assert [n for n, _ in QuantizeConv2d(2, 3, 3).named_parameters()] == ["weight", "d_quant_wt", "q_m_wt"]
    assert all(p.shape == (1,) for _, p in layer.named_quant_parameters())


def test_reference_constructor_defaults_and_registry():
    conv = QuantizeConv2d(3, 8, 3)
    assert conv.padding == (1, 1) and conv.bias is None
    assert conv.quant_type is QuantizationType.SYMMETRIC_LINEAR and conv.quant_mode is QuantizationMode.WEIGHT_ONLY
    assert conv.weight_clip_val == (-2.0, 2.0) and conv.act_clip_val == (-2.0, 2.0)
    assert LAYER_TO_QUANTLAYER["Linear"] is QuantizeLinear and LAYER_TO_QUANTLAYER["Conv2d"] is QuantizeConv2d
    assert {"Conv1d", "ConvTranspose2d", "Embedding"} <= set(LAYER_TO_QUANTLAYER)


def test_weight_bit_18_for_reference_inits_and_activation_bit_32_weight_only():
    layer = QuantizeLinear(256, 128, True, d_quant_init=1e-4, t_quant_init=1.0, q_m_init=10.0)
    assert layer.weight_bit == 18 and isinstance(layer.weight_bit, int)
    assert layer.activation_bit == 32


@pytest.mark.parametrize("quant_type", list(QuantizationType))
def test_qlinear_matches_linear_at_reference_inits(quant_type):
    seeded()
    linear = nn.Linear(256, 128)
    with torch.no_grad():
        linear.weight.uniform_(0, 1), linear.bias.uniform_(0, 1)
    qlinear = QuantizeLinear(256, 128, True, 1e-4, 1.0, 10.0, quant_type)
    qlinear.load_state_dict(linear.state_dict(), strict=False)
    x = torch.rand(1, 256)
    assert_close_reference(qlinear(x), linear(x))


def test_qconv2d_matches_conv2d_at_reference_inits():
    seeded()
    conv = nn.Conv2d(3, 64, 3, 1, 1, bias=True)
    with torch.no_grad():
        conv.weight.uniform_(0, 1), conv.bias.uniform_(0, 1)
    qconv = QuantizeConv2d(3, 64, 3, 1, 1, bias=True, d_quant_init=1e-4, t_quant_init=1.0, q_m_init=10.0)
    qconv.load_state_dict(conv.state_dict(), strict=False)
    x = torch.rand(1, 3, 32, 32)
    assert_close_reference(qconv(x), conv(x))


FLOAT_LAYERS = {
    "linear": (lambda: nn.Linear(16, 8), lambda: torch.randn(4, 16)),
    "conv2d": (lambda: nn.Conv2d(3, 8, 3, padding=1), lambda: torch.randn(2, 3, 9, 9)),
    "conv1d": (lambda: nn.Conv1d(3, 8, 3, padding=2, dilation=2), lambda: torch.randn(2, 3, 11)),
    "conv_transpose2d": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), lambda: torch.randn(2, 4, 5, 5)
    ),
    "embedding": (lambda: nn.Embedding(20, 8, padding_idx=0), lambda: torch.randint(0, 20, (3, 7))),
}


@pytest.mark.parametrize("kind", list(FLOAT_LAYERS))
@pytest.mark.parametrize("mode", list(QuantizationMode))
def test_every_layer_at_16_bits_matches_float_layer(kind, mode):
    seeded()
    make_layer, make_input = FLOAT_LAYERS[kind]
    float_layer, x = make_layer(), make_input()
    layer = LAYER_TO_QUANTLAYER[type(float_layer).__name__].from_module(
        float_layer, quant_type=NONLINEAR, quant_mode=mode, num_bits=16
    )
    assert isinstance(layer, QuantizeMixin) and layer.weight_bit == 16
    with torch.no_grad():
        expected = float_layer(x)
        layer.calibrate_activation_range(x) if layer.quantizes_activation else None
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_conv_transpose_honours_output_size():
    seeded()
    float_layer = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1)
    layer = QuantizeConvTranspose2d.from_module(float_layer, num_bits=16)
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            layer(x, output_size=[10, 10]), float_layer(x, output_size=[10, 10]), rtol=1e-4, atol=1e-4
        )


def test_embedding_is_weight_only():
    with pytest.raises(ValueError, match="weight_only"):
        QuantizeEmbedding(10, 4, quant_mode=W_AND_A)
    assert QuantizeEmbedding.from_module(nn.Embedding(10, 4), quant_mode=W_AND_A).activation_bit == 32
    with pytest.raises(ValueError, match="sparse"):
        QuantizeEmbedding.from_module(nn.Embedding(10, 4, sparse=True))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_layer_weight_and_activation_take_at_most_2_pow_b_minus_1_values(bits):
    seeded()
    layer = QuantizeLinear.from_module(nn.Linear(64, 64), quant_mode=W_AND_A, num_bits=bits)
    x = torch.randn(32, 64)
    layer.calibrate_activation_range(x)
    assert layer.weight_bit == bits and layer.activation_bit == bits
    with torch.no_grad():
        assert layer.quantize_weight(layer.weight).unique().numel() <= 2**bits - 1
        assert layer.quantize_act(x).unique().numel() <= 2**bits - 1


def test_initialize_quant_layer_uses_weight_statistics_for_the_weight():
    seeded()
    layer = QuantizeConv2d(3, 8, 3, quant_type=NONLINEAR, t_quant_init=1.7)
    initialize_quant_layer(layer, 12, NONLINEAR)
    assert layer.q_m_wt.item() == pytest.approx(layer.weight.abs().max().item())
    assert layer.t_quant_wt.item() == 1.0 and layer.weight_bit == 12


def test_activation_range_is_calibrated_from_the_first_training_batch():
    seeded()
    layer = QuantizeLinear.from_module(nn.Linear(16, 4), quant_mode=W_AND_A, num_bits=8)
    assert not layer.act_calibrated and layer.activation_bit == 8
    x = torch.randn(8, 16) * 7.0  # activation statistics far from the weight statistics
    layer(x)
    assert layer.act_calibrated
    assert layer.q_m_act.item() == pytest.approx(x.abs().max().item())
    assert layer.q_m_act.item() != pytest.approx(layer.q_m_wt.item())
    assert layer.activation_bit == 8
    calibrated = layer.q_m_act.item()
    layer(torch.randn(8, 16) * 100.0)
    assert layer.q_m_act.item() == calibrated  # one-shot


def test_calibration_reduces_the_range_over_distributed_ranks(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        layer = QuantizeLinear.from_module(nn.Linear(4, 2), quant_mode=W_AND_A)
        x = torch.randn(3, 4)
        layer.calibrate_activation_range(x)
    finally:
        torch.distributed.destroy_process_group()
    assert layer.q_m_act.item() == pytest.approx(x.abs().max().item())


def test_calibration_is_deterministic():
    seeded()
    float_layer, x = nn.Linear(16, 4), torch.randn(8, 16)
    layers = [QuantizeLinear.from_module(float_layer, quant_mode=W_AND_A) for _ in range(2)]
    outputs = [layer(x) for layer in layers]
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(layers[0].d_quant_act, layers[1].d_quant_act)


def test_no_calibration_in_eval_or_without_grad():
    layer = QuantizeLinear.from_module(nn.Linear(16, 4), quant_mode=W_AND_A)
    with torch.no_grad():
        layer(torch.randn(2, 16))
    layer.eval()(torch.randn(2, 16))
    assert not layer.act_calibrated and layer.q_m_act.item() == 2.0  # the documented default range


def test_state_dict_round_trip_keeps_calibration_and_outputs():
    seeded()
    float_layer = nn.Conv2d(3, 4, 3, padding=1)
    layer = QuantizeConv2d.from_module(float_layer, quant_type=NONLINEAR, quant_mode=W_AND_A)
    layer(torch.randn(2, 3, 6, 6) * 3)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["act_calibrated"].item() is True
    fresh = QuantizeConv2d.from_module(float_layer, quant_type=NONLINEAR, quant_mode=W_AND_A)
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 6, 6)
    assert fresh.act_calibrated and torch.equal(fresh(x), layer(x))


def test_state_dict_without_calibration_flag_loads_as_calibrated():
    layer = QuantizeLinear.from_module(nn.Linear(4, 2), quant_mode=W_AND_A)
    state = {k: v for k, v in layer.state_dict().items() if k != "act_calibrated"}
    result = layer.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys and layer.act_calibrated


def test_from_module_keeps_dtype_requires_grad_and_training_flag():
    float_layer = nn.Linear(8, 4).double().eval()
    float_layer.bias.requires_grad_(False)
    layer = QuantizeLinear.from_module(float_layer)
    assert layer.weight.dtype == torch.float64 and layer.d_quant_wt.dtype == torch.float64
    assert not layer.bias.requires_grad and not layer.training
    assert layer.weight is not float_layer.weight and torch.equal(layer.weight, float_layer.weight)
    half = QuantizeConv2d.from_module(nn.Conv2d(3, 4, 3).half())
    assert half.weight.dtype == torch.float16 and half.q_m_wt.dtype == torch.float32


def test_from_module_keeps_device():
    float_layer = nn.Conv2d(3, 4, 3, device="meta")
    layer = QuantizeConv2d.from_module(float_layer, quant_init_by_module=False)
    assert layer.weight.device.type == "meta" and layer.d_quant_wt.device.type == "meta"


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_from_module_keeps_and_honours_padding_mode(padding_mode):
    seeded()
    float_layer = nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode)
    layer = QuantizeConv2d.from_module(float_layer, num_bits=16)
    assert layer.padding_mode == padding_mode
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), float_layer(x), rtol=1e-4, atol=1e-4)
    conv1d = QuantizeConv1d.from_module(nn.Conv1d(2, 2, 3, padding=1, padding_mode=padding_mode))
    assert conv1d.padding_mode == padding_mode


def test_from_module_share_parameters_keeps_objects():
    float_layer = nn.Linear(4, 2)
    layer = QuantizeLinear.from_module(float_layer, share_parameters=True)
    assert layer.weight is float_layer.weight and layer.bias is float_layer.bias


def test_dge_is_usable_through_layers():
    seeded()
    layer = QuantizeLinear.from_module(nn.Linear(8, 4), quant_type="dge", quant_mode=W_AND_A, num_bits=4)
    assert layer.weight_bit == 4 and not hasattr(layer, "t_quant_wt")
    layer(torch.randn(3, 8)).sum().backward()
    assert all(p.grad is not None for _, p in layer.named_quant_parameters())


def test_negative_q_m_keeps_weight_bit_and_output_finite():
    layer = QuantizeLinear.from_module(nn.Linear(8, 4), num_bits=8)
    with torch.no_grad():
        layer.q_m_wt.neg_()
    assert layer.weight_bit == 8
    with torch.no_grad():
        layer.q_m_wt.zero_()
    assert layer.weight_bit == 1 and torch.isfinite(layer(torch.randn(2, 8))).all()


class CallRecorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("training", [True, False])
def test_tracing_contract_one_fake_quantize_call_per_quantizer(training):
    layer = QuantizeConv2d(3, 4, 3, quant_type=NONLINEAR, quant_mode=W_AND_A).train(training)
    x = torch.randn(1, 3, 6, 6)
    with CallRecorder() as recorder:
        out = layer(x)
    funcs = [func for func, _ in recorder.calls]
    assert funcs.count(fake_quantize) == 2
    assert len(funcs) == 3 and torch.nn.functional.conv2d in funcs
    (weight_args, act_args) = [args for func, args in recorder.calls if func is fake_quantize]
    assert weight_args[0] is layer.weight
    assert weight_args[1:4] == (layer.d_quant_wt, layer.q_m_wt, layer.t_quant_wt)
    assert all(a is b for a, b in zip(weight_args[1:4], (layer.d_quant_wt, layer.q_m_wt, layer.t_quant_wt)))
    assert act_args[0] is x
    assert all(a is b for a, b in zip(act_args[1:4], (layer.d_quant_act, layer.q_m_act, layer.t_quant_act)))
    torch.testing.assert_close(out, layer(x))


def test_layers_deepcopy_and_pickle():
    layer = QuantizeLinear.from_module(nn.Linear(4, 2), quant_mode=W_AND_A)
    buffer = io.BytesIO()
    torch.save(copy.deepcopy(layer), buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(restored(x), layer(x)) and restored.act_calibrated == layer.act_calibrated


def test_from_module_is_a_static_method_building_the_subclass():
    """The reference declares ``from_module`` static; a subclass of a quantized layer still converts to itself."""
    import inspect

    class WiderLinear(QuantizeLinear):
        pass

    for layer_class in (QuantizeLinear, QuantizeConv2d, WiderLinear):
        assert isinstance(inspect.getattr_static(layer_class, "from_module"), staticmethod)
    assert type(WiderLinear.from_module(nn.Linear(4, 2))) is WiderLinear
    assert type(QuantizeLinear.from_module(module=nn.Linear(4, 2))) is QuantizeLinear
    assert type(QuantizeConv2d.from_module(nn.Conv2d(3, 4, 3))) is QuantizeConv2d
