"""Network architectures and the robaudit checkpoint format.

Every model takes images in [0, 1] and returns logits; normalization is the
first layer inside the model, so attacks and third-party evaluators never need
to know about it.

The names below load on first use (PEP 562), so a torch-free module of this package, such as
``robaudit.models.sandbox`` in the service's test-set reader, is imported without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robaudit.models.checkpoint import (
        CheckpointError,
        CheckpointMetadata,
        load_checkpoint,
        read_metadata,
        save_checkpoint,
    )
    from robaudit.models.registry import ARCHITECTURES, build_model, default_arch_kwargs

_LAZY = {"CheckpointError": "checkpoint", "CheckpointMetadata": "checkpoint", "load_checkpoint": "checkpoint",
         "read_metadata": "checkpoint", "save_checkpoint": "checkpoint", "ARCHITECTURES": "registry",
         "build_model": "registry", "default_arch_kwargs": "registry"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "ARCHITECTURES",
    "build_model",
    "default_arch_kwargs",
    "CheckpointError",
    "CheckpointMetadata",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
]
