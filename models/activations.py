"""Activation functions by name, for the networks whose published variants differ only in them.

Activations have no parameters, so a state_dict cannot tell them apart: the variant is an
``activation`` constructor argument (``arch_kwargs``), never a separate architecture name.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Swish(nn.Module):
    """x * sigmoid(x), computed as DeepMind's published WideResNets do (not through F.silu), so
    logits match theirs bit for bit; the function is the same as ``silu``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "swish": Swish,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}") from None
