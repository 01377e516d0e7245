"""What the API asks of an uploaded file before storing it: validation, recognition and the clean check.

Anything that parses the file's bytes runs in a subprocess with a timeout and a scrubbed environment
(``python -m robaudit.models.validate`` and ``python -m robaudit.evaluation.clean_check``), so
untrusted bytes never reach the API process. The one exception is recognition from a table of tensor
shapes (the browser reads a .safetensors header itself and sends only key -> shape): that is plain
data, checked here, and matched against the catalogue in the API process.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robaudit.backend.app.core.config import Settings
from robaudit.data import DATASETS
from robaudit.models.validate import datasets_json

# Secrets never reach the process that parses untrusted bytes.
_SCRUBBED_ENV = ("ROBAUDIT_API_TOKEN", "DATABASE_URL", "REDIS_URL")
# A shape table from the browser: far more entries than any catalogue network has (WRN-70-16: ~1,300).
MAX_SHAPE_ENTRIES = 20_000
MAX_KEY_CHARS = 300
MAX_RANK = 8
MAX_DIM = 2**31
# Mean/std: one value per input channel (or one for all); more than a few is a mistake.
MAX_NORM_VALUES = 16


class CheckRefused(ValueError):
    """A request the checks refuse; the message is the one line the user sees (a 422)."""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["CUDA_VISIBLE_DEVICES"] = ""   # the API host's GPU belongs to the workers
    env["OMP_NUM_THREADS"] = "1"
    return env


async def run_json(args: list[str], timeout_s: float, what: str) -> tuple[dict[str, Any] | None, str]:
    """Run ``python -m ...`` and parse its last stdout line as a JSON object.

    Returns (object, "") or (None, why there is no answer) on a timeout or a crash."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=_env())
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, f"{what} took longer than {timeout_s:g} s"
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1])
        if isinstance(answer, dict):
            return answer, ""
    except (IndexError, ValueError):
        pass
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    return None, f"{what} failed (exit code {proc.returncode}: {tail[0][:200]})"


# --------------------------------------------------------------------------- form fields

def parse_norm(name: str, text: str) -> list[float]:
    """A mean or std form field: a JSON list of finite numbers (std > 0)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CheckRefused(f"{name} must be a JSON list of numbers, e.g. [0.5, 0.5, 0.5] ({exc})") from None
    if (not isinstance(value, list) or not 1 <= len(value) <= MAX_NORM_VALUES
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise CheckRefused(f"{name} must be a JSON list of 1 to {MAX_NORM_VALUES} finite numbers, "
                           "one per input channel, e.g. [0.5, 0.5, 0.5]")
    if name == "std" and any(v <= 0 for v in value):
        raise CheckRefused("std must be positive: each input channel is divided by it")
    return [float(v) for v in value]


def preprocessing_args(fields: Mapping[str, str]) -> list[str]:
    """The validator's preprocessing flags from the upload form: a preset name, or mean and std.

    "custom" in the preprocessing field means "the mean and std I give" (what the upload page sends)."""
    preset = (fields.get("preprocessing") or "").strip()
    mean, std = (fields.get("mean") or "").strip(), (fields.get("std") or "").strip()
    if bool(mean) != bool(std):
        raise CheckRefused("give both mean and std (JSON lists), or a preprocessing preset instead")
    if mean:
        if preset and preset != "custom":
            raise CheckRefused(f"give either the preprocessing preset ({preset!r}) or mean and std, not both")
        return ["--mean", json.dumps(parse_norm("mean", mean)), "--std", json.dumps(parse_norm("std", std))]
    if preset == "custom":
        raise CheckRefused("preprocessing 'custom' needs the mean and std fields (JSON lists)")
    return ["--preprocessing", preset] if preset else []


def input_range_args(fields: Mapping[str, str]) -> list[str]:
    """The pixel range the network was trained on: [0, 1] (the default) or [0, 255]."""
    text = (fields.get("input_range") or "").strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if value not in ([0, 1], [0, 255]):
        raise CheckRefused("input_range must be [0, 1] or [0, 255] (the pixel range the network was trained on)")
    return ["--input-range", json.dumps(value)]


# --------------------------------------------------------------------------- subprocesses

def memory_cap_args(settings: Settings) -> list[str]:
    """Each subprocess caps its own memory before it reads the file (models/sandbox.py)."""
    return ["--memory-mb", f"{settings.validate_memory_mb:g}"]


async def validate(path: Path, fields: Mapping[str, str], settings: Settings) -> dict[str, Any]:
    """Load the file strictly in ``robaudit.models.validate``; returns its JSON verdict ({"ok": ...})."""
    args = ["robaudit.models.validate", str(path), "--datasets", datasets_json(DATASETS)]
    for key in ("arch", "dataset"):
        if fields.get(key):
            args += [f"--{key}", fields[key]]
    if fields.get("arch_kwargs"):
        args += ["--arch-kwargs", fields["arch_kwargs"]]
    args += preprocessing_args(fields) + input_range_args(fields) + memory_cap_args(settings)
    verdict, why = await run_json(args, settings.validate_timeout_s, "checking the checkpoint")
    if verdict is None or "ok" not in verdict:
        return {"ok": False, "error": why or "the file could not be checked (the validator gave no verdict)"}
    return verdict


async def inspect_file(path: Path, settings: Settings) -> dict[str, Any]:
    """Recognition only (``validate --inspect``): what the file is, without loading it into a network."""
    args = ["robaudit.models.validate", str(path), "--datasets", datasets_json(DATASETS), "--inspect",
            *memory_cap_args(settings)]
    verdict, why = await run_json(args, settings.validate_timeout_s, "reading the checkpoint")
    if verdict is None or "ok" not in verdict:
        return {"ok": False, "error": why or "the file could not be read (the validator gave no verdict)"}
    return verdict


async def clean_check(path: Path, metadata: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Clean accuracy on the dataset's first test points; {"ran": false, "reason"} when it cannot run.

    Never refuses the upload: a model that loads is stored, and this figure says whether its inputs,
    classes and dataset look right."""
    args = ["robaudit.evaluation.clean_check", str(path), "--metadata", json.dumps(dict(metadata)),
            *memory_cap_args(settings)]
    if settings.datasets_dir:
        args += ["--data-dir", str(settings.datasets_dir)]
    answer, why = await run_json(args, settings.clean_check_timeout_s, "the clean-accuracy check")
    if answer is None or "ran" not in answer:
        return {"ran": False, "reason": why or "the clean-accuracy check gave no answer"}
    return answer


