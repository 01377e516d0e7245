"""Check an uploaded checkpoint in a separate process: `python -m robaudit.models.validate PATH ...`.

Builds the architecture and loads the weights strictly (safetensors, or a .pt
through torch.load(weights_only=True) only), then runs one forward pass on the
dataset's image size. Prints one JSON line: {"ok": true, "ext", "embedded",
"metadata"} or {"ok": false, "error"}. The API runs this with a timeout so
parsing untrusted bytes never happens in the API process.

The dataset table (classes, channels, image size, normalization) belongs to the science
package, which sits above this one; the caller hands it in (``--datasets``, written by
``datasets_json(robaudit.data.DATASETS)``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from robaudit.models.checkpoint import (
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    sniff_format,
)
from robaudit.models.registry import resolve_arch


class DatasetShape(Protocol):
    """What the check needs to know of a dataset (robaudit.data.DatasetInfo has it)."""

    @property
    def num_classes(self) -> int: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def mean(self) -> Sequence[float]: ...
    @property
    def std(self) -> Sequence[float]: ...


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


def validate_file(path: Path, *, datasets: Mapping[str, DatasetShape], arch: str | None = None,
                  dataset: str | None = None, arch_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    try:
        kind = sniff_format(path)
        ext = "safetensors" if kind == "safetensors" else "pt"
        meta = read_metadata(path)
        embedded = meta is not None
        info = _lookup(datasets, dataset) if dataset else None
        if meta is None:
            if not arch or not dataset or info is None:
                raise CheckpointError("the file carries no robaudit metadata: give the 'arch' and 'dataset' "
                                      "form fields (e.g. arch=smallcnn, dataset=mnist10k)")
            meta = CheckpointMetadata(arch=arch, arch_kwargs=dict(arch_kwargs or {}), num_classes=info.num_classes,
                                      in_channels=info.in_channels, mean=list(info.mean), std=list(info.std),
                                      dataset=dataset, input_size=info.size)
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
        return {"ok": True, "ext": ext, "embedded": embedded, "metadata": asdict(meta)}
    except CheckpointError as exc:
        return {"ok": False, "error": str(exc)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robaudit.models.validate",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--datasets", required=True, help="JSON object: dataset name -> shape (datasets_json)")
    parser.add_argument("--arch")
    parser.add_argument("--dataset")
    parser.add_argument("--arch-kwargs", default="{}", help="JSON object")
    args = parser.parse_args(argv)
    try:
        kwargs = json.loads(args.arch_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        print(json.dumps({"ok": False, "error": f"arch_kwargs must be a JSON object ({exc})"}))
        return 0
    verdict = validate_file(args.path, datasets=parse_datasets(args.datasets), arch=args.arch,
                            dataset=args.dataset, arch_kwargs=kwargs)
    print(json.dumps(verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
