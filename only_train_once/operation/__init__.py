"""Operator descriptions: the catalogue of traced calls and per-node operator objects."""

from .catalogue import OP_KINDS, OpKind, lookup
from .operator import (BASIC_MODULES, COMPOSED_MODULES, UNPRUNABLE_BASIC_OPERATORS, UNPRUNABLE_COMPOSED_OPERATORS,
                       Operator)

__all__ = ["OP_KINDS", "OpKind", "lookup", "Operator", "BASIC_MODULES", "COMPOSED_MODULES",
           "UNPRUNABLE_BASIC_OPERATORS", "UNPRUNABLE_COMPOSED_OPERATORS"]
