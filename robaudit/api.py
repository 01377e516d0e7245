"""The public Python API (README, "Python API"): load a checkpoint as a model, load a dataset as tensors,
and audit any model a user builds in Python."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.data import dataset_info, load_arrays
from robaudit.errors import RobauditError
from robaudit.models.checkpoint import ForeignFile, load_checkpoint, read_metadata

# What robaudit.audit() marks its results with, so the service can show them as imported.
SOURCE = "python-api"
# Only used to build the spec when audit() is given no dataset: its eps is then required, and the
# results name no dataset.
_SHAPE_ONLY_DATASET = "mnist10k"


def load_model(path: str | Path, *, device: str | torch.device = "cpu", arch: str | None = None,
               dataset: str | None = None, arch_kwargs: dict[str, Any] | None = None,
               preprocessing: str | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, input_range: Sequence[float] | None = None) -> nn.Module:
    """Load a checkpoint as an ``nn.Module`` in eval mode that takes inputs in [0, 1] and returns logits.

    A file with robaudit metadata loads as it states. Any other state_dict (``.pt``, ``.safetensors``)
    needs its ``preprocessing`` (a preset: none, cifar-0.5, imagenet, cifar10) or ``mean`` and ``std``:
    there is no default (``input_range=(0, 255)`` for a network trained on 0..255 pixels; the returned
    model still takes [0, 1]). ``arch`` may be left out when the file's keys match a catalogue network;
    ``dataset`` checks the class count and channels against the file's.
    Never unpickles code: safetensors, or ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if read_metadata(path) is not None:
        if preprocessing is not None or mean is not None or std is not None or input_range is not None:
            raise RobauditError(f"{path.name} states its own preprocessing in its robaudit metadata; "
                                "leave out preprocessing, mean, std and input_range")
        model, _ = load_checkpoint(path, device=device)
        return model
    info = dataset_info(dataset) if dataset is not None else None
    given = ForeignFile(
        arch=arch, arch_kwargs=dict(arch_kwargs or {}), dataset=dataset,
        num_classes=info.num_classes if info else None, in_channels=info.in_channels if info else None,
        input_size=info.size if info else None, preprocessing=preprocessing,
        mean=None if mean is None else [float(v) for v in mean],
        std=None if std is None else [float(v) for v in std],
        input_range=None if input_range is None else [float(v) for v in input_range])
    model, _ = load_checkpoint(path, foreign=given, device=device)
    return model


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None,
                 download: bool = False, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] as (N, C, H, W) float32 and int64 labels: exactly what robaudit evaluates on.

    ``limit``: only the first N points (for ``imagenet``, only those images are decoded)."""
    return load_arrays(name, split, data_dir, download, limit=limit)


def audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, preset: str = "quick",
          eps: float | str | Sequence[float | str] | None = None, *, dataset: str | None = None,
          attacks: str | Sequence[str] | None = None, n_examples: int | None = None,
          batch_size: int | str = 500, seed: int = 0, surrogate: nn.Module | None = None,
          progress: Callable[[Any], None] | None = None, norm: str = "linf", gallery: int = 100,
          save_adversarial: str | Path | None = None) -> dict[str, Any]:
    """Audit any ``nn.Module`` that takes images in [0, 1] (N, C, H, W) and returns logits.

    Runs the ``preset`` (quick, paper, audit) on the first ``n_examples`` of (x, y) (default: all) and
    returns the results JSON (docs/results-schema.md), marked ``"source": "python-api"``. ``eps`` is
    in [0, 1] pixel units under ``norm="linf"`` and a distance under ``"l2"`` or ``"l1"``; without it the
    ``dataset``'s default for the norm is used, so one of them is required.
    The model is evaluated where its parameters are; put it (and nothing else) on the GPU first.
    ``gallery``: keep the adversarial examples of the first N points (0: none); ``save_adversarial``
    writes them as the ``.npz`` that ``robaudit evaluate --save-adversarial`` writes.
    """
    from robaudit.evaluation import build_spec, evaluate
    from robaudit.evaluation.gallery import Gallery, save_download

    if eps is None and dataset is None:
        raise RobauditError("give eps (e.g. 8/255) or the dataset the points come from (its default eps)")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.dim() != 4:
        raise RobauditError("x must be a (N, C, H, W) tensor of images in [0, 1] and y a tensor of labels")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise RobauditError(f"x must hold images in [0, 1] (the model normalises them itself); its values run "
                            f"from {float(x.min()):g} to {float(x.max()):g}")
    if save_adversarial is not None and gallery <= 0:
        raise RobauditError("save_adversarial needs a gallery: give gallery > 0")
    eps_arg = None if eps is None else [eps] if isinstance(eps, (int, float, str)) else list(eps)
    attacks_arg = None if attacks is None else attacks if isinstance(attacks, str) else list(attacks)
    spec = build_spec(preset, attacks=attacks_arg, eps=eps_arg, dataset=dataset or _SHAPE_ONLY_DATASET,
                      n_examples=n_examples or len(x), surrogate=surrogate is not None, batch_size=batch_size,
                      seed=seed, norm=norm, input_dims=int(x[0].numel()), gallery_examples=gallery)
    if dataset is None:
        spec = replace(spec, dataset="custom")
    found: list[Gallery] = []
    results = evaluate(model, x, y, spec, surrogate=surrogate, progress=progress, on_gallery=found.append)
    if save_adversarial is not None:
        save_download(found[0] if found else None, Path(save_adversarial), results["n"], spec.gallery_examples)
    if dataset is None:
        results["test_points"] = f"the first {results['n']} of the points given to robaudit.audit()"
    results["source"] = SOURCE
    results["model"] = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                        "parameters": sum(p.numel() for p in model.parameters())}
    return results
