"""HESSO and GETA on models sharded by FSDP2 (``torch.distributed.fsdp.fully_shard``).

Build ``OTO(model, dummy_input)`` on the unsharded model (same seed on every rank), shard it with ``fully_shard``,
then ``oto.geta(...)`` / ``oto.hesso(...)`` return :class:`ShardedGETA` / :class:`ShardedHESSO`, which train each
rank's shard and prune the same units on every rank as one process would on the whole batch. Recipe, limits and
the way to ``construct_subnet`` afterwards: ``docs/distributed.md``.

How the step stays the single-process step:

- FSDP2 shards every parameter along dim 0 (``Shard(0)``: rank ``r`` holds the ``r``-th ``torch.chunk`` of the
  rows). The optimizer steps a view of those local rows (FSDP's own storage, so the model sees every write), with
  the gradient FSDP reduced for them. Every update of GETA and HESSO is elementwise or per unit slice, so it runs
  on the local rows unchanged.
- A group member pruned along axis 0 sees its local units' rows; one pruned along another axis sees all of its
  units over its local rows. Each per-unit statistic the optimizers compare across units (importance criteria,
  norms) and each per-group sum of GETA's joint step is a sum over rows, so every rank sums its rows and one
  all-reduce of a small float64 vector completes it (:class:`ShardedUnitLayout`); the redundant units chosen from
  the summed scores are the same on every rank.
- Quantizer parameters (``d``, ``q_m``, ``t``: one element each, which FSDP2 hands to one rank) are mirrored whole
  on every rank: their gradients are gathered by one all-reduce per step, every rank applies the same update to
  its mirror and writes back the rows it holds (:class:`ShardedParameters`).

Collectives per step: one (quantizer gradients) for a quantized model, none otherwise; at a pruning period's
start one more (the scores) plus the rank-0 broadcast of the scores that DDP training uses too; in each of
GETA's joint steps one more (the redundant slices' sums). Never one per group or per parameter.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..dependency_graph.param_groups import check_parameters_current, get_param_groups, traced_param_groups
from ..graph.pruning_axis import is_flattened
from ..quantization.calibration import uncalibrated_layers
from ..quantization.quant_layers import QUANT_PARAMETER_NAMES
from .geta import GETA
from .hesso import HESSO
from .unit_layout import UnitLayout

if TYPE_CHECKING:  # imported lazily at run time (see _dtensor_class)
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor

    from .base_hybrid_sparse_optimizer import BaseHybridSparseOptimizer as _ShardedStepsBase
else:
    _ShardedStepsBase = object  # a mixin: the optimizer it extends comes next in the subclasses' bases

logger = logging.getLogger(__name__)


class ShardedModelError(RuntimeError):
    """An operation that needs the whole model was given an FSDP2-sharded one."""


def _dtensor_class():
    """``DTensor``, or None while nothing has imported it (so no parameter can be one: no import cost for the
    unsharded models)."""
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else module.DTensor


def is_sharded(model: nn.Module) -> bool:
    """True when some parameter of ``model`` is a ``DTensor`` (FSDP2's ``fully_shard`` made it one)."""
    dtensor = _dtensor_class()
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def check_unsharded(model: nn.Module, action: str) -> None:
    """Raise :class:`ShardedModelError` naming ``action`` and the way out if ``model`` is FSDP2-sharded."""
    if is_sharded(model):
        raise ShardedModelError(
            f"{action} needs the whole model, and this one is sharded by FSDP2 (fully_shard). Gather it first: call "
            "only_train_once.optimizer.fsdp.gather_full_model(model, unsharded_copy) on every rank, then on rank 0 "
            "build OTO(unsharded_copy, dummy_input) and call its construct_subnet (docs/distributed.md)")


def _row_range(param, rank: int, world: int) -> Tuple[int, int]:
    """``[start, end)`` of dim 0 that ``Shard(0)`` gives ``rank`` of ``world``: the ``torch.chunk`` split."""
    rows = param.shape[0]
    chunk = -(-rows // world)
    start = min(rank * chunk, rows)
    return start, min(start + chunk, rows)


@dataclass
class _Shard:
    """One sharded parameter: the model's ``DTensor``, this rank's rows of it, and the tensor the optimizer steps
    (a view of the local rows, or for a mirrored parameter the whole value)."""

    name: str
    sharded: DTensor
    rows: Tuple[int, int]
    local: Tensor
    mirrored: bool


class ShardedParameters:
    """The optimizer's tensors for the parameters of an FSDP2-sharded model, and the traffic between them and the
    model: :meth:`pull_gradients` before a step, :meth:`push_mirrors` after it (module docstring)."""

    def __init__(self) -> None:
        self._shards: List[_Shard] = []
        self._by_tensor: Dict[int, _Shard] = {}
        self.mesh: Optional[DeviceMesh] = None

    def __len__(self) -> int:
        return len(self._shards)

    def add(self, name: str, param: nn.Parameter) -> Tensor:
        """The tensor the optimizer should step for the model's parameter ``name`` (``param`` itself when it is
        not sharded); quantizer parameters are gathered whole (a collective: call in the same order on every rank)."""
        if not isinstance(param, _dtensor_class()):
            return param
        self._check_layout(name, param)
        assert self.mesh is not None  # set by _check_layout
        rows = _row_range(param, self.mesh.get_local_rank(), self.mesh.size())
        mirrored = name.rpartition(".")[2] in QUANT_PARAMETER_NAMES
        with torch.no_grad():
            local = param.full_tensor().detach().clone() if mirrored else param.to_local().detach()
        if not mirrored and local.shape[0] != rows[1] - rows[0]:
            raise NotImplementedError(f"{name}: this rank holds {local.shape[0]} rows, not the {rows[1] - rows[0]} "
                                      "of FSDP2's torch.chunk split; only fully_shard's default sharding is supported")
        shard = _Shard(name, param, rows, local, mirrored)
        self._shards.append(shard)
        self._by_tensor[id(local)] = shard
        return local

    def _check_layout(self, name: str, param) -> None:
        from torch.distributed.tensor import Shard

        mesh = param.device_mesh
        if mesh.ndim != 1 or tuple(param.placements) != (Shard(0),):
            raise NotImplementedError(f"{name} is placed {param.placements} on a {mesh.ndim}-D mesh; HESSO/GETA on "
                                      "sharded models support fully_shard's default (Shard(0) on a 1-D mesh) only")
        if self.mesh is None:
            self.mesh = mesh
        elif mesh != self.mesh:
            raise NotImplementedError(f"{name} is sharded over another device mesh than the other parameters; "
                                      "shard the whole model over one mesh")

    def row_range(self, tensor: Tensor) -> Optional[Tuple[int, int]]:
        """``[start, end)`` of dim 0 that ``tensor`` (an optimizer tensor from :meth:`add`) holds; None when it
        holds the whole parameter."""
        shard = self._by_tensor.get(id(tensor))
        return None if shard is None or shard.mirrored else shard.rows

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks (a new tensor on ``tensor``'s device)."""
        if self.mesh is None:
            return tensor
        device = self._shards[0].local.device
        summed = tensor.to(device=device, copy=True)
        dist.all_reduce(summed, group=self.mesh.get_group())
        return summed.to(tensor.device)

    def pull_gradients(self) -> None:
        """Give every optimizer tensor the gradient FSDP2 reduced for its rows (mirrors: the whole gradient)."""
        for shard in self._shards:
            if shard.mirrored:
                continue
            self._check_storage(shard)
            grad = shard.sharded.grad
            shard.local.grad = None if grad is None else cast("DTensor", grad).to_local()
        self._gather_mirror_gradients()

    def _check_storage(self, shard: _Shard) -> None:
        current = shard.sharded.to_local()
        if current.numel() and current.data_ptr() != shard.local.data_ptr():
            raise RuntimeError(f"FSDP2 moved the storage of {shard.name} after the optimizer was built, so its steps "
                               "would no longer reach the model; build the optimizer after fully_shard and after "
                               "the model's last to()/to_empty()")

    def _gather_mirror_gradients(self) -> None:
        mirrors = [shard for shard in self._shards if shard.mirrored]
        if not mirrors:
            return
        sizes = [shard.local.numel() for shard in mirrors]
        offsets = torch.tensor([0] + sizes).cumsum(0).tolist()
        # float64: each element is one rank's value plus zeros, so the sum is exact in the parameter's dtype; the
        # tail holds one has-a-gradient flag per mirror
        flat = torch.zeros(offsets[-1] + len(mirrors), dtype=torch.float64, device=mirrors[0].local.device)
        for k, shard in enumerate(mirrors):
            grad = shard.sharded.grad
            if grad is None:
                continue
            local = cast("DTensor", grad).to_local().reshape(-1)
            row = shard.local.numel() // max(shard.local.shape[0], 1) if shard.local.dim() else 1
            start = offsets[k] + shard.rows[0] * row
            flat[start:start + local.numel()] = local
            flat[offsets[-1] + k] = 1.0
        flat = self.all_reduce(flat)
        flags = flat[offsets[-1]:].tolist()  # one device sync
        for k, shard in enumerate(mirrors):
            shard.local.grad = flat[offsets[k]:offsets[k + 1]].view_as(shard.local).to(shard.local.dtype) \
                if flags[k] > 0 else None

    @torch.no_grad()
    def push_mirrors(self) -> None:
        """Write each mirror's rows that this rank holds into the model's shard."""
        for shard in self._shards:
            start, end = shard.rows
            if shard.mirrored and end > start:
                shard.sharded.to_local().copy_(shard.local[start:end])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the model's sharded parameters (the optimizer's tensors only hold aliases)."""
        for shard in self._shards:
            if shard.sharded.grad is None:
                continue
            if set_to_none:
                shard.sharded.grad = None
            else:
                shard.sharded.grad.zero_()


class ShardedUnitLayout(UnitLayout):
    """:class:`.unit_layout.UnitLayout` over a rank's shards: index maps of axis-0 members cut to the local rows,
    and per-unit sums completed over the ranks (:meth:`sum_over_ranks`).

    The slice records, unit ranges and unit count come from the whole maps, so they are the same on every rank
    (a rank whose rows hold no unit keeps the record, with no rows).
    """

    def __init__(self, param_groups: Sequence[dict], shards: ShardedParameters):
        super().__init__(param_groups)
        self.shards = shards
        for unit_slices in self.slices:
            rows = shards.row_range(unit_slices.param)
            if rows is not None and is_flattened(unit_slices.pruning_axis):
                # the local rows of a [experts, rows, width] shard are whole experts: not cut here yet
                raise NotImplementedError(
                    f"{unit_slices.name} is pruned per expert (a mixture of experts' tensor), which sharded "
                    "training does not support yet; keep the experts modules out of fully_shard, or train "
                    "without FSDP2")
            if rows is not None and unit_slices.axis % unit_slices.param.dim() == 0:
                unit_slices.unit_index = unit_slices.unit_index[rows[0]:rows[1]]
                unit_slices.owned = unit_slices.owned[rows[0]:rows[1]]

    def sum_over_ranks(self, tensor: Tensor) -> Tensor:
        return self.shards.all_reduce(tensor)


class _ShardedSteps(_ShardedStepsBase):
    """Mixin turning HESSO/GETA into their sharded form: the layout over the shards, gradients pulled from the
    model's sharded parameters before each step and mirrors written back after it."""

    def __init__(self, params, *, shards: ShardedParameters, **keywords):
        self.shards = shards
        super().__init__(params, **keywords)

    def _make_layout(self) -> UnitLayout:
        return ShardedUnitLayout(self.param_groups, self.shards)

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        self.shards.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        """The optimizer's step on this rank's shards (module docstring); every rank must call it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.shards.pull_gradients()
        super().step(None if loss is None else (lambda: loss))  # GETA reports the closure's loss
        self.shards.push_mirrors()
        return loss


class ShardedGETA(_ShardedSteps, GETA):
    """:class:`.geta.GETA` over an FSDP2-sharded model (module docstring); ``oto.geta`` builds it."""


class ShardedHESSO(_ShardedSteps, HESSO):
    """:class:`.hesso.HESSO` over an FSDP2-sharded model (module docstring); ``oto.hesso`` builds it."""


SHARDED_OPTIMIZERS = {GETA: ShardedGETA, HESSO: ShardedHESSO}


def check_calibrated(model: nn.Module) -> None:
    """Raise :class:`ShardedModelError` if an activation quantizer of the sharded ``model`` is not calibrated.

    A quantized layer calibrates its activation range in its first training forward by writing ``q_m_act`` and
    ``d_quant_act``; under FSDP2 that forward sees a gathered copy of them, which is dropped afterwards, so the
    range would silently stay at its default.
    """
    names = uncalibrated_layers(model)
    if names:
        raise ShardedModelError(
            f"{len(names)} activation quantizers (e.g. {names[0]}) are not calibrated, and a sharded model cannot "
            "calibrate them: call only_train_once.quantization.calibrate_activations(model, inputs) on every rank, "
            "each with its own inputs, before fully_shard (the ranges are then the maximum over the ranks)")


def sharded_param_groups(graph) -> Tuple[List[dict], ShardedParameters]:
    """The graph's param groups with every sharded parameter replaced by this rank's optimizer tensor."""
    current = dict(graph.root_module.named_parameters())
    dtensor = _dtensor_class()
    check_parameters_current(graph, allowed=[name for name, p in current.items() if isinstance(p, dtensor)])
    groups = traced_param_groups(graph)
    shards = ShardedParameters()
    for group in groups:
        group["params"] = [shards.add(name, current[name]) for name in group["p_names"]]
    return groups, shards


def build_optimizer(graph, optimizer_class: type, keywords: dict):
    """``optimizer_class(params=..., **keywords)`` over ``graph``'s groups, in its sharded form when the model is
    FSDP2-sharded (every rank must then call this, in the same order)."""
    if not is_sharded(graph.root_module):
        return optimizer_class(params=get_param_groups(graph), **keywords)
    sharded_class = SHARDED_OPTIMIZERS.get(optimizer_class)
    if sharded_class is None:
        raise NotImplementedError(f"{optimizer_class.__name__} does not train FSDP2-sharded models; use GETA or HESSO")
    if keywords.get("non_finite") == "skip":
        # each rank checks its own rows: one rank would skip a step that another takes, and their collectives
        # would no longer pair up
        raise NotImplementedError("non_finite='skip' is not supported on FSDP2-sharded models, whose ranks check "
                                  "their own rows; keep non_finite='raise' (the default)")
    check_calibrated(graph.root_module)
    groups, shards = sharded_param_groups(graph)
    logger.info("%s over an FSDP2-sharded model: %d sharded parameters over %d ranks", sharded_class.__name__,
                len(shards), shards.mesh.size() if shards.mesh is not None else 1)
    return sharded_class(groups, shards=shards, **keywords)


def gather_full_model(sharded: nn.Module, unsharded: nn.Module) -> Optional[nn.Module]:
    """Load the full state of the FSDP2-sharded ``sharded`` into ``unsharded`` (an unsharded model of the same
    architecture, e.g. built the way ``sharded`` was before ``fully_shard``) on rank 0 and return it; None on the
    other ranks. A collective: call it on every rank. The full state is gathered to rank 0's CPU memory
    (``get_model_state_dict(full_state_dict=True, cpu_offload=True)``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    unsharded.load_state_dict(state)
    return unsharded
