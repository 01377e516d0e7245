"""Architectures looked up by name; every built model starts with its Normalize layer.

Two tables:

- ``ARCHITECTURES``: the network constructors, by family name, taking free keyword arguments
  (``wideresnet`` with ``depth`` and ``widen_factor``). Training uses these.
- ``CATALOGUE``: named, fully fixed networks (``wrn-28-10``, ``resnet18``...) whose state_dict keys
  are those of the code the field publishes checkpoints from. Upload recognition matches a file's
  keys and shapes against every catalogue entry.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class CatalogueEntry:
    """One network with every constructor argument fixed but the class count and input channels."""

    name: str                  # what users type and what recognition proposes
    arch: str                  # its constructor in ARCHITECTURES
    input_size: int            # 28 (MNIST), 32 (CIFAR, SVHN) or 224 (ImageNet)
    source: str                # whose key layout it reproduces, for docs and error messages
    kwargs: dict[str, Any] = field(default_factory=dict)


CATALOGUE: dict[str, CatalogueEntry] = {e.name: e for e in [
    CatalogueEntry("smallcnn", "smallcnn", 28, "robaudit"),
    CatalogueEntry("preactresnet18", "preactresnet18", 32, "robaudit"),
    CatalogueEntry("wrn-28-10", "wideresnet", 32, "robaudit", {"depth": 28, "widen_factor": 10}),
    CatalogueEntry("wrn-34-10", "wideresnet", 32, "robaudit", {"depth": 34, "widen_factor": 10}),
]}

# Other spellings accepted for a catalogue entry.
ALIASES: dict[str, str] = {"preact-resnet18": "preactresnet18"}


def resolve_arch(name: str, kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(constructor name, constructor kwargs) for a family or catalogue name; given kwargs win."""
    key = ALIASES.get(name.lower(), name.lower())
    merged = dict(kwargs or {})
    if key in CATALOGUE:
        entry = CATALOGUE[key]
        key, merged = entry.arch, {**entry.kwargs, **merged}
    if key not in ARCHITECTURES:
        known = ", ".join(sorted({*ARCHITECTURES, *CATALOGUE, *ALIASES}))
        raise ValueError(f"unknown architecture {name!r}; choose one of: {known}")
    return key, merged


def default_arch_kwargs(name: str) -> dict[str, Any]:
    return resolve_arch(name)[1]


def architecture_names() -> list[str]:
    """Every name resolve_arch accepts, families first, for forms and help texts."""
    return [*ARCHITECTURES, *(n for n in CATALOGUE if n not in ARCHITECTURES), *ALIASES]


class NormalizedModel(nn.Sequential):
    """Normalize followed by the network; `model[1]` is the bare network."""

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__(normalize, net)


def build_network(name: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The bare network (no Normalize layer): its state_dict has the published key layout."""
    key, arch_kwargs = resolve_arch(name, kwargs)
    try:
        return ARCHITECTURES[key](num_classes=num_classes, in_channels=in_channels, **arch_kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for architecture {key!r}: {exc}") from None


def build_model(name: str, *, num_classes: int, in_channels: int,
                mean: Sequence[float], std: Sequence[float], **kwargs: Any) -> nn.Module:
    net = build_network(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    return NormalizedModel(Normalize(mean, std), net)
