"""Library modules left in a deployed model become generated torch code, so its ``.pt`` unpickles without us.

After ``construct_subnet`` a model can hold modules of this library that torch has no class for, e.g.
:class:`~only_train_once.subnet_construction.modules.PrunedMultiheadAttention` (``nn.MultiheadAttention`` cannot
run with ``num_heads * head_dim != embed_dim``). Each is traced with ``torch.fx`` into a ``GraphModule``: the same
parameters and submodules (hooks included), a forward of plain torch calls, pickled as its generated source.

The trace is specialised on the call the model makes on the dummy input: arguments that are not tensors (``None``
masks, ``need_weights``...) are fixed to the values seen, and the generated code asserts them, so a call with
another value raises ``AssertionError`` naming the argument instead of computing something else.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Dict, List

import torch
from torch import fx, nn
from torch.fx._symbolic_trace import _assert_is_none

from .model_io import call

__all__ = ["library_modules", "replace_library_modules", "PlainModuleError"]

_LIBRARY = "only_train_once"


class PlainModuleError(RuntimeError):
    """A module of this library in the deployed model could not be written as plain torch code."""


def _is_library_module(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == _LIBRARY


def library_modules(model: nn.Module) -> List[str]:
    """Names of the outermost modules of ``model`` whose class comes from this library (the model itself excluded)."""
    found: List[str] = []
    for name, module in model.named_modules():
        if name and _is_library_module(module) and not any(name.startswith(outer + ".") for outer in found):
            found.append(name)
    return found


def _record_calls(model: nn.Module, inputs: Any, names: List[str]) -> Dict[str, Dict[str, Any]]:
    """``{name: {argument: value}}`` of the first call of each named module on ``inputs`` (defaults filled in)."""
    calls: Dict[str, Dict[str, Any]] = {}

    def recorder(name: str):
        def hook(module, args, kwargs):
            if name not in calls:
                bound = inspect.signature(module.forward).bind(*args, **kwargs)
                bound.apply_defaults()
                calls[name] = dict(bound.arguments)
        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(recorder(name), with_kwargs=True)
               for name in names]
    try:
        with torch.no_grad():
            call(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _replace_none_check(graph: fx.Graph, node: fx.Node) -> None:
    """fx's ``_assert_is_none`` cannot be unpickled twice in one process (retracing it registers a dotted name
    that breaks the next trace): the same check as ``torch._assert(value == None)``, which traces as an ``eq``
    node (``tensor == None`` is False)."""
    value, message = node.args
    with graph.inserting_before(node):
        is_none = graph.call_function(operator.eq, (value, None))
        graph.call_function(torch._assert, (is_none, message))
    graph.erase_node(node)


def _plain_graph(graph: fx.Graph, fixed: Dict[str, Any]) -> fx.Graph:
    """Drop type annotations (they may name library types or be strings) and give the fixed arguments'
    placeholders their names back (fx suffixes them with ``_1``), so keyword calls keep working."""
    renamed = {f"{key}_1": key for key in fixed}
    for node in graph.nodes:
        node.type = None
        if node.op == "placeholder":
            node.target = renamed.get(node.target, node.target)
        elif node.target is _assert_is_none:
            _replace_none_check(graph, node)
    graph.lint()
    return graph


def plain_module(module: nn.Module, arguments: Dict[str, Any], name: str) -> fx.GraphModule:
    """``module`` (eval mode) traced to a GraphModule, with its non-tensor ``arguments`` fixed."""
    fixed = {key: value for key, value in arguments.items() if not isinstance(value, torch.Tensor)}
    was_training = module.training
    module.eval()
    try:  # Tracer.trace, not symbolic_trace: the graph must be fixed before any code is generated from it
        graph = fx.Tracer().trace(module, concrete_args=fixed)
    except Exception as error:  # fx raises TraceError, TypeError, NotImplementedError... for untraceable code
        raise PlainModuleError(f"{name} ({type(module).__name__}) cannot be traced by torch.fx into plain torch "
                               f"code: {error}") from error
    finally:
        module.train(was_training)
    return fx.GraphModule(module, _plain_graph(graph, fixed), class_name=type(module).__name__).eval()


def replace_library_modules(model: nn.Module, inputs: Any) -> List[str]:
    """Replace every library module of ``model`` by its plain GraphModule (specialised on how ``model`` calls it
    on ``inputs``); returns the replaced names. Modules never called on ``inputs`` raise PlainModuleError."""
    names = library_modules(model)
    if not names:
        return []
    calls = _record_calls(model, inputs, names)
    for name in names:
        if name not in calls:
            raise PlainModuleError(f"{name} ({type(model.get_submodule(name)).__name__}) is not called on the "
                                   "dummy input, so its call cannot be traced; give a dummy_input that reaches it")
        model.set_submodule(name, plain_module(model.get_submodule(name), calls[name], name))
    return names
