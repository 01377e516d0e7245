"""WideResNet in the key layout of DeepMind's adversarial-robustness code (Gowal et al. 2020,
Rebuffi et al. 2021), which RobustBench's ``dm_wide_resnet.py`` reproduces for its top CIFAR entries.

Keys: ``init_conv``, ``layer.{0,1,2}.block.M.{batchnorm_0,conv_0,batchnorm_1,conv_1[,shortcut]}``,
``batchnorm``, ``logits``. Differences from the TRADES/RobustBench WideResNet, besides the names:

- the first 3x3 convolution of a block pads explicitly, (1, 1, 1, 1) at stride 1 and (0, 1, 0, 1)
  at stride 2 (TensorFlow's "SAME"), so a stride-2 block sees other pixels than with padding=1;
- the published code normalises inside the network with mean/std buffers that are not in the
  state_dict (CIFAR-10 or CIFAR-100 statistics). Here normalisation is robaudit's Normalize layer,
  so such a checkpoint must be loaded with that mean/std (preprocessing ``cifar10`` for the CIFAR-10
  entries), never with ``none``;
- the zoo's entries use ``activation="swish"`` (DeepMind's x * sigmoid(x)) or ``"silu"``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.models.activations import make_activation


class DMBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"unsupported stride {stride}")
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.act_0 = make_activation(activation)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.act_1 = make_activation(activation)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Conv2d | None = (
            nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if in_planes != out_planes else None)
        self.pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act_0(self.batchnorm_0(x))
        out = self.conv_0(F.pad(pre, self.pad))
        out = self.conv_1(self.act_1(self.batchnorm_1(out)))
        # As in the TRADES layout: the projection sees the pre-activated input, identity the raw one.
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        result: torch.Tensor = shortcut + out
        return result


class DMBlockGroup(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.block = nn.Sequential(*[
            DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation)
            for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


class DMWideResNet(nn.Module):
    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, in_channels: int = 3,
                 activation: str = "relu") -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 28, 70), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.init_conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(
            DMBlockGroup(n, widths[0], widths[1], 1, activation),
            DMBlockGroup(n, widths[1], widths[2], 2, activation),
            DMBlockGroup(n, widths[2], widths[3], 2, activation))
        self.batchnorm = nn.BatchNorm2d(widths[3])
        self.act = make_activation(activation)
        self.logits = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(self.init_conv(x))
        out = self.act(self.batchnorm(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits: torch.Tensor = self.logits(out)
        return logits
