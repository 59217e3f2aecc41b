"""A compression report: per-layer bit widths and kept units as plots, the group graph, a markdown/HTML summary.

``write_report(oto, out_dir)`` (also ``oto.report(out_dir)``) works before training (all units kept), after
training (units whose slices are all zero count as pruned) and after ``construct_subnet`` (what was removed).
Plots need matplotlib; the graph picture needs Graphviz's ``dot`` (otherwise the ``.gv`` source is linked).
"""

from __future__ import annotations

import html
import os
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..dependency_graph.param_groups import zero_units_by_group
from ..subnet_construction.plan import PruningPlan


def unit_counts(graph, plan: Optional[PruningPlan] = None) -> List[Tuple[str, int, int]]:
    """``(group label, units, units kept)`` for every prunable, non-auxiliary group; the units ``plan`` removed
    (``oto.pruning_plan`` after ``construct_subnet``), else those whose slices are all zero."""
    if plan is not None:
        removed = {key: int(mask.sum()) for key, mask in plan.pruned_units.items()}
    else:
        removed = {key: int(zero.size) for key, zero in zero_units_by_group(graph).items()}
    rows = []
    for group in graph.node_groups.values():
        if group.is_prunable and not group.is_auxiliary:
            label = group.members[0].name.rsplit(".", 1)[0] if group.members else group.id
            rows.append((label, group.num_units, group.num_units - removed.get(group.key, 0)))
    return rows


def layer_bit_widths(model) -> Dict[str, Tuple[int, int]]:
    """``{layer: (weight bits, activation bits)}`` for the quantized layers (activation 32 when not quantized)."""
    return {name: (int(m.weight_bit), int(m.activation_bit)) for name, m in model.named_modules()
            if hasattr(m, "weight_bit") and hasattr(m, "activation_bit")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_bar_chart(plt, figure, axis, positions, labels: List[str], ylabel: str, title: str, path: str) -> None:
    axis.set_xticks(positions, labels, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_bits(bits: Dict[str, Tuple[int, int]], path: str) -> None:
    plt = _pyplot()
    names = list(bits)
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 3.2))
    axis.bar(positions - 0.2, [bits[n][0] for n in names], 0.4, label="weights")
    axis.bar(positions + 0.2, [min(bits[n][1], 32) for n in names], 0.4, label="activations")
    _save_bar_chart(plt, figure, axis, positions, names, "bits", "Bit width per layer", path)


def _plot_units(rows: List[Tuple[str, int, int]], path: str) -> None:
    plt = _pyplot()
    positions = np.arange(len(rows))
    kept = [r[2] for r in rows]
    pruned = [r[1] - r[2] for r in rows]
    figure, axis = plt.subplots(figsize=(max(4.0, 0.35 * len(rows) + 2), 3.2))
    axis.bar(positions, kept, 0.7, label="kept")
    axis.bar(positions, pruned, 0.7, bottom=kept, label="pruned", color="#d9d9d9")
    _save_bar_chart(plt, figure, axis, positions, [r[0] for r in rows], "units (channels, heads, ...)",
                    "Kept units per pruning group", path)


def _graph_picture(oto, out_dir: str) -> str:
    """Render the group graph as PNG (or write the DOT source); returns the file name."""
    from .. import visualization

    dot = visualization.build_dot(oto.graph, vertical=True, display_params=False, display_flops=False,
                                  display_macs=False)
    stem = os.path.join(out_dir, "groups.gv")
    if shutil.which("dot") is None:
        dot.save(stem)
        return "groups.gv"
    dot.render(stem, format="png", cleanup=True)
    return "groups.gv.png"


def write_report(oto, out_dir: str) -> str:
    """Write ``report.md``, ``report.html`` and their pictures to ``out_dir``; returns the markdown path."""
    os.makedirs(out_dir, exist_ok=True)
    model = oto.model
    rows = unit_counts(oto.graph, oto.pruning_plan)
    bits = layer_bit_widths(model)
    pictures = []
    if bits:
        _plot_bits(bits, os.path.join(out_dir, "bit_widths.png"))
        pictures.append(("Bit widths", "bit_widths.png"))
    if rows:
        _plot_units(rows, os.path.join(out_dir, "kept_units.png"))
        pictures.append(("Kept units", "kept_units.png"))
    graph_file = _graph_picture(oto, out_dir)
    total, kept = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines = [f"# Compression report: {type(model).__name__}", "",
             f"Prunable units kept: {kept} of {total} ({100 * (1 - kept / total) if total else 0:.1f}% pruned).", ""]
    if bits:
        lines += ["| layer | weight bits | activation bits |", "|---|---|---|"]
        lines += [f"| {name} | {w} | {a if a < 32 else 'float'} |" for name, (w, a) in bits.items()]
        lines.append("")
    lines += ["| group | units | kept |", "|---|---|---|"] + [f"| {n} | {u} | {k} |" for n, u, k in rows] + [""]
    lines += [f"![{title}]({name})" for title, name in pictures]
    lines += ["", f"Group graph: [{graph_file}]({graph_file}) (nodes coloured by group; dashed: unprunable)", ""]
    markdown = "\n".join(lines)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(markdown)
    body = [f"<h1>Compression report: {html.escape(type(model).__name__)}</h1>",
            f"<p>Prunable units kept: {kept} of {total}.</p>"]
    body += [f"<h2>{title}</h2><img src='{name}'>" for title, name in pictures]
    body.append("<h2>Group graph</h2>" + (f"<img src='{graph_file}' style='max-width:100%'>"
                                            if graph_file.endswith(".png") else f"<a href='{graph_file}'>DOT</a>"))
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as handle:
        handle.write("<html><body>" + "\n".join(body) + "</body></html>")
    return path
