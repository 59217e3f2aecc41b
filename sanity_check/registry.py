"""Registry of the sanity-check backbones: one entry per model, shared by the runner, the tests and the benchmarks.

An entry's ``example_input(seed)`` returns the ``dummy_input`` to hand to ``OTO``: a tensor, a tuple of positional
arguments (non-tensor items such as CARN's integer scale allowed), or a list passed as one positional argument.
:func:`run_model` applies the same convention.
"""
import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

try:
    from . import backends
except ImportError:  # imported as a top-level module from inside sanity_check/, as the test scripts do
    import backends

DummyInput = Union[Tensor, Tuple[Any, ...], List[Tensor]]
InputFactory = Callable[[int], DummyInput]


@dataclass(frozen=True)
class ReferenceNumbers:
    """Measurements of the reference implementation (SPEC section 0, torch 2.4.1) for regression checks.

    ``params_m`` and ``macs_m`` are in millions, ``weight_size_mbit`` in 10^6 bits (float model, 32 bits). MACs and
    graph counts were measured at ``example_input`` when given, else at the backbone's own example input.
    """

    graph_nodes: int
    node_groups: int
    prunable: int
    auxiliary: int
    prunable_group_sum: int
    params_m: float
    macs_m: float
    weight_size_mbit: float
    example_input: Optional[InputFactory] = None


@dataclass(frozen=True)
class Backbone:
    """A named model with its example input and the sanity-check settings for it.

    ``factory`` builds a fresh randomly initialised model (``build`` seeds the global RNG first).
    ``tolerance`` bounds ``max |full - compressed|`` of the outputs. Parameters listed in
    ``unprunable_param_names`` or whose names fully match ``unprunable_param_pattern`` (a regex) are to be marked
    unprunable. ``heavy`` backbones (minutes per case on a laptop CPU) run only when named: the runner's default
    list and the default test suite leave them out, the slow suite runs them.
    """

    name: str
    factory: Callable[[], nn.Module]
    example_input: InputFactory
    tolerance: float = 1e-4
    unprunable_param_names: Tuple[str, ...] = ()
    unprunable_param_pattern: Optional[str] = None
    reference: Optional[ReferenceNumbers] = None
    notes: str = ""
    heavy: bool = False

    def build(self, seed: int = 0) -> nn.Module:
        """The model with weights drawn after ``torch.manual_seed(seed)``."""
        torch.manual_seed(seed)
        return self.factory()

    def unprunable_names(self, model: nn.Module) -> List[str]:
        """Names of ``model``'s parameters to pass to ``OTO.mark_unprunable_by_param_names``."""
        names = [name for name, _ in model.named_parameters()]
        missing = [name for name in self.unprunable_param_names if name not in names]
        if missing:
            raise KeyError(f"backbone {self.name!r}: unprunable parameters {missing} are not in the model")
        pattern = re.compile(self.unprunable_param_pattern) if self.unprunable_param_pattern else None
        return [
            name for name in names
            if name in self.unprunable_param_names or (pattern is not None and pattern.fullmatch(name))
        ]


def run_model(model: nn.Module, dummy_input: DummyInput) -> Any:
    """Call ``model`` as ``OTO`` does: a tuple is unpacked into positional arguments, anything else is passed as
    the single argument."""
    if isinstance(dummy_input, tuple):
        return model(*dummy_input)
    return model(dummy_input)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(*shape: int) -> InputFactory:
    """Factory of standard-normal tensors of ``shape``."""
    return lambda seed: torch.randn(*shape, generator=_generator(seed))


def _tokens(vocab_size: int, length: int, batch: int = 1) -> InputFactory:
    """Factory of uniformly drawn token ids ``[batch, length]``."""
    return lambda seed: torch.randint(0, vocab_size, (batch, length), generator=_generator(seed))


def _carn_input(size: int) -> InputFactory:
    return lambda seed: (torch.randn(1, 3, size, size, generator=_generator(seed)), 2)


def _unet_input(seed: int) -> DummyInput:
    generator = _generator(seed)
    return torch.randn(1, 3, 32, 32, generator=generator), torch.randint(0, 1000, (1,), generator=generator)


