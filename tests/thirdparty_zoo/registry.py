"""The third-party zoo: timm and Hugging Face transformers architectures as data.

Each entry builds a randomly initialised model from its library's own code (nothing is downloaded) and an example
input for a seed. Transformers get small widths and depths (2 blocks, hidden 32-64) so the whole zoo runs on a
laptop CPU; the blocks are the libraries' own. ``default`` marks the handful the default test suite runs; the slow
suite and ``benchmarks/thirdparty_coverage.py`` run them all. Adding a model here adds it to every test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import torch
from torch import nn

from tests.thirdparty import import_module


@dataclass(frozen=True)
class ZooModel:
    """``build()`` returns a fresh model (call under a fixed torch seed); ``example_input(seed)`` its input."""

    name: str
    family: str
    library: str  # "timm" or "transformers"
    build: Callable[[], nn.Module]
    example_input: Callable[[int], Any]
    default: bool = False
    kwargs: Dict[str, Any] = field(default_factory=dict)


def _image(size: int, channels: int = 3) -> Callable[[int], torch.Tensor]:
    def make(seed: int) -> torch.Tensor:
        return torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(seed))
    return make


def _timm(name: str, family: str, size: int = 64, default: bool = False, **kwargs) -> ZooModel:
    def build() -> nn.Module:
        return import_module("timm").create_model(name, pretrained=False, num_classes=10, **kwargs)
    return ZooModel(name, family, "timm", build, _image(kwargs.get("img_size", size)), default, kwargs)


def _timm_class(name: str, family: str, module: str, cls: str, size: int = 32, **kwargs) -> ZooModel:
    """A timm architecture built from its class, for entry points that fix the sizes we shrink."""
    def build() -> nn.Module:
        library = import_module(f"timm.models.{module}")
        arguments = {key: getattr(library, value[1:]) if isinstance(value, str) and value.startswith("@") else value
                     for key, value in kwargs.items()}
        return getattr(library, cls)(num_classes=10, **arguments)
    return ZooModel(name, family, "timm", build, _image(size), False, kwargs)


def _transformers() -> Any:
    import_module("torchvision")  # transformers imports torchvision when it is installed
    return import_module("transformers")


_TEXT = dict(vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_size=32, num_hidden_layers=2,
             num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)


def _tokens(length: int = 8, vocab: int = 128, **extra: Callable[[torch.Generator], torch.Tensor]):
    def make(seed: int) -> Dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        inputs = {"input_ids": torch.randint(0, vocab, (1, length), generator=generator)}
        inputs.update({key: factory(generator) for key, factory in extra.items()})
        return inputs
    return make


def _hf(name: str, family: str, config: str, model: str, example_input: Callable[[int], Any],
        default: bool = False, **config_kwargs) -> ZooModel:
    def build() -> nn.Module:
        library = _transformers()
        built = getattr(library, model)(getattr(library, config)(**config_kwargs))
        built.config.use_cache = False
        return built
    return ZooModel(name, family, "transformers", build, example_input, default, config_kwargs)


def _decoder_tokens(seed: int) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 128, (1, 8), generator=generator),
            "decoder_input_ids": torch.randint(0, 128, (1, 6), generator=generator)}


def _pixels(size: int, channels: int = 3) -> Callable[[int], Dict[str, torch.Tensor]]:
    image = _image(size, channels)
    return lambda seed: {"pixel_values": image(seed)}


def _clip_input(seed: int) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 128, (1, 8), generator=generator),
            "pixel_values": torch.randn(1, 3, 32, 32, generator=generator)}


def _whisper_input(seed: int) -> Dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_features": torch.randn(1, 16, 32, generator=generator),
            "decoder_input_ids": torch.randint(0, 128, (1, 6), generator=generator)}


def _audio(seed: int) -> Dict[str, torch.Tensor]:
    return {"input_values": torch.randn(1, 800, generator=torch.Generator().manual_seed(seed))}


_VISION_TRANSFORMER = dict(img_size=32, depth=2)
_TIMM: List[ZooModel] = [
    _timm("resnet18", "resnet"),
    _timm("resnet50", "resnet"),
    _timm("resnext26ts", "resnet"),
    _timm("res2net50_26w_4s", "resnet"),
    _timm("resnest14d", "resnet"),
    _timm("regnetx_002", "regnet"),
    _timm("regnety_002", "regnet"),
    _timm("densenet121", "densenet"),
    _timm("dla34", "dla"),
    _timm("dpn48b", "dpn"),
    _timm("cspresnet50", "csp"),
    _timm("cspdarknet53", "csp"),
    _timm("vgg11", "vgg", size=32),
    _timm("repvgg_a0", "repvgg"),
    _timm("mobileone_s0", "mobileone"),
    _timm("selecsls42b", "selecsls"),
    _timm("ese_vovnet19b_dw", "vovnet"),
    _timm("hrnet_w18_small", "hrnet"),
    _timm("inception_v3", "inception", size=96),
    _timm("mobilenetv2_050", "mobilenet"),
    _timm("mobilenetv3_small_050", "mobilenet", default=True),
    _timm("mobilenetv4_conv_small", "mobilenet"),
    _timm("mnasnet_050", "mobilenet"),
    _timm("lcnet_050", "mobilenet"),
    _timm("hardcorenas_a", "mobilenet"),
    _timm("tinynet_e", "efficientnet"),
    _timm("efficientnet_b0", "efficientnet"),
    _timm("efficientnet_lite0", "efficientnet"),
    _timm("rexnet_100", "rexnet"),
    _timm("ghostnet_100", "ghostnet"),
    _timm("ghostnetv2_100", "ghostnet"),
    _timm("repghostnet_050", "ghostnet"),
    _timm("convnext_atto", "convnext", default=True),
    _timm("convnextv2_atto", "convnext"),
    _timm("inception_next_tiny", "convnext"),
    _timm("rdnet_tiny", "convnext"),
    _timm("starnet_s1", "starnet"),
    _timm("fasternet_t0", "fasternet"),
    _timm("poolformer_s12", "metaformer"),
    _timm("poolformerv2_s12", "metaformer"),
    _timm_class("convmixer", "convmixer", "convmixer", "ConvMixer", dim=64, depth=2, kernel_size=3, patch_size=4),
    _timm("vit_tiny_patch16_224", "vit", patch_size=8, default=True, **_VISION_TRANSFORMER),
    _timm("deit_tiny_patch16_224", "vit", patch_size=8, **_VISION_TRANSFORMER),
    _timm("deit3_small_patch16_224", "vit", patch_size=8, **_VISION_TRANSFORMER),
    _timm("beit_base_patch16_224", "vit", patch_size=8, embed_dim=64, num_heads=4, **_VISION_TRANSFORMER),
    _timm("eva02_tiny_patch14_224", "vit", img_size=28, patch_size=7, depth=2),
    _timm("cait_xxs24_224", "vit", patch_size=8, **_VISION_TRANSFORMER),
    _timm_class("mlp_mixer", "mlp-mixer", "mlp_mixer", "MlpMixer", img_size=32, patch_size=8, num_blocks=2,
                embed_dim=64),
    _timm_class("resmlp", "mlp-mixer", "mlp_mixer", "MlpMixer", img_size=32, patch_size=8, num_blocks=2,
                embed_dim=64, mlp_ratio=4, block_layer="@ResBlock", norm_layer="@Affine"),
    _timm_class("gmlp", "mlp-mixer", "mlp_mixer", "MlpMixer", img_size=32, patch_size=8, num_blocks=2, embed_dim=64,
                mlp_ratio=6, block_layer="@SpatialGatingBlock", mlp_layer="@GatedMlp"),
    _timm("swin_tiny_patch4_window7_224", "swin", img_size=56, window_size=7, depths=(1, 1, 1, 1)),
    _timm("crossvit_tiny_240", "vit", size=240),
    _timm("pvt_v2_b0", "pvt"),
    _timm("twins_svt_small", "pvt", depths=(1, 1, 1, 1)),
    _timm("coat_lite_tiny", "coat", img_size=64),
    _timm("levit_128s", "levit", img_size=64),
    _timm("mobilevit_xxs", "mobilevit"),
    _timm("mobilevitv2_050", "mobilevit"),
    _timm("efficientvit_b0", "efficientvit"),
    _timm("efficientvit_m0", "efficientvit", img_size=64),
    _timm("fastvit_t8", "fastvit"),
    _timm("focalnet_tiny_srf", "focalnet"),
    _timm("davit_tiny", "davit", depths=(1, 1, 1, 1)),
    _timm("hiera_tiny_224", "hiera", img_size=64),
    _timm("maxvit_nano_rw_256", "maxvit", img_size=64),
    _timm("coatnet_nano_rw_224", "maxvit", img_size=64),
    _timm("tiny_vit_5m_224", "tinyvit", size=64),
    _timm("efficientformer_l1", "efficientformer", size=224),
    _timm("efficientformerv2_s0", "efficientformer", img_size=64),
    _timm("edgenext_xx_small", "edgenext"),
    _timm("xcit_nano_12_p16_224", "xcit", img_size=32, patch_size=8, depth=2),
    _timm("nf_resnet26", "nfnet"),
    _timm("dm_nfnet_f0", "nfnet"),
    _timm("mambaout_femto", "mambaout"),
    _timm("hgnetv2_b0", "hgnet"),
    _timm("hgnet_tiny", "hgnet"),
]

_TRANSFORMERS: List[ZooModel] = [
    _hf("bert", "bert", "BertConfig", "BertModel", _tokens(), default=True, **_TEXT),
    _hf("distilbert", "bert", "DistilBertConfig", "DistilBertModel", _tokens(), vocab_size=128, dim=32, n_layers=2,
        n_heads=4, hidden_dim=64, max_position_embeddings=64),
    _hf("roberta", "bert", "RobertaConfig", "RobertaModel", _tokens(), **_TEXT),
    _hf("albert", "bert", "AlbertConfig", "AlbertModel", _tokens(), embedding_size=16, **_TEXT),
    _hf("electra", "bert", "ElectraConfig", "ElectraModel", _tokens(), embedding_size=16, **_TEXT),
    _hf("deberta_v2", "bert", "DebertaV2Config", "DebertaV2Model", _tokens(), **_TEXT),
    _hf("mobilebert", "bert", "MobileBertConfig", "MobileBertModel", _tokens(), vocab_size=128, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, embedding_size=16, intra_bottleneck_size=16,
        true_hidden_size=16, max_position_embeddings=64),
    _hf("t5", "t5", "T5Config", "T5Model", _decoder_tokens, vocab_size=128, d_model=32, d_kv=8, d_ff=64,
        num_layers=2, num_heads=4),
    _hf("bart", "bart", "BartConfig", "BartModel", _decoder_tokens, vocab_size=128, d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64),
    _hf("clip", "clip", "CLIPConfig", "CLIPModel", _clip_input,
        text_config=dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64), projection_dim=16),
    _hf("whisper", "whisper", "WhisperConfig", "WhisperModel", _whisper_input, vocab_size=128, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, num_mel_bins=16,
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16, max_target_positions=16),
    _hf("wav2vec2", "wav2vec2", "Wav2Vec2Config", "Wav2Vec2Model", _audio, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    _hf("vit", "vit", "ViTConfig", "ViTModel", _pixels(32), image_size=32, patch_size=8, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    _hf("dinov2", "vit", "Dinov2Config", "Dinov2Model", _pixels(32), image_size=32, patch_size=8, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2),
    _hf("swin", "swin", "SwinConfig", "SwinModel", _pixels(32), default=True, image_size=32, patch_size=2, embed_dim=16,
        depths=[1, 1], num_heads=[2, 4], window_size=4),
    _hf("segformer", "segformer", "SegformerConfig", "SegformerModel", _pixels(32), num_encoder_blocks=2,
        depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
        num_attention_heads=[1, 2], mlp_ratios=[2, 2]),
    _hf("convnext", "convnext", "ConvNextConfig", "ConvNextModel", _pixels(32), hidden_sizes=[16, 32],
        depths=[1, 1], num_stages=2),
    _hf("resnet", "resnet", "ResNetConfig", "ResNetModel", _pixels(32), embedding_size=16, hidden_sizes=[16, 32],
        depths=[1, 1], layer_type="bottleneck"),
    _hf("mobilevit", "mobilevit", "MobileViTConfig", "MobileViTModel", _pixels(64), hidden_sizes=[32, 48, 64],
        neck_hidden_sizes=[8, 16, 24, 32, 48, 64, 80]),
    _hf("gpt2", "gpt2", "GPT2Config", "GPT2Model", _tokens(), default=True, vocab_size=128, bos_token_id=1,
        eos_token_id=2, n_embd=32, n_layer=2, n_head=4, n_positions=64),
    _hf("opt", "opt", "OPTConfig", "OPTModel", _tokens(), vocab_size=128, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64),
    _hf("llama", "llama", "LlamaConfig", "LlamaModel", _tokens(), num_key_value_heads=4, **_TEXT),
    _hf("qwen2", "llama", "Qwen2Config", "Qwen2Model", _tokens(), num_key_value_heads=4, **_TEXT),
    _hf("qwen3", "llama", "Qwen3Config", "Qwen3Model", _tokens(), num_key_value_heads=4, head_dim=8, **_TEXT),
    _hf("mistral", "llama", "MistralConfig", "MistralModel", _tokens(), num_key_value_heads=4, **_TEXT),
    _hf("gemma", "gemma", "GemmaConfig", "GemmaModel", _tokens(), num_key_value_heads=4, head_dim=8, **_TEXT),
    _hf("phi", "phi", "PhiConfig", "PhiModel", _tokens(), **_TEXT),
    _hf("phi3", "phi", "Phi3Config", "Phi3Model", _tokens(), num_key_value_heads=4, **_TEXT),
    _hf("gpt_neox", "gpt_neox", "GPTNeoXConfig", "GPTNeoXModel", _tokens(), **_TEXT),
    _hf("mixtral", "moe", "MixtralConfig", "MixtralModel", _tokens(), default=True, num_key_value_heads=4,
        num_local_experts=4, num_experts_per_tok=2, **_TEXT),
    _hf("qwen2_moe", "moe", "Qwen2MoeConfig", "Qwen2MoeModel", _tokens(), num_key_value_heads=4, num_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32, **_TEXT),
    _hf("qwen3_moe", "moe", "Qwen3MoeConfig", "Qwen3MoeModel", _tokens(), num_key_value_heads=4, head_dim=8,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, **_TEXT),
    _hf("olmoe", "moe", "OlmoeConfig", "OlmoeModel", _tokens(), num_key_value_heads=4, num_experts=4,
        num_experts_per_tok=2, **_TEXT),
    _hf("flex_olmo", "moe", "FlexOlmoConfig", "FlexOlmoModel", _tokens(), num_key_value_heads=4, num_experts=4,
        num_experts_per_tok=2, **_TEXT),
    _hf("phimoe", "moe", "PhimoeConfig", "PhimoeModel", _tokens(), num_key_value_heads=4, num_local_experts=4,
        num_experts_per_tok=2, **_TEXT),
    _hf("granitemoe", "moe", "GraniteMoeConfig", "GraniteMoeModel", _tokens(), num_key_value_heads=4,
        num_local_experts=4, num_experts_per_tok=2, **_TEXT),
    _hf("dots1", "moe", "Dots1Config", "Dots1Model", _tokens(), num_key_value_heads=4, head_dim=8, n_routed_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=0, n_shared_experts=1, **_TEXT),
    _hf("ernie4_5_moe", "moe", "Ernie4_5_MoeConfig", "Ernie4_5_MoeModel", _tokens(), num_key_value_heads=4,
        moe_num_experts=4, moe_k=2, moe_intermediate_size=32, moe_layer_start_index=0, **_TEXT),
    _hf("hunyuan_moe", "moe", "HunYuanMoEV1Config", "HunYuanMoEV1Model", _tokens(), num_key_value_heads=4, head_dim=8,
        num_experts=4, moe_topk=2, **_TEXT),
    _hf("glm4_moe", "moe", "Glm4MoeConfig", "Glm4MoeModel", _tokens(), num_key_value_heads=4, n_routed_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=0, n_shared_experts=1, n_group=1,
        topk_group=1, **_TEXT),
    _hf("deepseek_v2", "moe", "DeepseekV2Config", "DeepseekV2Model", _tokens(), num_key_value_heads=4,
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=0,
        n_shared_experts=1, n_group=1, topk_group=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4,
        v_head_dim=8, qk_nope_head_dim=4, **_TEXT),
    _hf("deepseek_v3", "moe", "DeepseekV3Config", "DeepseekV3Model", _tokens(), num_key_value_heads=4,
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=0,
        n_shared_experts=1, n_group=1, topk_group=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4,
        v_head_dim=8, qk_nope_head_dim=4, **_TEXT),
    _hf("jamba", "moe", "JambaConfig", "JambaModel", _tokens(), num_key_value_heads=4, num_experts=4,
        num_experts_per_tok=2, expert_layer_period=1, expert_layer_offset=0, attn_layer_period=2, attn_layer_offset=1,
        mamba_d_state=8, **_TEXT),
    _hf("qwen3_next", "moe", "Qwen3NextConfig", "Qwen3NextModel", _tokens(), num_key_value_heads=4, head_dim=8,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4, **_TEXT),
    _hf("minimax", "moe", "MiniMaxConfig", "MiniMaxModel", _tokens(), num_key_value_heads=4, head_dim=8,
        num_local_experts=4, num_experts_per_tok=2, block_size=4, **_TEXT),
    _hf("lfm2_moe", "moe", "Lfm2MoeConfig", "Lfm2MoeModel", _tokens(), num_key_value_heads=4, num_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=32, num_dense_layers=0,
        layer_types=["full_attention", "full_attention"], **_TEXT),
    # GPT-OSS's experts (transposed, interleaved gate/up, biases, clamped gate) are not read: heads only
    _hf("gpt_oss", "moe", "GptOssConfig", "GptOssModel", _tokens(), num_key_value_heads=4, head_dim=8,
        num_local_experts=4, num_experts_per_tok=2, layer_types=["full_attention", "full_attention"], **_TEXT),
    _hf("mamba", "mamba", "MambaConfig", "MambaModel", _tokens(), default=True, vocab_size=128, hidden_size=32,
        num_hidden_layers=2, state_size=8, expand=2, conv_kernel=4),
]

ZOO: List[ZooModel] = _TIMM + _TRANSFORMERS
BY_NAME: Dict[str, ZooModel] = {entry.name: entry for entry in ZOO}
