"""Cutting one evaluation into shards, and what each shard hands the merge.

A shard is a range of test points made of whole batches (robaudit.evaluation.batches), so every
shard count cuts the points into the same batches and the merged results are the one-worker
results exactly. Shards are balanced by estimated work, not by point count: AutoAttack and the
large-eps check only attack the first points, so equal point ranges would leave the first shard
with most of the work.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from robaudit.errors import RobauditError
from robaudit.evaluation.batches import batch_bounds
from robaudit.evaluation.presets import EvalSpec
from robaudit.evaluation.schedule import estimate_units

Range = tuple[int, int]


@dataclass
class ShardOutcome:
    """A finished shard: its range, the evaluation's fingerprint, and its timing (the records are in the store)."""

    start: int
    end: int
    fingerprint: str
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    computed_batches: int = 0
    reused_batches: int = 0
    worker: str | None = None
    provenance: dict[str, Any] | None = None   # software, machine, points hash, wall-clock span

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardOutcome:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def plan_shards(spec: EvalSpec, n: int, *, workers: int = 1, shard_size: int | None = None) -> list[Range]:
    """The shards of an evaluation of n points: ``shard_size`` points each (rounded up to whole batches),
    or else one per worker, of about equal estimated work."""
    bounds = batch_bounds(n, spec.batch_size)
    if shard_size is not None:
        if shard_size < 1:
            raise RobauditError("shard_size must be at least 1 point")
        per = max(1, math.ceil(shard_size / spec.batch_size))
        groups = [bounds[i:i + per] for i in range(0, len(bounds), per)]
        return [(g[0][0], g[-1][1]) for g in groups]
    count = max(1, min(workers, len(bounds)))
    if count == 1:
        return [(0, n)]
    work = [estimate_units(spec, s, e) for s, e in bounds]
    total = sum(work)
    shards: list[Range] = []
    start, done = 0, 0.0
    for i, ((_, e), w) in enumerate(zip(bounds, work, strict=True)):
        done += w
        remaining_batches = len(bounds) - i - 1
        remaining_shards = count - len(shards) - 1
        # Close the shard once it holds its share of the work, keeping a batch for every later shard.
        if remaining_shards and (done >= total * (len(shards) + 1) / count or remaining_batches == remaining_shards):
            shards.append((start, e))
            start = e
    shards.append((start, n))
    return shards


def merged_timing(shards: list[ShardOutcome], merge_seconds: float) -> dict[str, Any]:
    """The results' ``timing``: work summed over shards, each shard's own, and the merge's cost."""
    stages: dict[str, float] = {}
    for shard in shards:
        for name, seconds in shard.stages.items():
            stages[name] = stages.get(name, 0.0) + seconds
    return {"total_seconds": round(sum(s.seconds for s in shards), 3),
            "stages": {k: round(v, 3) for k, v in stages.items()},
            "computed_batches": sum(s.computed_batches for s in shards),
            "reused_batches": sum(s.reused_batches for s in shards),
            "shards": [{"start": s.start, "end": s.end, "seconds": round(s.seconds, 3), "worker": s.worker}
                       for s in sorted(shards, key=lambda s: s.start)],
            "merge_seconds": round(merge_seconds, 3)}
