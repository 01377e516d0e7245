"""Recognise a bare state_dict: which catalogue network it is, for how many classes and input channels.

Works on key names and shapes only, so it runs on a safetensors header as well as on loaded tensors.
Every catalogue entry is built on the meta device (no memory, no time), and the file's shapes are
compared with it. The class count and input channels are read off the file at the keys that depend on
them in that entry: found by building the entry twice more with other values and seeing which shapes
move (a safetensors file sorts its keys alphabetically, so "the first and last layer" of the file
itself mean nothing).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from robaudit.models.checkpoint import strip_prefixes, unwrap_state_dict
from robaudit.models.registry import CATALOGUE, CatalogueEntry, build_network

Shape = tuple[int, ...]
# Reference builds: the values are arbitrary but distinct, so a dimension equal to one of them moves.
_BASE_CLASSES, _OTHER_CLASSES = 10, 7
_BASE_CHANNELS, _OTHER_CHANNELS = 3, 1
# Buffers old PyTorch versions did not save; BatchNorm fills them in on load.
_OPTIONAL_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class Recognition:
    arch: str | None                   # the catalogue name on an exact match
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    in_channels: int | None = None
    input_size: int | None = None
    closest: str | None = None         # on no match: the entry with the most keys matching by name and shape
    message: str = ""                  # one line for the user either way


def normalise_state_dict(obj: Any, name: str = "the file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Unwrap the usual containers and strip the usual prefixes.

    Returns the state_dict and a map from each normalised key to the file's own key, so that every
    message can name keys as the user's file spells them.
    """
    state = unwrap_state_dict(obj, name)
    return strip_prefixes(state)


def _shapes_of(net: torch.nn.Module) -> dict[str, Shape]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _build_shapes(entry: CatalogueEntry, num_classes: int, in_channels: int) -> dict[str, Shape] | None:
    try:
        with torch.device("meta"):
            net = build_network(entry.name, num_classes=num_classes, in_channels=in_channels)
    except (ValueError, TypeError, RuntimeError, NotImplementedError, AssertionError):
        return None   # this entry cannot take these values (an ImageNet net fixed at 3 channels, say)
    return _shapes_of(net)


@dataclass(frozen=True)
class _Reference:
    shapes: dict[str, Shape]                       # built with the base class count and channels
    classes_at: tuple[str, int] | None             # (key, dim) whose size is the class count
    channels_at: tuple[str, int] | None            # (key, dim) whose size is the input channel count


def _moving_dim(base: dict[str, Shape], other: dict[str, Shape] | None, base_value: int,
                other_value: int) -> tuple[str, int] | None:
    """The first key (in the network's own order) with a dimension that follows the changed value."""
    if other is None:
        return None
    for key, shape in base.items():
        moved = other.get(key)
        if moved is None or moved == shape or len(moved) != len(shape):
            continue
        for dim, (a, b) in enumerate(zip(shape, moved, strict=True)):
            if a == base_value and b == other_value:
                return key, dim
    return None


@lru_cache(maxsize=256)
def _reference(name: str, arch: str, kwargs_json: str) -> _Reference | None:
    entry = CATALOGUE[name]
    base = _build_shapes(entry, _BASE_CLASSES, _BASE_CHANNELS)
    if base is None:
        return None
    return _Reference(base,
                      _moving_dim(base, _build_shapes(entry, _OTHER_CLASSES, _BASE_CHANNELS),
                                  _BASE_CLASSES, _OTHER_CLASSES),
                      _moving_dim(base, _build_shapes(entry, _BASE_CLASSES, _OTHER_CHANNELS),
                                  _BASE_CHANNELS, _OTHER_CHANNELS))


def _read_value(shapes: Mapping[str, Shape], at: tuple[str, int] | None, default: int) -> int | None:
    if at is None:
        return default          # the entry does not let this value vary
    key, dim = at
    shape = shapes.get(key)
    if shape is None or len(shape) <= dim or shape[dim] < 1:
        return None
    return shape[dim]


