"""Graph capture and the graph IR."""

from .graph import Graph
from .node import Node
from .node_group import NodeGroup

NodeGroupComposedOp = NodeGroup

__all__ = ["Graph", "Node", "NodeGroup", "NodeGroupComposedOp"]
