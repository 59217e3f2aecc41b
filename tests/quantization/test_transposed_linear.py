"""Hugging Face's transposed linear (``transformers.pytorch_utils.Conv1D``, GPT-2) quantized, and float layers named."""

import logging

import pytest
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.quantization import QuantizeTransposedLinear, is_transposed_linear
from only_train_once.quantization.quant_model import model_to_quantize_model
from tests.helpers import prunable_groups, zero_units
from tests.llm.decoders import build_decoder, token_ids
from tests.thirdparty import import_or_skip


def conv1d(nf=6, nx=4):
    pytorch_utils = import_or_skip("transformers.pytorch_utils")
    torch.manual_seed(0)
    layer = pytorch_utils.Conv1D(nf, nx)
    nn.init.normal_(layer.bias)
    return layer


def test_quantized_transposed_linear_matches_the_float_layer_at_16_bits():
    layer = conv1d()
    x = torch.randn(2, 3, 4)
    expected = layer(x)
    quantized = QuantizeTransposedLinear.from_module(layer, num_bits=16, share_parameters=True)
    assert quantized.weight is layer.weight and quantized.bias is layer.bias
    assert quantized.weight_bit == 16
    assert torch.allclose(quantized(x), expected, atol=1e-3)
    assert not torch.equal(quantized(x), expected)  # the weight really passes through the quantizer


def test_quantized_transposed_linear_at_2_bits_uses_three_levels():
    quantized = QuantizeTransposedLinear.from_module(conv1d(), num_bits=2,
                                                     quant_type="symmetric+linear")
    levels = torch.unique(quantized.quantize_weight(quantized.weight).detach())
    assert len(levels) <= 3


def test_from_module_refuses_other_layers():
    with pytest.raises(TypeError, match="Conv1D"):
        QuantizeTransposedLinear.from_module(nn.Linear(4, 6))


def test_the_default_conversion_quantizes_transposed_linears(caplog):
    model = nn.Sequential(conv1d(), nn.ReLU(), conv1d(4, 6))
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        model_to_quantize_model(model, num_bits=8)
    assert isinstance(model[0], QuantizeTransposedLinear) and isinstance(model[2], QuantizeTransposedLinear)
    assert model[0].weight_bit == 8 and not caplog.records


@pytest.mark.slow
def test_gpt2_is_quantized_everywhere_and_stays_prunable(tmp_path, caplog):
    model = build_decoder("gpt2")
    ids = token_ids()
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        model_to_quantize_model(model, num_bits=8, quant_mode="weight_and_activation")
    assert not any(is_transposed_linear(m) for m in model.modules())
    assert not any("stay float" in r.getMessage() for r in caplog.records)
    oto = OTO(model, {"input_ids": ids})
    assert oto.compute_average_bit_width() < 12  # 8-bit layers; embeddings and norms stay 32-bit
    groups = prunable_groups(oto)
    assert {g.members[0].name.split(".")[-2] for g in groups} == {"c_attn", "c_fc"}
    for group in groups:
        zero_units(oto, group, range(0, group.num_groups, 2))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-4)


def test_layers_left_float_are_named_in_one_warning(caplog):
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv3d(4, 4, 1), nn.Embedding(3, 4), nn.LayerNorm(4))
    with caplog.at_level(logging.INFO, logger="only_train_once"):
        model_to_quantize_model(model, filter_fn=lambda module, name: name != "0")
    float_records = [(r.levelno, r.getMessage()) for r in caplog.records if "stay float" in r.getMessage()]
    assert float_records == [
        (logging.WARNING, "1 linear-like layers stay float (not supported or re-parametrized): 1"),
        (logging.INFO, "1 linear-like layers stay float, excluded by filter_fn: 0"),
    ]


def test_an_embedding_only_first_pass_warns_about_nothing(caplog):
    model = nn.Sequential(nn.Embedding(3, 4), nn.Linear(4, 4))
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        model_to_quantize_model(model, filter_fn=lambda module, name: isinstance(module, nn.Embedding))
    assert not [r for r in caplog.records if "stay float" in r.getMessage()]
