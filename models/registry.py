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

from robaudit.models.dm_wideresnet import DMWideResNet
from robaudit.models.library_nets import timm_network, torchvision_network
from robaudit.models.normalize import Normalize
from robaudit.models.preact_resnet import PreActResNet18
from robaudit.models.resnet import ResNet
from robaudit.models.smallcnn import SmallCNN, TradesSmallCNN
from robaudit.models.wideresnet import WideResNet

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "smallcnn": SmallCNN,
    "preactresnet18": PreActResNet18,
    "wideresnet": WideResNet,
    "trades-smallcnn": TradesSmallCNN,
    "resnet": ResNet,
    "dm-wideresnet": DMWideResNet,
    "torchvision": torchvision_network,
    "timm": timm_network,
}
# Families that need a ``model_name`` (given as "torchvision:NAME" / "timm:NAME"), so not offered bare.
LIBRARY_FAMILIES = ("torchvision", "timm")


@dataclass(frozen=True)
class CatalogueEntry:
    """One network with every constructor argument fixed but the class count and input channels."""

    name: str                  # what users type and what recognition proposes
    arch: str                  # its constructor in ARCHITECTURES
    input_size: int            # 28 (MNIST), 32 (CIFAR, SVHN) or 224 (ImageNet)
    source: str                # whose key layout it reproduces, for docs and error messages
    kwargs: dict[str, Any] = field(default_factory=dict)


_RB_WRN = "RobustBench wide_resnet.py (TRADES, Feature Scattering)"
_TRADES_WRN = "TRADES wideresnet.py / RobustBench sub_block1=True (an unused sub_block1 in the file)"
_DM_WRN = "DeepMind / RobustBench dm_wide_resnet.py (mean/std not in the file: preprocessing cifar10)"

CATALOGUE: dict[str, CatalogueEntry] = {e.name: e for e in [
    CatalogueEntry("smallcnn", "smallcnn", 28, "robaudit"),
    CatalogueEntry("trades-smallcnn", "trades-smallcnn", 28, "TRADES small_cnn.py"),
    CatalogueEntry("preactresnet18", "preactresnet18", 32, "fast_adversarial / RobustBench PreActResNet"),
    CatalogueEntry("preactresnet18-nobn", "preactresnet18", 32,
                   "RobustBench PreActResNet without bn_before_fc (e.g. Wong2020Fast)", {"final_bn": False}),
    CatalogueEntry("resnet18", "resnet", 32, "kuangliu/pytorch-cifar", {"depth": 18}),
    CatalogueEntry("resnet34", "resnet", 32, "kuangliu/pytorch-cifar", {"depth": 34}),
    CatalogueEntry("resnet50", "resnet", 32, "kuangliu/pytorch-cifar", {"depth": 50}),
    CatalogueEntry("wrn-28-10", "wideresnet", 32, _RB_WRN, {"depth": 28, "widen_factor": 10}),
    CatalogueEntry("wrn-34-10", "wideresnet", 32, _RB_WRN, {"depth": 34, "widen_factor": 10}),
    CatalogueEntry("wrn-34-20", "wideresnet", 32, _RB_WRN, {"depth": 34, "widen_factor": 20}),
    CatalogueEntry("wrn-70-16", "wideresnet", 32, _RB_WRN, {"depth": 70, "widen_factor": 16}),
    CatalogueEntry("trades-wrn-28-10", "wideresnet", 32, _TRADES_WRN,
                   {"depth": 28, "widen_factor": 10, "sub_block1": True}),
    CatalogueEntry("trades-wrn-34-10", "wideresnet", 32, _TRADES_WRN,
                   {"depth": 34, "widen_factor": 10, "sub_block1": True}),
    CatalogueEntry("trades-wrn-34-20", "wideresnet", 32, _TRADES_WRN,
                   {"depth": 34, "widen_factor": 20, "sub_block1": True}),
    CatalogueEntry("dm-wrn-28-10", "dm-wideresnet", 32, _DM_WRN, {"depth": 28, "width": 10, "activation": "swish"}),
    CatalogueEntry("dm-wrn-70-16", "dm-wideresnet", 32, _DM_WRN, {"depth": 70, "width": 16, "activation": "swish"}),
    CatalogueEntry("torchvision:resnet50", "torchvision", 224, "torchvision", {"model_name": "resnet50"}),
    CatalogueEntry("torchvision:wide_resnet50_2", "torchvision", 224, "torchvision",
                   {"model_name": "wide_resnet50_2"}),
]}

# Other spellings accepted for a catalogue entry.
ALIASES: dict[str, str] = {"preact-resnet18": "preactresnet18"}


def resolve_arch(name: str, kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(constructor name, constructor kwargs) for a family or catalogue name; given kwargs win.

    ``timm:NAME`` is any timm model (resolved when built, not listed in CATALOGUE).
    """
    merged = dict(kwargs or {})
    prefix, _, model_name = name.partition(":")
    if prefix.lower() == "timm" and model_name:   # timm's names are case-sensitive: only the prefix is lowered
        return "timm", {"model_name": model_name, **merged}
    key = ALIASES.get(name.lower(), name.lower())
    if key in CATALOGUE:
        entry = CATALOGUE[key]
        key, merged = entry.arch, {**entry.kwargs, **merged}
    if key not in ARCHITECTURES:
        known = ", ".join(sorted({*architecture_names(), "timm:NAME"}))
        raise ValueError(f"unknown architecture {name!r}; choose one of: {known}")
    return key, merged


def default_arch_kwargs(name: str) -> dict[str, Any]:
    return resolve_arch(name)[1]


def architecture_names() -> list[str]:
    """The fixed names resolve_arch accepts, families first, for forms and help texts (plus any timm:NAME)."""
    families = [n for n in ARCHITECTURES if n not in LIBRARY_FAMILIES]
    return [*families, *(n for n in CATALOGUE if n not in ARCHITECTURES), *ALIASES]


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
