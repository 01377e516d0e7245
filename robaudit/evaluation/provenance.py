"""What produced a results JSON: software versions, machine, seed, the evaluated points, and when.

Each shard records the software and machine it ran on and its wall-clock span; the merge folds those
into the results' ``provenance``. The checkpoint's sha256 is added by whoever loaded the checkpoint
(the CLI, the worker, ``robaudit.audit``), since the engine only ever sees a module.

A number is only reproducible with its provenance: a robust accuracy measured by another version of
an attack library, on other points or with another seed is another measurement.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

# Distribution names whose versions change what an audit measures.
PACKAGES = ("robaudit", "torch", "torchvision", "pyautoattack", "numpy")


@functools.cache
def software() -> dict[str, str | None]:
    """Versions of Python and of the packages that shape the numbers, and the git commit of a checkout."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["git_commit"] = git_commit()
    return versions


def git_commit() -> str | None:
    """The commit robaudit runs from when it runs from a git checkout (None for an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def machine(device: torch.device, precision: str) -> dict[str, Any]:
    """The device the attacks ran on, the arithmetic they used, and the CPU threads torch had."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = f"cpu ({platform.machine() or 'unknown'})"
    else:
        name = device.type
    return {"device": str(device), "device_name": name, "precision": precision,
            "threads": torch.get_num_threads()}


def points_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of the evaluated points as the model saw them (images, then labels)."""
    h = hashlib.sha256()
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _one_or_all(values: Iterable[Any]) -> Any:
    """The value all shards agree on, or the list of the distinct ones."""
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    return distinct[0] if len(distinct) == 1 else distinct


def merge_provenance(*, dataset: str, n: int, seed: int, shards: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The results' provenance from the shards' own records (``ShardOutcome.provenance``)."""
    records = [dict(s) for s in shards if s]
    started = [r["started_at"] for r in records if r.get("started_at")]
    finished = [r["finished_at"] for r in records if r.get("finished_at")]
    points = [r["points_sha256"] for r in records if r.get("points_sha256")]
    out: dict[str, Any] = {
        "software": _one_or_all(r["software"] for r in records if r.get("software")) if records else software(),
        "machine": _one_or_all(r["machine"] for r in records if r.get("machine")) if records else None,
        "seed": seed,
        "dataset": {"name": dataset, "points": f"0-{n - 1}" if n else "none", "n": n,
                    "points_sha256": points[0] if len(set(points)) == 1 else None},
        "checkpoint_sha256": None,
        "started_at": min(started) if started else None,
        "finished_at": max(finished) if finished else None,
    }
    mixed = [name for name in ("software", "machine") if isinstance(out[name], list)]
    if mixed:
        out["mixed"] = mixed   # shards ran on different software or machines: both are listed
    return out