def _images_and_timestep(channels: int, size: int) -> InputFactory:
    """The DDPM UNets' single input: ``channels`` image channels and a timestep channel, uniform in [0, 1)."""
    return lambda seed: torch.rand(1, channels + 1, size, size, generator=_generator(seed))


_DIFFIR_DOWNSAMPLES = ("down1_2.body.0.weight", "down2_3.body.0.weight", "down3_4.body.0.weight")


def _diffir_mini() -> nn.Module:
    return backends.DiffIRS3SNPE(num_blocks=[1, 1, 1, 1], dim=16)


def _diffir_input(*shapes: Tuple[int, ...]) -> InputFactory:
    """Tensors of ``shapes`` followed by the 256-wide prior ``k_v``, as one tuple of positional inputs."""
    def factory(seed: int) -> DummyInput:
        generator = _generator(seed)
        return tuple(torch.randn(*shape, generator=generator) for shape in (*shapes, (1, 256)))
    return factory


_SAM_ENCODER_MARKS = ("pos_embed", "layers.0.attn.qkv.weight", "neck.layer_norm1.weight")
_SAM_VISION_MINI = {"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "mlp_dim": 384,
                    "image_size": 128, "window_size": 4, "global_attn_indexes": [1], "output_channels": 32}


def _sam():
    """The SAM backend module (imports transformers, so only when a SAM backbone is built)."""
    return importlib.import_module(backends.__name__ + ".hf_sam.modeling_sam")


def _sam_decoder_input(seed: int) -> DummyInput:
    """The reference's mask-decoder call: embeddings, positions, one sparse prompt, dense prompt, flags."""
    generator = _generator(seed)
    tensors = [torch.randn(*shape, generator=generator)
               for shape in ((1, 256, 64, 64), (1, 256, 64, 64), (1, 1, 1, 256), (1, 256, 64, 64))]
    return (*tensors, True, None, None, None)


def _groupconv_input(seed: int) -> DummyInput:
    """The reference's four inputs (two images, two feature maps at 1/32) at 64x64 instead of 512x512."""
    generator = _generator(seed)
    shapes = [(1, 3, 64, 64), (1, 3, 64, 64), (1, 384, 2, 2), (1, 64, 2, 2)]
    return tuple(torch.rand(*shape, generator=generator) for shape in shapes)


def _batchnorm_pruning_input(seed: int) -> DummyInput:
    """The reference's list of 3-, 4- and 6-channel images (concatenated to 13 channels) at 32x32, not 256x256."""
    generator = _generator(seed)
    return [torch.rand(1, channels, 32, 32, generator=generator) for channels in (3, 4, 6)]


def _convnext_mini(layer_scale_init_value: float) -> nn.Module:
    return backends.convnext_tiny(layer_scale_init_value, 10, depths=(1, 1, 3, 1), dims=(24, 48, 96, 192))


def _dubn_split() -> nn.Module:
    model = backends.ResNet18_DuBN()
    backends.set_route(model, "MA")
    return model


_CIFAR = _images(1, 3, 32, 32)
_PVT_MINI = {"embed_dims": (16, 32, 64, 128), "num_heads": (1, 2, 2, 4), "depths": (1, 1, 1, 1)}

