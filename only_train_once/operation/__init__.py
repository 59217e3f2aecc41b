"""Operator descriptions: the catalogue of traced calls and per-node operator objects."""

from .catalogue import (ADD, AFFINE_NORM, CONCAT, CUSTOM, DIV, GENERATE, MUL, OP_KINDS, PRESERVE, STEM, OpKind,
                        RuleFindings, lookup)
from .operator import (BASIC_MODULES, COMPOSED_MODULES, UNPRUNABLE_BASIC_OPERATORS, UNPRUNABLE_COMPOSED_OPERATORS,
                       Operator)
from .registry import ModuleShrink, register_module, register_operator
from . import thirdparty  # noqa: F401,E402 (registers the third-party layers' rules)
from . import experts  # noqa: F401,E402 (registers the mixture-of-experts layers' rule)

__all__ = ["OP_KINDS", "OpKind", "RuleFindings", "lookup", "Operator", "BASIC_MODULES", "COMPOSED_MODULES",
           "UNPRUNABLE_BASIC_OPERATORS", "UNPRUNABLE_COMPOSED_OPERATORS", "register_operator", "register_module",
           "ModuleShrink", "PRESERVE", "GENERATE", "MUL", "ADD", "DIV", "STEM", "AFFINE_NORM", "CONCAT", "CUSTOM"]
