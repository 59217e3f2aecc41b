"""Vision transformers: ViT / DeiT (:mod:`.vit`, :mod:`.DeiT`), Swin (:mod:`.Swin`), PVT-v2 (:mod:`.PVT`).

Module names follow the reference (``from backends.vision_transformer.DeiT import deit_tiny_patch16_224``).
Pure torch, random initialisation: ``pretrained=True`` raises.
"""
from .PVT import PyramidVisionTransformerV2, pvt_v2_b0, pvt_v2_b1
from .Swin import SwinTransformer, WindowAttention, swin_mini, swin_tiny_patch4_window7_224
from .vit import (
    Mlp,
    PatchEmbed,
    VisionTransformer,
    ViTAttention,
    check_no_pretrained,
    deit_small_patch16_224,
    deit_tiny_patch16_224,
    vit_base_patch16_224,
    vit_base_patch16_384,
    vit_small_patch16_224,
    vit_tiny,
    vit_tiny_patch16_224,
)

__all__ = [
    "Mlp",
    "PatchEmbed",
    "PyramidVisionTransformerV2",
    "SwinTransformer",
    "VisionTransformer",
    "ViTAttention",
    "WindowAttention",
    "check_no_pretrained",
    "deit_small_patch16_224",
    "deit_tiny_patch16_224",
    "pvt_v2_b0",
    "pvt_v2_b1",
    "swin_mini",
    "swin_tiny_patch4_window7_224",
    "vit_base_patch16_224",
    "vit_base_patch16_384",
    "vit_small_patch16_224",
    "vit_tiny",
    "vit_tiny_patch16_224",
]
