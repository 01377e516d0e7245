"""Architectures looked up by name; every built model starts with its Normalize layer."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from robaudit.models.normalize import Normalize
from robaudit.models.preact_resnet import PreActResNet18
from robaudit.models.smallcnn import SmallCNN
from robaudit.models.wideresnet import WideResNet

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "smallcnn": SmallCNN,
    "preactresnet18": PreActResNet18,
    "wideresnet": WideResNet,
}

# Convenience aliases that fix kwargs; resolved to a canonical name + kwargs.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "wrn-28-10": ("wideresnet", {"depth": 28, "widen_factor": 10}),
    "wrn-34-10": ("wideresnet", {"depth": 34, "widen_factor": 10}),
    "preact-resnet18": ("preactresnet18", {}),
}


def resolve_arch(name: str, kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    key = name.lower()
    merged = dict(kwargs or {})
    if key in ALIASES:
        key, fixed = ALIASES[key]
        merged = {**fixed, **merged}
    if key not in ARCHITECTURES:
        known = ", ".join(sorted([*ARCHITECTURES, *ALIASES]))
        raise ValueError(f"unknown architecture {name!r}; choose one of: {known}")
    return key, merged


def default_arch_kwargs(name: str) -> dict[str, Any]:
    return resolve_arch(name)[1]


class NormalizedModel(nn.Sequential):
    """Normalize followed by the network; `model[1]` is the bare network."""

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__(normalize, net)


def build_model(name: str, *, num_classes: int, in_channels: int,
                mean: Sequence[float], std: Sequence[float], **kwargs: Any) -> nn.Module:
    key, arch_kwargs = resolve_arch(name, kwargs)
    try:
        net = ARCHITECTURES[key](num_classes=num_classes, in_channels=in_channels, **arch_kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for architecture {key!r}: {exc}") from None
    return NormalizedModel(Normalize(mean, std), net)
