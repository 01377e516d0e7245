"""Sharded evaluations through the service, with real worker processes on Redis and PostgreSQL.

Two workers split one audit and the merged results equal a one-worker run's; a worker SIGKILLed
mid-shard has its shard requeued by the janitor, resumed by the other worker from its stored
batches, and the results still equal, with no duplicate rows.
"""
from __future__ import annotations

import time

import pytest
from helpers_eval import without_timings

from robaudit.backend.app import crud
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.models import EvalBatch, EvalShard, EvaluationResult, SampleBitset

from .conftest import LiveAPI, WorkerProcess, count_rows, make_settings, upload, wait_job

pytestmark = pytest.mark.services

# The audit preset, small: every attack of it, AutoAttack on all points.
AUDIT = {"preset": "audit", "n_examples": 32, "batch_size": 8, "aa_examples": 0}


@pytest.fixture
def redis_pg_settings(tmp_path, pg_url, redis_url):
    return make_settings(tmp_path / "data", database_url=pg_url, redis_url=redis_url)


def _wait_offline(settings, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_factory(settings)() as s:
            if name not in {w.hostname for w in crud.list_workers_seen(session=s, within_s=settings.stale_after_s)}:
                return
        time.sleep(0.2)
    raise AssertionError(f"worker {name} still listed as live")


def _evaluate(client, body: dict) -> tuple[dict, dict]:
    job = client.post("/evaluations", json=body)
    assert job.status_code == 201, job.text
    done = wait_job(client, job.json()["id"], timeout=600)
    assert done["status"] == "succeeded", done
    return done, client.get(f"/evaluations/{done['id']}/results").json()


def test_two_workers_split_an_audit_into_the_one_worker_results(tmp_path, redis_pg_settings, trained_checkpoint):
    settings = redis_pg_settings
    workers = [WorkerProcess(settings, f"w{i}@test", tmp_path / f"w{i}.log").start() for i in range(2)]
    try:
        with LiveAPI(settings) as client:
            for worker in workers:
                worker.wait_ready()
            ckpt = upload(client, trained_checkpoint).json()
            body = {"checkpoint_id": ckpt["id"], **AUDIT}
            sharded, results = _evaluate(client, body)
            workers[1].stop()
            _wait_offline(settings, "w1@test")
            single, reference = _evaluate(client, body)
    finally:
        for worker in workers:
            worker.stop()

    # One shard per live worker, run in parallel on both; then one shard on the one worker left.
    assert [s["status"] for s in sharded["shards"]] == ["succeeded", "succeeded"]
    assert {s["worker"] for s in sharded["shards"]} == {"w0@test", "w1@test"}
    assert [(s["start"], s["end"]) for s in single["shards"]] == [(0, AUDIT["n_examples"])]
    assert {r["attack"] for r in results["summary"]} >= {"fgsm", "rs-fgsm", "pgd", "cw", "autoattack", "noise"}
    assert without_timings(results) == without_timings(reference)
    assert [s["worker"] for s in results["timing"]["shards"]] == ["w0@test", "w1@test"] or \
        [s["worker"] for s in results["timing"]["shards"]] == ["w1@test", "w0@test"]
    assert sharded["progress"]["current"] == sharded["progress"]["total"] > 0


def test_a_worker_killed_mid_shard_is_replaced_without_duplicates(tmp_path, redis_pg_settings,
                                                                  trained_checkpoint):
    settings = redis_pg_settings
    workers = {name: WorkerProcess(settings, name, tmp_path / f"{name}.log").start()
               for name in ("victim@test", "rescuer@test")}
    body = {"preset": "quick", "n_examples": 96, "batch_size": 8, "steps": [50]}
    try:
        with LiveAPI(settings) as client:
            for worker in workers.values():
                worker.wait_ready()
            ckpt = upload(client, trained_checkpoint).json()
            job = client.post("/evaluations", json={"checkpoint_id": ckpt["id"], **body}).json()
            # Wait until the victim's shard has stored some batches but not all, then kill it outright.
            deadline = time.monotonic() + 180
            while True:
                shards = client.get(f"/jobs/{job['id']}").json()["shards"]
                mine = [s for s in shards if s["worker"] == "victim@test" and s["status"] == "running"]
                stored = count_rows(settings, EvalBatch, job_id=job["id"])
                if mine and stored >= 4 and 0 < mine[0]["done"] < mine[0]["total"]:
                    break
                assert time.monotonic() < deadline, shards
                time.sleep(0.05)
            workers["victim@test"].kill()
            done = wait_job(client, job["id"], timeout=300)
            assert done["status"] == "succeeded", done
            results = client.get(f"/evaluations/{job['id']}/results").json()
            # The same evaluation uninterrupted, on the one worker left: one shard.
            _wait_offline(settings, "victim@test", timeout=settings.stale_after_s * 3)
            _, reference = _evaluate(client, {"checkpoint_id": ckpt["id"], **body})
    finally:
        for worker in workers.values():
            worker.stop()

    victim = [s for s in done["shards"] if s["index"] == mine[0]["index"]][0]
    assert victim["worker"] == "rescuer@test" and victim["attempt"] == 2   # redelivered once, resumed elsewhere
    assert results["timing"]["reused_batches"] > reference["timing"]["reused_batches"]
    assert without_timings(results) == without_timings(reference)
    assert count_rows(settings, EvaluationResult, job_id=job["id"]) == 1
    assert count_rows(settings, SampleBitset, job_id=job["id"]) == len(reference["per_sample"]["bits"]) + 1
    assert count_rows(settings, EvalShard, job_id=job["id"]) == len(done["shards"]) == 2
