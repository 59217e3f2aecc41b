"""Hugging Face out and in: construct_subnet(export_huggingface_format=True) and only_train_once.load_pretrained."""

import json
import os
import subprocess
import sys

import pytest
import torch

from only_train_once import OTO, load_pretrained
from only_train_once.subnet_construction.huggingface import SUBNET_FILE, HuggingFaceExportError
from tests.graph import models
from tests.helpers import flip_bit, prunable_groups, restore_byte, zero_units
from tests.llm.decoders import build_decoder, token_ids
from tests.thirdparty import import_or_skip

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATE = dict(max_new_tokens=6, do_sample=False)


def compress(layout, out_dir, uneven, dtype=torch.float32, **options):
    """A decoder with half of every prunable group zeroed (``uneven``: one unit only in the first layer's groups),
    compressed and exported; returns the compressed model, its input ids and the exported directory."""
    model = build_decoder(layout).to(dtype)
    ids = token_ids()
    oto = OTO(model, {"input_ids": ids})
    for index, group in enumerate(prunable_groups(oto)):
        zero_units(oto, group, [0] if uneven and index < 2 else range(0, group.num_groups, 2))
    oto.construct_subnet(out_dir=str(out_dir), export_huggingface_format=True, save_full_group_sparse_model=False,
                         **options)
    return model, ids, oto.compressed_model_path


def generate_in_fresh_process(path, ids):
    script = ("import json, sys, torch; from tests.thirdparty import import_module; import_module('transformers'); "
              "from only_train_once import load_pretrained; "
              f"model = load_pretrained({path!r}); ids = torch.tensor({ids.tolist()}); "
              f"print(json.dumps(model.generate(ids, max_new_tokens={GENERATE['max_new_tokens']}, "
              "do_sample=False).tolist()))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_uneven_gpt2_reloads_in_a_fresh_process_and_generates_the_same_tokens(tmp_path):
    model, ids, path = compress("gpt2", tmp_path, uneven=True)
    assert sorted(os.listdir(path)) == ["config.json", "generation_config.json", "model.safetensors", SUBNET_FILE]
    layers = model.transformer.h
    assert layers[0].mlp.c_fc.nf != layers[1].mlp.c_fc.nf  # uneven: config.json cannot say it
    assert not json.load(open(os.path.join(path, SUBNET_FILE)))["uniform"]
    expected = model.generate(ids, **GENERATE).tolist()
    assert generate_in_fresh_process(path, ids) == expected


def test_phi3_with_a_different_head_count_per_layer_reloads_and_generates_the_same_tokens(tmp_path):
    model = build_decoder("phi3")
    ids = token_ids()
    oto = OTO(model, {"input_ids": ids})
    heads = [g for g in prunable_groups(oto) if any(n.endswith("self_attn.qkv_proj.weight") for n in g.param_names)]
    assert len(heads) == 2
    zero_units(oto, heads[0], [1])  # layer 0 keeps one key/value head (two query heads), layer 1 keeps both
    expected = model.generate(ids, **GENERATE).tolist()
    oto.construct_subnet(out_dir=str(tmp_path), export_huggingface_format=True, save_full_group_sparse_model=False)
    first, second = (layer.self_attn for layer in model.model.layers)
    assert (first.config.num_attention_heads, first.num_key_value_heads) == (2, 1)
    assert (second.config.num_attention_heads, second.num_key_value_heads) == (4, 2)
    assert model.generate(ids, **GENERATE).tolist() == expected
    assert generate_in_fresh_process(oto.compressed_model_path, ids) == expected


@pytest.mark.slow
def test_multi_query_llama_with_different_query_heads_per_layer_reloads_and_generates_the_same_tokens(tmp_path):
    model = build_decoder("llama_mqa")
    ids = token_ids()
    oto = OTO(model, {"input_ids": ids})
    heads = [g for g in prunable_groups(oto) if any(n.endswith("self_attn.q_proj.weight") for n in g.param_names)]
    zero_units(oto, heads[0], [1, 2, 3])  # layer 0 keeps one query head, layer 1 all four
    expected = model.generate(ids, **GENERATE).tolist()
    oto.construct_subnet(out_dir=str(tmp_path), export_huggingface_format=True, save_full_group_sparse_model=False)
    assert [layer.self_attn.num_key_value_groups for layer in model.model.layers] == [1, 4]
    assert generate_in_fresh_process(oto.compressed_model_path, ids) == expected


def test_uniform_pruning_rewrites_the_config_so_from_pretrained_alone_works(tmp_path):
    transformers = import_or_skip("transformers")
    model, ids, path = compress("llama_gqa", tmp_path, uneven=False)
    config = model.config
    assert (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads) == (24, 2, 1)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(path)
    assert reloaded.generate(ids, **GENERATE).tolist() == model.generate(ids, **GENERATE).tolist()


@pytest.mark.slow
def test_float16_export_and_bfloat16_models_keep_their_dtype(tmp_path):
    model, ids, path = compress("qwen2", tmp_path / "fp16", uneven=True, export_float16=True)
    reloaded = load_pretrained(path)
    assert reloaded.model.embed_tokens.weight.dtype == torch.float16
    assert reloaded.generate(ids, **GENERATE).shape == (1, ids.shape[1] + GENERATE["max_new_tokens"])
    model, ids, path = compress("llama_gqa", tmp_path / "bf16", uneven=True, dtype=torch.bfloat16, verify=False)
    reloaded = load_pretrained(path)
    assert reloaded.lm_head.weight.dtype == torch.bfloat16
    assert reloaded.generate(ids, **GENERATE).tolist() == model.generate(ids, **GENERATE).tolist()


def test_a_model_without_hugging_face_class_is_refused(tmp_path):
    model = models.ConvBN().eval()
    oto = OTO(model, torch.randn(2, 3, 8, 8))
    with pytest.raises(HuggingFaceExportError, match="PreTrainedModel"):
        oto.construct_subnet(out_dir=str(tmp_path), export_huggingface_format=True)


def test_a_damaged_exported_directory_is_refused_naming_the_file(tmp_path):
    from only_train_once.subnet_construction.integrity import CorruptFileError

    _, _, path = compress("llama_gqa", tmp_path, uneven=True)
    weights = os.path.join(path, "model.safetensors")
    last = flip_bit(weights)  # one bit of the last tensor's data: the header stays valid
    with pytest.raises(CorruptFileError, match="does not match its checksum"):
        load_pretrained(path)
    restore_byte(weights, last)
    load_pretrained(path)  # restored: loads again
    subnet = os.path.join(path, SUBNET_FILE)
    with open(subnet, encoding="utf-8") as handle:
        record = json.load(handle)
    record["uniform"] = not record["uniform"]
    with open(subnet, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    with pytest.raises(CorruptFileError, match=SUBNET_FILE):
        load_pretrained(path)
    open(weights, "wb").close()
    with pytest.raises(CorruptFileError, match="model.safetensors is empty"):
        _restore_record_and_load(subnet, record, path)


def _restore_record_and_load(subnet, record, path):
    record["uniform"] = not record["uniform"]
    with open(subnet, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    return load_pretrained(path)
