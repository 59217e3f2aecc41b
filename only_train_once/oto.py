"""The ``OTO`` facade: trace a model, build its pruning groups, hand them to an optimizer, build the subnet."""

from __future__ import annotations

import contextlib
import gc
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from torch import nn

from . import metrics, visualization
from .compat import ReferenceOTOMethods
from .dependency_graph import build_pruning_dependency_graph
from .dependency_graph import param_groups as group_ops
from .graph import Graph
from .graph.control_flow import warn_about_control_flow
from .optimizer.base_hybrid_sparse_optimizer import OPTIMIZER_REASON
from .optimizer.config import GetaConfig, HessoConfig
from .passes import run_passes
from .passes.pipeline import stage
from .subnet_construction.group_check import run_check
from .subnet_construction.plan import PruningPlan
from .utils import warn_ignored

logger = logging.getLogger(__name__)

_MODES = ("prune", "erase")


def _resolve_config(config_class, config, keywords: Dict[str, Any], method: str):
    """The optimizer config: ``config`` itself, or one built from the reference's keywords (never both)."""
    if config is None:
        config = config_class.from_keywords(**keywords)
    elif not isinstance(config, config_class):
        raise TypeError(f"oto.{method}(config=...) takes a {config_class.__name__}, got {type(config).__name__}; "
                        f"pass the reference's settings as keywords (oto.{method}(lr=...)) or config=")
    elif keywords:
        raise TypeError(f"oto.{method}: pass either config= or keywords, not both (got {sorted(keywords)})")
    if config.device is not None:
        warn_ignored(f"OTO.{method}", "device", "the optimizer keeps each state tensor on its parameter's device",
                     stacklevel=3)
    return config


@contextlib.contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector during a graph build.

    A build allocates many small objects while thousands stay alive; the collector's repeated full passes over
    them made the build time grow quadratically with depth (measured: 12 ms per decoder block at 8 blocks, 21 ms
    at 32; 13 ms at both with the collector paused). Nothing the build creates needs collecting before it ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class BuildOptions:
    """The optional build-time checks of ``OTO(...)``, read by the ``training`` stage of the pipeline (the
    ``verify_groups`` pass validates its setting)."""

    verify_groups: Union[bool, str] = "auto"
    check_control_flow: bool = False


