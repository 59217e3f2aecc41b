"""Dependency analysis: partition parameters into pruning zero-invariant groups."""

from .pruning_dependency import build_pruning_dependency_graph, post_process_chunk_node

__all__ = ["build_pruning_dependency_graph", "post_process_chunk_node"]
