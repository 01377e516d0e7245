"""The validator's answers for an ONNX upload (``python -m robaudit.models.validate``, the ONNX branch).

A graph is its own architecture: there are no keys to recognise. Validation needs the dataset and the
preprocessing (an ONNX file carries no robaudit metadata) and loads the graph behind that
normalisation, which checks its ops and that a batch gives (N, classes) logits. Inspection finds the
datasets whose images the graph takes and whose class count it outputs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from robaudit.models.checkpoint import CheckpointError, ForeignFile, load_checkpoint, onnx_metadata
from robaudit.models.dataset_shape import DatasetShape
from robaudit.models.onnx_model import load_onnx
from robaudit.models.preprocessing import check_input_range

ARCH = "onnx"   # the metadata's architecture for a converted graph (load_checkpoint does not use it)


def validate_onnx(path: Path, *, datasets: Mapping[str, DatasetShape], dataset: str | None,
                  preprocessing: str | None, mean: list[float] | None, std: list[float] | None,
                  input_range: list[float] | None = None) -> dict[str, Any]:
    """The validator's verdict for an ONNX file; raises CheckpointError with one line."""
    if not dataset:
        raise CheckpointError(f"{path.name} is an ONNX graph, which carries no robaudit metadata: give the "
                              "'dataset' and 'preprocessing' form fields")
    if dataset not in datasets:
        raise CheckpointError(f"unknown dataset {dataset!r}; choose one of: {', '.join(datasets)}")
    info = datasets[dataset]
    meta = onnx_metadata(path, ForeignFile(
        dataset=dataset, num_classes=info.num_classes, in_channels=info.in_channels, input_size=info.size,
        preprocessing=preprocessing, mean=mean, std=std,
        input_range=None if input_range is None else check_input_range(input_range)))
    assert meta is not None
    load_checkpoint(path, metadata=meta)   # converts the graph and checks its logits' shape
    return {"ok": True, "ext": "onnx", "embedded": False, "metadata": asdict(meta), "detected_arch": None}


def inspect_onnx(path: Path, *, datasets: Mapping[str, DatasetShape]) -> dict[str, Any]:
    """What the graph is: the datasets whose images it takes and whose classes it outputs."""
    net = load_onnx(path)
    fits: list[str] = []
    shape: tuple[int, int, int] | None = None
    outputs: dict[tuple[int, int], int | None] = {}
    for name, d in datasets.items():
        key = (d.in_channels, d.size)
        if key not in outputs:
            try:
                with torch.no_grad():
                    out = net(torch.zeros(2, d.in_channels, d.size, d.size))
                outputs[key] = int(out.shape[-1]) if out.dim() == 2 and out.shape[0] == 2 else None
            except (RuntimeError, ValueError, IndexError, TypeError):   # a graph made for other images
                outputs[key] = None
        if outputs[key] == d.num_classes:
            fits.append(name)
            shape = shape or (d.num_classes, d.in_channels, d.size)
    if shape is None:
        raise CheckpointError(f"{path.name}: the graph fits no known dataset (it must take (N, C, H, W) images "
                              "of one of them and output (N, classes) logits)")
    return {"ok": True, "detected_arch": None, "embedded": False, "arch": ARCH, "arch_kwargs": {},
            "num_classes": shape[0], "in_channels": shape[1], "input_size": shape[2], "datasets": fits}
