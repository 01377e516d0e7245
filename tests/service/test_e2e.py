"""End to end over HTTP with real worker processes: the embedded default (SQLite + kombu SQL
broker) and Redis + PostgreSQL with a worker that shares no files with the API; then a worker
SIGKILLed mid-evaluation, restarted, and the job finishing exactly as an uninterrupted run."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.models import EvalBatch, EvaluationResult, Job, SampleBitset

from .conftest import LiveAPI, WorkerProcess, count_rows, make_settings, upload, wait_job

pytestmark = pytest.mark.services


def _scenario(client, settings, checkpoint_path):
    """Upload, evaluate, poll, fetch results (JSON and CSV), train, report."""
    created = upload(client, checkpoint_path, name="trained")
    assert created.status_code == 201, created.text
    ckpt = created.json()

    ev = client.post("/evaluations", json={"checkpoint_id": ckpt["id"], "preset": "quick", "n_examples": 32,
                                           "name": "quick-32"})
    assert ev.status_code == 201, ev.text
    ev_id = ev.json()["id"]
    training = client.post("/trainings", json={"method": "standard", "dataset": "mnist10k", "arch": "smallcnn",
                                               "hyperparameters": {"epochs": 1, "n_train": 256,
                                                                   "eval_examples": 32}})
    assert training.status_code == 201, training.text

    done = wait_job(client, ev_id)
    assert done["status"] == "succeeded", done
    assert done["progress"]["total"] > 0 and done["progress"]["current"] == done["progress"]["total"]
    assert done["summary"]["pgd20_accuracy"] is not None and done["has_results"]
    results = client.get(f"/evaluations/{ev_id}/results").json()
    assert results["n"] == 32 and 0.5 < results["clean_accuracy"] <= 1.0
    assert {r["attack"] for r in results["summary"]} >= {"fgsm", "pgd", "cw"}
    csv = client.get(f"/evaluations/{ev_id}/results", params={"format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("attack,eps,steps")
    # One bitset row per per-sample bitset (plus clean), and nothing left of the resume state.
    assert count_rows(settings, SampleBitset, job_id=ev_id) == len(results["per_sample"]["bits"]) + 1
    assert count_rows(settings, EvalBatch, job_id=ev_id) == 0

    trained = wait_job(client, training.json()["id"])
    assert trained["status"] == "succeeded", trained
    assert len(trained["metrics"]) == 1 and trained["metrics"][0]["epoch"] == 1
    produced = client.get(f"/checkpoints/{trained['output_checkpoint_id']}").json()
    assert produced["source"] == "training" and produced["training_job_id"] == trained["id"]
    assert produced["method"] == "standard" and produced["metadata"]["metrics"]["history"]

    report = client.post("/reports", json={"title": "e2e", "evaluation_ids": [ev_id]})
    assert report.status_code == 201
    payload = client.get(f"/reports/{report.json()['id']}").json()
    assert payload["evaluations"][0]["results"]["clean_accuracy"] == results["clean_accuracy"]
    assert payload["evaluations"][0]["checkpoint"]["method"] == "standard"
    return ckpt, produced


def test_embedded_sqlite_end_to_end(tmp_path, trained_checkpoint):
    settings = make_settings(tmp_path / "data")
    worker = WorkerProcess(settings, "embedded@test", tmp_path / "worker.log").start()
    try:
        with LiveAPI(settings) as client:
            worker.wait_ready()
            health = client.get("/health").json()
            assert health["status"] == "ok" and health["workers"][0]["hostname"] == "embedded@test"
            _scenario(client, settings, trained_checkpoint)
            # Jobs ran in forked children; the parent that forks them never loaded torch (so no CUDA).
            maps = (Path("/proc") / str(worker.proc.pid) / "maps").read_text()
            assert "libtorch" not in maps and "libc10" not in maps

            # Cancel a running job cooperatively, then retry it: it goes back to the queue.
            ckpt_id = client.get("/checkpoints").json()["data"][-1]["id"]
            long = client.post("/evaluations", json={"checkpoint_id": ckpt_id, "preset": "paper",
                                                     "n_examples": 1000}).json()
            wait_job(client, long["id"], until=("running",), timeout=60)
            assert client.post(f"/jobs/{long['id']}/cancel").status_code == 202
            cancelled = wait_job(client, long["id"], timeout=60)
            assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"]
            assert client.post(f"/jobs/{long['id']}/cancel").status_code == 409
            retried = client.post(f"/jobs/{long['id']}/retry")
            assert retried.status_code == 202 and retried.json()["status"] in ("queued", "running")
            assert client.post(f"/jobs/{long['id']}/cancel").status_code == 202
            assert wait_job(client, long["id"], timeout=60)["status"] == "cancelled"
    finally:
        worker.stop()


def test_redis_postgres_end_to_end_with_a_remote_worker(tmp_path, trained_checkpoint, pg_url, redis_url):
    api_settings = make_settings(tmp_path / "api-data", database_url=pg_url, redis_url=redis_url)
    api = LiveAPI(api_settings)
    with api as client:
        # The worker has its own data folder: it fetches checkpoints and uploads its trained model
        # through the API, as a worker on another host would.
        worker_settings = api_settings.with_(data_dir=tmp_path / "worker-data", api_url=api.service.url)
        worker = WorkerProcess(worker_settings, "remote@test", tmp_path / "worker.log").start()
        try:
            worker.wait_ready()
            ckpt, produced = _scenario(client, api_settings, trained_checkpoint)
        finally:
            worker.stop()
    cached = worker_settings.checkpoints_dir / f"{ckpt['sha256']}.safetensors"
    assert cached.read_bytes() == trained_checkpoint.read_bytes()   # fetched by sha256 and verified
    assert (api_settings.checkpoints_dir / f"{produced['sha256']}.safetensors").exists()  # uploaded back


@pytest.mark.parametrize("backend, restarted_as", [
    ("redis+postgres", "rescuer@test"),   # another worker: the API's janitor requeues after the heartbeat stops
    ("embedded", "victim@test"),          # the same worker restarted: it requeues its orphans at start
])
def test_sigkilled_worker_resumes_without_duplicates(backend, restarted_as, tmp_path, trained_checkpoint, request):
    if backend == "embedded":
        settings = make_settings(tmp_path / "data")
    else:
        settings = make_settings(tmp_path / "data", database_url=request.getfixturevalue("pg_url"),
                                 redis_url=request.getfixturevalue("redis_url"))
    worker = WorkerProcess(settings, "victim@test", tmp_path / "worker.log").start()
    try:
        with LiveAPI(settings) as client:
            worker.wait_ready()
            ckpt = upload(client, trained_checkpoint).json()
            job = client.post("/evaluations", json={"checkpoint_id": ckpt["id"], "preset": "quick",
                                                    "n_examples": 64, "batch_size": 16}).json()
            deadline = time.monotonic() + 120
            while count_rows(settings, EvalBatch, job_id=job["id"]) < 5:   # some batches done, not all
                assert time.monotonic() < deadline, client.get(f"/jobs/{job['id']}").json()
                assert client.get(f"/jobs/{job['id']}").json()["status"] in ("queued", "running")
                time.sleep(0.05)
            worker.kill()
            assert client.get(f"/jobs/{job['id']}").json()["status"] == "running"   # nobody acked it

            worker = WorkerProcess(settings, restarted_as, tmp_path / "worker.log").start()
            done = wait_job(client, job["id"], timeout=180)
            assert done["status"] == "succeeded", done
            # One worker, one shard: the shard was redelivered once and resumed (its own attempt count).
            assert [(sh["attempt"], sh["worker"]) for sh in done["shards"]] == [(2, restarted_as)]
            results = client.get(f"/evaluations/{job['id']}/results").json()
            # The same evaluation again, uninterrupted, on the same kind of worker process.
            again = client.post("/evaluations", json={"checkpoint_id": ckpt["id"], "preset": "quick",
                                                      "n_examples": 64, "batch_size": 16}).json()
            assert wait_job(client, again["id"], timeout=180)["status"] == "succeeded"
            reference = client.get(f"/evaluations/{again['id']}/results").json()
    finally:
        worker.stop()

    assert results["timing"]["reused_batches"] > 0 and reference["timing"]["reused_batches"] == 0
    assert results["per_sample"] == reference["per_sample"]
    assert results["summary"] == reference["summary"]
    assert results["worst_case"] == reference["worst_case"]
    assert results["clean_accuracy"] == reference["clean_accuracy"]
    assert count_rows(settings, EvaluationResult, job_id=job["id"]) == 1
    assert count_rows(settings, SampleBitset, job_id=job["id"]) == len(reference["per_sample"]["bits"]) + 1
    with session_factory(settings)() as s:
        assert s.get(Job, job["id"]).worker_hostname == restarted_as
