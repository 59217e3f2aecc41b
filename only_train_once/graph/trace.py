"""Graph capture: record every torch call of one forward pass.

The model runs once, eagerly, under a :class:`torch.overrides.TorchFunctionMode` (a public PyTorch API).
Every torch function or tensor method that returns tensors becomes one :class:`TracedCall`; tensors are
identified by object, so parameters are recognised by identity (shared and tied weights included) and
no names are parsed. Python-level functionals that dispatch through ``__torch_function__`` as a whole
(``F.layer_norm``, ``F.group_norm``, ``F.multi_head_attention_forward``, our ``fake_quantize``) are
recorded as one call, which is what lets the analyzer see a quantizer or an attention block as a unit.

Capture runs with autograd enabled and the model in eval mode, so fused inference fast paths (such as
``nn.MultiheadAttention``'s) are not taken; the model's train/eval state is restored afterwards.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..utils import flatten_tensors, run_model
from .inputs import copy_input

logger = logging.getLogger(__name__)

# Calls that return tensors but carry no data dependency worth a node.
_IGNORED_CALLS = frozenset({"__repr__", "__format__", "__str__", "__len__", "__bool__", "__hash__",
                            "__iter__", "__contains__", "__index__", "__int__", "__float__", "__array__",
                            "__reduce_ex__", "__deepcopy__", "tolist", "item", "numpy", "data_ptr",
                            "element_size", "is_contiguous", "is_floating_point", "is_complex"})


_SHAPE_CALLS = frozenset({"shape", "size"})


class GraphCaptureError(RuntimeError):
    """The model could not be run on the dummy input, or its output could not be interpreted."""


class TracedInt(int):
    """An ``int`` seen during capture that remembers where it came from.

    ``sources`` holds ``("shape", value_id, axis)`` for sizes read from a tensor (``x.shape[-1]``) and
    ``("attr", module_name, attribute)`` for int attributes of the model's modules (``self.num_heads``);
    ``exact`` is True when the number *is* that size or attribute, not the result of arithmetic. The analyzer
    uses it to tell ``view(b, n, self.num_heads, -1)`` (follows pruning once ``num_heads`` is rewritten) from
    ``view(b, n, 8, -1)`` (hard-coded) and from ``view(b, n, c)`` with ``c = x.shape[-1]`` (tied to x).
    """

    sources: frozenset
    exact: bool

    def __new__(cls, value: int, sources: frozenset, exact: bool = False):
        obj = int.__new__(cls, value)
        obj.sources = sources
        obj.exact = exact
        return obj

    def _derived(self, value, other):
        sources = self.sources | getattr(other, "sources", frozenset())
        if isinstance(value, float):
            return TracedFloat(value, sources)
        if not isinstance(value, int) or isinstance(value, bool):
            return value
        return TracedInt(value, sources)

    def _apply(self, name: str, other):
        value = getattr(int, name)(self, other)
        if value is NotImplemented and isinstance(other, float):  # c * 0.5: the float's reflected op would drop us
            value = getattr(float, name)(float(self), other)
        return self._derived(value, other)

    def __add__(self, other): return self._apply("__add__", other)
    def __radd__(self, other): return self._apply("__radd__", other)
    def __sub__(self, other): return self._apply("__sub__", other)
    def __rsub__(self, other): return self._apply("__rsub__", other)
    def __mul__(self, other): return self._apply("__mul__", other)
    def __rmul__(self, other): return self._apply("__rmul__", other)
    def __floordiv__(self, other): return self._apply("__floordiv__", other)
    def __rfloordiv__(self, other): return self._apply("__rfloordiv__", other)
    def __mod__(self, other): return self._apply("__mod__", other)
    def __truediv__(self, other): return self._apply("__truediv__", other)
    def __rtruediv__(self, other): return self._apply("__rtruediv__", other)
    def __pow__(self, other, modulo=None):
        return self._apply("__pow__", other) if modulo is None else int.__pow__(self, other, modulo)
    def __rpow__(self, other): return self._apply("__rpow__", other)
    def __neg__(self): return TracedInt(-int(self), self.sources)
    def __reduce__(self): return (int, (int(self),))


class TracedFloat(float):
    """A ``float`` computed from traced ints (``c ** -0.5`` with ``c = x.shape[1]``): a scale that changes when
    those sizes are pruned. ``sources`` as :class:`TracedInt`'s."""

    sources: frozenset

    def __new__(cls, value: float, sources: frozenset):
        obj = float.__new__(cls, value)
        obj.sources = sources
        return obj

    def _derived(self, value, other):
        if not isinstance(value, float):
            return value
        return TracedFloat(value, self.sources | getattr(other, "sources", frozenset()))

    def __add__(self, other): return self._derived(float.__add__(self, other), other)
    def __radd__(self, other): return self._derived(float.__radd__(self, other), other)
    def __sub__(self, other): return self._derived(float.__sub__(self, other), other)
    def __rsub__(self, other): return self._derived(float.__rsub__(self, other), other)
    def __mul__(self, other): return self._derived(float.__mul__(self, other), other)
    def __rmul__(self, other): return self._derived(float.__rmul__(self, other), other)
    def __truediv__(self, other): return self._derived(float.__truediv__(self, other), other)
    def __rtruediv__(self, other): return self._derived(float.__rtruediv__(self, other), other)
    def __pow__(self, other, modulo=None): return self._derived(float.__pow__(self, other, modulo), other)
    def __rpow__(self, other): return self._derived(float.__rpow__(self, other), other)
    def __neg__(self): return TracedFloat(-float(self), self.sources)
    def __reduce__(self): return (float, (float(self),))


