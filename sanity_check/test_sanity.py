"""Every registered backbone, float / weight-only / weight+activation: the compressed model is lossless."""

import pytest

from sanity_check.harness import MODES, run_case
from sanity_check.registry import BACKBONES, list_backbones

ONNX_SUBSET = ("vgg7_bn", "resnet20_cifar10", "demonet_concat_case1", "bert", "llama", "vit_tiny")
LIGHT = list_backbones()
# The 256x256 LSUN UNets (114 M parameters) take tens of minutes per mode on a CPU: run them by name
# (python -m sanity_check diffmodel_bedroom); test_reference_scripts.py runs them once in float (slow).
BY_NAME_ONLY = ("diffmodel_bedroom", "diffmodel_church")
HEAVY = [name for name in list_backbones(include_heavy=True) if name not in LIGHT and name not in BY_NAME_ONLY]
MARKED = [name for name in LIGHT
          if BACKBONES[name].unprunable_param_names or BACKBONES[name].unprunable_param_pattern]


def _check(result):
    assert not result.error, result.error
    assert result.passed, f"max |full - compressed| = {result.max_diff} (onnx {result.onnx_max_diff})"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LIGHT)
def test_backbone_subnet_is_lossless(name, mode, tmp_path):
    _check(run_case(BACKBONES[name], mode, str(tmp_path), visualize=mode == "float"))


@pytest.mark.parametrize("mode", ["float", "weight_and_activation"])
@pytest.mark.parametrize("name", MARKED)
def test_backbone_without_the_reference_marks_is_lossless(name, mode, tmp_path):
    """The reference tests mark some groups unprunable by hand; without those marks the analyzer must still only
    find groups that can really be removed."""
    _check(run_case(BACKBONES[name], mode, str(tmp_path), visualize=False, reference_marks=False))


@pytest.mark.parametrize("mode", ["float", "weight_and_activation"])
@pytest.mark.parametrize("name", ONNX_SUBSET)
def test_onnx_compressed_model_matches_in_onnxruntime(name, mode, tmp_path):
    _check(run_case(BACKBONES[name], mode, str(tmp_path), visualize=False, onnx=True))


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [None, 0.3, 0.7, 0.9])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LIGHT)
def test_backbone_subnet_is_lossless_over_seeds_and_sparsities(name, mode, seed, sparsity, tmp_path):
    _check(run_case(BACKBONES[name], mode, str(tmp_path), seed=seed, sparsity=sparsity, visualize=False))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", HEAVY)
def test_heavy_backbone_subnet_is_lossless(name, mode, tmp_path):
    _check(run_case(BACKBONES[name], mode, str(tmp_path), visualize=False))
