"""compress_mode="erase" (zero groups kept in place) and the eval mode of the saved models."""

import numpy as np
import torch
from torch import nn

from only_train_once import OTO
from sanity_check.backends import resnet20_cifar10

IMAGE = torch.randn(1, 3, 32, 32)


def _zero_output_channels(model: nn.Module) -> dict:
    """For every conv, the indices of its output channels whose weights are all exactly zero."""
    return {name: torch.nonzero(module.weight.detach().flatten(1).abs().sum(1) == 0).flatten().tolist()
            for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}


def _erased_oto(tmp_path):
    torch.manual_seed(0)
    model = resnet20_cifar10().eval()
    oto = OTO(model, IMAGE, compress_mode="erase")
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    zero_channels = _zero_output_channels(model)
    with torch.no_grad():
        expected = model(IMAGE)
    oto.construct_subnet(out_dir=str(tmp_path))
    return oto, model, shapes, zero_channels, expected


def test_erase_mode_keeps_the_architecture_and_the_zero_groups(tmp_path):
    oto, model, shapes, zero_channels, expected = _erased_oto(tmp_path)
    erased = torch.load(oto.compressed_model_path, weights_only=False)
    full = torch.load(oto.full_group_sparse_model_path, weights_only=False)
    assert {name: tuple(t.shape) for name, t in erased.state_dict().items()} == shapes
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == shapes
    assert sum(len(v) for v in zero_channels.values()) > 0
    assert _zero_output_channels(erased) == zero_channels
    with torch.no_grad():
        assert torch.equal(erased(IMAGE), expected)
        assert torch.equal(full(IMAGE), expected)


def test_erase_mode_zeroes_exactly_the_units_prune_mode_removes(tmp_path):
    oto, _, _, zero_channels, _ = _erased_oto(tmp_path / "erase")
    torch.manual_seed(0)
    model = resnet20_cifar10().eval()
    pruned = OTO(model, IMAGE)
    np.random.seed(0)
    pruned.random_set_zero_groups(0.5)
    pruned.construct_subnet(out_dir=str(tmp_path / "prune"))
    erased = torch.load(oto.compressed_model_path, weights_only=False)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            kept = erased.get_submodule(name).out_channels - len(zero_channels[name])
            assert module.out_channels == kept, name


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))))


def test_saved_models_load_in_eval_mode_and_the_live_model_keeps_its_modes(tmp_path):
    """The reference's sanity scripts compare torch.load-ed models without calling eval(): with Dropout and
    BatchNorm that comparison is only deterministic if both files hold eval-mode models."""
    model = DropoutNet().train()
    model.bn.eval()
    oto = OTO(model, IMAGE)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    full = torch.load(oto.full_group_sparse_model_path, weights_only=False)
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    assert not any(m.training for m in full.modules()) and not any(m.training for m in compressed.modules())
    assert model.training and model.drop.training and not model.bn.training
    assert (full(IMAGE) - compressed(IMAGE)).abs().max().item() <= 1e-5
