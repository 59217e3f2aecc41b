"""Models of the deployment tests. Plain torch only: a subprocess unpickles them without only_train_once."""

import torch
import torch.nn.functional as F
from torch import nn


class TinyCNN(nn.Module):
    """Conv-BN-ReLU stem, a depthwise-separable block with a residual add, a linear head."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.dw, self.bn1 = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.BatchNorm2d(width)
        self.pw, self.bn2 = nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn1(self.dw(x)))
        x = F.relu(x + self.bn2(self.pw(y)))
        return self.head(x.mean((2, 3)))


@torch.no_grad()
def tiny_cnn(seed: int = 0) -> TinyCNN:
    """A TinyCNN in eval mode with non-trivial BatchNorm statistics and affine parameters."""
    torch.manual_seed(seed)
    model = TinyCNN()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.2, 0.2)
    return model.eval()


class AttentionNet(nn.Module):
    """Token embedding, one ``nn.MultiheadAttention`` block with a residual, a linear head over the mean token."""

    def __init__(self, width: int = 16, heads: int = 4, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = self.embed(x)
        out, _ = self.attn(h, h, h, need_weights=False)
        return self.head(h + out).mean(1)


def attention_net(seed: int = 0) -> AttentionNet:
    torch.manual_seed(seed)
    return AttentionNet().eval()
