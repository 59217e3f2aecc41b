"""Segment Anything (Kirillov et al. 2023) as the reference's sanity tests use it: ``SamModel(SamConfig())``.

The reference vendored Hugging Face's SAM code; this module uses the installed ``transformers`` implementation
(ViT image encoder with windowed and global attention and relative position terms, prompt encoder, two-way
transformer mask decoder) and only adapts the mask decoder's positional signature to the reference's, which
has ``output_attentions`` as its sixth argument::

    model.mask_decoder(image_embeddings, image_positional_embeddings, sparse_prompt_embeddings,
                       dense_prompt_embeddings, multimask_output, output_attentions, attention_similarity,
                       target_embedding)

Needs ``transformers`` (5.x). Parameter names are transformers' (``vision_encoder.pos_embed``,
``vision_encoder.layers.0.attn.qkv.weight``, ``vision_encoder.neck.layer_norm1.weight``, ...).
"""
import importlib
from typing import Optional

from torch import Tensor


def _import_transformers_sam():
    """transformers' SAM module. Its image utilities import torchvision when it is installed; the PyPI wheel beside
    a CPU torch needs the test helper that registers torchvision's missing operators first."""
    try:
        from tests.thirdparty import import_module
    except ImportError:  # outside the repository checkout: a plain import
        import_module = importlib.import_module
    try:
        import_module("torchvision")
    except ImportError:
        pass  # transformers then skips its torchvision imports
    return importlib.import_module("transformers.models.sam.modeling_sam")


_hf_sam = _import_transformers_sam()
SamConfig = importlib.import_module("transformers").SamConfig


class SamMaskDecoder(_hf_sam.SamMaskDecoder):
    """transformers' mask decoder with the reference's positional signature (``output_attentions`` accepted and
    ignored: attention maps are not returned). Returns ``(masks, iou_predictions)``."""

    def forward(self, image_embeddings: Tensor, image_positional_embeddings: Tensor, sparse_prompt_embeddings: Tensor,
                dense_prompt_embeddings: Tensor, multimask_output: bool, output_attentions: Optional[bool] = None,
                attention_similarity: Optional[Tensor] = None, target_embedding: Optional[Tensor] = None):
        outputs = super().forward(image_embeddings, image_positional_embeddings, sparse_prompt_embeddings,
                                  dense_prompt_embeddings, multimask_output, attention_similarity, target_embedding)
        return tuple(outputs[:2])


def sam_vision_encoder(**vision_config) -> "_hf_sam.SamVisionEncoder":
    """transformers' SAM image encoder alone, built from ``SamVisionConfig(**vision_config)``."""
    return _hf_sam.SamVisionEncoder(importlib.import_module("transformers").SamVisionConfig(**vision_config))


def sam_mask_decoder(**mask_decoder_config) -> SamMaskDecoder:
    """The mask decoder alone (reference signature), built from ``SamMaskDecoderConfig(**mask_decoder_config)``."""
    return SamMaskDecoder(importlib.import_module("transformers").SamMaskDecoderConfig(**mask_decoder_config))


class SamModel(_hf_sam.SamModel):
    """transformers' ``SamModel`` whose ``mask_decoder`` takes the reference's positional arguments."""

    def __init__(self, config: "SamConfig") -> None:
        super().__init__(config)
        self.mask_decoder.__class__ = SamMaskDecoder  # same parameters and buffers; only forward's signature differs


__all__ = ["SamConfig", "SamMaskDecoder", "SamModel", "sam_mask_decoder", "sam_vision_encoder"]
