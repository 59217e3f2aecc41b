"""The graph IR node: one recorded operator call."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from ..compat import ReferenceNodePredicates
from .trace import TracedCall, ValueRef, iter_value_refs


class Node(ReferenceNodePredicates):
    """One operator in the traced graph.

    Attributes:
        id: ``"node-<k>"``, ``k`` the call's position in the forward pass (stable across runs).
        index: ``k``, the node's position (sort nodes by it rather than parsing ids); after the ``renumber``
            pass, its position in ``graph.nodes``.
        op_name: normalised operator kind (``"conv"``, ``"linear"``, ``"batchnorm"``, ``"add"``...).
        call: the recorded call (function, argument template, value ids, module scope).
        inputs / outputs: activation value ids consumed / produced (parameters excluded).
        param_names: names of the model parameters and buffers the operator reads, in argument order.
        quant_param_names: quantizer parameters folded into this node by the QADG pass.
        folded_quantizers: the quantizer calls folded into this node (weight first, then activation).
        input_shape / output_shape: shapes of the activation inputs and of the first output.
        module: the innermost module whose forward issued the call (None for top-level code).
        node_group_ids: ids of the node groups this node belongs to (set by the dependency analysis).
    """

    def __init__(self, call: TracedCall, op_name: str, inputs: List[str], outputs: List[str],
                 param_names: List[str], input_shape: List[Tuple[int, ...]], output_shape: Optional[Tuple[int, ...]],
                 index: int):
        self.id = call.id
        self.index = index
        self.op_name = op_name
        self.call = call
        self.inputs = inputs
        self.outputs = outputs
        self.param_names = param_names
        self.quant_param_names: List[str] = []
        self.folded_quantizers: List[TracedCall] = []
        self.input_shape = input_shape
        self.output_shape = output_shape
        self.node_group_ids: List[str] = []
        self.pruned_status = {"out_dim": False, "in_dim": False}
        self.cfg_params: Dict[str, Any] = {}
        self._tensor_args: Optional[List[str]] = None
        self.op: Any = None  # operator description, attached by the graph (see operation.operator)
        self.op_kind: Any = None  # catalogue entry (an OpKind), attached by the graph's attach_operators pass

    @property
    def module(self) -> Optional[nn.Module]:
        return self.call.module

    @property
    def scope(self) -> str:
        return self.call.scope[-1] if self.call.scope else ""

    @property
    def all_param_names(self) -> List[str]:
        return self.param_names + [n for n in self.quant_param_names if n not in self.param_names]

    @property
    def tensor_args(self) -> List[str]:
        """Value ids of the call's tensor arguments (parameters included), in order, repeats kept."""
        if self._tensor_args is None:
            self._tensor_args = [ref.value_id for ref in iter_value_refs((self.call.args, self.call.kwargs))]
        return self._tensor_args

    def invalidate_arguments(self) -> None:
        """Forget derived argument data after a pass rewrote ``call.args``/``call.kwargs``."""
        self._tensor_args = None

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """The call's argument by position or keyword (a :class:`ValueRef` for tensors); a negative ``index``
        looks up the keyword only."""
        if name in self.call.kwargs:
            return self.call.kwargs[name]
        if 0 <= index < len(self.call.args):
            return self.call.args[index]
        return default

    def value_arg(self, index: int, name: str) -> Optional[str]:
        """Value id of a tensor argument, or None if absent or not a tensor."""
        value = self.arg(index, name)
        return value.value_id if isinstance(value, ValueRef) else None

    @property
    def title(self) -> str:
        title = self.op_name
        if self.module is not None and self.param_names:
            title = f"{self.op_name}-{type(self.module).__name__}"
        kernel = self.cfg_params.get("kernel_shape")
        if kernel:
            title += " " + "x".join(str(k) for k in kernel)
        strides = self.cfg_params.get("strides")
        if strides and any(s != 1 for s in strides):
            title += f"/s{strides[0]}"
        return title

    @property
    def is_stem(self) -> bool:
        return bool(self.op is not None and self.op.is_stem)

    def __repr__(self) -> str:
        return f"Node({self.id}, {self.op_name}, params={self.all_param_names})"
