"""What a network expects of its inputs: a named normalisation preset, or the user's mean and std.

Every robaudit model takes images in [0, 1]; the Normalize layer in front of the network turns them
into what the network was trained on. Getting this wrong does not crash anything: the model simply
classifies near chance, and an attack on it "succeeds" trivially. So a file without robaudit
metadata must be told its normalisation; there is no default to fall back on
(docs/preprocessing.md).
"""
from __future__ import annotations

from collections.abc import Sequence

from robaudit.models.checkpoint import CheckpointError

# name -> (mean, std); a one-value preset applies to every channel.
PREPROCESSING: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "none": ((0.0,), (1.0,)),                       # the network takes [0, 1] pixels as they are
    "cifar-0.5": ((0.5,), (0.5,)),                  # [-1, 1], as in Feature Scattering and TRADES forks
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),   # torchvision's ImageNet statistics
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),   # CIFAR-10 training-set statistics
}
CUSTOM = "custom"
# The pixel ranges a network may expect; [0, 255] is folded into Normalize (see input_scale).
INPUT_RANGES: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.0, 255.0))


def _broadcast(values: Sequence[float], in_channels: int, what: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) == 1:
        return values * in_channels
    if len(values) != in_channels:
        raise CheckpointError(f"{what} has {len(values)} values but the model takes {in_channels} input channel(s)")
    return values


def resolve_preprocessing(preset: str | None, mean: Sequence[float] | None, std: Sequence[float] | None,
                          in_channels: int) -> tuple[str, list[float], list[float]]:
    """(preset name or "custom", mean, std per channel) from a preset name or an explicit mean and std.

    Raises CheckpointError when neither is given: the caller asked nothing, and guessing is what
    produces a silent near-chance "audit".
    """
    if preset is not None and (mean is not None or std is not None):
        raise CheckpointError("give either a preprocessing preset or mean and std, not both")
    if preset is not None:
        key = preset.lower()
        if key not in PREPROCESSING:
            raise CheckpointError(f"unknown preprocessing {preset!r}; choose one of: {', '.join(PREPROCESSING)} "
                                  "(or give mean and std)")
        p_mean, p_std = PREPROCESSING[key]
        return key, _broadcast(p_mean, in_channels, "mean"), _broadcast(p_std, in_channels, "std")
    if mean is None or std is None:
        if mean is not None or std is not None:
            raise CheckpointError("give both mean and std (one value, or one per input channel)")
        raise CheckpointError("the file carries no robaudit metadata, so its input normalisation is unknown: give "
                              f"a preprocessing preset ({', '.join(PREPROCESSING)}) or mean and std "
                              "(the values the network was trained with, for inputs in [0, 1])")
    mean_list, std_list = _broadcast(mean, in_channels, "mean"), _broadcast(std, in_channels, "std")
    if any(not s > 0 for s in std_list):
        raise CheckpointError(f"std values must be positive, got {std_list}")
    return CUSTOM, mean_list, std_list


def check_input_range(value: Sequence[float] | None) -> list[float]:
    """The metadata's ``input_range`` as [low, high]; [0, 1] when unstated (robaudit's own files)."""
    if value is None:
        return [0.0, 1.0]
    try:
        pair = (float(value[0]), float(value[1])) if len(value) == 2 else None
    except (TypeError, ValueError, IndexError):
        pair = None
    if pair not in INPUT_RANGES:
        raise CheckpointError(f"input_range must be [0, 1] or [0, 255], got {list(value)!r}")
    return list(pair)


def input_scale(input_range: Sequence[float] | None) -> float:
    """How much a [0, 1] image is multiplied by before (x - mean) / std: 255 for a [0, 255] network.

    (x * 255 - mean) / std equals (x - mean / 255) / (std / 255), so the model still takes [0, 1]
    inputs and the Normalize layer absorbs the range.
    """
    return check_input_range(input_range)[1]
