"""Graph capture and the graph IR."""

from .graph import Graph
from .node import Node
from .node_group import NodeGroup

NodeGroupComposedOp = NodeGroup  # the reference's name for attention groups (see only_train_once.compat)

__all__ = ["Graph", "Node", "NodeGroup", "NodeGroupComposedOp"]
