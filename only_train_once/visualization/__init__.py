"""Graphviz drawing of the traced graph, nodes coloured by node group.

Prunable groups are drawn filled in their group colour, unprunable ones dashed, auxiliary ones as
ellipses; the model input and output appear as an ellipse and a double octagon.
"""

from __future__ import annotations

import html
import logging
import os
import random
import shutil
from typing import Optional

from ..assets import THEMES

logger = logging.getLogger(__name__)


def _group_colours(graph) -> dict:
    rng = random.Random(0)  # fixed seed: the same model always gets the same colours
    return {group_id: "#%02X%02X%02X" % (rng.randint(60, 230), rng.randint(60, 230), rng.randint(60, 230))
            for group_id in graph.node_groups}


def _label(graph, node, display_params: bool, display_flops: bool, display_macs: bool, totals: dict) -> str:
    rows = [f"<tr><td><b>{html.escape(node.title)}</b></td></tr>", f"<tr><td>{node.id}</td></tr>"]
    if display_params:
        named = node.op.name_to_param
        for name in node.all_param_names:
            shape = "x".join(str(s) for s in named[name].shape) if name in named else "?"
            rows.append(f"<tr><td>{html.escape(name)}-{shape}</td></tr>")
    for flag, key in ((display_flops, "FLOPs"), (display_macs, "MACs")):
        if flag:
            share = totals[key]["by_nodes"].get(node.id, 0.0) / (totals[key]["total"] or 1.0)
            rows.append(f"<tr><td>{key}-{share:.4f}</td></tr>")
    return "<<table border='0' cellborder='0' cellpadding='1'>" + "".join(rows) + "</table>>"


def build_dot(graph, vertical: bool = False, by_node_groups: bool = True, display_params: bool = True,
              display_flops: bool = True, display_macs: bool = True):
    """The :class:`graphviz.Digraph` of ``graph`` (needs the ``graphviz`` Python package, not the binary)."""
    from graphviz import Digraph

    from .. import metrics

    theme = THEMES["basic"]
    dot = Digraph()
    dot.attr("graph", bgcolor=theme["background_color"], color=theme["outline_color"], fontsize=theme["font_size"],
             fontcolor=theme["font_color"], fontname=theme["font_name"], margin=theme["margin"],
             rankdir="TB" if vertical else "LR", pad=theme["padding"])
    dot.attr("node", shape="box", style="filled", margin="0,0", fillcolor=theme["fill_color"],
             color=theme["outline_color"], fontsize=theme["font_size"], fontcolor=theme["font_color"],
             fontname=theme["font_name"])
    dot.attr("edge", style="solid", color=theme["outline_color"], fontsize=theme["font_size"],
             fontcolor=theme["font_color"], fontname=theme["font_name"])
    totals = {}
    if display_flops:
        totals["FLOPs"] = metrics.compute_flops(graph, in_million=False)
    if display_macs:
        totals["MACs"] = metrics.compute_macs(graph, in_million=False)
    colours = _group_colours(graph) if by_node_groups else {}
    for node in graph.nodes.values():
        attrs = {"shape": "box"}
        groups = [graph.node_groups[g] for g in node.node_group_ids if g in graph.node_groups]
        if by_node_groups and groups:
            attrs["fillcolor"] = ":".join(colours[g.id] for g in groups)
            if any(g.is_prunable for g in groups):
                attrs["style"] = "filled"
                if not node.all_param_names:
                    attrs["fontcolor"] = "#FFFFFF"
            else:
                attrs["style"] = "dashed"
            if any(g.is_auxiliary for g in groups):
                attrs["shape"] = "ellipse"
        dot.node(node.id, _label(graph, node, display_params, display_flops, display_macs, totals), **attrs)
    dot.node("dummy_input", "input", shape="ellipse")
    dot.node("dummy_output", "output", shape="doubleoctagon")
    for node in graph.input_nodes:
        dot.edge("dummy_input", node.id)
    for src, dst, label in graph.edges:
        dot.edge(src, dst, label=label)
    for node in graph.output_nodes:
        dot.edge(node.id, "dummy_output")
    return dot


def visualize(graph, model, out_dir: Optional[str] = None, view: bool = False, vertical: bool = True,
              by_node_groups: bool = True, display_params: bool = False, display_flops: bool = False,
              display_macs: bool = False) -> str:
    """Write ``<Name>_zig.gv`` (and its PDF when Graphviz's ``dot`` is installed); returns the ``.gv`` path."""
    name = getattr(model, "name", None) or type(model).__name__
    out_dir = out_dir or "./"
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}_zig.gv")
    dot = build_dot(graph, vertical, by_node_groups, display_params, display_flops, display_macs)
    if shutil.which("dot") is None:
        dot.save(path)
        logger.warning("Graphviz's 'dot' program is not installed, so only the DOT source was written to %s. "
                       "Install Graphviz (e.g. 'apt-get install graphviz') or render it with "
                       "'dot -Tpdf %s -o %s.pdf'.", path, path, path)
        return path
    dot.render(path, view=view)
    return path
