"""WideResNet (Zagoruyko & Komodakis 2016) in the key layout of TRADES, Feature Scattering and RobustBench.

WRN-28-10 (depth=28, widen_factor=10) is the paper's network: channels 16 -> 160 -> 320 -> 640,
pre-activation blocks, a 1x1 shortcut on the pre-activated input when the width changes. Keys:
``conv1``, ``block{1,2,3}.layer.N.{bn1,conv1,bn2,conv2[,convShortcut]}``, ``bn1``, ``fc``, exactly
those of RobustBench's ``wide_resnet.py`` (from TRADES), so the zoo's state_dicts load as they are.
``activation`` picks the nonlinearity (``relu`` in those repositories). ``sub_block1=True`` adds the
unused ``sub_block1`` group that TRADES' own wideresnet.py builds (its forward never calls it), so the
checkpoints saved from that file, and RobustBench's ``sub_block1=True`` entries, load too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.models.activations import make_activation


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0,
                 activation: str = "relu") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = make_activation(activation)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.act2 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut: nn.Conv2d | None = (   # the published key name
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        out = self.act2(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # No shortcut layer exactly when the width is unchanged (equal_in_out).
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        result: torch.Tensor = out + shortcut
        return result


class BlockGroup(nn.Module):
    """One stage of n blocks; its only child is ``layer``, as in the published code."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float,
                 activation: str) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                       drop_rate, activation) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x)
        return out


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10,
                 in_channels: int = 3, drop_rate: float = 0.0, activation: str = "relu",
                 sub_block1: bool = False) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 16, 22, 28, 34), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        # Built and initialised in the same order as robaudit's earlier layout (conv1, the blocks in
        # order, final bn, fc), so a seeded initialisation gives the same weights.
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = BlockGroup(n, widths[0], widths[1], 1, drop_rate, activation)
        if sub_block1:   # weights only: never used in forward, as in the TRADES code
            self.sub_block1 = BlockGroup(n, widths[0], widths[1], 1, drop_rate, activation)
        self.block2 = BlockGroup(n, widths[1], widths[2], 2, drop_rate, activation)
        self.block3 = BlockGroup(n, widths[2], widths[3], 2, drop_rate, activation)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.act = make_activation(activation)
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.act(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits: torch.Tensor = self.fc(out)
        return logits
