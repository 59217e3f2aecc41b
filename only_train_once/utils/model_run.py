"""Call a model the way OTO documents its ``dummy_input``, and read its outputs."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, List

import torch
from torch import nn

from .tree import flatten_tensors


def run_model(model: nn.Module, dummy_input: Any) -> Any:
    """Call ``model`` the way OTO documents ``dummy_input``: tensor, tuple of positional inputs, list, or dict."""
    if isinstance(dummy_input, dict):
        return model(**dummy_input)
    if isinstance(dummy_input, tuple):
        return model(*dummy_input)
    return model(dummy_input)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; every module's own training flag is restored on exit
    (``model.train(flag)`` would overwrite submodules that were deliberately left in the other mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_outputs(model: nn.Module, dummy_input: Any) -> List[torch.Tensor]:
    """The tensors ``model`` returns on ``dummy_input`` (see :func:`flatten_tensors`), computed in eval mode
    without gradients; every module's training flag is restored afterwards."""
    with eval_mode(model), torch.no_grad():
        return flatten_tensors(run_model(model, dummy_input))
