"""Former module of the Swin Transformer, now :mod:`vision_transformer.Swin` (the reference's path)."""
from .vision_transformer.Swin import (
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    WindowAttention,
    swin_mini,
    swin_tiny_patch4_window7_224,
)

__all__ = ["PatchMerging", "SwinTransformer", "SwinTransformerBlock", "WindowAttention", "swin_mini",
           "swin_tiny_patch4_window7_224"]
