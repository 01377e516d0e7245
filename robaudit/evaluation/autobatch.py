"""``--batch-size auto``: the evaluation batch size found once per (model, device) and cached.

What is sized is one forward pass and one input-gradient backward pass, the unit of work of every
attack step.

* CUDA: the largest batch that fits. Doubling until ``torch.OutOfMemoryError`` (or ``limit``), then
  bisection between the last size that fit and the first that did not; the result keeps a safety
  margin (SAFETY of the largest that fit, rounded down to a multiple of 8), because an attack holds
  a few more tensors than the bare pass (the iterate, the ball's bounds, the best point so far) and
  other processes may share the card.
* CPU: there is no out-of-memory signal to search for (the operating system swaps or kills the
  process instead), and past a few hundred images a larger batch buys nothing. So the size is
  picked by throughput: doubling from MIN_BATCH while images per second improve by more than
  CPU_GAIN, capped at ``limit``.

The result is cached in a small JSON file keyed by the model's fingerprint (architecture name and
weights), the input shape, the device's name, the precision, channels_last and compile (see
``cache_key``). Results depend on the batch size (each batch draws its own random starts), so the
resolved size is written into the results' ``config.batch_size``, and the cache keeps a rerun on
the same machine, resuming from a store, on the same batches.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.attacks.common import eval_mode
from robaudit.evaluation import accel
from robaudit.evaluation.presets import EvalSpec

MIN_BATCH = 8
SAFETY = 0.85            # on CUDA, use this share of the largest batch that fit
CPU_GAIN = 0.10          # on CPU, keep doubling while images/s improve by more than this
CPU_TIMED_REPEATS = 3    # best of at least these timed passes per size, after one warm-up pass,
CPU_MIN_SECONDS = 0.3    # and of at least this much timed work
MAX_AUTO_BATCH = 8192    # the largest batch resolve_batch_size asks for
CACHE_VERSION = 1


def default_cache_path() -> Path:
    """$ROBAUDIT_CACHE_DIR/batch_sizes.json, else ~/.cache/robaudit/batch_sizes.json."""
    root = os.environ.get("ROBAUDIT_CACHE_DIR") or Path.home() / ".cache" / "robaudit"
    return Path(root) / "batch_sizes.json"


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":  # CPU throughput depends on how many threads torch may use
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def _model_fingerprint(model: nn.Module) -> str:
    sha = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:20]


def cache_key(model: nn.Module, sample: torch.Tensor, device: torch.device | str) -> str:
    """The model's fingerprint, input shape, device name and the accel options, as one string."""
    opts = accel.options(model)
    parts = [f"v{CACHE_VERSION}", _model_fingerprint(accel.unwrap(model)), "x".join(map(str, sample.shape[1:])),
             device_name(device), opts["precision"], f"channels_last={opts['channels_last']}",
             f"compile={opts['compile']}"]
    return "|".join(parts)


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: searching again is the cure
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one


def _batch(sample: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    index = torch.arange(size) % len(sample)
    return sample[index].to(device)


def _pass(model: nn.Module, x: torch.Tensor) -> None:
    """One forward and one input-gradient pass, as an attack step makes it."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = model(x).float().logsumexp(1).sum()
        torch.autograd.grad(loss, x)


def _fits(model: nn.Module, sample: torch.Tensor, size: int, device: torch.device) -> bool:
    try:
        _pass(model, _batch(sample, size, device))
        torch.cuda.synchronize(device)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def _search_cuda(model: nn.Module, sample: torch.Tensor, device: torch.device, limit: int) -> int:
    good, bad = 0, None
    size = min(MIN_BATCH, limit)
    while size <= limit:
        if not _fits(model, sample, size, device):
            bad = size
            break
        good = size
        if size == limit:
            break
        size = min(2 * size, limit)
    if good == 0:
        raise torch.OutOfMemoryError(f"not even a batch of {min(MIN_BATCH, limit)} fits on {device_name(device)}")
    if bad is not None:  # bisect between a size that fit and one that did not, to within 8 images
        while bad - good > MIN_BATCH:
            mid = (good + bad) // 2
            if _fits(model, sample, mid, device):
                good = mid
            else:
                bad = mid
        # The margin only matters when memory was the limit, not the cap.
        return max(MIN_BATCH, int(SAFETY * good) // MIN_BATCH * MIN_BATCH) if good >= MIN_BATCH else good
    return good


def _images_per_second(model: nn.Module, sample: torch.Tensor, size: int, device: torch.device) -> float:
    x = _batch(sample, size, device)
    _pass(model, x)  # warm-up: allocator, oneDNN primitive creation
    best, spent, repeats = float("inf"), 0.0, 0
    # Small batches take milliseconds: time enough passes that one scheduler hiccup cannot decide.
    while repeats < CPU_TIMED_REPEATS or spent < CPU_MIN_SECONDS:
        start = time.perf_counter()
        _pass(model, x)
        elapsed = time.perf_counter() - start
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
    return size / max(best, 1e-9)


def _search_by_throughput(model: nn.Module, sample: torch.Tensor, device: torch.device, limit: int) -> int:
    size = min(MIN_BATCH, limit)
    rate = _images_per_second(model, sample, size, device)
    while size < limit:
        bigger = min(2 * size, limit)
        bigger_rate = _images_per_second(model, sample, bigger, device)
        if bigger_rate <= rate * (1 + CPU_GAIN):
            break
        size, rate = bigger, bigger_rate
    return size


def find_batch_size(model: nn.Module, sample: torch.Tensor, device: torch.device | str, *,
                    cache_path: Path | None, limit: int) -> int:
    """The evaluation batch size for ``model`` on ``device`` (module docstring), at most ``limit``.

    ``sample``: inputs of the evaluated shape (repeated to fill a batch). ``model``: as it will be
    attacked, i.e. after accel.prepare_model. With ``cache_path`` the answer is read from / written to
    that JSON file; a cached answer found under a smaller limit is reused only if memory or
    throughput, not that limit, stopped the search.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    device = torch.device(device)
    key = cache_key(model, sample, device)
    if cache_path is not None:
        entry = _read_cache(cache_path).get(key)
        if isinstance(entry, dict) and "batch_size" in entry:
            found, searched_to = int(entry["batch_size"]), int(entry.get("limit", 0))
            if searched_to >= limit or found < searched_to:  # the old limit did not cut this search short
                return min(found, limit)
    with eval_mode(model):
        if device.type == "cuda":
            size = _search_cuda(model, sample, device, limit)
        else:
            size = _search_by_throughput(model, sample, device, limit)
    if cache_path is not None:
        data = _read_cache(cache_path)  # re-read: another process may have added entries meanwhile
        data[key] = {"batch_size": size, "limit": limit, "method": "memory" if device.type == "cuda" else "throughput"}
        _write_cache(cache_path, data)
    return size


def resolve_batch_size(spec: EvalSpec, model: nn.Module, x: torch.Tensor, device: torch.device | str,
                       cache_path: Path | None) -> EvalSpec:
    """``spec`` with the found batch size when ``spec.auto_batch_size``, else ``spec`` unchanged.

    The size never exceeds the number of evaluated points (a larger batch would only be padding).
    """
    if not spec.auto_batch_size:
        return spec
    limit = max(1, min(MAX_AUTO_BATCH, spec.n_examples, len(x)))
    return replace(spec, batch_size=find_batch_size(model, x, device, cache_path=cache_path, limit=limit))


__all__ = ["default_cache_path", "device_name", "cache_key", "find_batch_size", "resolve_batch_size"]