@dataclass
class ValueRef:
    """Placeholder for a tensor argument inside a recorded call's argument template."""

    value_id: str


@dataclass
class TracedValue:
    """One tensor seen during capture.

    kind: ``"input"`` (model input), ``"param"`` (an ``nn.Parameter`` of the model), ``"buffer"``,
    ``"constant"`` (a tensor created outside the traced computation) or ``"activation"``.
    """

    id: str
    shape: Tuple[int, ...]
    dtype: torch.dtype
    kind: str
    producer: Optional[str] = None
    name: Optional[str] = None
    requires_grad: bool = False


def node_id_at(index: int) -> str:
    """The id of the call (and graph node) at ``index`` in execution order: ``"node-<index>"``."""
    return f"node-{index}"


@dataclass
class TracedCall:
    """One recorded torch call.

    ``args``/``kwargs`` are the call's arguments with every tensor replaced by a :class:`ValueRef`;
    ``inputs`` lists the tensor value ids in argument order (duplicates removed); ``outputs`` the ids of
    the tensors it returned (for in-place calls, a new version of the mutated tensor).
    ``scope`` is the stack of module names whose forward was running (outermost first).
    """

    id: str
    func: Callable
    name: str
    args: tuple
    kwargs: dict
    inputs: List[str]
    outputs: List[str]
    scope: Tuple[str, ...]
    module: Optional[nn.Module]
    inplace: bool = False


@dataclass
class CaptureResult:
    calls: List[TracedCall]
    values: Dict[str, TracedValue]
    input_values: List[str]
    output_values: List[str]
    param_names: Dict[str, str] = field(default_factory=dict)  # value id -> parameter/buffer name


def call_name(func: Callable) -> str:
    """A stable lower-level name for a traced callable (``Tensor.add_`` -> ``add_``, ``T.__get__`` -> ``T``)."""
    name = getattr(func, "__name__", None)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", "get")
    return name or type(func).__name__


def write_through_view(base: torch.Tensor, written_view: torch.Tensor) -> torch.Tensor:
    """Marker call recorded after an in-place write into a view of ``base``: ``base`` now holds the write."""
    return base


WRITE_THROUGH_VIEW = "write_through_view"


def _is_inplace(name: str, kwargs: dict) -> bool:
    if "out" in kwargs and kwargs["out"] is not None:
        return True
    if name in ("__setitem__",) or (name.startswith("__i") and name.endswith("__")):
        return True
    return name.endswith("_") and not name.endswith("__") and not name.startswith("_")


def _forget(value_of: Dict[int, str], tensor_id: int, value_id: str) -> None:
    """A recorded tensor died: its id may now be reused by a new tensor."""
    if value_of.get(tensor_id) == value_id:
        del value_of[tensor_id]


