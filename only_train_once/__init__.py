"""only_train_once: joint structured pruning and mixed-precision quantization while training (GETA / HESSO).

    from only_train_once import OTO, GetaConfig
    oto = OTO(model, dummy_input)
    optimizer = oto.geta(config=GetaConfig(...))   # or oto.geta(lr=...), oto.hesso(...)
    ...train...
    oto.construct_subnet(out_dir="./cache")

Docstrings that cite "SPEC x.y" refer to the sections of docs/algorithms.md.
"""

from .dependency_graph import build_pruning_dependency_graph
from .graph import Graph
from .operation.registry import register_module, register_operator
from .optimizer.config import BitRange, GetaConfig, HessoConfig, Schedule
from .oto import OTO
from .subnet_construction.huggingface import load_pretrained

__version__ = "0.1.0"

__all__ = ["OTO", "GetaConfig", "HessoConfig", "Schedule", "BitRange", "load_pretrained", "Graph",
           "build_pruning_dependency_graph", "register_operator", "register_module", "__version__"]
