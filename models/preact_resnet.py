"""PreActResNet-18 (He et al. 2016), the usual Fast-AT / PGD-AT CIFAR baseline.

Key layout of fast_adversarial (Wong et al. 2020) and RobustBench's ``PreActResNet``:
``conv1``, ``layer1..4.{0,1}.{bn1,conv1,bn2,conv2[,shortcut.0]}``, ``bn``, ``linear``, so their
state_dicts load as they are. Two variants with the same keys (or one key less) exist in the wild:

- ``shortcut_from``: what the 1x1 projection shortcut sees. ``"input"`` (the block's raw input) in
  fast_adversarial, robust_overfitting and RobustBench's ``PreActBlock``; ``"preact"`` (the input
  after bn1 + ReLU) in pytorch-cifar, RobustBench's ``out_shortcut=True`` and robaudit checkpoints of
  format 1. The keys are identical, so this is an argument, never guessed from a file.
- ``final_bn=False``: no ``bn`` + ReLU before pooling (RobustBench's default ``bn_before_fc=False``,
  e.g. Wong2020Fast, and pytorch-cifar's PreActResNet).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUT_FROM = ("input", "preact")


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut_from: str = "input") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))
        self.shortcut_from = shortcut_from

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        if self.shortcut is None:
            shortcut = x
        else:
            shortcut = self.shortcut(out if self.shortcut_from == "preact" else x)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        result: torch.Tensor = out + shortcut
        return result


class PreActResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64,
                 shortcut_from: str = "input", final_bn: bool = True) -> None:
        super().__init__()
        if shortcut_from not in SHORTCUT_FROM:
            raise ValueError(f"shortcut_from must be one of {', '.join(SHORTCUT_FROM)}, got {shortcut_from!r}")
        w = width
        # Built in the same order as before the published layout (conv1, the eight blocks, bn,
        # linear), so a seeded initialisation gives the same weights.
        self.conv1 = nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)
        in_planes = w
        groups: list[nn.Sequential] = []
        for planes, stride in [(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]:
            groups.append(nn.Sequential(PreActBlock(in_planes, planes, stride, shortcut_from),
                                        PreActBlock(planes, planes, 1, shortcut_from)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = groups
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(in_planes) if final_bn else None
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits: torch.Tensor = self.linear(out)
        return logits
