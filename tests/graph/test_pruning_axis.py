"""A pruning axis made of two dims (a mixture of experts' (expert, row) pairs): views write through, reads of
non-adjacent pairs order indices outer-major, and the sizes agree with the indices."""

import pytest
import torch

from only_train_once.graph.pruning_axis import along, flattened, length


def test_an_int_axis_is_the_tensor_itself():
    tensor = torch.randn(3, 4)
    view, dim = along(tensor, 1)
    assert view is tensor and dim == 1 and length(tensor.shape, 1) == 4


def test_adjacent_dims_give_a_view_whose_writes_reach_the_tensor():
    tensor = torch.randn(2, 6, 5)
    view, dim = along(tensor, (0, 1))
    assert dim == 0 and view.shape == (12, 5) and length(tensor.shape, (0, 1)) == 12
    view.index_fill_(dim, torch.tensor([7]), 0)  # expert 1, row 1
    assert tensor[1, 1].abs().sum() == 0 and tensor[0, 1].abs().sum() > 0


def test_non_adjacent_dims_are_read_outer_major_and_refused_for_writes():
    tensor = torch.arange(2 * 3 * 4).reshape(2, 3, 4)  # [experts, width, hidden]
    rows, dim = flattened(tensor, (0, 2))
    assert dim == 0 and rows.shape == (8, 3)
    assert torch.equal(rows[4 + 2], tensor[1, :, 2])  # expert 1, hidden unit 2
    with pytest.raises(ValueError, match="adjacent"):
        along(tensor, (0, 2))
