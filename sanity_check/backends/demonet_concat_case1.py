"""Channel-concatenation demo: two stem outputs of 64 and 128 channels concatenated, then a BatchNorm."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetConcatCase1(nn.Module):
    """conv_1 -> x1 (64); conv_2(x1) -> x2 (128); cat([x1, x2]) -> bn_4 (192) -> conv_5 -> conv_6 -> mean -> fc_7.

    Modules are numbered by their step in the chain (step 3 is the concatenation). All convs are 3x3, stride 1, each
    followed by BatchNorm and ReLU; ``bn_4`` feeds ``conv_5`` directly. ``conv_1`` and ``conv_6`` keep a bias in
    front of their BatchNorm, ``conv_2`` and ``conv_5`` do not.

    Sized to the reference's measurements (SPEC section 0): with the default 132-way head and a ``1x3x32x32``
    input, 627,332 parameters (0.6273 M), 605.783 M MACs and 16 traced operators (18 graph nodes with the input
    and output nodes).
    """

    def __init__(self, num_classes: int = 132) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 64, 3, padding=1)
        self.bn_1 = nn.BatchNorm2d(64)
        self.conv_2 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn_2 = nn.BatchNorm2d(128)
        self.bn_4 = nn.BatchNorm2d(192)
        self.conv_5 = nn.Conv2d(192, 128, 3, padding=1, bias=False)
        self.bn_5 = nn.BatchNorm2d(128)
        self.conv_6 = nn.Conv2d(128, 256, 3, padding=1)
        self.bn_6 = nn.BatchNorm2d(256)
        self.fc_7 = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        x1 = F.relu(self.bn_1(self.conv_1(x)))
        x2 = F.relu(self.bn_2(self.conv_2(x1)))
        out = self.bn_4(torch.cat([x1, x2], 1))
        out = F.relu(self.bn_5(self.conv_5(out)))
        out = F.relu(self.bn_6(self.conv_6(out)))
        return self.fc_7(out.mean(dim=(2, 3)))
