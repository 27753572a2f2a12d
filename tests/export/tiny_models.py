"""Tiny real torch models for export tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Three conv blocks at strides 2, 4, 8, a BatchNorm, global pooling and a linear classifier."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def tiny_net(seed: int = 0) -> TinyNet:
    """A TinyNet with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TinyNet()
    bn = model.features[3]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.eval()
