"""DeiT factories under the reference's module path ``backends.vision_transformer.DeiT``."""
from .vit import VisionTransformer, deit_small_patch16_224, deit_tiny_patch16_224

__all__ = ["VisionTransformer", "deit_small_patch16_224", "deit_tiny_patch16_224"]
