"""DDPM UNets configured from YAML (pyyaml needed to build them)."""
from .diffusion import (
    DDPMConfig,
    DiffModel,
    DiffModelBedroom,
    DiffModelCeleba,
    DiffModelChurch,
    DiffModelCIFAR,
    DiffModelDebug,
    diff_model_from_config,
)

__all__ = ["DDPMConfig", "DiffModel", "DiffModelBedroom", "DiffModelCeleba", "DiffModelChurch", "DiffModelCIFAR",
           "DiffModelDebug", "diff_model_from_config"]
