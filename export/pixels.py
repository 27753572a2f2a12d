"""The ``pixels`` pseudo-backbone: the flattened normalised pixels, as a baseline store."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Pixels"]


class Pixels(nn.Module):
    """Return the input image flattened to ``(N, C * H * W)``.

    Exported through the same wrapper as every backbone, its single output is the
    normalised pixels, so a raw-pixel baseline is a store like any other.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)
