"""Backbones under the reference's names: sizes against published figures, shapes, configuration errors."""

import pytest
import torch
from backends import DemonetBatchnormPruning, DiffIRS3SNPE, DiffModelCIFAR, DiffModelDebug
from backends.diffusion import DDPMConfig
from torch import nn


def _millions(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_ddpm_cifar_config_gives_the_published_35_7m_parameters():
    """Ho et al. 2020 report 35.7 M parameters for their CIFAR-10 UNet; configs/cifar10.yml describes it."""
    assert round(_millions(DiffModelCIFAR()), 1) == 35.7


def test_ddpm_reads_the_timestep_from_the_extra_channel():
    model = DiffModelDebug().eval()
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        early = model(torch.cat([image, torch.full((1, 1, 32, 32), 0.0)], 1))
        late = model(torch.cat([image, torch.full((1, 1, 32, 32), 900.0)], 1))
    assert early.shape == (1, 3, 32, 32) and not torch.allclose(early, late)


def test_ddpm_config_rejects_widths_groupnorm_cannot_split():
    with pytest.raises(ValueError, match="multiple of 32"):
        DDPMConfig(image_size=32, in_channels=3, out_ch=3, ch=48, ch_mult=(1, 2), num_res_blocks=1,
                   attn_resolutions=(16,))


def test_diffir_parts_have_the_shapes_the_reference_script_feeds():
    generator = DiffIRS3SNPE(num_blocks=[1, 1, 1, 1], dim=16).G.eval()
    with torch.no_grad():
        encoded = generator.down_path(torch.rand(1, 48, 16, 16), torch.randn(1, 256))
        assert [tuple(t.shape) for t in encoded] == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 128, 2, 2)]
        assert generator.up_path(*encoded, torch.randn(1, 256)).shape == (1, 32, 16, 16)
        assert generator(torch.rand(1, 3, 64, 64), torch.randn(1, 256)).shape == (1, 3, 64, 64)


def test_batchnorm_demo_checks_the_concatenated_channels():
    model = DemonetBatchnormPruning(13, 32, 256, 5, 3, nn.LeakyReLU(), False, 256).eval()
    with torch.no_grad():
        assert model([torch.rand(1, c, 32, 32) for c in (3, 4, 6)]).shape == (1, 256, 8, 8)  # 2 x width 128, /4
    with pytest.raises(ValueError, match="13"):
        model([torch.rand(1, 3, 32, 32)])
