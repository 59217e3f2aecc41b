"""Three-layer perceptron on flattened images."""
from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten -> Linear -> ReLU -> Linear -> ReLU -> Linear.

    ``MLP(3072, 64, 32, 10)`` has 199,082 parameters (0.1991 M) and takes ``[B, 3, 32, 32]`` images.
    """

    def __init__(self, in_dim: int = 3072, hidden1: int = 64, hidden2: int = 32, out_dim: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_dim, hidden1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(hidden2, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, ...]`` with ``in_dim`` features per sample -> ``[B, out_dim]`` logits."""
        x = self.relu1(self.fc1(self.flatten(x)))
        return self.fc3(self.relu2(self.fc2(x)))
