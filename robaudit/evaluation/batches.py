"""Batching and resume: every unit of work is one job over one batch of test points, kept in the store.

A job's result for a batch is stored under ``<fingerprint>/<job key>/<start>-<end>``; the
fingerprint hashes the model's weights, the test points and the surrogate, so a store can be reused
across presets (a quick run's PGD-20 batches serve a later audit) but never across models. Random
starts come from a generator seeded by (seed, stream, batch), so a resumed run draws exactly what an
uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from robaudit.attacks.common import make_generator
from robaudit.evaluation.progress import Progress
from robaudit.evaluation.store import DirectoryBacked, Record, Store

RECORD_VERSION = 1           # bump when a stored batch record changes meaning
MIRROR_SYNC_SECONDS = 30.0   # how often AutoAttack's state files are copied into a non-directory store

Batch = tuple[int, int, Record]   # (start, end, the job's record for points [start, end))


def digest(*parts: bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part)
    return sha.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    parts = [type(model).__name__.encode()]
    for name, tensor in model.state_dict().items():
        parts += [name.encode(), tensor.detach().cpu().contiguous().numpy().tobytes()]
    return digest(*parts)[:20]


def data_fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, surrogate: nn.Module | None) -> str:
    parts = [RECORD_VERSION.to_bytes(2, "little"), model_fingerprint(model).encode(),
             x.cpu().numpy().tobytes(), y.cpu().numpy().tobytes()]
    if surrogate is not None:
        parts.append(model_fingerprint(surrogate).encode())
    return digest(*parts)[:24]


class StateMirror:
    """Copies AutoAttack's state files into a store that is not a directory (e.g. the service's SQL one)."""

    def __init__(self, store: Store, prefix: str, state_dir: Path) -> None:
        self.store, self.prefix, self.state_dir = store, prefix, state_dir
        self.seen: dict[str, float] = {}
        self.last_sync = 0.0

    def restore(self, tag: str) -> None:
        index = self.store.get(f"{self.prefix}/aa-state-index/{tag}") or {}
        for name in index.get("files", []):
            record = self.store.get(f"{self.prefix}/aa-state/{name}")
            if record is not None and not (self.state_dir / name).exists():
                (self.state_dir / name).write_text(record["text"])

    def sync(self, tag: str) -> None:
        names = []
        for path in sorted(self.state_dir.glob(f"{tag}-*.json")):
            names.append(path.name)
            mtime = path.stat().st_mtime
            if self.seen.get(path.name) != mtime:
                self.store.put(f"{self.prefix}/aa-state/{path.name}", {"text": path.read_text()})
                self.seen[path.name] = mtime
        if names:
            self.store.put(f"{self.prefix}/aa-state-index/{tag}", {"files": names})

    def sync_now_and_then(self, tag: str) -> None:
        if time.monotonic() - self.last_sync > MIRROR_SYNC_SECONDS:
            self.last_sync = time.monotonic()
            self.sync(tag)


class Batches:
    """Runs a job batch by batch through the store: computes what is missing, reads back the rest."""

    def __init__(self, store: Store, fingerprint: str, n: int, batch_size: int, seed: int,
                 device: torch.device, progress: Progress) -> None:
        self.store, self.fingerprint, self.seed, self.device = store, fingerprint, seed, device
        self.progress = progress
        self.bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        self.computed = self.reused = 0
        self._state_dir: Path | None = None

    def key(self, job: str, start: int, end: int) -> str:
        return f"{self.fingerprint}/{job}/{start}-{end}"

    def generator(self, stream: str, start: int, end: int) -> torch.Generator:
        """Random draws per (seed, stream, batch). Streams name what is drawn, not the job: PGD runs of
        different lengths or step sizes at one eps share their random starts, which is what makes a
        k-step run equal the first k steps of a longer one."""
        return make_generator(self.seed, stream, start, end, device=self.device)

    def run(self, job: str, compute: Callable[[int, int], Record], units_per_point: float,
            limit: int | None = None) -> list[Batch]:
        """``compute`` per batch unless the store already has that batch; polls should_stop between batches."""
        out = []
        for start, end in self.bounds:
            end = end if limit is None else min(end, limit)
            if start >= end:
                break
            self.progress.poll()
            out.append((start, end, self.get_or_compute(self.key(job, start, end), partial(compute, start, end))))
            self.progress.advance(units_per_point * (end - start))
        return out

    def get_or_compute(self, key: str, compute: Callable[[], Record]) -> Record:
        record = self.store.get(key)
        if record is None:
            record = compute()
            self.store.put(key, record)
            self.computed += 1
            self.progress.computed_any = True
        else:
            self.reused += 1
        return record

    def stored(self, key: str) -> Record | None:
        return self.store.get(key)

    def put(self, key: str, record: Record) -> None:
        """A record computed outside ``run`` (an AutoAttack stage)."""
        self.store.put(key, record)
        self.computed += 1
        self.progress.computed_any = True

    def autoattack_state(self, tag: str) -> tuple[Path, StateMirror | None]:
        """Where AutoAttack keeps its state for ``tag``: the store's folder, or a temporary one mirrored into it."""
        if isinstance(self.store, DirectoryBacked):
            return self.store.path / "autoattack", None
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="robaudit-aa-"))
        mirror = StateMirror(self.store, self.fingerprint, self._state_dir)
        mirror.restore(tag)
        return self._state_dir, mirror
