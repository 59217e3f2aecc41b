"""Former module name of :mod:`demo_group_conv_case1` (the reference's), kept for existing imports."""
from .demo_group_conv_case1 import DemoNetGroupConvCase1, SeparableConv, make_norm

__all__ = ["DemoNetGroupConvCase1", "SeparableConv", "make_norm"]
