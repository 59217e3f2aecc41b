"""The reference's own sanity scripts, run as they are written: each backbone is built with the reference's exact
constructor arguments and dummy inputs (``from backends import ...``) and goes through the reference's pattern:
OTO, marks, visualize, metrics, random zero groups, ``construct_subnet``, ``torch.load`` of both files (without
calling ``eval()``: the files must hold eval-mode models), and the maximum output difference.

Tolerances: the reference's where its script asserts one tighter than 1e-3 or equal, otherwise 1e-4 (its
scripts for DDPM and DiffIR assert nothing; in_case3's 3.0 and DiffModelDebug's 1e-2 are loose bounds that
would hide a broken subnet). Heavy models (224x224 transformers, big UNets, SAM, 512x512 inputs) are slow.
"""

import os

import numpy as np
import pytest
import torch
from backends import (
    DemoNetGroupConvCase1,
    DemoNetInstanceNorm2DCase3,
    DemonetBatchnormPruning,
    DiffIRS3SNPE,
    DiffModelBedroom,
    DiffModelCeleba,
    DiffModelChurch,
    DiffModelCIFAR,
    DiffModelDebug,
    TinyUNet,
)
from backends.vision_transformer.DeiT import deit_tiny_patch16_224
from backends.vision_transformer.PVT import pvt_v2_b0
from backends.vision_transformer.Swin import swin_tiny_patch4_window7_224
from torch import nn

from only_train_once import OTO
from only_train_once.dependency_graph.pruning_dependency import post_process_chunk_node  # noqa: F401 (test_dit_sr)
from tests.thirdparty import import_or_skip


def _call(model, dummy_input):
    """The reference scripts' call: a tuple is unpacked, a tensor or list is passed as one argument."""
    return model(*dummy_input) if isinstance(dummy_input, tuple) else model(dummy_input)


def _tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "last_hidden_state"):
        return [output.last_hidden_state]
    return [t for t in output if isinstance(t, torch.Tensor)]


def run_reference_pattern(model, dummy_input, out_dir, tolerance, unprunable=(), sparsity=None, seed=0,
                          visualize=True, call_input=None):
    """The reference's sanity-test body; returns the maximum output difference (asserted within tolerance)."""
    oto = OTO(model, dummy_input)
    if unprunable:
        oto.mark_unprunable_by_param_names(list(unprunable))
    if visualize:
        oto.visualize(view=False, out_dir=str(out_dir), display_params=True)
        assert any(name.endswith(".gv") for name in os.listdir(out_dir))
    full_flops = oto.compute_flops(in_million=True)["total"]
    full_params = oto.compute_num_params(in_million=True)
    np.random.seed(seed)
    oto.random_set_zero_groups(target_group_sparsity=sparsity)
    oto.construct_subnet(out_dir=str(out_dir))
    full_model = torch.load(oto.full_group_sparse_model_path, weights_only=False)
    compressed_model = torch.load(oto.compressed_model_path, weights_only=False)
    call_input = dummy_input if call_input is None else call_input
    full_outputs = _tensors(_call(full_model, call_input))
    compressed_outputs = _tensors(_call(compressed_model, call_input))
    assert [t.shape for t in full_outputs] == [t.shape for t in compressed_outputs]
    difference = max(torch.max(torch.abs(a - b)).item() for a, b in zip(full_outputs, compressed_outputs))
    assert difference <= tolerance, f"max |full - compressed| = {difference:.3g} > {tolerance}"
    compressed_oto = OTO(compressed_model, dummy_input)
    assert compressed_oto.compute_num_params(in_million=True) <= full_params
    assert compressed_oto.compute_flops(in_million=True)["total"] <= full_flops
    return difference


# -- fast enough for the default suite ------------------------------------------------------------------
def test_in_case3(tmp_path):
    run_reference_pattern(DemoNetInstanceNorm2DCase3(), torch.rand(1, 3, 32, 32), tmp_path, 1e-4)


def test_tinyunet(tmp_path):
    """The reference calls the loaded models with the (x, t) tuple as one argument."""
    dummy_input = (torch.randn(1, 3, 64, 64), torch.ones((1,)).long())
    run_reference_pattern(TinyUNet(), dummy_input, tmp_path, 1e-4, call_input=(dummy_input,))


@pytest.mark.slow
def test_diffmodel_debug(tmp_path):
    run_reference_pattern(DiffModelDebug(), torch.rand(1, 4, 32, 32), tmp_path, 1e-4)


# -- slow: the reference's full-size inputs -------------------------------------------------------------
@pytest.mark.slow
def test_batchnorm_case1(tmp_path):
    model = DemonetBatchnormPruning(13, 32, 256, 5, 3, nn.LeakyReLU(), False, 256)
    dummy_input = [torch.rand(1, 3, 256, 256), torch.rand(1, 4, 256, 256), torch.rand(1, 6, 256, 256)]
    oto = OTO(model, dummy_input)
    for node_group in oto._graph.node_groups.values():  # the reference marks the decoder by editing the groups
        if any("decoder" in name for node in node_group.nodes.values() for name in node.param_names):
            node_group.is_prunable = False
    np.random.seed(0)
    oto.random_set_zero_groups()
    oto.construct_subnet(out_dir=str(tmp_path))
    full_model = torch.load(oto.full_group_sparse_model_path, weights_only=False)
    compressed_model = torch.load(oto.compressed_model_path, weights_only=False)
    assert torch.max(torch.abs(full_model(dummy_input) - compressed_model(dummy_input))) <= 1e-4