class _Recorder(TorchFunctionMode):
    def __init__(self, tensor_names: Dict[int, Tuple[str, str]]):
        super().__init__()
        self._tensor_names = tensor_names  # id(tensor) -> (name, kind) for parameters and buffers
        self.values: Dict[str, TracedValue] = {}
        self.calls: List[TracedCall] = []
        self.param_names: Dict[str, str] = {}
        self._value_of: Dict[int, str] = {}  # id(tensor) -> value id, for living tensors only (see _new_value)
        self._finalizers: List[weakref.finalize] = []
        self.scope_names: Tuple[str, ...] = ()  # names of the modules whose forward is running, outermost first
        self.scope_modules: List[nn.Module] = []
        self._names: Dict[Any, str] = {}  # traced callable -> call_name
        self._paused = 0  # inside a module traced as one call (see record_module_call)

    # -- values ---------------------------------------------------------------------------------
    def _new_value(self, tensor: torch.Tensor, kind: str, producer: Optional[str] = None,
                   name: Optional[str] = None) -> str:
        value_id = f"v{len(self.values)}"
        self.values[value_id] = TracedValue(value_id, tuple(tensor.shape), tensor.dtype, kind, producer, name,
                                            bool(tensor.requires_grad))
        self._value_of[id(tensor)] = value_id
        # Forget the id when the tensor dies, so that a new tensor at the same address is a new value. Keeping every
        # recorded tensor alive instead held each fake-quantized weight copy until the trace ended (a full copy of
        # the model's weights during a weight+activation build).
        self._finalizers.append(weakref.finalize(tensor, _forget, self._value_of, id(tensor), value_id))
        if name is not None:
            self.param_names[value_id] = name
        return value_id

    def close(self) -> None:
        """Drop the death callbacks of the tensors still alive (parameters, outputs): the capture is over."""
        for finalizer in self._finalizers:
            finalizer.detach()
        self._finalizers = []

    def register_input(self, tensor: torch.Tensor) -> str:
        known = self._value_of.get(id(tensor))
        return known if known is not None else self._new_value(tensor, "input")

    def value_id(self, tensor: torch.Tensor) -> str:
        known = self._value_of.get(id(tensor))
        if known is not None:
            return known
        named = self._tensor_names.get(id(tensor))
        if named is not None:
            return self._new_value(tensor, named[1], name=named[0])
        return self._new_value(tensor, "constant")

    # -- argument templates ---------------------------------------------------------------------
    def _template(self, obj: Any, inputs: List[str]) -> Any:
        if isinstance(obj, torch.Tensor):
            value_id = self.value_id(obj)
            if value_id not in inputs:
                inputs.append(value_id)
            return ValueRef(value_id)
        if type(obj) in (list, tuple):
            items = [self._template(o, inputs) for o in obj]
            return items if type(obj) is list else tuple(items)
        return obj

    def _outputs(self, out: Any, found: List[torch.Tensor]) -> None:
        if isinstance(out, torch.Tensor):
            found.append(out)
        elif isinstance(out, (list, tuple)):
            for o in out:
                self._outputs(o, found)

    def _shape_result(self, args, kwargs, out):
        """Wrap the ints of ``x.shape`` / ``x.size()`` / ``x.size(d)`` so they remember their tensor axis."""
        value_id = self.value_id(args[0])
        if isinstance(out, int):
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if not isinstance(dim, int):
                return out
            dim = dim + args[0].dim() if dim < 0 else dim
            return TracedInt(out, frozenset([("shape", value_id, dim)]), True)
        return torch.Size([TracedInt(int(s), frozenset([("shape", value_id, k)]), True) for k, s in enumerate(out)])

    # -- interception ---------------------------------------------------------------------------
    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._paused:
            return out
        name = self._names.get(func)
        if name is None:
            name = self._names[func] = call_name(func)
        if name in _SHAPE_CALLS and args and isinstance(args[0], torch.Tensor):
            return self._shape_result(args, kwargs, out)
        if name in _IGNORED_CALLS:
            return out
        inplace = _is_inplace(name, kwargs)
        produced: List[torch.Tensor] = []
        if inplace and isinstance(args[0], torch.Tensor):
            produced.append(args[0])
        else:
            self._outputs(out, produced)
        if not produced:
            return out
        inputs: List[str] = []
        arg_template = self._template(tuple(args), inputs)
        kwarg_template = {k: self._template(v, inputs) for k, v in kwargs.items()}
        call_id = node_id_at(len(self.calls))
        outputs = [self._new_value(t, "activation", producer=call_id) for t in produced]
        scope_names = self.scope_names
        module = self.scope_modules[-1] if self.scope_modules else None
        self.calls.append(TracedCall(call_id, func, name, arg_template, kwarg_template, inputs, outputs,
                                     scope_names, module, inplace))
        if inplace and isinstance(args[0], torch.Tensor) and args[0]._base is not None:
            self._record_view_write(args[0]._base, outputs[0])
        return out

    def run_as_one_call(self, module: nn.Module, call_name: str, forward: Callable, args: tuple,
                        kwargs: dict) -> Any:
        """Run a registered module's forward without recording its inner calls, then record it as one call whose
        keyword arguments also hold the module's own parameters and buffers (by attribute name)."""
        self._paused += 1
        try:
            out = forward(*args, **kwargs)
        finally:
            self._paused -= 1
        produced: List[torch.Tensor] = []
        self._outputs(out, produced)
        if not produced or self._paused:
            return out
        tensors = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
        inputs: List[str] = []
        arg_template = self._template(tuple(args), inputs)
        kwarg_template = {k: self._template(v, inputs) for k, v in {**kwargs, **tensors}.items()}
        call_id = node_id_at(len(self.calls))
        outputs = [self._new_value(t, "activation", producer=call_id) for t in produced]
        self.calls.append(TracedCall(call_id, forward, call_name, arg_template, kwarg_template, inputs, outputs,
                                     self.scope_names, module))
        return out

    def _record_view_write(self, base: torch.Tensor, written: str) -> None:
        """``y.select(1, 3).add_(1)`` changes ``y``: later reads of ``y`` must see the write, so the base gets a
        new version produced by a :func:`write_through_view` call reading the written view."""
        old = self._value_of.get(id(base))
        if old is None or self.values[old].kind in ("param", "buffer"):
            return
        call_id = node_id_at(len(self.calls))
        new = self._new_value(base, "activation", producer=call_id)
        module = self.scope_modules[-1] if self.scope_modules else None
        self.calls.append(TracedCall(call_id, write_through_view, WRITE_THROUGH_VIEW,
                                     (ValueRef(old), ValueRef(written)), {}, [old, written], [new],
                                     self.scope_names, module, True))


