"""Deployable exports (oto.export): each target reproduces the compressed model, runs at other batch sizes, and
the ``torch`` target needs nothing from this library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.export import DeploymentError, export_deployable, load_deployed
from only_train_once.export import deploy as deploy_module
from only_train_once.export.onnx_io import optimized_op_types, run_onnx, session
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.quantization.rounding import ActivationRoundingBypassed
from tests.export.common import calibrate_in_eval, set_mixed_bits
from tests.export.deploy_models import attention_net, tiny_cnn
from tests.helpers import outputs
from tests.thirdparty import import_or_skip

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Largest relative difference (to the output's peak) allowed for the float targets on inputs they were not
#: verified on: a few activation rounding flips.
FLOAT_RELATIVE = 2e-2
#: The same for the integer target, whose convolution outputs are requantized to uint8 (module int8_layers).
INT8_RELATIVE = 0.1


def compress(model: nn.Module, dummy_input, out_dir) -> OTO:
    """Weight+activation quantization at <= 8 bits (nonlinear quantizer, exponents 1, 0.8, 1.25 cycled), half
    of the groups zeroed at random, then construct_subnet."""
    model_to_quantize_model(model, quant_mode="weight_and_activation")
    calibrate_in_eval(model, dummy_input)
    set_mixed_bits(model, (4, 6, 8), (6, 8))
    oto = OTO(model, dummy_input)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(out_dir), save_full_group_sparse_model=False)
    return oto


def relative_difference(reference, candidate) -> float:
    peak = max(t.abs().max().item() for t in reference)
    assert [tuple(t.shape) for t in reference] == [tuple(t.shape) for t in candidate]
    return max((a.double() - b.double()).abs().max().item() for a, b in zip(reference, candidate)) / peak


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy_cnn")
    model, dummy = tiny_cnn(), torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    oto = compress(model, dummy, folder)
    paths = oto.export(str(folder / "deploy"))
    return model, dummy, paths


def test_every_target_reproduces_the_compressed_cnn_at_batch_1_and_3(cnn_export):
    model, _, paths = cnn_export
    deployed = torch.load(paths["torch"], weights_only=False)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 12, 12, generator=torch.Generator().manual_seed(10 + batch))
        reference = outputs(model, x)
        assert relative_difference(reference, outputs(deployed, x)) <= FLOAT_RELATIVE
        assert relative_difference(reference, run_onnx(paths["onnx"], x)) <= FLOAT_RELATIVE
        assert relative_difference(reference, run_onnx(paths["onnx_int8"], x)) <= INT8_RELATIVE


def test_onnx_targets_have_a_dynamic_batch_axis(cnn_export):
    _, _, paths = cnn_export
    for target in ("onnx", "onnx_int8"):
        assert session(paths[target]).get_inputs()[0].shape[0] == "batch"


def test_batchnorm_is_folded_and_quantized_layers_are_standard(cnn_export):
    _, _, paths = cnn_export
    deployed = torch.load(paths["torch"], weights_only=False)
    kinds = {type(m) for m in deployed.modules()}
    assert nn.BatchNorm2d not in kinds
    assert kinds >= {nn.Conv2d, nn.Linear}
    assert all(type(m).__module__.startswith(("torch.", "tests.")) for m in deployed.modules())
    with open(paths["report"], encoding="utf-8") as handle:
        assert json.load(handle)["folded_batchnorm"] == 3


def load_without_library(pt_path: str, inputs, expected, folder) -> None:
    """Unpickle ``pt_path`` in a subprocess that cannot import only_train_once; its output on ``inputs`` must
    equal ``expected`` (within 1e-5) and no module of the library may have been imported."""
    data = folder / "io.pt"
    torch.save((inputs, expected), data)
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "only_train_once":
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import torch
        model = torch.load({pt_path!r}, weights_only=False)
        x, expected = torch.load({str(data)!r})
        with torch.no_grad():
            difference = (model(x) - expected).abs().max().item()
        assert difference <= 1e-5, difference
        assert not [m for m in sys.modules if m.split(".")[0] == "only_train_once"]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_torch_target_loads_and_runs_without_only_train_once(cnn_export, tmp_path):
    model, dummy, paths = cnn_export
    load_without_library(paths["torch"], dummy, outputs(model, dummy)[0], tmp_path)


def test_pruned_multihead_attention_deploys_as_plain_torch(tmp_path):
    model = attention_net()
    dummy = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(0))
    compress(model, dummy, tmp_path)
    assert type(model.attn).__name__ == "PrunedMultiheadAttention"  # heads were pruned: torch's class cannot run it
    assert model.attn.num_heads < 4
    oto_paths = export_deployable(model, dummy, str(tmp_path / "deploy"))
    deployed = torch.load(oto_paths["torch"], weights_only=False)
    assert not [type(m) for m in deployed.modules() if type(m).__module__.startswith("only_train_once")]
    x = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(1))
    reference = outputs(model, x)
    assert relative_difference(reference, outputs(deployed, x)) <= FLOAT_RELATIVE
    assert relative_difference(reference, run_onnx(oto_paths["onnx"], x)) <= FLOAT_RELATIVE
    load_without_library(oto_paths["torch"], x, outputs(deployed, x)[0], tmp_path)
    tokens = torch.zeros(3, 6, deployed.embed.out_features)
    with pytest.raises(AssertionError, match="need_weights"):  # the call it was specialised on, and no other
        deployed.attn(tokens, tokens, tokens, need_weights=True)


def test_weights_only_form_rebuilds_the_torch_target(cnn_export):
    model, dummy, paths = cnn_export
    weights = paths["torch"].replace(".pt", ".safetensors")
    rebuilt = load_deployed(tiny_cnn(seed=1), weights)
    deployed = torch.load(paths["torch"], weights_only=False)
    x = torch.randn(2, 3, 12, 12)
    assert torch.equal(outputs(rebuilt, x)[0], outputs(deployed, x)[0])


def test_int8_graph_runs_integer_kernels_after_onnxruntime_optimization(cnn_export):
    _, _, paths = cnn_export
    operators = optimized_op_types(paths["onnx_int8"])
    assert operators.count("QLinearConv") == 3  # stem, depthwise and pointwise convolutions
    assert "Conv" not in operators  # no DequantizeLinear -> float Conv left
    assert operators.count("QGemm") == 1 and "Gemm" not in operators  # the 2-D head, no DequantizeLinear -> Gemm
    with open(paths["report"], encoding="utf-8") as handle:
        report = json.load(handle)["targets"]["onnx_int8"]
    assert report["integer_layers"] == ["dw", "head", "pw", "stem"] and report["integer_kernels"]["QLinearConv"] == 3
    assert report["integer_kernels"]["QGemm"] == 1


def test_a_wrong_export_is_an_error_naming_the_layer_and_writes_nothing(tmp_path, monkeypatch):
    model, dummy = tiny_cnn(), torch.randn(1, 3, 12, 12)
    oto = compress(model, dummy, tmp_path)
    fold = deploy_module.fold_batchnorm

    def fold_forgetting_the_shift(layer, norm):
        factor = fold(layer, norm)
        with torch.no_grad():
            layer.bias.zero_()
        return factor

    monkeypatch.setattr(deploy_module, "fold_batchnorm", fold_forgetting_the_shift)
    with pytest.raises(DeploymentError, match="first diverging layer: bn0"):
        oto.export(str(tmp_path / "deploy"))
    assert not os.path.exists(tmp_path / "deploy" / "TinyCNN_deploy.pt")


def _tiny_llama(transformers):
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_gqa_decoder_lm_exports_every_target_with_dynamic_batch_and_sequence(tmp_path):
    transformers = import_or_skip("transformers")
    model = _tiny_llama(transformers)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(0))
    dummy = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    oto = compress(model, dummy, tmp_path)
    paths = oto.export(str(tmp_path / "deploy"))
    deployed = torch.load(paths["torch"], weights_only=False)
    other = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(1))
    x = {"input_ids": other, "attention_mask": torch.ones_like(other)}
    reference = [model(**x, use_cache=False).logits.detach()]
    assert reference[0].shape == (3, 7, 64)  # logits for every position
    assert relative_difference(reference, [deployed(**x, use_cache=False).logits.detach()]) <= FLOAT_RELATIVE
    for target, bound in (("onnx", FLOAT_RELATIVE), ("onnx_int8", INT8_RELATIVE)):
        assert relative_difference(reference, run_onnx(paths[target], x)[:1]) <= bound
    assert "MatMulIntegerToFloat" in optimized_op_types(paths["onnx_int8"])
    generated = deployed.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 14)


@pytest.mark.slow
def test_transformer_encoder_exports_every_target(tmp_path):
    transformers = import_or_skip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(0))
    dummy = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    oto = compress(model, dummy, tmp_path)
    paths = oto.export(str(tmp_path / "deploy"))
    other = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(1))
    x = {"input_ids": other, "attention_mask": torch.ones_like(other)}
    reference = [model(**x).logits.detach()]
    deployed = torch.load(paths["torch"], weights_only=False)
    assert relative_difference(reference, [deployed(**x).logits.detach()]) <= FLOAT_RELATIVE
    for target, bound in (("onnx", FLOAT_RELATIVE), ("onnx_int8", INT8_RELATIVE)):
        assert relative_difference(reference, run_onnx(paths[target], x)[:1]) <= bound
    assert "MatMulIntegerToFloat" in optimized_op_types(paths["onnx_int8"])


def test_dropping_activation_quantization_gives_the_rounding_free_model(cnn_export, tmp_path):
    model, dummy, _ = cnn_export
    written = export_deployable(model, dummy, str(tmp_path), targets=("torch",), keep_activation_quantization=False)
    deployed = torch.load(written["torch"], weights_only=False)
    assert not any(m._forward_pre_hooks for m in deployed.modules())
    x = torch.randn(3, 3, 12, 12)
    with ActivationRoundingBypassed():
        reference = outputs(model, x)
    assert relative_difference(reference, outputs(deployed, x)) <= 1e-5


def test_gpt2_transposed_linear_layers_deploy_as_linear(tmp_path):
    transformers = import_or_skip("transformers")
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(0))
    dummy = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    oto = compress(model, dummy, tmp_path)
    paths = oto.export(str(tmp_path / "deploy"))
    deployed = torch.load(paths["torch"], weights_only=False)
    kinds = {type(m).__name__ for m in deployed.modules()}
    assert "Conv1D" not in kinds and "Linear" in kinds
    other = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(1))
    x = {"input_ids": other, "attention_mask": torch.ones_like(other)}
    reference = [model(**x, use_cache=False).logits.detach()]
    assert relative_difference(reference, [deployed(**x, use_cache=False).logits.detach()]) <= FLOAT_RELATIVE
    for target, bound in (("onnx", FLOAT_RELATIVE), ("onnx_int8", INT8_RELATIVE)):
        assert relative_difference(reference, run_onnx(paths[target], x)[:1]) <= bound
    torch.manual_seed(0)
    rebuilt = load_deployed(transformers.GPT2LMHeadModel(config), paths["torch"].replace(".pt", ".safetensors"))
    assert torch.equal(rebuilt(**x, use_cache=False).logits, deployed(**x, use_cache=False).logits)
