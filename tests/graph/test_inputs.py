"""Model inputs: private copies for every run, fresh inputs with the dummy's structure, dtypes and value ranges."""

import threading

import torch

from only_train_once.graph.inputs import copy_input, fresh_input_like


def test_copies_share_no_tensor_even_for_non_leaf_inputs_and_keep_uncopyable_objects():
    computed = torch.ones(3, requires_grad=True) * 2  # deepcopy refuses non-leaf tensors
    lock = threading.Lock()
    original = (computed, lock, {"ids": torch.arange(4)})
    copied = copy_input(original)
    assert copied[0] is not computed and torch.equal(copied[0], computed) and copied[0].requires_grad
    assert copied[1] is lock and copied[2]["ids"] is not original[2]["ids"]


def test_fresh_inputs_keep_structure_dtype_and_ranges():
    dummy = {"pixels": torch.randn(2, 3, dtype=torch.bfloat16), "ids": torch.randint(5, 9, (2, 7)),
             "mask": torch.tensor([True, False]), "scale": 2}
    fresh = fresh_input_like(dummy, torch.Generator().manual_seed(0))
    assert fresh["pixels"].dtype == torch.bfloat16 and fresh["pixels"].shape == (2, 3)
    assert not torch.equal(fresh["pixels"], dummy["pixels"])
    assert fresh["ids"].dtype == torch.int64 and 5 <= int(fresh["ids"].min()) and int(fresh["ids"].max()) <= 8
    assert torch.equal(fresh["mask"], dummy["mask"]) and fresh["scale"] == 2
