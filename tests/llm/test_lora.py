"""LoRA through peft: GETA trains base weights and adapters; adapters merged into, or kept beside, the pruned base."""

import copy

import pytest
import torch

from only_train_once import OTO
from only_train_once.dependency_graph.adapters import FROZEN_REASON, RANK_REASON, lora_layers
from only_train_once.subnet_construction.lora import LoraMergeError
from tests.graph import models
from tests.helpers import group_by_param
from tests.llm.decoders import build_decoder, token_ids
from tests.thirdparty import import_or_skip

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_llama(unfreeze_base=True):
    peft = import_or_skip("peft")
    model = peft.get_peft_model(build_decoder("llama_gqa"),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0))
    torch.manual_seed(2)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)  # peft starts B at zero: make the adapters matter
        if unfreeze_base:
            parameter.requires_grad_(True)
    return model


def trained_with_geta(steps=4):
    """A LoRA Llama after a few GETA steps that prune half of its units; returns (model, oto, input ids)."""
    model = lora_llama()
    ids = token_ids(batch=2)
    oto = OTO(model, {"input_ids": ids})
    optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, target_group_sparsity=0.5, start_projection_step=0,
                         projection_steps=1, start_pruning_step=1, pruning_steps=2, pruning_periods=1)
    adapter = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    before = adapter.detach().clone()
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    model.eval()
    assert not torch.equal(adapter, before)  # the adapters were trained
    gate = model.base_model.model.model.layers[0].mlp.gate_proj
    zero_rows = gate.base_layer.weight.abs().sum(1) == 0
    assert zero_rows.any() and torch.equal(gate.lora_B["default"].weight.abs().sum(1) == 0, zero_rows)
    return model, oto, ids


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_adapters_give_the_merged_full_model(tmp_path):
    model, oto, ids = trained_with_geta()
    expected = logits(copy.deepcopy(model).merge_and_unload(), ids)
    parameters = sum(p.numel() for p in model.parameters())
    oto.construct_subnet(out_dir=str(tmp_path), merge_lora_to_base=True, save_full_group_sparse_model=False)
    assert not lora_layers(model)
    assert sum(p.numel() for p in model.parameters()) < parameters
    assert torch.allclose(logits(model, ids), expected, atol=1e-5)


@pytest.mark.slow
def test_separate_adapters_are_pruned_with_their_base_layers(tmp_path):
    model, oto, ids = trained_with_geta()
    expected = logits(copy.deepcopy(model).merge_and_unload(), ids)
    oto.construct_subnet(out_dir=str(tmp_path), unmerge_lora_to_base=True, save_full_group_sparse_model=False)
    layers = lora_layers(model)
    assert len(layers) == 14
    for layer in layers.values():
        base, down, up = layer.get_base_layer(), layer.lora_A["default"], layer.lora_B["default"]
        assert (down.in_features, up.out_features, down.out_features) == (base.in_features, base.out_features, 4)
        assert (layer.in_features, layer.out_features) == (base.in_features, base.out_features)
    assert any(layer.get_base_layer().out_features == 24 for layer in layers.values())
    assert torch.allclose(logits(model, ids), expected, atol=1e-5)
    assert torch.allclose(logits(model.merge_and_unload(), ids), expected, atol=1e-5)


def test_adapter_ranks_are_kept_and_frozen_base_weights_block_pruning():
    model = lora_llama(unfreeze_base=False)
    oto = OTO(model, {"input_ids": token_ids()})
    prefix = "base_model.model.model.layers.0."
    rank = group_by_param(oto, prefix + "self_attn.q_proj.lora_A.default.weight")
    assert not rank.is_prunable and RANK_REASON in rank.unprunable_reasons
    mlp = group_by_param(oto, prefix + "mlp.gate_proj.base_layer.weight")
    assert not mlp.is_prunable and FROZEN_REASON in mlp.unprunable_reasons


def test_merging_needs_adapters(tmp_path):
    oto = OTO(models.ConvBN().eval(), torch.randn(2, 3, 8, 8))
    with pytest.raises(LoraMergeError, match="peft"):
        oto.construct_subnet(out_dir=str(tmp_path), merge_lora_to_base=True)
