"""Check an uploaded checkpoint in a separate process: `python -m robaudit.models.validate PATH ...`.

Builds the architecture and loads the weights strictly (safetensors, or a .pt
through torch.load(weights_only=True) only), then runs one forward pass on the
dataset's image size. Prints one JSON line: {"ok": true, "ext", "embedded",
"metadata", "detected_arch"} or {"ok": false, "error", "closest"}. A file without
robaudit metadata needs the dataset and its preprocessing (a preset, or mean and
std); its architecture is recognised when not given. ``--inspect`` only recognises
the file and lists the datasets that fit it. The API runs this with a timeout so
parsing untrusted bytes never happens in the API process.

The dataset table (classes, channels, image size, normalization) belongs to the science
package, which sits above this one; the caller hands it in (``--datasets``, written by
``datasets_json(robaudit.data.DATASETS)``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from robaudit.models.checkpoint import (
    CheckpointError,
    ForeignFile,
    Unrecognised,
    describe_foreign,
    load_checkpoint,
    read_metadata,
    read_shapes,
    sniff_format,
)
from robaudit.models.dataset_shape import DatasetShape
from robaudit.models.preprocessing import PREPROCESSING
from robaudit.models.recognize import recognize
from robaudit.models.registry import resolve_arch
from robaudit.models.sandbox import limit_memory, out_of_memory, over_cap_message
from robaudit.models.validate_onnx import inspect_onnx, validate_onnx


@dataclass(frozen=True)
class _Shape:
    num_classes: int
    in_channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def datasets_json(datasets: Mapping[str, DatasetShape]) -> str:
    """The ``--datasets`` argument for the subprocess."""
    return json.dumps({name: {"num_classes": d.num_classes, "in_channels": d.in_channels, "size": d.size,
                              "mean": list(d.mean), "std": list(d.std)} for name, d in datasets.items()})


def parse_datasets(text: str) -> dict[str, DatasetShape]:
    table = json.loads(text)
    return {name: _Shape(int(d["num_classes"]), int(d["in_channels"]), int(d["size"]),
                         tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))
            for name, d in table.items()}


def _lookup(datasets: Mapping[str, DatasetShape], name: str) -> DatasetShape:
    try:
        return datasets[name]
    except KeyError:
        raise CheckpointError(f"unknown dataset {name!r}; choose one of: {', '.join(datasets)}") from None


def _compatible(datasets: Mapping[str, DatasetShape], num_classes: int | None, in_channels: int | None,
                input_size: int | None) -> list[str]:
    return [name for name, d in datasets.items()
            if (d.num_classes, d.in_channels) == (num_classes, in_channels) and input_size in (None, d.size)]


def inspect_file(path: Path, *, datasets: Mapping[str, DatasetShape]) -> dict[str, Any]:
    """Recognition only: what the file is and which datasets fit it. Needs nothing from the user."""
    torch.set_num_threads(1)
    try:
        if sniff_format(path) == "onnx":   # a graph is its own architecture (models/validate_onnx.py)
            return inspect_onnx(path, datasets=datasets)
        meta = read_metadata(path)
        if meta is not None:
            return {"ok": True, "detected_arch": None, "embedded": True, "arch": meta.arch,
                    "arch_kwargs": meta.arch_kwargs, "num_classes": meta.num_classes, "in_channels": meta.in_channels,
                    "input_size": meta.input_size, "metadata": asdict(meta),
                    "datasets": _compatible(datasets, meta.num_classes, meta.in_channels, meta.input_size)}
        shapes, original = read_shapes(path)
        found = recognize(shapes, original_keys=original)
        if found.arch is None:
            return {"ok": False, "error": found.message, "closest": found.closest}
        return {"ok": True, "detected_arch": found.arch, "embedded": False, "arch_kwargs": found.arch_kwargs,
                "num_classes": found.num_classes, "in_channels": found.in_channels, "input_size": found.input_size,
                "message": found.message,
                "datasets": _compatible(datasets, found.num_classes, found.in_channels, found.input_size)}
    except CheckpointError as exc:
        return {"ok": False, "error": str(exc), "closest": None}


def validate_file(path: Path, *, datasets: Mapping[str, DatasetShape], arch: str | None = None,
                  dataset: str | None = None, arch_kwargs: dict[str, Any] | None = None,
                  preprocessing: str | None = None, mean: list[float] | None = None,
                  std: list[float] | None = None, input_range: list[float] | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    detected = None
    try:
        kind = sniff_format(path)
        ext = {"safetensors": "safetensors", "onnx": "onnx"}.get(kind, "pt")
        if kind == "onnx":
            return validate_onnx(path, datasets=datasets, dataset=dataset, preprocessing=preprocessing,
                                 mean=mean, std=std, input_range=input_range)
        meta = read_metadata(path)
        embedded = meta is not None
        info = _lookup(datasets, dataset) if dataset else None
        if meta is None:
            if info is None:
                shapes, original = read_shapes(path)
                found = recognize(shapes, original_keys=original)
                if found.arch is None and not arch:
                    raise Unrecognised(found.message, found.closest)
                choices = ", ".join(_compatible(datasets, found.num_classes, found.in_channels, found.input_size))
                raise CheckpointError("the file carries no robaudit metadata: give the 'dataset' and 'preprocessing' "
                                      "form fields" + (f" (the 'arch' field is optional: {found.message}; compatible "
                                                       f"datasets: {choices or 'none known'})" if found.arch
                                                       else " and the 'arch' field"))
            shapes, original = read_shapes(path)
            described = describe_foreign(shapes, original, ForeignFile(
                arch=arch, arch_kwargs=dict(arch_kwargs or {}), dataset=dataset, num_classes=info.num_classes,
                in_channels=info.in_channels, input_size=info.size, preprocessing=preprocessing, mean=mean, std=std,
                input_range=input_range),
                path.name)
            meta, detected = described.metadata, described.detected_arch
        else:
            if arch:
                try:
                    given, stored = resolve_arch(arch, arch_kwargs), resolve_arch(meta.arch, meta.arch_kwargs)
                except ValueError as exc:
                    raise CheckpointError(str(exc)) from None
                if given[0] != stored[0]:
                    raise CheckpointError(f"architecture mismatch: the file says {meta.arch!r} but the request "
                                          f"says {arch!r}")
            if info is not None:
                if (info.num_classes, info.in_channels) != (meta.num_classes, meta.in_channels):
                    raise CheckpointError(
                        f"dataset/architecture mismatch: the checkpoint has {meta.in_channels} input channel(s) "
                        f"and {meta.num_classes} classes, but {dataset} has {info.in_channels} and "
                        f"{info.num_classes}")
                meta.dataset = meta.dataset or dataset
        model, meta = load_checkpoint(path, metadata=meta)
        ds = meta.dataset or dataset
        if ds:
            info = _lookup(datasets, ds)
            try:
                with torch.no_grad():
                    out = model(torch.zeros(2, info.in_channels, info.size, info.size))
            except RuntimeError as exc:
                raise CheckpointError(f"dataset/architecture mismatch: {meta.arch} does not accept {ds} images "
                                      f"({info.in_channels}x{info.size}x{info.size}): "
                                      f"{str(exc).splitlines()[0][:200]}") from None
            if tuple(out.shape) != (2, info.num_classes):
                raise CheckpointError(f"dataset/architecture mismatch: the model outputs {out.shape[-1]} logits "
                                      f"but {ds} has {info.num_classes} classes")
        return {"ok": True, "ext": ext, "embedded": embedded, "metadata": asdict(meta), "detected_arch": detected}
    except CheckpointError as exc:
        return {"ok": False, "error": str(exc), "closest": exc.closest if isinstance(exc, Unrecognised) else None}


def _json_floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
        values = [value] if isinstance(value, (int, float)) else value
        if not isinstance(values, list) or not values or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError("not a number or a list of numbers")
        return [float(v) for v in values]
    except ValueError as exc:
        raise CheckpointError(f"{what} must be a number or a JSON list of numbers ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robaudit.models.validate",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--datasets", required=True, help="JSON object: dataset name -> shape (datasets_json)")
    parser.add_argument("--arch")
    parser.add_argument("--dataset")
    parser.add_argument("--arch-kwargs", default="{}", help="JSON object")
    parser.add_argument("--preprocessing", help=f"preset: {', '.join(PREPROCESSING)}")
    parser.add_argument("--mean", help="JSON number or list, for inputs in [0, 1]")
    parser.add_argument("--std", help="JSON number or list")
    parser.add_argument("--input-range", help="JSON [0, 1] (default) or [0, 255]: the pixel range it was trained on")
    parser.add_argument("--inspect", action="store_true", help="recognition only: what the file is, which datasets fit")
    parser.add_argument("--memory-mb", type=float, help="cap this process's memory before reading the file")
    args = parser.parse_args(argv)
    limit_memory(args.memory_mb)
    try:
        verdict = _answer(args)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        verdict = {"ok": False, "error": over_cap_message(f"checking {args.path.name}", args.memory_mb),
                   "closest": None}
    print(json.dumps(verdict))
    return 0


def _answer(args: argparse.Namespace) -> dict[str, Any]:
    datasets = parse_datasets(args.datasets)
    if args.inspect:
        return inspect_file(args.path, datasets=datasets)
    try:
        kwargs = json.loads(args.arch_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        return {"ok": False, "error": f"arch_kwargs must be a JSON object ({exc})", "closest": None}
    try:
        mean, std = _json_floats(args.mean, "mean"), _json_floats(args.std, "std")
        input_range = _json_floats(args.input_range, "input_range")
    except CheckpointError as exc:
        return {"ok": False, "error": str(exc), "closest": None}
    return validate_file(args.path, datasets=datasets, arch=args.arch, dataset=args.dataset, arch_kwargs=kwargs,
                         preprocessing=args.preprocessing, mean=mean, std=std, input_range=input_range)


if __name__ == "__main__":
    sys.exit(main())
