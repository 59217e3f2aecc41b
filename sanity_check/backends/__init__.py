"""Pure-torch model zoo for the sanity checks, tests and benchmarks (random init, no downloads)."""
from .bert import (
    BertAttention,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    BertSelfAttention,
)
from .carn import CarnNet
from .convnext import ConvNeXt, convnext_base, convnext_large, convnext_small, convnext_tiny, convnext_xlarge
from .demonet_batchnorm_pruning import DemonetBatchnormPruning
from .demonet_concat_case1 import DemoNetConcatCase1
from .demonet_concat_case2 import DemoNetConcatCase2
from .demonet_convtranspose_in_case1 import DemoNetConvtransposeInCase1
from .demonet_convtranspose_in_case2 import DemoNetConvtransposeInCase2
from .demo_group_conv_case1 import DemoNetGroupConvCase1
from .demonet_groupnorm_case1 import DemoNetGroupNormCase1
from .demonet_groupnorm_case2 import DemoNetGroupNormCase2
from .demonet_groupnorm_case3 import DemoNetGroupNormCase3
from .demonet_groupnorm_case4 import DemoNetGroupNormCase4
from .demonet_in_case3 import DemoNetInstanceNorm2DCase3, DemoNetInstanceNormCase3
from .demonet_weightshare_case1 import DemoNetWeightShareCase1
from .demonet_weightshare_case2 import DemoNetWeightShareCase2
from .densenet import DenseNet, densenet121, densenet161, densenet169, densenet201
from .diffusion import DiffModelBedroom, DiffModelCeleba, DiffModelChurch, DiffModelCIFAR, DiffModelDebug
from .diffusion_transformer_sr import DiffIRS3SNPE
from .diffusion_unet import TinyUNet
from .llama import LlamaAttention, LlamaConfig, LlamaForCausalLM, LlamaModel, LlamaRMSNorm
from .mlp import MLP
from .phi import PhiConfig, PhiForCausalLM, PhiMHA, PhiModel
from .resnet20_cifar10 import resnet20_cifar10, resnet32_cifar10, resnet44_cifar10, resnet56_cifar10
from .resnet_cifar10 import resnet18_cifar10, resnet34_cifar10, resnet50_cifar10
from .resnet_DuBIN import DuBIN, ResNet34_DuBIN
from .resnet_DuBN import DuBN, ResNet18_DuBN, set_route
from .simple_vit import SimpleViT, SimpleViTAttention, simpleViT_cifar10
from .vgg7 import VGG7_BN, vgg7_bn
from .vision_transformer import (
    PyramidVisionTransformerV2,
    SwinTransformer,
    VisionTransformer,
    ViTAttention,
    WindowAttention,
    deit_small_patch16_224,
    deit_tiny_patch16_224,
    pvt_v2_b0,
    swin_mini,
    swin_tiny_patch4_window7_224,
    vit_base_patch16_224,
    vit_base_patch16_384,
    vit_small_patch16_224,
    vit_tiny,
    vit_tiny_patch16_224,
)

__all__ = [
    "BertAttention",
    "BertConfig",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertModel",
    "BertSelfAttention",
    "CarnNet",
    "ConvNeXt",
    "DemoNetConcatCase1",
    "DemoNetConcatCase2",
    "DemoNetConvtransposeInCase1",
    "DemoNetConvtransposeInCase2",
    "DemoNetGroupConvCase1",
    "DemoNetGroupNormCase1",
    "DemoNetGroupNormCase2",
    "DemoNetGroupNormCase3",
    "DemoNetGroupNormCase4",
    "DemoNetInstanceNorm2DCase3",
    "DemoNetInstanceNormCase3",
    "DemoNetWeightShareCase1",
    "DemoNetWeightShareCase2",
    "DemonetBatchnormPruning",
    "DenseNet",
    "DiffIRS3SNPE",
    "DiffModelBedroom",
    "DiffModelCIFAR",
    "DiffModelCeleba",
    "DiffModelChurch",
    "DiffModelDebug",
    "DuBIN",
    "DuBN",
    "LlamaAttention",
    "LlamaConfig",
    "LlamaForCausalLM",
    "LlamaModel",
    "LlamaRMSNorm",
    "MLP",
    "PhiConfig",
    "PhiForCausalLM",
    "PhiMHA",
    "PhiModel",
    "PyramidVisionTransformerV2",
    "ResNet18_DuBN",
    "ResNet34_DuBIN",
    "SimpleViT",
    "SimpleViTAttention",
    "SwinTransformer",
    "TinyUNet",
    "VGG7_BN",
    "ViTAttention",
    "VisionTransformer",
    "WindowAttention",
    "convnext_base",
    "convnext_large",
    "convnext_small",
    "convnext_tiny",
    "convnext_xlarge",
    "deit_small_patch16_224",
    "deit_tiny_patch16_224",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "pvt_v2_b0",
    "resnet18_cifar10",
    "resnet20_cifar10",
    "resnet32_cifar10",
    "resnet34_cifar10",
    "resnet44_cifar10",
    "resnet50_cifar10",
    "resnet56_cifar10",
    "set_route",
    "simpleViT_cifar10",
    "swin_mini",
    "swin_tiny_patch4_window7_224",
    "vgg7_bn",
    "vit_base_patch16_224",
    "vit_base_patch16_384",
    "vit_small_patch16_224",
    "vit_tiny",
    "vit_tiny_patch16_224",
]


def __getattr__(name: str):
    """``SamModel`` / ``SamConfig`` import transformers on first use only (``from backends import SamModel``)."""
    if name in ("SamConfig", "SamModel"):
        from .hf_sam import modeling_sam

        return getattr(modeling_sam, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
