"""Attention heads of Hugging Face decoders: prunable in every layout, pruned losslessly with the default cache."""

import logging

import pytest
import torch

from only_train_once import OTO
from only_train_once.dependency_graph.layer_kinds import count_prunable_units
from only_train_once.quantization.quant_model import model_to_quantize_model
from tests.helpers import group_by_param, prunable_groups, zero_units
from tests.llm.decoders import build_decoder, token_ids

# layout -> (attention module class, prunable head units per layer: key/value heads with their query group)
HEAD_LAYOUTS = {
    "llama_gqa": ("LlamaAttention", 2),
    "llama_gqa_eager": ("LlamaAttention", 2),  # repeat_kv + matmul instead of scaled_dot_product_attention
    "gpt2": ("GPT2Attention", 4),
    "qwen3": ("Qwen3Attention", 2),
    "llama_mha": ("LlamaAttention", 4),
    "qwen2": ("Qwen2Attention", 2),
    "mistral": ("MistralAttention", 2),
    "gemma": ("GemmaAttention", 2),
    "gemma3": ("Gemma3Attention", 2),
    "gpt_neox": ("GPTNeoXAttention", 4),
    "phi3": ("Phi3Attention", 2),  # fused qkv_proj cut by constant slices
}
DEFAULT_SUITE = ("llama_gqa", "llama_gqa_eager", "gpt2", "qwen3", "phi3")
LAYOUTS = [pytest.param(name, marks=() if name in DEFAULT_SUITE else pytest.mark.slow) for name in HEAD_LAYOUTS]


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def cached_heads(model, ids) -> int:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=True).past_key_values.layers[0].keys.shape[1]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_heads_are_prunable_and_pruned_losslessly_with_the_default_cache(layout, tmp_path):
    model = build_decoder(layout)
    assert model.config.use_cache  # the cache is returned: it must not pin the heads
    ids = token_ids()
    oto = OTO(model, {"input_ids": ids})
    attention_class, heads_per_layer = HEAD_LAYOUTS[layout]
    counts = count_prunable_units(oto.groups, model)
    assert counts[attention_class].unit_name == "heads"
    assert counts[attention_class].prunable_units == heads_per_layer * model.config.num_hidden_layers
    for group in prunable_groups(oto):
        zero_units(oto, group, range(0, group.num_groups, 2))
    expected = logits(model, ids)
    parameters = sum(p.numel() for p in model.parameters())
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    assert sum(p.numel() for p in model.parameters()) < parameters
    assert torch.allclose(logits(model, ids), expected, atol=1e-5)
    assert cached_heads(model, ids) == heads_per_layer // 2  # the cache follows the kept key/value heads


def test_grouped_query_unit_is_one_key_value_head_with_its_query_group():
    model = build_decoder("llama_gqa")
    oto = OTO(model, {"input_ids": token_ids()})
    heads = group_by_param(oto, "model.layers.0.self_attn.k_proj.weight")
    assert heads.is_prunable and heads.num_groups == 2
    query = next(m for m in heads.members if m.name == "model.layers.0.self_attn.q_proj.weight")
    # query rows 0-15 (heads 0, 1) read key/value head 0; rows 16-31 (heads 2, 3) read head 1
    assert query.owners[1].tolist() == [0] * 16 + [1] * 16


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "weight+activation"])
def test_multi_query_heads_are_pruned_one_by_one_through_the_output_projection(quantized, tmp_path):
    model = build_decoder("llama_mqa")
    if quantized:
        model_to_quantize_model(model, quant_mode="weight_and_activation")
    ids = token_ids()
    oto = OTO(model, {"input_ids": ids})
    heads = group_by_param(oto, "model.layers.0.self_attn.q_proj.weight")
    assert heads.is_prunable and heads.num_groups == 4  # one unit per query head; the key/value head stays
    output = next(m for m in heads.members if m.name == "model.layers.0.self_attn.o_proj.weight")
    assert output.axis == 1  # its input columns are zeroed with the head
    assert "model.layers.0.self_attn.k_proj.weight" not in heads.param_names
    counts = count_prunable_units(oto.groups, model)["LlamaAttention"]
    assert (counts.unit_name, counts.prunable_units) == ("heads", 8)
    zero_units(oto, heads, [0, 3])
    expected = model.generate(ids, max_new_tokens=4, do_sample=False)  # decoding reads num_key_value_groups
    with torch.no_grad():
        logits_before = model(input_ids=ids).logits
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.weight.shape[0] == 16 and attention.o_proj.weight.shape[1] == 16
    assert attention.num_key_value_groups == 2 and model.model.layers[1].self_attn.num_key_value_groups == 4
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, logits_before, atol=1e-5)
    assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected)


def test_gpt2_fused_qkv_split_size_follows_the_kept_heads(tmp_path):
    model = build_decoder("gpt2")
    oto = OTO(model, {"input_ids": token_ids()})
    zero_units(oto, group_by_param(oto, "transformer.h.0.attn.c_attn.weight"), [1, 3])
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    attention = model.transformer.h[0].attn
    assert attention.split_size == 16 and attention.c_attn.weight.shape == (32, 48)


def test_build_logs_prunable_heads_per_layer_kind(caplog):
    model = build_decoder("llama_gqa")
    with caplog.at_level(logging.INFO, logger="only_train_once"):
        OTO(model, {"input_ids": token_ids()})
    messages = [r.getMessage() for r in caplog.records]
    assert "LlamaAttention: 4 of 4 heads prunable (2 of 2 groups)" in messages
    assert "LlamaMLP: 96 of 96 units prunable (2 of 2 groups)" in messages
    assert any("key/value cache (DynamicCache)" in m for m in messages)


@pytest.mark.slow
def test_phi3_fused_gate_up_projection_is_pruned_losslessly(tmp_path):
    model = build_decoder("phi3")
    ids = token_ids()
    oto = OTO(model, {"input_ids": ids})
    mlp = group_by_param(oto, "model.layers.0.mlp.gate_up_proj.weight")
    assert mlp.is_prunable and mlp.num_groups == 48  # gate and up halves pruned together, unit by unit
    for group in prunable_groups(oto):
        zero_units(oto, group, range(0, group.num_groups, 2))
    expected = logits(model, ids)
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    assert model.model.layers[0].mlp.gate_up_proj.weight.shape == (48, 32)
    assert torch.allclose(logits(model, ids), expected, atol=1e-5)
