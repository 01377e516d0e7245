"""Networks built by a library's own constructor: torchvision (``torchvision:NAME``) and timm (``timm:NAME``).

These are the backbones of RobustBench's ImageNet entries (torchvision's ResNet-50 and Wide-ResNet-50-2;
timm's ConvNeXt, Swin, ViT...). Their state_dict keys are the library's, so checkpoints published
from them load as they are. Weights are never downloaded: the constructors run with ``weights=None``
/ ``pretrained=False`` and the weights come from the checkpoint.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

TORCHVISION_MODELS = ("resnet50", "wide_resnet50_2")


def torchvision_network(model_name: str, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    if model_name not in TORCHVISION_MODELS:
        raise ValueError(f"torchvision:{model_name} is not in the catalogue; choose one of: "
                         f"{', '.join('torchvision:' + n for n in TORCHVISION_MODELS)}")
    if in_channels != 3:
        raise ValueError(f"torchvision:{model_name} takes 3 input channels, not {in_channels}")
    import torchvision

    net: nn.Module = getattr(torchvision.models, model_name)(weights=None, num_classes=num_classes)
    return net


def timm_network(model_name: str, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise ValueError(f"timm:{model_name} needs timm, which is not installed: "
                         "pip install 'robaudit[timm]'") from None
    if not timm.is_model(model_name):
        raise ValueError(f"timm:{model_name}: timm {timm.__version__} has no model named {model_name!r} "
                         "(see timm.list_models())")
    # pretrained=False: the weights come from the checkpoint, nothing is downloaded.
    net: nn.Module = timm.create_model(model_name, pretrained=False, num_classes=num_classes,
                                       in_chans=in_channels, **kwargs)
    return net
