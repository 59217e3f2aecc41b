"""Weight-sharing demo: one conv module applied twice in a row."""
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetWeightShareCase1(nn.Module):
    """x1 = conv_1 + bn_1 (32 ch); conv_2 applied twice, x3 = conv_2(relu(conv_2(x1))); x1 + x3; pool, linear.

    ``conv_2`` consumes its own output, so its input and output channels must be pruned alike, and the residual
    add ties them to ``conv_1``'s channels.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(32)
        self.conv_2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        x1 = F.relu(self.bn_1(self.conv_1(x)))
        x3 = F.relu(self.conv_2(F.relu(self.conv_2(x1))))
        return self.fc(F.adaptive_avg_pool2d(x1 + x3, 1).flatten(1))