def _trace_int_attributes(model: nn.Module, module_names: Dict[int, str]) -> List[Tuple[nn.Module, str, int]]:
    """Swap every plain int attribute of every module, and every int inside a tuple or list attribute, for a
    :class:`TracedInt` (an element of ``self.split_indices`` is the attribute ``"split_indices[1]"``); returns
    what to restore."""
    swapped = []
    for module in model.modules():
        module_name = module_names.get(id(module))
        if module_name is None:
            continue
        for name, value in list(vars(module).items()):
            if type(value) is int:
                module.__dict__[name] = TracedInt(value, frozenset([("attr", module_name, name)]), True)
                swapped.append((module, name, value))
            elif type(value) in (tuple, list) and value and all(type(v) is int for v in value):
                module.__dict__[name] = type(value)(
                    TracedInt(v, frozenset([("attr", module_name, f"{name}[{k}]")]), True) for k, v in enumerate(value))
                swapped.append((module, name, value))
    return swapped


def _record_as_one_call(model: nn.Module, recorder: _Recorder,
                        opaque_call_name: Callable[[nn.Module], Optional[str]]) -> List[Tuple[nn.Module, Any]]:
    """Give every module whose class was registered (:func:`only_train_once.register_module`) an instance
    ``forward`` that records it as one call; returns the patched modules with their own instance ``forward``
    (None if they had none) to restore."""
    patched = []
    for module in model.modules():
        call_name = opaque_call_name(module)
        if call_name is None:
            continue
        forward = module.forward

        def one_call(*args, _module=module, _name=call_name, _forward=forward, **kwargs):
            return recorder.run_as_one_call(_module, _name, _forward, args, kwargs)

        patched.append((module, module.__dict__.get("forward")))
        module.forward = one_call
    return patched


def _capture_failure(error: Exception) -> str:
    """What a failed forward during capture means: a value read on the meta device, or a wrong dummy_input."""
    if "meta tensors" in str(error):
        return (f"the model's forward reads a tensor value, which the meta device does not have "
                f"({type(error).__name__}: {error}). Analysis on meta works where the forward only computes with "
                "tensors; for a Hugging Face model pass an explicit attention_mask (on meta) and, if the error stays, "
                "build it with attn_implementation='eager', or materialise the model")
    return (f"running the model on dummy_input failed ({type(error).__name__}: {error}). Check that dummy_input "
            "matches what forward() expects: a tensor, a tuple of positional inputs, a list passed as one "
            "argument, or a dict of keyword inputs.")


def _detach_cached_tensors(model: nn.Module) -> None:
    """Strip the trace's autograd history from tensors a forward cached on its modules (timm's LeViT and TinyViT
    keep ``attention_bias_cache`` in eval mode): the values stay, but a non-leaf tensor would make the user's
    model refuse ``copy.deepcopy`` and keep the trace's graph alive."""
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if name in ("_parameters", "_buffers", "_modules"):
                continue
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(module, name, value.detach())
            elif isinstance(value, dict):
                for key, item in list(value.items()):
                    if isinstance(item, torch.Tensor) and item.grad_fn is not None:
                        value[key] = item.detach()
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, torch.Tensor) and item.grad_fn is not None:
                        value[index] = item.detach()


