"""CARN super-resolution network."""
from .carn import Block, CarnNet

__all__ = ["Block", "CarnNet"]