class OTO(ReferenceOTOMethods):
    """Only Train Once: structured pruning and mixed-precision quantization while training.

    ``OTO(model, dummy_input)`` traces ``model`` on ``dummy_input`` (a tensor, a tuple of positional inputs,
    a list passed as one argument, or a dict of keyword inputs), partitions its parameters into pruning
    zero-invariant groups, and exposes them to :meth:`geta` / :meth:`hesso`. After training,
    :meth:`construct_subnet` removes the zeroed groups and writes the compressed model.

    ``compress_mode="erase"`` analyses the model the same way, but :meth:`construct_subnet` keeps the
    architecture: the zeroed groups stay in place with their parameters exactly zero (nothing is removed).
    The reference's operator-erasing search (``h2spg``) is not provided.

    ``verify_groups`` (default ``"auto"``): check the groups right after the build (:meth:`verify_groups`): random
    units of every prunable group are zeroed at once, the subnet is built in memory and compared with the model;
    only if that fails, the groups responsible are found by bisection. A group the analyzer got wrong is then left
    unprunable, with one warning naming it, before training instead of failing ``construct_subnet`` after it: an
    analyzer mistake costs compression, never a training run. It costs one forward of the model and one of the
    subnet, 0.4x to 1.6x the graph build on the sanity zoo (``benchmarks/group_check.py``), and holds about the
    model's size again in memory while it runs. ``"auto"`` runs it for models whose parameters and buffers take at
    most 1 GiB (``subnet_construction.group_check.AUTO_MAX_BYTES``); ``True`` always, ``False`` never.
    ``construct_subnet`` verifies the compressed model either way.

    Limitation: the graph is one execution path, the dummy input's. Control flow that depends on tensor values
    (``if x.sum() > 0``, a loop count read from a tensor) is not captured: groups follow the traced path only,
    and the compressed model may fail or differ on inputs taking another path. ``check_control_flow=True`` (off by
    default: three more traces) runs the model on other inputs and warns, naming the module, when the path changes.
    """

    def __init__(self, model: Optional[nn.Module] = None, dummy_input: Any = None, compress_mode: str = "prune",
                 skip_patterns: Union[None, str, Sequence[str]] = None, strict_out_nodes: bool = False,
                 verify_groups: Union[bool, str] = "auto", check_control_flow: bool = False):
        if compress_mode not in _MODES:
            raise ValueError(f"compress_mode must be one of {_MODES}, got {compress_mode!r}")
        self._model = model
        self._dummy_input = dummy_input
        self._skip_patterns = skip_patterns
        self._strict_out_nodes = strict_out_nodes
        self._mode = compress_mode
        self._graph: Optional[Graph] = None
        self._compressed_graph: Optional[Graph] = None  # traced from the compressed model, for the metrics
        self._optimizer: Optional[weakref.ref] = None
        #: What :meth:`construct_subnet` removed (a :class:`~.subnet_construction.plan.PruningPlan`), None before.
        self.pruning_plan: Optional[PruningPlan] = None
        self.build_options = BuildOptions(verify_groups, check_control_flow)
        if model is not None and dummy_input is not None:
            with _collector_paused():
                self.initialize(model, dummy_input, skip_patterns, strict_out_nodes)
                self.partition_pzigs()
                graph = self._require_graph()
                run_passes(stage("training"), self, graph.results, lint=graph.lint)
        self.compressed_model_path: Optional[str] = None
        self.full_group_sparse_model_path: Optional[str] = None

    # -- graph --------------------------------------------------------------------------------------
    def initialize(self, model: Optional[nn.Module] = None, dummy_input: Any = None,
                   skip_patterns: Union[None, str, Sequence[str]] = None, strict_out_nodes: bool = False) -> None:
        """(Re)trace ``model`` on ``dummy_input``; does not partition (call :meth:`partition_pzigs`)."""
        model = model if model is not None else self._model
        dummy_input = dummy_input if dummy_input is not None else self._dummy_input
        if not isinstance(model, nn.Module):
            raise TypeError(f"OTO needs a torch.nn.Module, got {type(model).__name__}")
        self._model, self._dummy_input = model, dummy_input
        self._skip_patterns, self._strict_out_nodes = skip_patterns, strict_out_nodes
        if strict_out_nodes:
            warn_ignored("OTO", "strict_out_nodes", "the graph's outputs are always the tensors the model returns")
        self._graph = Graph(model, dummy_input, skip_patterns=skip_patterns, strict_out_nodes=strict_out_nodes)
        self.pruning_plan = None

    @property
    def model(self) -> Optional[nn.Module]:
        """The model this OTO compresses (the same object the user passed; shrunk in place by ``construct_subnet``)."""
        return self._model

    @property
    def graph(self) -> Graph:
        """The traced dependency graph (raises before ``OTO(model, dummy_input)`` or ``initialize`` built one)."""
        return self._require_graph()

    @property
    def groups(self) -> List[Any]:
        """The pruning zero-invariant groups, in graph order (each lists its parameters and prunable units)."""
        return list(self._require_graph().node_groups.values())

    def _require_graph(self) -> Graph:
        if self._graph is None:
            raise RuntimeError("OTO has no graph yet: build it with OTO(model, dummy_input) or oto.initialize(...)")
        return self._graph

    def _require_model(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError("OTO has no model yet: build it with OTO(model, dummy_input) or oto.initialize(...)")
        return self._model

    def partition_pzigs(self) -> None:
        """Partition the parameters into pruning zero-invariant groups."""
        build_pruning_dependency_graph(self._require_graph())

    def verify_groups(self, tolerance: float = 1e-4, requested: bool = True) -> List[str]:
        """Check the pruning groups (see :mod:`subnet_construction.group_check`; the model is left bit for bit as it
        was). Each group whose removal would change the model's output (an analyzer mistake) is left unprunable,
        with the reason in its ``unprunable_reasons`` and one warning naming them all; returns their ids.
        ``requested=False`` (the ``"auto"`` default of ``OTO``) logs a check that cannot run at info level.
        """
        self._refuse_after_optimizer("verify_groups")
        failed = run_check(self._require_graph(), self._require_model(), tolerance, requested)
        return [group.id for group in failed]

    def check_control_flow(self) -> Optional[str]:
        """Run the model on other inputs (the negated dummy input, fresh random ones) and warn once, naming the
        module, if it takes another path than the traced one (see :mod:`graph.control_flow`); returns that module's
        name or None."""
        graph = self._require_graph()
        return warn_about_control_flow(self._require_model(), self._dummy_input, graph.module_names, graph.tensor_names)

    def set_trainable(self) -> None:
        """Recompute which groups train from ``requires_grad`` (groups with nothing trainable become unprunable)."""
        self._refuse_after_optimizer("set_trainable")
        group_ops.set_trainable(self._require_graph())

    def cluster_node_groups(self, num_clusters: int = 1) -> Dict[int, list]:
        """Cluster the prunable, trainable node groups (informational); one cluster holds them all by default."""
        return self._require_graph().cluster_node_groups(num_clusters)

    def visualize(self, out_dir: Optional[str] = None, view: bool = False, vertical: bool = True,
                  by_node_groups: bool = True, display_params: bool = False, display_flops: bool = False,
                  display_macs: bool = False) -> str:
        """Draw the graph coloured by node group to ``<out_dir>/<Name>_zig.gv`` (+ PDF if ``dot`` exists)."""
        return visualization.visualize(self._require_graph(), self._model, out_dir, view, vertical, by_node_groups,
                                       display_params, display_flops, display_macs)

    def random_set_zero_groups(self, target_group_sparsity: Optional[float] = None) -> None:
        group_ops.random_set_zero_groups(self._require_graph(), target_group_sparsity, num_group_divisible=2)

    def mark_unprunable_by_node_ids(self, node_ids: Iterable[str] = ()) -> None:
        self._refuse_after_optimizer("mark_unprunable_by_node_ids")
        wanted = set(node_ids)
        for group in self._require_graph().node_groups.values():
            if wanted & set(group.nodes):
                group.mark_unprunable("marked unprunable by node id")

    def mark_unprunable_by_param_names(self, param_names: Iterable[str] = ()) -> None:
        self._refuse_after_optimizer("mark_unprunable_by_param_names")
        wanted = set(param_names)
        groups = self._require_graph().node_groups.values()
        known = {m.name for g in groups for m in g.members}
        missing = sorted(wanted - known)
        if missing:
            logger.warning("mark_unprunable_by_param_names: no group holds %s", missing)
        for group in groups:
            if wanted & set(group.param_names):
                group.mark_unprunable("marked unprunable by parameter name")

    def skip_operators(self, operator_list: Iterable[str] = ()) -> None:
        """Make unprunable every group with a node whose module class (``op._type``) is listed."""
        self._refuse_after_optimizer("skip_operators")
        wanted = set(operator_list)
        for group in self._require_graph().node_groups.values():
            if any(node.all_param_names and node.op._type in wanted for node in group.nodes.values()):
                group.mark_unprunable("operator skipped by skip_operators")

    def _refuse_after_optimizer(self, method: str) -> None:
        """An optimizer fixes its prunable units when it is built: a later change to the groups would not reach it."""
        if self._optimizer is not None and self._optimizer() is not None:
            raise RuntimeError(
                f"oto.{method} was called after oto.geta()/oto.hesso() built an optimizer, which has fixed its "
                f"prunable units and would ignore the change. Call oto.{method} before building the optimizer "
                "(or drop the optimizer and build a new one afterwards)")

    # -- optimizers ---------------------------------------------------------------------------------
    def hesso(self, config: Optional[HessoConfig] = None, **keywords: Any):
        """Build the HESSO optimizer (pruning only) over this model's groups.

        ``oto.hesso(config=HessoConfig(...))``, or the reference's keywords (``lr=0.1, variant="sgd",
        target_group_sparsity=0.5, start_pruning_step=0, pruning_steps=None, pruning_periods=1, ...``), which build
        the config (:meth:`HessoConfig.from_keywords`); the defaults and checks are the config's. On a model
        sharded by FSDP2's ``fully_shard`` after OTO traced it, the optimizer steps each rank's shards
        (:mod:`only_train_once.optimizer.fsdp`, ``docs/distributed.md``).
        """
        from .optimizer import HESSO
        from .optimizer.fsdp import build_optimizer

        config = _resolve_config(HessoConfig, config, keywords, "hesso")
        self._forget_optimizer_reasons()
        return self._remember(build_optimizer(self._require_graph(), HESSO, config.optimizer_keywords()))

    def geta(self, config: Optional[GetaConfig] = None, **keywords: Any):
        """Build the GETA (QASSO) optimizer: joint structured pruning and bit-width learning.

        ``oto.geta(config=GetaConfig(...))``, or the reference's keywords (``lr=0.1, lr_quant=1e-3,
        start_projection_step=0, projection_steps=1, start_pruning_step=1, min_bit_wt=2, max_bit_wt=16,
        verbose="False", ...``), which build the config (:meth:`GetaConfig.from_keywords`); the defaults and checks
        are the config's. FSDP2-sharded models: as :meth:`hesso`.
        """
        from .optimizer import GETA
        from .optimizer.fsdp import build_optimizer

        config = _resolve_config(GetaConfig, config, keywords, "geta")
        self._forget_optimizer_reasons()
        return self._remember(build_optimizer(self._require_graph(), GETA, config.optimizer_keywords()))

    def _remember(self, optimizer):
        """Keep a weak reference only: the optimizer's state (moments, scratch buffers: twice the model or more)
        must be freed when the user drops their optimizer, even while the OTO object lives on.

        The groups the optimizer cannot prune (too few units for its ``group_divisible``...) get its reason on the
        graph's groups too, so that the graph, ``construct_subnet`` and the optimizer agree on what is prunable.
        """
        groups = self._require_graph().node_groups
        for param_group in optimizer.param_groups:
            group = groups.get(param_group["id"])
            for reason in param_group.get("unprunable_reasons", ()):
                if group is not None and reason.startswith(OPTIMIZER_REASON):
                    group.mark_unprunable(reason)
        self._optimizer = weakref.ref(optimizer)
        return optimizer

    def _forget_optimizer_reasons(self) -> None:
        """A new optimizer decides afresh which groups it can prune (its ``group_divisible`` may differ), and numbers
        the units as the previous one did."""
        for group in self._require_graph().node_groups.values():
            group.unprunable_reasons[:] = [r for r in group.unprunable_reasons if not r.startswith(OPTIMIZER_REASON)]

    def get_param_groups(self) -> List[dict]:
        """The optimizer-facing parameter groups (see :func:`dependency_graph.param_groups.get_param_groups`)."""
        return group_ops.get_param_groups(self._require_graph())

    # -- subnet -------------------------------------------------------------------------------------
    def construct_subnet(self, merge_lora_to_base: bool = False, unmerge_lora_to_base: bool = False,
                         export_huggingface_format: bool = False, export_float16: bool = False,
                         out_dir: str = "./", full_group_sparse_model_dir: Optional[str] = None,
                         compressed_model_dir: Optional[str] = None, save_full_group_sparse_model: bool = True,
                         ckpt_format: str = "torch", **kwargs) -> None:
        """Remove every zeroed group and save the full group-sparse and the compressed model.

        ``ckpt_format``: ``"torch"`` (pickled ``.pt`` and ``.safetensors``), ``"safetensors"`` (the weights-only
        ``.safetensors`` file alone, about half the writing time for a large model; the compressed one loads with
        :func:`only_train_once.subnet_construction.load_compressed_weights` and its ``_subnet.json``), ``"onnx"``
        (float ONNX, quantizers as float operators) or ``"onnx_qdq"`` (ONNX QDQ graph with integer weights, see
        :meth:`export_qdq_onnx`).
        The model given to OTO *is* the compressed model afterwards (pruned in place); the paths are stored
        in ``compressed_model_path`` and ``full_group_sparse_model_path``. Pickled models are written in eval
        mode (the live model keeps its modes), so ``torch.load``-ed models compare deterministically. In
        ``compress_mode="erase"`` nothing is removed: the zero groups are kept, exactly zero, in both files.

        Memory and files: tensors are shrunk one at a time and each full tensor is freed as soon as its shrunk form
        replaces it (the OTO graph keeps only data-free stand-ins of the replaced tensors), so construct_subnet holds
        about one tensor beyond the model, provided nothing else still holds the full tensors: delete the training
        optimizer first (its parameter lists and moments keep them alive). The compressed model is verified before
        it is written, and weights files are written in one streaming pass. ``save_full_group_sparse_model=False``
        skips the full group-sparse file (the reference's default, True, writes it first, a full-size file).

        Hugging Face models: their config's size fields follow the pruning where every layer kept the same sizes;
        ``export_huggingface_format=True`` writes the compressed model as a ``save_pretrained`` directory
        (``<out_dir>/<Name>_compressed_hf``, see :func:`only_train_once.load_pretrained`), which becomes
        ``compressed_model_path``.
        """
        from .optimizer.fsdp import check_unsharded

        graph = self._require_graph()
        check_unsharded(graph.root_module, "construct_subnet")
        full_dir, compressed_dir = full_group_sparse_model_dir or out_dir, compressed_model_dir or out_dir
        if self._mode == "erase":
            self._erase(graph, full_dir, compressed_dir, save_full_group_sparse_model, ckpt_format, export_float16,
                        merge_lora_to_base or unmerge_lora_to_base or export_huggingface_format, **kwargs)
            return
        from .subnet_construction import automated_pruning_compression

        self._compressed_graph = None
        files = automated_pruning_compression(
            graph, self._require_model(), merge_lora_to_base=merge_lora_to_base,
            unmerge_lora_to_base=unmerge_lora_to_base,
            export_huggingface_format=export_huggingface_format, export_float16=export_float16,
            full_group_sparse_model_dir=full_dir, compressed_model_dir=compressed_dir,
            save_full_group_sparse_model=save_full_group_sparse_model, ckpt_format=ckpt_format, **kwargs)
        self.compressed_model_path, self.full_group_sparse_model_path = files
        self.pruning_plan = files.plan

    def _erase(self, graph, full_dir: str, compressed_dir: str, save_full: bool, ckpt_format: str,
               export_float16: bool, unsupported: bool, **kwargs) -> None:
        """``compress_mode="erase"``: write the full model and the erased one (same architecture)."""
        from .subnet_construction import automated_erasing_compression

        if unsupported:
            raise NotImplementedError("compress_mode='erase' does not merge LoRA or export the Hugging Face format")
        self.compressed_model_path, self.full_group_sparse_model_path, erased = automated_erasing_compression(
            graph, self._require_model(), full_group_sparse_model_dir=full_dir, compressed_model_dir=compressed_dir,
            save_full_group_sparse_model=save_full, ckpt_format=ckpt_format, export_float16=export_float16,
            **kwargs)
        logger.info("erase mode: %d zero units kept in place", erased)

    def calibrate_activations(self, inputs: Any = None) -> List[str]:
        """Calibrate the activation ranges a freshly quantized weight+activation model has not calibrated yet, on
        ``inputs`` (default: the traced dummy input; real data gives better ranges); returns the layers' names."""
        from .quantization.calibration import calibrate_activations

        return calibrate_activations(self._require_model(), self._dummy_input if inputs is None else inputs)

    # -- low-bit export -----------------------------------------------------------------------------
    def export_qdq_onnx(self, path: str, dummy_input: Any = None) -> str:
        """Write the model (the compressed one after :meth:`construct_subnet`) as an ONNX QDQ graph; returns ``path``.

        Integer weight initializers at each layer's learned width, ``QuantizeLinear``/``DequantizeLinear`` for the
        activations (see :func:`only_train_once.export.export_qdq_onnx`). ``dummy_input`` defaults to the traced one.
        """
        from .export import export_qdq_onnx
        from .quantization.calibration import warn_if_uncalibrated

        warn_if_uncalibrated(self._require_model(), "export_qdq_onnx")
        return export_qdq_onnx(self._require_model(), self._dummy_input if dummy_input is None else dummy_input, path)

    def export(self, out_dir: str, targets: Sequence[str] = ("torch", "onnx", "onnx_int8"), dummy_input: Any = None,
               dynamic_axes: bool = True, **options) -> Dict[str, str]:
        """Write deployable forms of the model (the compressed one after :meth:`construct_subnet`) to ``out_dir``.

        ``"torch"``: a plain PyTorch model (quantizers baked into standard layers, BatchNorm folded) as ``.pt`` and
        weights-only; ``"onnx"``: it as float ONNX with dynamic axes; ``"onnx_int8"``: layers of <= 8 bits as
        integer ONNX kernels. Returns ``{target: path, "report": path}``. Options and bounds:
        :func:`only_train_once.export.export_deployable`.
        """
        from .export import export_deployable
        from .subnet_construction.io import load_spec

        spec = None
        if self.compressed_model_path is not None:
            spec = load_spec(self.compressed_model_path.rsplit(".", 1)[0] + "_subnet.json").to_dict()
        inputs = self._dummy_input if dummy_input is None else dummy_input
        return export_deployable(self._require_model(), inputs, out_dir, targets=targets, dynamic_axes=dynamic_axes,
                                 subnet_spec=spec, **options)

    def save_packed(self, path: str) -> str:
        """Write the model with its weights bit-packed at their learned widths (safetensors); returns ``path``.

        After :meth:`construct_subnet` the file also describes the compressed architecture, so that
        :func:`only_train_once.export.load_packed` rebuilds the model from a fresh instance of the original class.
        """
        from .export import save_packed
        from .quantization.calibration import warn_if_uncalibrated
        from .subnet_construction.io import load_spec

        warn_if_uncalibrated(self._require_model(), "save_packed")
        spec = None
        if self.compressed_model_path is not None:  # construct_subnet wrote <compressed>_subnet.json next to it
            spec = load_spec(self.compressed_model_path.rsplit(".", 1)[0] + "_subnet.json")
        return save_packed(self._require_model(), path, spec)

    def report(self, out_dir: str) -> str:
        """Write a compression report (bit widths, kept units, group graph) to ``out_dir``; returns report.md's path."""
        from .report import write_report

        self._require_graph()
        return write_report(self, out_dir)

    # -- metrics ------------------------------------------------------------------------------------
    def _metrics_graph(self) -> Graph:
        """The graph the metrics read: after :meth:`construct_subnet`, one traced from the compressed model (as a
        fresh ``OTO(compressed_model, dummy_input)`` would), since the original graph keeps the full shapes."""
        graph = self._require_graph()
        if self.pruning_plan is None:
            return graph
        if self._compressed_graph is None:
            with _collector_paused():
                self._compressed_graph = Graph(self._model, self._dummy_input, skip_patterns=self._skip_patterns,
                                               strict_out_nodes=self._strict_out_nodes)
                build_pruning_dependency_graph(self._compressed_graph)
        return self._compressed_graph

    def compute_flops(self, in_million: bool = True, in_billion: bool = False) -> dict:
        return metrics.compute_flops(self._metrics_graph(), in_million, in_billion)

    def compute_macs(self, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
        return metrics.compute_macs(self._metrics_graph(), in_million, in_billion, layerwise)

    def compute_bops(self, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
        return metrics.compute_bops(self._metrics_graph(), in_million, in_billion, layerwise)

    def compute_num_params(self, in_million: bool = True, in_billion: bool = False) -> float:
        return metrics.compute_num_params(self._require_model(), in_million, in_billion)

    def compute_weight_size(self, in_million: bool = True, in_billion: bool = False) -> dict:
        return metrics.compute_weight_size(self._metrics_graph(), in_million, in_billion)

    def compute_average_bit_width(self) -> float:
        return self.compute_weight_size()["total"] / self.compute_num_params()

    def print_layer_breakdown(self, macs_info: dict, bops_info: dict) -> None:
        metrics.print_layer_breakdown(macs_info, bops_info)