@dataclass(frozen=True)
class _Comparison:
    entry: CatalogueEntry
    expected: dict[str, Shape]
    num_classes: int
    in_channels: int
    matching: int                 # keys equal by name and shape
    first_difference: str | None  # None on an exact match
    differences: int


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _compare(entry: CatalogueEntry, shapes: Mapping[str, Shape], own: Mapping[str, str]) -> _Comparison | None:
    ref = _reference(entry.name, entry.arch, json.dumps(entry.kwargs, sort_keys=True, default=str))
    if ref is None:
        return None
    num_classes = _read_value(shapes, ref.classes_at, _BASE_CLASSES)
    in_channels = _read_value(shapes, ref.channels_at, _BASE_CHANNELS)
    expected = ref.shapes
    if num_classes is not None and in_channels is not None and \
            (num_classes, in_channels) != (_BASE_CLASSES, _BASE_CHANNELS):
        expected = _build_shapes(entry, num_classes, in_channels) or ref.shapes
    num_classes = num_classes or _BASE_CLASSES
    in_channels = in_channels or _BASE_CHANNELS
    matching, differences, first = 0, 0, None
    for key, want in expected.items():
        got = shapes.get(key)
        if got is None and key.endswith(_OPTIONAL_SUFFIX):
            continue
        if got is not None and tuple(got) == want:
            matching += 1
            continue
        differences += 1
        if first is None:
            first = (f"the file has no {own[key]!r} ({entry.name} has it, shape {_fmt(want)})" if got is None
                     else f"the file's {own[key]!r} is {_fmt(got)} where {entry.name} has {_fmt(want)}")
    for key, got in shapes.items():
        if key not in expected:
            differences += 1
            if first is None:
                first = f"the file's {own[key]!r} {_fmt(got)} is not part of {entry.name}"
    return _Comparison(entry, expected, num_classes, in_channels, matching, first, differences)


def _own_names(shapes: Mapping[str, Shape], original_keys: Mapping[str, str] | None) -> dict[str, str]:
    """Normalised key -> the file's own name, also for keys the file lacks (with the file's prefix)."""
    own = dict(original_keys or {})
    prefix = ""
    for key, original in own.items():
        if original.endswith(key):
            prefix = original[: len(original) - len(key)]
            break

    class _WithPrefix(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return prefix + key

    return _WithPrefix(own)


def recognize(shapes: Mapping[str, Sequence[int]], *,
              original_keys: Mapping[str, str] | None = None) -> Recognition:
    """Match a normalised state_dict's key names and shapes against every CATALOGUE entry.

    ``shapes``: normalised key -> shape (normalise_state_dict's keys); ``original_keys``: normalised
    key -> the file's own key, used in the message.
    """
    file_shapes: dict[str, Shape] = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    # A robaudit NormalizedModel saved without metadata: drop its Normalize buffers, keep the network.
    if "0.mean" in file_shapes and all(k.startswith(("0.", "1.")) for k in file_shapes):
        mapping = dict(original_keys or {k: k for k in file_shapes})
        file_shapes = {k[2:]: v for k, v in file_shapes.items() if k.startswith("1.")}
        original_keys = {k: mapping.get(f"1.{k}", f"1.{k}") for k in file_shapes}
    own = _own_names(file_shapes, original_keys)
    if not file_shapes:
        return Recognition(None, message="the file holds no tensors")
    results = [c for entry in CATALOGUE.values() if (c := _compare(entry, file_shapes, own)) is not None]
    exact = [c for c in results if c.first_difference is None]
    if exact:
        best = exact[0]
        others = [c.entry.name for c in exact[1:]]
        also = f" (the same keys as {', '.join(others)})" if others else ""
        return Recognition(best.entry.name, {}, best.num_classes, best.in_channels, best.entry.input_size,
                           None, f"recognised {best.entry.name}{also}: {best.num_classes} classes, "
                                 f"{best.in_channels} input channel(s), {best.entry.input_size}x"
                                 f"{best.entry.input_size} images")
    candidates = [c for c in results if c.matching > 0]
    if not candidates:
        first_key = next(iter(file_shapes))
        return Recognition(None, message=(
            "no catalogue architecture matches: no catalogue network shares a key with the file (its first key "
            f"is {own[first_key]!r} {_fmt(file_shapes[first_key])}); export it to ONNX, or give the architecture"))
    best = max(candidates, key=lambda c: (c.matching, -c.differences))
    return Recognition(None, closest=best.entry.name, message=(
        f"no catalogue architecture matches: closest is {best.entry.name}; {best.first_difference}"))