@pytest.mark.slow
def test_groupconv_case1(tmp_path):
    dummy_input = (torch.rand(1, 3, 512, 512), torch.rand(1, 3, 512, 512), torch.rand(1, 384, 16, 16),
                   torch.rand(1, 64, 16, 16))
    run_reference_pattern(DemoNetGroupConvCase1(norm_type="in", affine=True), dummy_input, tmp_path, 1e-3,
                          unprunable=("conv_1.conv1.weight", "conv_5.conv2.weight", "conv_6.conv1.weight"))


@pytest.mark.slow
@pytest.mark.parametrize("factory, size, sparsity", [(DiffModelCIFAR, 32, 0.5), (DiffModelCeleba, 64, None),
                                                     (DiffModelBedroom, 256, None), (DiffModelChurch, 256, None)])
def test_diffmodel(factory, size, sparsity, tmp_path):
    run_reference_pattern(factory(), torch.rand(1, 4, size, size), tmp_path, 1e-4, sparsity=sparsity,
                          visualize=False)


@pytest.mark.slow
def test_dit_sr_up_path(tmp_path):
    model = DiffIRS3SNPE(num_blocks=[2, 1, 1, 1])
    dummy_input = (torch.randn(1, 64, 64, 64), torch.randn(1, 128, 32, 32), torch.randn(1, 256, 16, 16),
                   torch.randn(1, 512, 8, 8), torch.randn(1, 256))
    run_reference_pattern(model.G.up_path, dummy_input, tmp_path, 1e-4, visualize=False)


@pytest.mark.slow
def test_dit_sr_down_path(tmp_path):
    model = DiffIRS3SNPE(num_blocks=[2, 1, 1, 1])
    run_reference_pattern(model.G.down_path, (torch.rand(1, 48, 56, 56), torch.randn(1, 256)), tmp_path, 1e-4,
                          unprunable=("down1_2.body.0.weight", "down2_3.body.0.weight", "down3_4.body.0.weight"))


@pytest.mark.slow
def test_dit_sr(tmp_path):
    run_reference_pattern(DiffIRS3SNPE().G, (torch.rand(1, 3, 256, 256), torch.rand(1, 256)), tmp_path, 1e-4,
                          visualize=False, unprunable=("down_path.down1_2.body.0.weight",
                                                       "down_path.down2_3.body.0.weight",
                                                       "down_path.down3_4.body.0.weight"))


@pytest.mark.slow
@pytest.mark.parametrize("factory, unprunable", [
    (deit_tiny_patch16_224, ("patch_embed.proj.weight", "pos_embed")),
    (pvt_v2_b0, ("patch_embed.proj.weight",)),
])
def test_vision_transformer(factory, unprunable, tmp_path):
    model = factory(pretrained=False, num_classes=1000)
    model.head = nn.Linear(model.head.in_features, 10)
    run_reference_pattern(model, torch.rand(1, 3, 224, 224), tmp_path, 1e-4, unprunable=unprunable, sparsity=0.8)


@pytest.mark.slow
def test_swin(tmp_path):
    model = swin_tiny_patch4_window7_224(pretrained=False, num_classes=1000)
    model.head = nn.Linear(model.head.in_features, 10)
    unprunable = ["patch_embed.proj.weight"] + [name for name, _ in model.named_parameters() if "attn.qkv." in name]
    run_reference_pattern(model, torch.rand(1, 3, 224, 224), tmp_path, 1e-4, unprunable=unprunable, sparsity=0.8)


@pytest.mark.slow
def test_vgg16bn(tmp_path):
    """torchvision's vgg16_bn has Dropout: the loaded models must be in eval mode for the comparison."""
    models = import_or_skip("torchvision.models")
    run_reference_pattern(models.vgg16_bn(), torch.rand(1, 3, 224, 224), tmp_path, 1e-4, visualize=False)


@pytest.mark.slow
def test_sam_vision_encoder(tmp_path):
    import_or_skip("transformers")
    from backends import SamConfig, SamModel

    config = SamConfig()
    config.vision_config.num_hidden_layers = 1
    config.mask_decoder_config.num_hidden_layers = 1
    config.mask_decoder_config.num_multimask_outputs = 1
    model = SamModel(config)
    run_reference_pattern(model.vision_encoder, torch.randn(1, 3, 1024, 1024), tmp_path, 1e-4, visualize=False,
                          unprunable=("pos_embed", "layers.0.attn.qkv.weight", "neck.layer_norm1.weight"))


@pytest.mark.slow
def test_sam_mask_decoder(tmp_path):
    import_or_skip("transformers")
    from backends import SamConfig, SamModel

    model = SamModel(SamConfig())
    dummy_input = (torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64), torch.randn(1, 1, 1, 256),
                   torch.randn(1, 256, 64, 64), True, None, None, None)
    run_reference_pattern(model.mask_decoder, dummy_input, tmp_path, 1e-4)
