"""Batching and resume: every unit of work is one job over one batch of test points, kept in the store.

A job's result for a batch is stored under ``<fingerprint>/<job key>/<start>-<end>``; the
fingerprint hashes the model's weights, the test points and the surrogate, so a store can be reused
across presets (a quick run's PGD-20 batches serve a later audit) but never across models.

Batches are fixed by the batch size alone (``[0, bs), [bs, 2 bs), ...``); a shard is a run of whole
batches, so every shard count cuts the points into the same batches. Random starts and noise are
drawn per point, from (seed, stream, point index), so a resumed or sharded run draws exactly what
an uninterrupted one-worker run would.

The merge step (robaudit.evaluation.engine.merge) runs the same jobs over every batch with
computing switched off: each batch is read back from the store, and a missing one is an error.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from robaudit.attacks.common import PointStreams
from robaudit.errors import RobauditError
from robaudit.evaluation.progress import Progress
from robaudit.evaluation.store import Record, Store

RECORD_VERSION = 2   # bump when a stored batch record changes meaning (2: per-point random streams)

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


class MissingRecord(RobauditError):
    """The merge step found a batch no shard stored."""


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The batches of an evaluation of n points: fixed by the batch size alone, whatever the sharding."""
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


class Batches:
    """Runs a job batch by batch through the store: computes what is missing, reads back the rest.

    ``shard=(start, end)`` limits the work to the batches of that range (whole batches);
    ``compute=False`` is the merge: every batch must already be in the store.
    """

    def __init__(self, store: Store, fingerprint: str, n: int, batch_size: int, seed: int, progress: Progress, *,
                 shard: tuple[int, int] | None = None, compute: bool = True) -> None:
        self.store, self.fingerprint, self.seed, self.progress = store, fingerprint, seed, progress
        self.compute = compute
        start, end = shard if shard is not None else (0, n)
        if not (0 <= start < end <= n) or start % batch_size or (end != n and end % batch_size):
            raise RobauditError(f"shard [{start}, {end}) is not a run of whole batches of {batch_size} "
                                f"within the {n} points")
        self.bounds = [(s, e) for s, e in batch_bounds(n, batch_size) if start <= s and e <= end]
        self.computed = self.reused = 0

    @property
    def first(self) -> int:
        """The first point of this run's batches."""
        return self.bounds[0][0]

    @property
    def last(self) -> int:
        """One past the last point of this run's batches."""
        return self.bounds[-1][1]

    def key(self, job: str, start: int, end: int) -> str:
        return f"{self.fingerprint}/{job}/{start}-{end}"

    def point_streams(self, stream: str, index: torch.Tensor) -> PointStreams:
        """One random stream per point of ``index`` (absolute point indices), seeded by (seed, stream, point).

        Streams name what is drawn, not the job: PGD runs of different lengths or step sizes at one
        eps share their random starts, which is what makes a k-step run equal the first k steps of a
        longer one.
        """
        return PointStreams.seeded(self.seed, stream, points=index.tolist())

    def run(self, job: str, compute: Callable[[int, int], Record], units_per_point: float,
            limit: int | None = None, gallery: int = 0) -> list[Batch]:
        """``compute`` per batch unless the store already has that batch; polls should_stop between batches.

        ``gallery=N``: the records of batches holding any of the first N points carry that many points'
        images (robaudit.evaluation.gallery), and their keys say so: ``<job>/gallery=<points covered>``.
        """
        out = []
        for start, end in self.bounds:
            end = end if limit is None else min(end, limit)
            if start >= end:
                break
            self.progress.poll()
            covered = min(end, gallery) - start
            name = f"{job}/gallery={covered}" if covered > 0 else job
            out.append((start, end, self.get_or_compute(self.key(name, start, end), partial(compute, start, end))))
            self.progress.advance(units_per_point * (end - start))
        return out

    def get_or_compute(self, key: str, compute: Callable[[], Record]) -> Record:
        record = self.store.get(key)
        if record is None:
            if not self.compute:
                raise MissingRecord(f"no stored result for {key!r}: the shard that owns it has not finished")
            record = compute()
            self.store.put(key, record)
            self.computed += 1
            self.progress.computed_any = True
        else:
            self.reused += 1
        return record