# --------------------------------------------------------------------------- shapes from the browser

def parse_shape_table(body: bytes) -> dict[str, list[int]]:
    """``{"tensors": {key: [dims...]}}`` -> key -> shape, or CheckRefused with what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise CheckRefused(f"the body is not valid JSON ({str(exc)[:100]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), dict) or set(data) != {"tensors"}:
        raise CheckRefused('send {"tensors": {"<key>": [<dims>], ...}} (the .safetensors header\'s names and shapes)')
    table = data["tensors"]
    if not table:
        raise CheckRefused("the file has no tensors")
    if len(table) > MAX_SHAPE_ENTRIES:
        raise CheckRefused(f"too many tensors ({len(table)}; at most {MAX_SHAPE_ENTRIES})")
    shapes: dict[str, list[int]] = {}
    for key, shape in table.items():
        if not key or len(key) > MAX_KEY_CHARS:
            raise CheckRefused(f"tensor names must have 1 to {MAX_KEY_CHARS} characters ({key[:40]!r}...)")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < MAX_DIM for d in shape)):
            raise CheckRefused(f"the shape of {key!r} must be a list of at most {MAX_RANK} non-negative integers")
        shapes[key] = shape
    return shapes


def compatible_datasets(num_classes: int | None, in_channels: int | None, input_size: int | None) -> list[str]:
    """The datasets whose classes, channels and (when the network fixes it) image size fit."""
    return [name for name, d in DATASETS.items()
            if (num_classes is None or d.num_classes == num_classes)
            and (in_channels is None or d.in_channels == in_channels)
            and (input_size is None or d.size == input_size)]


def recognise_shapes(shapes: Mapping[str, list[int]]) -> dict[str, Any]:
    """Recognition from names and shapes alone, in this process.

    Safe without a subprocess: the input is a checked table of integers (no tensor bytes, no pickle),
    the tensors are built on the "meta" device (no memory), and matching is dictionary work; a
    subprocess would cost a torch import (seconds) per file the user picks."""
    import torch

    from robaudit.models.checkpoint import CheckpointError
    from robaudit.models.recognize import normalise_state_dict, recognize

    try:
        state, original = normalise_state_dict({k: torch.empty(s, device="meta") for k, s in shapes.items()})
        rec = recognize({k: tuple(v.shape) for k, v in state.items()}, original_keys=original)
    except CheckpointError as exc:
        return {"ok": False, "error": str(exc)}
    if rec.arch is None:
        return {"ok": False, "error": rec.message, "closest": rec.closest}
    return {"ok": True, "detected_arch": rec.arch, "arch_kwargs": dict(rec.arch_kwargs),
            "num_classes": rec.num_classes, "in_channels": rec.in_channels, "input_size": rec.input_size,
            "datasets": compatible_datasets(rec.num_classes, rec.in_channels, rec.input_size)}
