"""construct_subnet streams: it never holds the compressed model beside the full one, and it can skip the full file.

Memory is counted in tensor bytes, not timed or read from the process: a dispatch mode sees every tensor torch
allocates during ``construct_subnet`` and a finalizer on each storage sees it freed; the model's own tensors count
as freed when pruning lets them go. The net peak is then what construct_subnet held beyond the model it was given.
"""

import json
import os
import weakref

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from only_train_once import OTO
from only_train_once.dependency_graph.param_groups import StaleParametersError
from only_train_once.subnet_construction import load_compressed_weights
from only_train_once.subnet_construction.integrity import CHECKSUM_KEY, CorruptFileError
from only_train_once.subnet_construction.io import read_weights, save_weights
from tests.helpers import flip_bit, max_difference, outputs

WIDTH, DEPTH = 128, 12


class DeepMLP(nn.Module):
    """Equal-width layers: each weight is a small share of the model, so holding every pruned tensor at once
    (the old construct_subnet) is far above holding one."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()) for _ in range(DEPTH)])
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x):
        return self.head(self.layers(x))


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the tensor storages allocated under this mode that are still alive, minus those of ``model``'s
    tensors freed since it started (no reference to them is kept); ``peak`` is the largest value seen."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = self.peak = 0
        self._tracked = set()
        for tensor in list(model.parameters()) + list(model.buffers()):
            self._track(tensor.untyped_storage(), new=False)

    def _track(self, storage, new: bool) -> None:
        key = storage.data_ptr()
        if key == 0 or key in self._tracked:
            return
        self._tracked.add(key)
        size = storage.nbytes()
        self.net += size if new else 0
        weakref.finalize(storage, self._freed, key, size)

    def _freed(self, key: int, size: int) -> None:
        self._tracked.discard(key)
        self.net -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(result):
            if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta":
                self._track(leaf.untyped_storage(), new=True)
        self.peak = max(self.peak, self.net)
        return result


def zeroed_deep_mlp():
    torch.manual_seed(0)
    model = DeepMLP().eval()
    x = torch.randn(2, WIDTH)
    oto = OTO(model, x, verify_groups=False)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    return model, x, oto


def test_streaming_construct_subnet_holds_one_tensor_at_a_time_and_can_skip_the_full_file(tmp_path):
    model, x, oto = zeroed_deep_mlp()
    full_output = outputs(model, x)
    with LiveTensorBytes(model) as counter:
        oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False, ckpt_format="safetensors")
    kept = [p.numel() * p.element_size() for p in model.parameters()]
    assert sum(kept) < 0.6 * WIDTH * WIDTH * DEPTH * 4  # half of the units went
    # the old construct_subnet built every shrunk tensor before freeing any: sum(kept), 13x the largest here
    assert counter.peak <= 2 * max(kept), (counter.peak, max(kept), sum(kept))
    assert max_difference(full_output, outputs(model, x)) < 1e-5
    assert sorted(os.listdir(tmp_path)) == ["DeepMLP_compressed.safetensors", "DeepMLP_compressed_subnet.json"]
    assert oto.full_group_sparse_model_path is None
    torch.manual_seed(1)
    fresh = load_compressed_weights(DeepMLP().eval(), oto.compressed_model_path)
    assert max_difference(outputs(model, x), outputs(fresh, x)) == 0


def test_the_graph_lets_go_of_the_replaced_tensors_and_still_refuses_a_stale_optimizer(tmp_path):
    model, x, oto = zeroed_deep_mlp()
    watched = weakref.ref(model.layers[0][0].weight)
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    assert watched() is None
    assert all(member.tensor.is_meta for group in oto.groups for member in group.members
               if member.name == "layers.0.0.weight")
    with pytest.raises(StaleParametersError, match="replaced after OTO traced it"):
        oto.hesso(lr=0.1)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.out = nn.Linear(6, 10, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("steps", torch.arange(3))
        self.half = nn.Linear(6, 6).to(torch.bfloat16)


def test_streamed_safetensors_file_matches_save_model_and_loads_back(tmp_path):
    from safetensors.torch import load_model, save_model

    model = Tied()
    path = str(tmp_path / "streamed.safetensors")
    checksums = save_weights(model, path)
    save_model(model, str(tmp_path / "reference.safetensors"))
    with safe_open(path, "pt") as streamed, safe_open(str(tmp_path / "reference.safetensors"), "pt") as reference:
        assert sorted(streamed.keys()) == sorted(reference.keys()) == ["embed.weight", "half.bias", "half.weight",
                                                                       "steps"]
        for key in reference.keys():
            assert torch.equal(streamed.get_tensor(key), reference.get_tensor(key))
        metadata = streamed.metadata()
    assert metadata["out.weight"] == "embed.weight"  # the dropped tied name, recorded as save_model records it
    assert json.loads(metadata[CHECKSUM_KEY]) == {k: v for k, v in checksums.items() if k != "out.weight"}
    assert checksums["out.weight"] == checksums["embed.weight"]
    loaded = Tied()
    load_model(loaded, path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.out.weight is loaded.embed.weight
    read_weights(path)  # the checksums verify


def test_a_damaged_streamed_file_is_refused(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_weights(nn.Linear(64, 64), path)
    flip_bit(path, from_end=5)
    with pytest.raises(CorruptFileError, match="checksum"):
        read_weights(path)
