"""Library modules in a deployed model become plain torch code, or a clear error says why they cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from only_train_once.export.plain_modules import PlainModuleError, library_modules, replace_library_modules


class _DataDependent(nn.Module):
    """Control flow on a tensor value: torch.fx cannot trace it."""

    def forward(self, x):
        return x if x.sum() > 0 else -x


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x, mask=None, flip: bool = False):
        y = x * self.scale
        return -y if flip else y


for _cls in (_DataDependent, _Scaled):  # as if defined in the library
    _cls.__module__ = "only_train_once.tests_stand_in"


class _Holder(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_a_library_module_becomes_a_graph_module_specialised_on_its_call():
    model = _Holder(_Scaled())
    x = torch.randn(2, 3)
    expected = model(x)
    assert library_modules(model) == ["inner"]
    assert replace_library_modules(model, x) == ["inner"]
    assert isinstance(model.inner, torch.fx.GraphModule) and not library_modules(model)
    assert torch.equal(model(x), expected)
    assert torch.equal(model.inner(x, mask=None, flip=False), expected)  # the argument names are kept
    with pytest.raises(AssertionError, match="flip"):
        model.inner(x, flip=True)
    with pytest.raises(AssertionError, match="mask"):
        model.inner(x, mask=torch.ones(2, 3))


def test_an_untraceable_library_module_is_an_error_naming_it():
    with pytest.raises(PlainModuleError, match="inner .*_DataDependent.* cannot be traced"):
        replace_library_modules(_Holder(_DataDependent()), torch.randn(2, 3))
