"""Teaching the analyzer new operators and modules: :func:`register_operator` and :func:`register_module`.

Everything the library knows about one operator lives in its :class:`~only_train_once.operation.catalogue.OpKind`
(index-space rule, zero flow, cost) and, for a module with parameters, its :class:`ModuleShrink` (how the module's
attributes follow its pruned tensors). Built-in operators are registered the same way users register theirs.

A registered *function* is matched by the traced call's name (``torch.tensordot`` -> ``"tensordot"``). A registered
*module* class is traced as one call named after it: its inner torch calls are not recorded, and its own parameters
and buffers are passed to the rule as keyword arguments under their attribute names (``node.value_arg(-1,
"weight")``), so the rule relates them to the input and output spaces and claims the axis each one is pruned along.

Example, a linear layer computed with ``tensordot`` (which the analyzer does not read on its own)::

    from only_train_once import register_module
    from only_train_once.operation import STEM

    def tensordot_linear(ctx, node):
        x, weight = node.value_arg(0, "input"), node.value_arg(-1, "weight")
        ctx.claim(weight, 0, node)                                   # weight rows are pruned with the group
        ctx.spaces.union(ctx.axes(x)[-1], ctx.axes(weight)[1])       # input features meet weight columns
        ctx.set_axes(node.outputs[0], ctx.axes(x)[:-1] + [ctx.axes(weight)[0]])

    register_module(TensorDotLinear, tensordot_linear, zero=STEM,
                    update=lambda module, node, kept_in: {"in_features": module.weight.shape[1],
                                                          "out_features": module.weight.shape[0]},
                    input_channel_axis=-1)

``ctx`` is the analysis (:class:`~only_train_once.dependency_graph.analysis.SpaceAnalysis`): ``ctx.axes(value)``
gives a tensor's index spaces, ``ctx.spaces.union/factor/split/concat`` relate them, ``ctx.pin(space, reason)``
marks one unprunable, ``ctx.claim(param, axis, node)`` names the axis a parameter is pruned along, and
``ctx.set_axes(output, spaces)`` labels an output. A rule writes nothing onto the node: what it found that later
stages read (a kernel shape for the cost, a concat axis) it returns as a
:class:`~only_train_once.operation.catalogue.RuleFindings`, which the analysis records. ``zero`` is one of the
zero-flow categories of
:mod:`~only_train_once.operation.catalogue` (``PRESERVE``: f(0) = 0 elementwise; ``GENERATE``: pruned slices
become nonzero; ``STEM``: a layer producing fresh channels from a contraction over the input's channel axis;
``AFFINE_NORM``: per-channel normalisation followed by an affine weight that zeroes pruned channels), or pass
``zero_rule(ctx, node, output, nonzero)`` returning the unit uids that may be nonzero in ``output``.

A third-party class can be registered by its path (``register_module("timm.layers.grn.GlobalResponseNorm", ...)``)
without importing its package. A module whose own class would compute something else once it loses channels (a
mean over channels dividing by the kept count) passes ``replace(module, full_size)``, returning the stand-in the
compressed model uses; :mod:`~only_train_once.operation.thirdparty` registers timm's ``GlobalResponseNorm`` so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Type, Union

from torch import nn

from .catalogue import (ADD, AFFINE_NORM, CONCAT, CUSTOM, DIV, GENERATE, MUL, OP_KINDS, PRESERVE, STEM, OpKind)

ZERO_CATEGORIES = (PRESERVE, GENERATE, MUL, ADD, DIV, STEM, AFFINE_NORM, CONCAT, CUSTOM)

#: ``update(module, node, kept_input_channels) -> {attribute: new value}``
ModuleUpdate = Callable[[nn.Module, Any, int], Dict[str, Any]]


#: ``replace(module, full_size) -> module``: the shrunk module's stand-in (``full_size``: the size its parameters
#: had along their pruned axis), for modules whose own class computes something else once pruned
ModuleReplace = Callable[[nn.Module, int], nn.Module]

#: ``restructure(module, kept) -> (module, description)``: the stand-in of a module whose pruned tensors no longer
#: fit its own class (``kept``: attribute name -> {pruned axis: kept indices}, the tensors already shrunk), with a
#: JSON-serialisable ``description`` from which ``restore(fresh module holding the shrunk tensors, description)``
#: rebuilds it when a weights-only checkpoint is loaded
ModuleRestructure = Callable[[nn.Module, Dict[str, Dict[Any, Any]]], Tuple[nn.Module, Dict[str, Any]]]
ModuleRestore = Callable[[nn.Module, Dict[str, Any]], nn.Module]


@dataclass(frozen=True)
class ModuleShrink:
    """How a module with parameters follows pruning: its tensors are shrunk along their claimed axes; ``update``
    returns the attributes to rewrite given the module, its node and the number of input channels kept on
    ``input_channel_axis`` of the node's first input. ``replace``, if given, swaps a module that lost channels for
    a stand-in computing what the unpruned module computed (a mean over channels that must keep dividing by the
    original count). ``restructure`` / ``restore``, if given, swap a module whose pruned tensors its own class
    cannot hold (experts keeping different numbers of hidden units) and rebuild that swap on reload."""

    module_type: Union[Type[nn.Module], str]
    update: ModuleUpdate
    input_channel_axis: int = 1
    replace: Optional[ModuleReplace] = None
    restructure: Optional[ModuleRestructure] = None
    restore: Optional[ModuleRestore] = None

    def applies_to(self, module: nn.Module) -> bool:
        if isinstance(self.module_type, str):
            return any(class_path(cls) == self.module_type for cls in type(module).__mro__)
        return isinstance(module, self.module_type)


#: node op name -> how its module is shrunk (filled by the built-in layers and by :func:`register_module`)
MODULE_SHRINKS: Dict[str, ModuleShrink] = {}
#: module class, or its class path ``"package.module.Class"``, -> the call name it is traced as (filled by
#: :func:`register_module`)
OPAQUE_MODULES: Dict[Union[Type[nn.Module], str], str] = {}


def class_path(cls: type) -> str:
    """``"timm.layers.grn.GlobalResponseNorm"``: how a class is named when registered without importing it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_operator(call_names: Union[str, Iterable[str]], propagate: Callable, zero: str = PRESERVE,
                      zero_rule: Optional[Callable] = None, macs: Optional[Callable] = None, is_stem: bool = False,
                      op_name: Optional[str] = None, weight_index: Optional[int] = None) -> OpKind:
    """Teach the analyzer a traced function (or override a built-in one); returns the registered kind.

    ``call_names``: the traced names (a function's or tensor method's ``__name__``: ``"tensordot"``, ``"add_"``).
    ``propagate(ctx, node)``: the index-space rule (see the module docstring). ``zero``: a zero-flow category,
    or ``zero_rule``. ``macs(node, ctx)``: multiply-accumulates of one call (None: not counted). ``is_stem``: the
    call creates new channels. ``op_name``: the node's op name (default: the first call name). ``weight_index``:
    for ``AFFINE_NORM``, the position of the affine weight argument (also found by the keyword ``weight``).
    """
    names = [call_names] if isinstance(call_names, str) else list(call_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError("register_operator needs one or more call names, e.g. 'tensordot'")
    if not callable(propagate):
        raise TypeError("propagate must be a function propagate(ctx, node) relating the call's index spaces")
    if zero not in ZERO_CATEGORIES:
        raise ValueError(f"zero must be one of {ZERO_CATEGORIES}, got {zero!r}; or pass zero_rule=")
    kind = OpKind(op_name or names[0], propagate, zero, is_stem, macs, zero_rule, weight_index)
    for name in names:
        OP_KINDS[name] = kind
    return kind


def register_module(module_type: Union[Type[nn.Module], str], propagate: Callable, zero: str = PRESERVE,
                    zero_rule: Optional[Callable] = None, macs: Optional[Callable] = None,
                    update: Optional[ModuleUpdate] = None, input_channel_axis: int = 1,
                    op_name: Optional[str] = None, is_stem: Optional[bool] = None,
                    replace: Optional[ModuleReplace] = None, restructure: Optional[ModuleRestructure] = None,
                    restore: Optional[ModuleRestore] = None) -> OpKind:
    """Teach the analyzer a module class, traced as one call (its forward's torch calls are not recorded).

    ``module_type``: the class, or its path ``"package.module.Class"`` (a third-party class registered without
    importing its package). The call's positional arguments are the forward's; the module's own parameters and
    buffers are keyword arguments under their attribute names. ``update(module, node, kept_in)`` returns the
    attributes to rewrite after pruning (``{"in_features": ..., "out_features": ...}``); ``input_channel_axis``
    is the axis of the first input whose kept size is passed as ``kept_in``; ``replace(module, full_size)``
    returns a stand-in for a module that lost channels, when its own class would compute something else (see
    :class:`ModuleShrink`); ``restructure(module, kept)`` / ``restore(module, description)`` replace a module
    whose pruned tensors its own class cannot hold, and rebuild it on reload (:class:`ModuleShrink`; the experts of
    :mod:`~only_train_once.operation.experts`). Other arguments as in :func:`register_operator`. Subclasses are
    traced the same way.
    """
    if isinstance(module_type, str):
        if "." not in module_type:
            raise ValueError(f"a class path names its module, e.g. 'timm.layers.grn.GlobalResponseNorm'; got "
                             f"{module_type!r}")
        qualified_name = class_name = module_type.rsplit(".", 1)[1]
    elif isinstance(module_type, type) and issubclass(module_type, nn.Module):
        qualified_name, class_name = module_type.__qualname__, module_type.__name__
    else:
        raise TypeError(f"register_module needs an nn.Module subclass or its class path, got {module_type!r}")
    if (restructure is None) != (restore is None):
        raise ValueError("restructure and restore come together: restore rebuilds what restructure made when a "
                         "weights-only checkpoint is loaded")
    call_name = f"module:{qualified_name}"
    stem = zero == STEM if is_stem is None else is_stem
    kind = register_operator(call_name, propagate, zero, zero_rule, macs, stem, op_name or class_name)
    OPAQUE_MODULES[module_type] = call_name
    if update is not None:
        MODULE_SHRINKS[kind.op_name] = ModuleShrink(module_type, update, input_channel_axis, replace, restructure,
                                                    restore)
    return kind


def opaque_call_name(module: nn.Module) -> Optional[str]:
    """The call name a module is traced as, if its class (or a base class) was registered."""
    for cls in type(module).__mro__:
        name = OPAQUE_MODULES.get(cls) or OPAQUE_MODULES.get(class_path(cls))
        if name is not None:
            return name
    return None
