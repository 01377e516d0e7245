"""Per-channel normalization as a layer, so models always take [0, 1] inputs."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std. The paper's [-1, 1] inputs are mean = std = 0.5."""

    mean: torch.Tensor   # (1, C, 1, 1) buffers, declared so attribute access is typed as a tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        # Buffers, not parameters: saved with the weights, never trained.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