def capture(model: nn.Module, dummy_input: Any, module_names: Dict[int, str],
            tensor_names: Dict[int, Tuple[str, str]],
            opaque_call_name: Optional[Callable[[nn.Module], Optional[str]]] = None) -> CaptureResult:
    """Run ``model`` once on ``dummy_input`` and record the computation.

    ``module_names`` maps ``id(module)`` to its name; ``tensor_names`` maps ``id(tensor)`` to
    ``(name, "param" | "buffer")`` for the model's parameters and buffers. ``opaque_call_name(module)`` names
    the modules to record as one call each (None for the others).
    The model is put in eval mode for the capture and restored to its previous train/eval state.
    Raises :class:`GraphCaptureError` if the forward fails or returns no tensor.
    """
    if dummy_input is None:
        raise GraphCaptureError("dummy_input is None: pass an example input, e.g. torch.randn(1, 3, 32, 32).")
    dummy_input = copy_input(dummy_input)  # a forward may mutate its inputs (caches grow): keep the user's intact
    recorder = _Recorder(tensor_names)
    input_tensors = flatten_tensors(dummy_input)
    input_values = [recorder.register_input(t) for t in input_tensors]

    def enter(module, _inputs):
        recorder.scope_names += (module_names.get(id(module), type(module).__name__),)
        recorder.scope_modules.append(module)

    def leave(module, _inputs, _output):
        if recorder.scope_modules and recorder.scope_modules[-1] is module:
            recorder.scope_modules.pop()
            recorder.scope_names = recorder.scope_names[:-1]

    modes = {m: m.training for m in model.modules()}
    traced_attributes = _trace_int_attributes(model, module_names)
    opaque = _record_as_one_call(model, recorder, opaque_call_name) if opaque_call_name is not None else []
    pre_handle = nn.modules.module.register_module_forward_pre_hook(enter)
    post_handle = nn.modules.module.register_module_forward_hook(leave)
    model.eval()
    try:
        with torch.enable_grad(), recorder:
            output = run_model(model, dummy_input)
    except Exception as error:
        raise GraphCaptureError(_capture_failure(error)) from error
    finally:
        pre_handle.remove()
        post_handle.remove()
        for module, training in modes.items():
            module.training = training  # train() would recurse into children once per module
        for module, name, value in traced_attributes:
            module.__dict__[name] = value
        for module, own_forward in opaque:
            if own_forward is None:
                del module.forward
            else:
                module.forward = own_forward
        _detach_cached_tensors(model)
    caches: List[str] = []
    output_tensors = flatten_tensors(output, caches)
    if caches:
        logger.info("the model returns a key/value cache (%s): its keys and values follow the pruned heads, so "
                    "they are not outputs whose shape pruning must keep", caches[0])
    if not output_tensors:
        raise GraphCaptureError("the model returned no tensor: OTO needs at least one tensor output to trace.")
    output_values = []
    for tensor in output_tensors:
        value_id = recorder.value_id(tensor)
        if value_id not in output_values:
            output_values.append(value_id)
    recorder.close()
    logger.debug("captured %d calls, %d values", len(recorder.calls), len(recorder.values))
    return CaptureResult(recorder.calls, recorder.values, input_values, output_values, recorder.param_names)


def map_value_refs(template: Any, replace: Callable[[ValueRef], Any]) -> Any:
    """A copy of an argument template with every :class:`ValueRef` replaced by ``replace(ref)`` (the containers
    :func:`iter_value_refs` walks are rebuilt, everything else is kept as is)."""
    if isinstance(template, ValueRef):
        return replace(template)
    if isinstance(template, tuple):
        return tuple(map_value_refs(t, replace) for t in template)
    if isinstance(template, list):
        return [map_value_refs(t, replace) for t in template]
    if isinstance(template, dict):
        return {k: map_value_refs(v, replace) for k, v in template.items()}
    return template


def iter_value_refs(obj: Any) -> Sequence[ValueRef]:
    """All :class:`ValueRef` placeholders inside an argument template, in order."""
    found: List[ValueRef] = []

    def visit(o):
        if isinstance(o, ValueRef):
            found.append(o)
        elif isinstance(o, (list, tuple)):
            for item in o:
                visit(item)
        elif isinstance(o, dict):
            for item in o.values():
                visit(item)

    visit(obj)
    return found
