"""Sharded evaluations: any cut into shards merges into exactly the one-worker results.

Random starts, restarts and noise are drawn per point and batches are fixed by the batch size, so
a shard computes exactly what the one-worker run computes for its points; the merge reads the
per-point records back. The models are the golden test's (float64 inside: exact on any CPU).
"""
from __future__ import annotations

import pytest
import torch
from helpers_eval import golden_models, without_timings

import robaudit
from robaudit.errors import RobauditError
from robaudit.evaluation import MemoryStore, build_spec, evaluate, evaluate_shard, merge, plan_shards, prepare
from robaudit.evaluation.batches import MissingRecord


@pytest.fixture(scope="module")
def audit():
    """The audit preset, every attack in it (transfer and AutoAttack included), and its one-worker results."""
    torch.set_num_threads(1)
    model, surrogate = golden_models()
    x, y = robaudit.load_dataset("mnist10k", "test")
    spec = build_spec("audit", dataset="mnist10k", eps=(0.1,), n_examples=40, surrogate=True, batch_size=8,
                      autoattack_examples=24)
    assert {"fgsm", "rs-fgsm", "pgd", "cw", "autoattack", "noise", "transfer"} <= set(spec.attacks)
    return model, surrogate, x, y, spec, evaluate(model, x, y, spec, surrogate=surrogate)


@pytest.mark.parametrize("cut", ["two workers", "uneven, in reverse order", "one batch each"])
def test_sharded_audit_merges_into_the_one_worker_results(audit, cut):
    model, surrogate, x, y, spec, reference = audit
    prepared = prepare(model, x, y, spec, surrogate)
    shards = {"two workers": plan_shards(spec, prepared.n, workers=2),
              "uneven, in reverse order": [(24, 40), (8, 24), (0, 8)],
              "one batch each": plan_shards(spec, prepared.n, shard_size=1)}[cut]
    store = MemoryStore()
    outcomes = [evaluate_shard(prepared, shard=shard, store=store) for shard in shards]
    merged = merge(spec, prepared.n, prepared.fingerprint, store, outcomes)
    assert without_timings(merged) == without_timings(reference)
    assert len(merged["timing"]["shards"]) == len(shards)
    assert merged["timing"]["computed_batches"] == reference["timing"]["computed_batches"]  # nothing done twice


def test_merge_refuses_missing_or_overlapping_shards(audit):
    model, surrogate, x, y, spec, _ = audit
    prepared = prepare(model, x, y, spec, surrogate)
    store = MemoryStore()
    first = evaluate_shard(prepared, shard=(0, 16), store=store)
    with pytest.raises(RobauditError, match="do not cover"):
        merge(spec, prepared.n, prepared.fingerprint, store, [first])
    with pytest.raises(RobauditError, match="do not cover"):
        merge(spec, prepared.n, prepared.fingerprint, store, [first, first])
    # Claimed finished but never stored (say, a shard record lost): the merge names the missing batch.
    fake = type(first)(16, 40, prepared.fingerprint, 0.0)
    with pytest.raises(MissingRecord, match="16-24"):
        merge(spec, prepared.n, prepared.fingerprint, store, [first, fake])


def test_shards_are_whole_batches_balanced_by_work():
    spec = build_spec("audit", dataset="mnist10k", n_examples=1000, batch_size=100, autoattack_examples=200)
    shards = plan_shards(spec, 1000, workers=2)
    assert shards[0][0] == 0 and shards[-1][1] == 1000 and len(shards) == 2
    assert all(start % 100 == 0 for start, _ in shards)
    # AutoAttack and the large-eps check attack the first 200 points only: the first shard is shorter.
    assert shards[0][1] < 500
    assert plan_shards(spec, 1000, workers=64) == [(s, s + 100) for s in range(0, 1000, 100)]   # at most one per batch
    assert plan_shards(spec, 1000, shard_size=250) == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert plan_shards(spec, 1000, workers=1) == [(0, 1000)]
    with pytest.raises(RobauditError, match="whole batches"):
        evaluate_shard(prepare(torch.nn.Flatten(), torch.zeros(10, 1, 2, 2), torch.zeros(10), spec),
                       shard=(0, 50), store=MemoryStore())
