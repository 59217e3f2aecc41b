"""save_checkpoint / load_checkpoint / scan_checkpoint (SPEC 5.9) on torch >= 2.6."""

import os

import pytest
import torch

from only_train_once.optimizer.utils import load_checkpoint, save_checkpoint, scan_checkpoint
from tests.optimizer.common import TinyMLP, build, train


def test_geta_checkpoints_load_with_the_safe_loader(tmp_path):
    model, oto = build(TinyMLP)
    optimizer = oto.geta(variant="adam", lr=1e-3, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=2)
    train(model, optimizer, 3)
    checkpoint = optimizer.create_checkpoint(model, epoch=3, loss=0.25)
    assert set(checkpoint) == {"model_state_dict", "optimizer_state_dict", "epoch", "loss"}
    path = tmp_path / "nested" / "ckpt_3.pt"
    save_checkpoint(str(path), checkpoint)
    loaded = torch.load(path, weights_only=True)  # what torch >= 2.6 does by default
    assert loaded["epoch"] == 3
    assert load_checkpoint(str(path), "cpu")["optimizer_state_dict"]["pruned_group_idxes"] == \
        optimizer.pruned_group_idxes


def test_pickled_modules_need_an_explicit_opt_in(tmp_path):
    path = str(tmp_path / "model.pt")
    save_checkpoint(path, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="weights_only=False"):
        load_checkpoint(path)
    assert isinstance(load_checkpoint(path, weights_only=False), torch.nn.Linear)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_scan_checkpoint_returns_the_largest_number(tmp_path):
    assert scan_checkpoint(str(tmp_path), "geta_") is None
    for name in ("geta_2.pt", "geta_10.pt", "geta_9.pt", "geta_best.pt", "other_99.pt"):
        (tmp_path / name).write_bytes(b"")
    assert os.path.basename(scan_checkpoint(str(tmp_path), "geta_")) == "geta_10.pt"
