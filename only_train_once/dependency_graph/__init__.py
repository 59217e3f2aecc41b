"""Dependency analysis: partition parameters into pruning zero-invariant groups."""

from ..compat import post_process_chunk_node
from .pruning_dependency import build_pruning_dependency_graph

__all__ = ["build_pruning_dependency_graph", "post_process_chunk_node"]
