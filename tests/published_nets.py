"""Independent definitions of the networks in robaudit's architecture catalogue, in their original key layouts.

Written for the tests from the public code each checkpoint family comes from:
github.com/kuangliu/pytorch-cifar (models/resnet.py),
github.com/locuslab/fast_adversarial (CIFAR10/preact_resnet.py),
github.com/RobustBench/robustbench (model_zoo/architectures/{resnet,wide_resnet,dm_wide_resnet}.py),
github.com/yaodongyu/TRADES (models/small_cnn.py),
github.com/Haichao-Zhang/FeatureScatter (models/wideresnet.py). Nothing here imports
robaudit: a state_dict saved from these is what a user would upload, and robaudit must reproduce the
logits. torchvision/timm entries use those libraries themselves as the original.

``PUBLISHED[name](num_classes, in_channels)`` builds one; cheap on ``torch.device("meta")``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


# ---- robaudit's own SmallCNN (features.N / classifier.N), as robaudit has always written it
class RobauditSmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(1024, 200), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


# ---- TRADES small_cnn.py (github.com/yaodongyu/TRADES)
class TradesSmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        act = nn.ReLU(True)
        self.feature_extractor = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 32, 3)), ("relu1", act), ("conv2", nn.Conv2d(32, 32, 3)),
            ("relu2", act), ("maxpool1", nn.MaxPool2d(2, 2)), ("conv3", nn.Conv2d(32, 64, 3)), ("relu3", act),
            ("conv4", nn.Conv2d(64, 64, 3)), ("relu4", act), ("maxpool2", nn.MaxPool2d(2, 2))]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(64 * 4 * 4, 200)), ("relu1", act), ("drop", nn.Dropout(0.5)),
            ("fc2", nn.Linear(200, 200)), ("relu2", act), ("fc3", nn.Linear(200, num_classes))]))

    def forward(self, x):
        return self.classifier(self.feature_extractor(x).view(-1, 64 * 4 * 4))


# ---- PreActResNet-18: fast_adversarial (with `bn`) and RobustBench's default (bn_before_fc=False)
class FastPreActBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1, out_shortcut=False):
        super().__init__()
        self.out_shortcut = out_shortcut   # RobustBench's flag: the shortcut sees bn1+ReLU's output
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out if self.out_shortcut else x) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class FastPreActResNet18(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, bn_before_fc: bool = True,
                 out_shortcut: bool = False) -> None:
        super().__init__()
        self.in_planes = 64
        self.out_shortcut = out_shortcut
        self.bn_before_fc = bn_before_fc
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._stage(64, 1)
        self.layer2 = self._stage(128, 2)
        self.layer3 = self._stage(256, 2)
        self.layer4 = self._stage(512, 2)
        if bn_before_fc:
            self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _stage(self, planes, stride):
        blocks = []
        for s in (stride, 1):
            blocks.append(FastPreActBlock(self.in_planes, planes, s, self.out_shortcut))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn_before_fc:
            out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# ---- pytorch-cifar resnet.py (github.com/kuangliu/pytorch-cifar)
class CifarBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != 4 * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, 4 * planes, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# ---- RobustBench model_zoo/architectures/wide_resnet.py (from TRADES, whose own file always has sub_block1;
#      FeatureScatter's adds a feature output)
class RBBasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(in_planes, out_planes, kernel_size=1,
                                                                    stride=stride, padding=0, bias=False)

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RBNetworkBlock(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[RBBasicBlock(in_planes if i == 0 else out_planes, out_planes,
                                                  stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class RBWideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int,
                 feature_output: bool = False, sub_block1: bool = False) -> None:
        super().__init__()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.feature_output = feature_output   # FeatureScatter's forward returns (logits, features)
        self.conv1 = nn.Conv2d(in_channels, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = RBNetworkBlock(n, ch[0], ch[1], 1)
        if sub_block1:   # TRADES' wideresnet.py always builds it and never uses it
            self.sub_block1 = RBNetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = RBNetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = RBNetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8).view(-1, self.nChannels)
        return (self.fc(out), out) if self.feature_output else self.fc(out)


# ---- RobustBench model_zoo/architectures/dm_wide_resnet.py (DeepMind's layout)
class _SwishFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i):
        ctx.save_for_backward(i)
        return i * torch.sigmoid(i)

    @staticmethod
    def backward(ctx, grad_output):
        (i,) = ctx.saved_tensors
        s = torch.sigmoid(i)
        return grad_output * (s * (1 + i * (1 - s)))


class DMSwish(nn.Module):
    def forward(self, x):
        return _SwishFn.apply(x)


class DMBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, act):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = act()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = act()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = (nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
                         if self.has_shortcut else None)
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
        else:
            out = self.relu_0(self.batchnorm_0(x))
        v = x if self.has_shortcut else out
        v = F.pad(v, (1, 1, 1, 1)) if self._stride == 1 else F.pad(v, (0, 1, 0, 1))
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(v))))
        return torch.add(self.shortcut(x) if self.has_shortcut else x, out)


class DMBlockGroup(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride, act):
        super().__init__()
        self.block = nn.Sequential(*[DMBlock(in_planes if i == 0 else out_planes, out_planes,
                                             stride if i == 0 else 1, act) for i in range(n)])

    def forward(self, x):
        return self.block(x)


class DMWideResNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int, act=DMSwish,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD) -> None:
        super().__init__()
        # Not in the state_dict (persistent=False): a checkpoint does not say which statistics it needs.
        self.register_buffer("mean", torch.tensor(mean).view(in_channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(in_channels, 1, 1), persistent=False)
        ch = [16, 16 * width, 32 * width, 64 * width]
        n = (depth - 4) // 6
        self.init_conv = nn.Conv2d(in_channels, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(DMBlockGroup(n, ch[0], ch[1], 1, act), DMBlockGroup(n, ch[1], ch[2], 2, act),
                                   DMBlockGroup(n, ch[2], ch[3], 2, act))
        self.batchnorm = nn.BatchNorm2d(ch[3])
        self.relu = act()
        self.logits = nn.Linear(ch[3], num_classes)
        self.num_channels = ch[3]

    def forward(self, x):
        out = self.init_conv((x - self.mean) / self.std)
        out = self.relu(self.batchnorm(self.layer(out)))
        out = F.avg_pool2d(out, 8).view(-1, self.num_channels)
        return self.logits(out)


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision
        assert in_channels == 3
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    return build


# The timm model the tests use for `timm:NAME` (small, 224x224).
TIMM_MODEL = "resnet10t"


def _timm(num_classes: int, in_channels: int) -> nn.Module:
    import timm
    return timm.create_model(TIMM_MODEL, pretrained=False, num_classes=num_classes, in_chans=in_channels)


PUBLISHED: dict[str, Callable[[int, int], nn.Module]] = {
    "smallcnn": RobauditSmallCNN,
    "trades-smallcnn": TradesSmallCNN,
    "preactresnet18": lambda k, c: FastPreActResNet18(k, c),
    "preactresnet18-nobn": lambda k, c: FastPreActResNet18(k, c, bn_before_fc=False),
    "resnet18": lambda k, c: CifarResNet(CifarBasicBlock, [2, 2, 2, 2], k, c),
    "resnet34": lambda k, c: CifarResNet(CifarBasicBlock, [3, 4, 6, 3], k, c),
    "resnet50": lambda k, c: CifarResNet(CifarBottleneck, [3, 4, 6, 3], k, c),
    "wrn-28-10": lambda k, c: RBWideResNet(28, 10, k, c),
    "wrn-34-10": lambda k, c: RBWideResNet(34, 10, k, c),
    "wrn-34-20": lambda k, c: RBWideResNet(34, 20, k, c),
    "wrn-70-16": lambda k, c: RBWideResNet(70, 16, k, c),
    "trades-wrn-28-10": lambda k, c: RBWideResNet(28, 10, k, c, sub_block1=True),
    "trades-wrn-34-10": lambda k, c: RBWideResNet(34, 10, k, c, sub_block1=True),
    "trades-wrn-34-20": lambda k, c: RBWideResNet(34, 20, k, c, sub_block1=True),
    "dm-wrn-28-10": lambda k, c: DMWideResNet(28, 10, k, c),
    "dm-wrn-70-16": lambda k, c: DMWideResNet(70, 16, k, c),
    "torchvision:resnet50": _torchvision("resnet50"),
    "torchvision:wide_resnet50_2": _torchvision("wide_resnet50_2"),
    f"timm:{TIMM_MODEL}": _timm,
}
