"""construct_subnet: files, formats, reloading, float16 export, errors."""

import json
import os

import numpy as np
import pytest
import torch

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.subnet_construction import (SubnetConstructionError, load_compressed_weights, load_model)
from sanity_check.registry import BACKBONES
from tests.graph import models
from tests.helpers import max_difference, outputs

IMAGE = torch.randn(2, 3, 8, 8)


def zeroed_oto(model, dummy_input=IMAGE, seed=0):
    oto = OTO(model, dummy_input)
    np.random.seed(seed)
    oto.random_set_zero_groups(0.5)
    return oto


def test_file_names_paths_and_in_place_pruning(tmp_path):
    model = models.ConvBN().eval()
    oto = zeroed_oto(model)
    full = outputs(model, IMAGE)
    oto.construct_subnet(out_dir=str(tmp_path))
    assert oto.full_group_sparse_model_path == str(tmp_path / "ConvBN_full_group_sparse.pt")
    assert oto.compressed_model_path == str(tmp_path / "ConvBN_compressed.pt")
    for name in ("ConvBN_full_group_sparse.safetensors", "ConvBN_compressed.safetensors",
                 "ConvBN_compressed_subnet.json"):
        assert (tmp_path / name).exists()
    assert model.conv1.out_channels == 4 and model.bn1.num_features == 4 and model.conv2.in_channels == 4
    assert max_difference(full, outputs(model, IMAGE)) < 1e-5


def test_separate_directories_and_model_name(tmp_path):
    model = models.Residual().eval()
    model.name = "my_net"
    oto = zeroed_oto(model)
    oto.construct_subnet(full_group_sparse_model_dir=str(tmp_path / "full"),
                         compressed_model_dir=str(tmp_path / "small"))
    assert os.path.exists(tmp_path / "full" / "my_net_full_group_sparse.pt")
    assert os.path.exists(tmp_path / "small" / "my_net_compressed.pt")


def test_skip_saving_the_full_model(tmp_path):
    oto = zeroed_oto(models.ConvBN().eval())
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    assert oto.full_group_sparse_model_path is None
    assert not (tmp_path / "ConvBN_full_group_sparse.pt").exists()


def test_saved_models_reload_on_current_torch(tmp_path):
    model = models.Concat().eval()
    oto = zeroed_oto(model)
    oto.construct_subnet(out_dir=str(tmp_path))
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 6):
        with pytest.raises(Exception):
            torch.load(oto.compressed_model_path)  # torch >= 2.6 refuses pickled modules by default
    full, compressed = load_model(oto.full_group_sparse_model_path), load_model(oto.compressed_model_path)
    assert max_difference(outputs(full, IMAGE), outputs(compressed, IMAGE)) < 1e-5


def test_weights_only_form_rebuilds_the_compressed_architecture(tmp_path):
    torch.manual_seed(0)
    model = models.TokenMixer(models.SeparateQKVAttention()).eval()
    tokens = torch.randn(2, 5, 8)
    oto = zeroed_oto(model, tokens)
    oto.construct_subnet(out_dir=str(tmp_path))
    spec = json.load(open(tmp_path / "TokenMixer_compressed_subnet.json"))
    assert spec["attributes"]["attn"]["num_heads"] == model.attn.num_heads < 4
    fresh = load_compressed_weights(models.TokenMixer(models.SeparateQKVAttention()),
                                    str(tmp_path / "TokenMixer_compressed.safetensors"))
    assert max_difference(outputs(fresh, tokens), outputs(model, tokens)) == 0.0


def test_quantized_layers_keep_their_quantizer_parameters(tmp_path):
    torch.manual_seed(0)
    model = model_to_quantize_model(BACKBONES["vgg7_bn"].factory().eval(), quant_mode="weight_and_activation")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "quant" in n or "q_m" in n}
    bits = model.features[0].weight_bit
    oto = zeroed_oto(model, torch.randn(1, 3, 32, 32))
    oto.construct_subnet(out_dir=str(tmp_path))
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert type(model.features[0]).__name__ == "QuantizeConv2d" and model.features[0].weight_bit == bits


def test_export_float16_leaves_the_live_model_in_float32(tmp_path):
    model = models.ConvBN().eval()
    oto = zeroed_oto(model)
    oto.construct_subnet(out_dir=str(tmp_path), export_float16=True)
    assert model.conv1.weight.dtype == torch.float32
    assert load_model(oto.compressed_model_path).conv1.weight.dtype == torch.float16


def test_onnx_format_runs_in_onnxruntime(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = models.Concat().eval()
    oto = zeroed_oto(model)
    oto.construct_subnet(out_dir=str(tmp_path), ckpt_format="onnx")
    assert oto.compressed_model_path.endswith("Concat_compressed.onnx")
    session = onnxruntime.InferenceSession(oto.compressed_model_path, providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {session.get_inputs()[0].name: IMAGE.numpy()})
    assert np.abs(result - outputs(model, IMAGE)[0].numpy()).max() < 1e-5


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(RuntimeError, match="no graph"):
        OTO().construct_subnet(out_dir=str(tmp_path))
    oto = zeroed_oto(models.ConvBN().eval())
    with pytest.raises(ValueError, match="ckpt_format"):
        oto.construct_subnet(out_dir=str(tmp_path), ckpt_format="pickle")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises((PermissionError, FileExistsError, NotADirectoryError)):
        oto.construct_subnet(out_dir=str(blocker / "sub"))
    oto.model.conv1 = torch.nn.Conv2d(3, 5, 3, padding=1)
    with pytest.raises(ValueError, match="changed since OTO traced it"):
        oto.construct_subnet(out_dir=str(tmp_path))


def test_a_wrong_subnet_is_refused(tmp_path, monkeypatch):
    from only_train_once.subnet_construction import pruning_compression

    model = models.ConvBN().eval()
    oto = zeroed_oto(model)

    def sabotage(graph, model, plan, **options):
        spec = apply_plan(graph, model, plan, **options)
        with torch.no_grad():
            model.fc.bias.add_(1.0)
        return spec

    apply_plan = pruning_compression.apply_plan
    monkeypatch.setattr(pruning_compression, "apply_plan", sabotage)
    with pytest.raises(SubnetConstructionError, match="differs"):
        oto.construct_subnet(out_dir=str(tmp_path))


def test_safetensors_format_writes_the_weights_only_files_once(tmp_path):
    torch.manual_seed(0)
    model = models.TokenMixer(models.SeparateQKVAttention()).eval()
    tokens = torch.randn(2, 5, 8)
    oto = zeroed_oto(model, tokens)
    oto.construct_subnet(out_dir=str(tmp_path), ckpt_format="safetensors")
    assert sorted(os.listdir(tmp_path)) == ["TokenMixer_compressed.safetensors", "TokenMixer_compressed_subnet.json",
                                            "TokenMixer_full_group_sparse.safetensors"]
    assert oto.compressed_model_path == str(tmp_path / "TokenMixer_compressed.safetensors")
    assert oto.full_group_sparse_model_path == str(tmp_path / "TokenMixer_full_group_sparse.safetensors")
    fresh = load_compressed_weights(models.TokenMixer(models.SeparateQKVAttention()), oto.compressed_model_path)
    assert max_difference(outputs(fresh, tokens), outputs(model, tokens)) == 0.0