_ENTRIES = [
    Backbone(
        "mlp", lambda: backends.MLP(3072, 64, 32, 10), _CIFAR,
        reference=ReferenceNumbers(8, 4, 2, 0, 96, 0.1991, 0.199, 6.371),
        notes="Flatten and three Linears.",
    ),
    Backbone(
        "vgg7_bn", backends.vgg7_bn, _CIFAR,
        reference=ReferenceNumbers(28, 8, 7, 0, 2816, 5.1155, 608.053, 163.697),
        notes="Plain conv-BN-ReLU chain with biased convs.",
    ),
    Backbone(
        "resnet18_cifar10", backends.resnet18_cifar10, _CIFAR,
        reference=ReferenceNumbers(70, 13, 12, 0, 2880, 11.174, 555.423, 357.567),
        notes="Residual adds with projection shortcuts.",
    ),
    Backbone("resnet50_cifar10", backends.resnet50_cifar10, _CIFAR, notes="Bottleneck blocks."),
    Backbone(
        "resnet20_cifar10", backends.resnet20_cifar10, _CIFAR,
        reference=ReferenceNumbers(75, 13, 12, 0, 448, 0.2725, 40.813, 8.719),
    ),
    Backbone(
        "resnet56_cifar10", backends.resnet56_cifar10, _CIFAR,
        reference=ReferenceNumbers(201, 31, 30, 0, 1120, 0.8558, 125.748, 27.385),
    ),
    Backbone(
        "densenet121", backends.densenet121, _CIFAR,
        reference=ReferenceNumbers(423, 179, 178, 58, 10240, 7.0485, 888.443, 225.554),
        notes="Dense concatenations: the BatchNorms after each concat form auxiliary groups. 100-class head.",
    ),
    Backbone(
        "convnext_mini", lambda: _convnext_mini(layer_scale_init_value=-1), _CIFAR,
        notes="ConvNeXt-T layout at 1-1-3-1 blocks, 24-192 wide; layer scale disabled as in the reference test.",
    ),
    Backbone(
        "convnext_mini_layer_scale", lambda: _convnext_mini(layer_scale_init_value=1e-6), _CIFAR,
        notes="convnext_mini with layer scale gamma parameters.",
    ),
    Backbone(
        "carn", lambda: backends.CarnNet(scale=2, multi_scale=False, group=1), _carn_input(32),
        reference=ReferenceNumbers(90, 38, 23, 12, 1411, 0.9642, 3961.44, 30.854, example_input=_carn_input(64)),
        notes="Two-argument forward (x, scale); cascading concats; frozen mean-shift convs; pixel shuffle.",
    ),
    Backbone(
        "simple_vit", backends.simpleViT_cifar10, _CIFAR,
        unprunable_param_names=("to_patch_embedding.2.weight",),
        notes="Fused bias-free qkv attention (SimpleViTAttention), sin-cos position buffer.",
    ),
    Backbone(
        "demonet_concat_case1", backends.DemoNetConcatCase1, _CIFAR,
        reference=ReferenceNumbers(18, 6, 5, 1, 576, 0.6273, 605.783, 20.075),
        notes="cat of a 64- and a 128-channel stem output followed by BatchNorm bn_4.",
    ),
    Backbone("demonet_concat_case2", backends.DemoNetConcatCase2, _CIFAR,
             notes="Three-way concat; concat into Linear."),
    Backbone(
        "demonet_convtranspose_in_case1", backends.DemoNetConvtransposeInCase1, _CIFAR,
        notes="ConvTranspose2d + InstanceNorm decoder (reference tolerance 3.0).",
    ),
    Backbone(
        "demonet_convtranspose_in_case2", backends.DemoNetConvtransposeInCase2, _CIFAR,
        notes="ConvTranspose2d with residual add and concat skips (reference tolerance 2.0).",
    ),
    Backbone("demonet_groupnorm_case1", backends.DemoNetGroupNormCase1, _CIFAR, notes="GroupNorm after convs."),
    Backbone("demonet_groupnorm_case2", backends.DemoNetGroupNormCase2, _CIFAR, notes="GroupNorm in residual adds."),
    Backbone("demonet_groupnorm_case3", backends.DemoNetGroupNormCase3, _CIFAR, notes="GroupNorm after concats."),
    Backbone(
        "demonet_groupnorm_case4", backends.DemoNetGroupNormCase4, _CIFAR,
        notes="Non-affine GroupNorm, one channel per group, one group.",
    ),
    Backbone(
        "demonet_in_case3", backends.DemoNetInstanceNormCase3, _CIFAR,
        notes="InstanceNorm affine/non-affine/running stats in residual adds (reference tolerance 3.0).",
    ),
    Backbone(
        "demonet_groupconv_case1", lambda: backends.DemoNetGroupConvCase1(norm_type="in", affine=True),
        _groupconv_input, tolerance=1e-3,
        unprunable_param_names=("conv_1.conv1.weight", "conv_5.conv2.weight", "conv_6.conv1.weight"),
        notes="Depthwise-separable encoder, dilated depthwise fusion with a channel split, transposed-conv decoder; "
              "four inputs, tuple output.",
    ),
    Backbone(
        "demonet_batchnorm_pruning",
        lambda: backends.DemonetBatchnormPruning(13, 32, 256, 5, 3, nn.LeakyReLU(), False, 256),
        _batchnorm_pruning_input,
        unprunable_param_pattern=r".*decoder.*",
        notes="Pre-activation residual blocks with BatchNorm on block inputs, transposed-conv decoder with skip "
              "concats; list of three inputs; decoder parameters unprunable.",
    ),
    Backbone("demonet_weightshare_case1", backends.DemoNetWeightShareCase1, _CIFAR, notes="A conv module used twice."),
    Backbone(
        "demonet_weightshare_case2", backends.DemoNetWeightShareCase2, _CIFAR,
        notes="A bare weight Parameter used by two convs; a bare scale Parameter (reference sparsity 0.24).",
    ),
    Backbone(
        "resnet18_dubn", backends.ResNet18_DuBN, _CIFAR,
        notes="Dual BatchNorm, route 'M': only bn_c is traced, bn_a stays unused.",
    ),
    Backbone(
        "resnet18_dubn_split", _dubn_split, _images(2, 3, 32, 32),
        notes="Dual BatchNorm, route 'MA': the batch is split between bn_c and bn_a.",
    ),
    Backbone(
        "resnet34_dubin", backends.ResNet34_DuBIN, _CIFAR,
        notes="Half InstanceNorm / half DuBN per norm via channel split and concat.",
    ),
    Backbone(
        "tiny_unet", backends.TinyUNet, _unet_input,
        notes="DDPM UNet: forward(x, t), GroupNorm+SiLU, time-embedding broadcast add, skip concats, attention.",
    ),
    Backbone(
        "diffmodel_debug", backends.DiffModelDebug, _images_and_timestep(3, 32), heavy=True,
        notes="DDPM UNet from diffusion/configs/debug.yml: timestep read from a 4th input channel, GroupNorm(32), "
              "dropout, attention at 16x16, skip concats.",
    ),
    *[Backbone(f"diffmodel_{name}", factory, _images_and_timestep(3, size), heavy=True,
               notes=f"DDPM UNet from diffusion/configs/{config}.yml at {size}x{size}.")
      for name, factory, config, size in (("cifar", backends.DiffModelCIFAR, "cifar10", 32),
                                          ("celeba", backends.DiffModelCeleba, "celeba", 64),
                                          ("bedroom", backends.DiffModelBedroom, "bedroom", 256),
                                          ("church", backends.DiffModelChurch, "church", 256))],
    Backbone(
        "diffir_down_path", lambda: _diffir_mini().G.down_path, _diffir_input((1, 48, 16, 16)), heavy=True,
        unprunable_param_names=_DIFFIR_DOWNSAMPLES,
        notes="DiffIR encoder (dim 16): prior-modulated transposed attention and gated depthwise FFN, chunked "
              "depthwise convs, pixel-unshuffle downsampling; four outputs.",
    ),
    Backbone(
        "diffir_up_path", lambda: _diffir_mini().G.up_path,
        _diffir_input((1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 128, 2, 2)), heavy=True,
        notes="DiffIR decoder (dim 16): pixel-shuffle upsampling, skip concats, 1x1 channel reductions.",
    ),
    Backbone(
        "diffir_g", lambda: _diffir_mini().G, _diffir_input((1, 3, 64, 64)), heavy=True,
        unprunable_param_names=tuple(f"down_path.{name}" for name in _DIFFIR_DOWNSAMPLES),
        notes="The whole DiffIR transformer (dim 16): pixel unshuffle x4, encoder, decoder, pixel shuffle, "
              "global residual.",
    ),
    Backbone(
        "sam_mask_decoder", lambda: _sam().sam_mask_decoder(), _sam_decoder_input, heavy=True,
        notes="Segment Anything mask decoder (transformers, SamConfig() defaults): two-way transformer, "
              "transposed-conv upscaling, hypernetwork MLPs; the reference's eight positional inputs.",
    ),
    Backbone(
        "sam_vision_encoder_mini", lambda: _sam().sam_vision_encoder(**_SAM_VISION_MINI), _images(1, 3, 128, 128),
        unprunable_param_names=_SAM_ENCODER_MARKS, heavy=True,
        notes="Segment Anything image encoder (transformers) at 96 wide, 2 layers, 128x128: windowed and global "
              "attention with relative position terms, conv + LayerNorm2d neck; the reference's marks.",
    ),
    Backbone(
        "sam_vision_encoder", lambda: _sam().sam_vision_encoder(num_hidden_layers=1), _images(1, 3, 1024, 1024),
        unprunable_param_names=_SAM_ENCODER_MARKS, heavy=True,
        notes="The reference's test_sam_vision_encoder: SamConfig() image encoder with one layer at 1024x1024.",
    ),
    Backbone(
        "bert", lambda: backends.BertForQuestionAnswering(backends.BertConfig()), _tokens(1000, 16),
        unprunable_param_names=("bert.embeddings.word_embeddings.weight",),
        notes="Returns a dict (start_logits, end_logits); BertConfig(return_dict=False) gives a tuple.",
    ),
    Backbone(
        "llama", lambda: backends.LlamaForCausalLM(backends.LlamaConfig()), _tokens(256, 16),
        unprunable_param_names=("model.embed_tokens.weight",),
        notes="RMSNorm, rotary embeddings, SwiGLU, untied lm_head.",
    ),
    Backbone(
        "llama_tied", lambda: backends.LlamaForCausalLM(backends.LlamaConfig(tie_word_embeddings=True)),
        _tokens(256, 16),
        unprunable_param_names=("model.embed_tokens.weight",),
        notes="lm_head shares the embedding matrix.",
    ),
    Backbone(
        "phi", lambda: backends.PhiForCausalLM(backends.PhiConfig()), _tokens(256, 16),
        unprunable_param_names=("transformer.embd.wte.weight",),
        notes="Fused Wqkv (PhiMHA), parallel attention + MLP after one LayerNorm, partial rotary.",
    ),
    Backbone(
        "vit_tiny", backends.vit_tiny, _CIFAR,
        unprunable_param_names=("patch_embed.proj.weight", "pos_embed"),
        notes="Fused qkv (ViTAttention), class token, learned position embedding.",
    ),
    Backbone(
        "vit_tiny_layer_scale", lambda: backends.vit_tiny(init_values=0.1), _CIFAR,
        unprunable_param_names=("patch_embed.proj.weight", "pos_embed"),
        notes="vit_tiny with LayerScale gamma parameters.",
    ),
    Backbone(
        "deit_tiny_patch16_224", lambda: backends.deit_tiny_patch16_224(img_size=32, num_classes=10), _CIFAR,
        unprunable_param_names=("patch_embed.proj.weight", "pos_embed"),
        notes="DeiT-Ti dimensions (192 wide, 12 blocks, 3 heads) on 32x32 inputs (4 patches).",
    ),
    Backbone(
        "pvt_v2_mini", lambda: backends.pvt_v2_b0(num_classes=10, **_PVT_MINI), _images(1, 3, 64, 64),
        unprunable_param_names=("patch_embed.proj.weight",),
        notes="PVT-v2-B0 layout at one block per stage, dims 16-32-64-128, 64x64 input: overlapping patch "
              "embeddings, spatial-reduction attention (strided conv on the token map, fused kv), depthwise conv "
              "inside the MLP.",
    ),
    Backbone(
        "swin_mini", backends.swin_mini, _CIFAR,
        unprunable_param_names=("patch_embed.proj.weight",),
        unprunable_param_pattern=r".*attn\.qkv\..*",
        notes="Shifted-window attention with relative position bias table, patch merging.",
    ),
]

BACKBONES: Dict[str, Backbone] = {entry.name: entry for entry in _ENTRIES}
if len(BACKBONES) != len(_ENTRIES):
    raise RuntimeError("duplicate backbone names in the registry")


def list_backbones(include_heavy: bool = False) -> List[str]:
    """Registered names, in registration order; heavy backbones only with ``include_heavy``."""
    return [name for name, backbone in BACKBONES.items() if include_heavy or not backbone.heavy]


def get_backbone(name: str) -> Backbone:
    """The entry called ``name``; ``KeyError`` listing the valid names otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(BACKBONES)}") from None
