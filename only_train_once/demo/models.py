"""The demo's models: a small CNN and an MLP for 16x16 digit images."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv(1->32)-BN-ReLU, conv(32->64)-BN-ReLU, pool, conv(64->128)-BN-ReLU, pool, global pool, FC 128->64->10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


class DigitsMLP(nn.Module):
    """Flatten, Linear 256->256, ReLU, Linear 256->128, ReLU, Linear 128->10."""

    def __init__(self, image_size: int = 16, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(image_size * image_size, 256), nn.ReLU(),
                                 nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


MODELS = {"cnn": DigitsCNN, "mlp": DigitsMLP}


class MeanPoolingClassifier(nn.Module):
    """A sentence classifier over a pretrained transformer encoder: mean of the last hidden states over the
    attention mask (the sentence-transformers pooling), then one linear layer.

    ``encoder(input_ids=..., attention_mask=...)`` must return an object with ``last_hidden_state`` or a tuple
    whose first item is it (a Hugging Face ``BertModel`` and the like), of shape ``[batch, tokens, hidden_size]``.
    Defined in the library, not in a script, so that a pickled compressed model loads in any process.
    """

    def __init__(self, encoder: nn.Module, hidden_size: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(hidden_size, num_classes)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled sentence embeddings, ``[batch, hidden_size]``."""
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(input_ids, attention_mask))
