"""Files: checksums verified on load, one clear error for damaged files, unpicklable models, no partial files."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.optimizer.utils import load_checkpoint, save_checkpoint
from only_train_once.subnet_construction import CorruptFileError, load_compressed_weights, load_model
from tests.helpers import max_difference, outputs

IMAGES = torch.randn(2, 3, 6, 6)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def compressed(tmp_path, model=None):
    torch.manual_seed(0)
    model = model or ConvNet()
    oto = OTO(model, IMAGES)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))
    return oto, model


def flip_a_byte_near_the_end(path):
    """Tensor data sits at the end of safetensors and .pt files (the .pt checksum record follows the data)."""
    data = bytearray(open(path, "rb").read())
    position = len(data) - 60 if path.endswith(".safetensors") else data.rfind(b"data/0") - 200
    data[position] ^= 0x10
    open(path, "wb").write(bytes(data))


def test_a_flipped_bit_in_the_weights_is_an_error_naming_the_file(tmp_path):
    oto, _ = compressed(tmp_path)
    weights = oto.compressed_model_path.replace(".pt", ".safetensors")
    flip_a_byte_near_the_end(weights)
    with pytest.raises(CorruptFileError, match="ConvNet_compressed.safetensors.*checksum"):
        load_compressed_weights(ConvNet(), weights)


def test_a_flipped_bit_in_a_whole_module_file_is_an_error(tmp_path):
    oto, model = compressed(tmp_path)
    assert max_difference(outputs(load_model(oto.compressed_model_path), IMAGES), outputs(model, IMAGES)) == 0
    data = bytearray(open(oto.compressed_model_path, "rb").read())
    # the first float of the conv weight: find its bytes in the archive and change them
    first = model.conv.weight.detach().reshape(-1)[:4].numpy().tobytes()
    position = bytes(data).find(first)
    assert position > 0
    data[position] ^= 0x01
    open(oto.compressed_model_path, "wb").write(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum"):
        load_model(oto.compressed_model_path)


def test_an_edited_subnet_description_is_an_error(tmp_path):
    oto, _ = compressed(tmp_path)
    spec = oto.compressed_model_path.replace(".pt", "_subnet.json")
    text = open(spec).read()
    open(spec, "w").write(text.replace('"out_channels": ', '"out_channels": 1', 1))
    with pytest.raises(CorruptFileError, match="_subnet.json.*checksum"):
        load_compressed_weights(ConvNet(), oto.compressed_model_path.replace(".pt", ".safetensors"))


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_truncated_empty_and_garbage_files_give_one_clear_error(tmp_path, damage):
    oto, _ = compressed(tmp_path)
    paths = [oto.compressed_model_path, oto.compressed_model_path.replace(".pt", ".safetensors"),
             oto.compressed_model_path.replace(".pt", "_subnet.json")]
    for path in paths:
        data = open(path, "rb").read()
        damaged = {"empty": b"", "truncated": data[:len(data) // 2],
                   "garbage": np.random.default_rng(0).bytes(len(data))}[damage]
        open(path, "wb").write(damaged)
    with pytest.raises(CorruptFileError, match="ConvNet_compressed.pt"):
        load_model(paths[0])
    with pytest.raises(CorruptFileError, match="ConvNet_compressed_subnet.json"):
        load_compressed_weights(ConvNet(), paths[1])
    with pytest.raises(CorruptFileError, match="ConvNet_compressed.pt.*(empty|truncated)"):
        load_checkpoint(paths[0])


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = str(tmp_path / "state.pt")
    save_checkpoint(path, {"step": 3, "weights": torch.ones(3)})
    assert load_checkpoint(path)["step"] == 3
    open(path, "wb").write(open(path, "rb").read()[:100])
    with pytest.raises(CorruptFileError, match="state.pt"):
        load_checkpoint(path)


def make_local_class_model():
    class DefinedInAFunction(ConvNet):
        pass

    return DefinedInAFunction()


def weight_normed_model():
    model = ConvNet()
    model.fc = nn.utils.parametrizations.weight_norm(model.fc)
    return model


def hooked_model():
    model = ConvNet()
    model.conv.register_forward_hook(lambda module, args, output: output * 1.0)  # a local function
    return model


@pytest.mark.parametrize("make", [make_local_class_model, weight_normed_model, hooked_model],
                         ids=["class-in-function", "weight-norm", "local-hook"])
def test_unpicklable_models_still_get_their_weights_only_files(tmp_path, make, caplog):
    torch.manual_seed(0)
    oto, model = compressed(tmp_path, make())
    expected = outputs(model, IMAGES)
    assert oto.compressed_model_path.endswith(".safetensors")
    names = sorted(os.listdir(tmp_path))
    assert not [n for n in names if n.endswith(".pt") or n.startswith(".tmp")], names  # no partial file
    assert [r for r in caplog.records if "cannot be pickled" in r.getMessage()].__len__() == 1
    torch.manual_seed(1)
    fresh = make()
    load_compressed_weights(fresh, oto.compressed_model_path)
    assert max_difference(outputs(fresh, IMAGES), expected) < 1e-6
