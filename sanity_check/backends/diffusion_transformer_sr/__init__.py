"""DiffIR-style transformer super-resolution (``S3_arch``: :class:`DiffIRS3SNPE`)."""
from .S3_arch import DIRformer, DiffIRS3SNPE

__all__ = ["DIRformer", "DiffIRS3SNPE"]
