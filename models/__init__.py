"""Network architectures and the robaudit checkpoint format.

Every model takes images in [0, 1] and returns logits; normalization is the
first layer inside the model, so attacks and third-party evaluators never need
to know about it.
"""
from robaudit.models.checkpoint import (
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from robaudit.models.registry import ARCHITECTURES, build_model, default_arch_kwargs

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
