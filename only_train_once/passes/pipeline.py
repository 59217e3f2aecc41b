"""The pipeline: every pass from a model to the groups its optimizer trains, declared once, in order.

Stages (each pass's ``stage`` says which; each stage runs on one target):

- ``graph`` (on a :class:`~only_train_once.graph.Graph`, run by ``Graph(model, dummy_input)``): trace the model
  into the IR and clean it up;
- ``groups`` (on the graph, run by :func:`~only_train_once.dependency_graph.build_pruning_dependency_graph`):
  the index-space analysis and the pruning zero-invariant groups built from it;
- ``training`` (on an :class:`~only_train_once.OTO`, run by ``OTO(model, dummy_input)``): what the optimizers
  need on top of the groups, and the optional build-time checks.

``graph.results`` keeps what each pass returned, by pass name.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from ..dependency_graph.pruning_dependency import analyze_spaces, build_groups, report_groups
from ..graph.graph import Graph
from ..graph.qadg import fold_quantizers
from ..subnet_construction.group_check import wanted
from .runner import Pass


def _set_trainable(oto) -> None:
    oto.set_trainable()


def _verify_groups(oto) -> Optional[List[str]]:
    setting = oto.build_options.verify_groups
    if not wanted(setting, oto.model):
        return None
    return oto.verify_groups(requested=setting is True)


def _check_control_flow(oto) -> Optional[str]:
    return oto.check_control_flow() if oto.build_options.check_control_flow else None


def _cluster_node_groups(oto):
    return oto.cluster_node_groups()


PIPELINE: Tuple[Pass, ...] = (
    Pass("index_model", Graph.index_model, "graph", "modules, parameters and buffers by name"),
    Pass("capture", Graph.capture, "graph", "run the model on the dummy input; one node per recorded call"),
    Pass("fold_quantizers", fold_quantizers, "graph", "fold each quantizer into the layer it feeds (QADG)"),
    Pass("remove_dead_nodes", Graph.remove_dead_nodes, "graph", "drop nodes no model output depends on"),
    Pass("skip_patterns", Graph.apply_skip_patterns, "graph", "remove the user's skip patterns"),
    Pass("renumber", Graph.renumber, "graph", "number the nodes consecutively"),
    Pass("attach_operators", Graph.attach_operators, "graph", "catalogue entry and operator of every node"),
    Pass("analyze_spaces", analyze_spaces, "groups", "which prunable unit owns each parameter slice"),
    Pass("build_groups", build_groups, "groups", "the pruning zero-invariant groups"),
    Pass("report_groups", report_groups, "groups", "warn about what the analysis could not prune"),
    Pass("set_trainable", _set_trainable, "training", "trainability from requires_grad"),
    Pass("verify_groups", _verify_groups, "training", "zero random units, compare the subnet (opt-in/auto)"),
    Pass("check_control_flow", _check_control_flow, "training", "warn if other inputs take another path (opt-in)"),
    Pass("cluster_node_groups", _cluster_node_groups, "training", "cluster the prunable groups (informational)"),
)

STAGES = ("graph", "groups", "training")


def stage(name: str) -> Tuple[Pass, ...]:
    """The passes of stage ``name``, in pipeline order."""
    if name not in STAGES:
        raise ValueError(f"unknown pipeline stage {name!r}; the stages are {STAGES}")
    return tuple(p for p in PIPELINE if p.stage == name)
