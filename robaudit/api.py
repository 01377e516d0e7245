"""The public Python API: load a checkpoint as a model, load a dataset as tensors (README, "Python API")."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.data import dataset_info, load_arrays
from robaudit.models.checkpoint import CheckpointMetadata, load_checkpoint


def load_model(path: str | Path, *, device: str | torch.device = "cpu", arch: str | None = None,
               dataset: str | None = None, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Load a checkpoint as an ``nn.Module`` in eval mode that takes inputs in [0, 1] and returns logits.

    Files without robaudit metadata (a plain ``.pt`` state_dict) need ``arch`` and ``dataset``.
    Never unpickles code: safetensors, or ``torch.load(weights_only=True)``.
    """
    fallback = None
    if arch is not None and dataset is not None:
        info = dataset_info(dataset)
        fallback = CheckpointMetadata(arch=arch, arch_kwargs=arch_kwargs or {}, num_classes=info.num_classes,
                                      in_channels=info.in_channels, mean=list(info.mean), std=list(info.std),
                                      dataset=dataset, input_size=info.size)
    model, _ = load_checkpoint(path, metadata=fallback, device=device)
    return model


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None,
                 download: bool = False, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] as (N, C, H, W) float32 and int64 labels: exactly what robaudit evaluates on.

    ``limit``: only the first N points (for ``imagenet``, only those images are decoded)."""
    return load_arrays(name, split, data_dir, download, limit=limit)
