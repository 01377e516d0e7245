"""Stopping `robaudit serve` in the middle of a job (SIGTERM, as systemd or docker stop does; Ctrl-C) is
not a failure of the job: serve and its worker are gone within seconds, the job goes back to the
queue without costing an attempt, and after any number of stop/start cycles it finishes with the
results of an undisturbed run."""
from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from helpers_eval import without_timings
from serve_process import ServeProcess, descendants
from serve_process import alive as alive_pid

from robaudit.backend.app.crud import SHUTDOWN_STAGE

from .conftest import TOKEN, free_port, upload, wait_job

pytestmark = pytest.mark.services

# Many small batches, so that every cycle stores some and the next start resumes from them.
EVALUATION = {"preset": "paper", "n_examples": 96, "batch_size": 4}


def _serve(tmp_path: Path, port: int) -> ServeProcess:
    return ServeProcess(tmp_path, data_dir=tmp_path / "var", port=port, token=TOKEN)


def _stop(serve: ServeProcess, sig: int) -> tuple[float, str]:
    """Send ``sig``; how long serve took to exit, and what it printed. No process may outlive it."""
    processes = descendants(serve.pid)
    took = serve.stop(sig)
    assert serve.proc.returncode == 0, serve.output[-3000:]
    output = serve.output
    assert not [pid for pid in processes if alive_pid(pid)], f"a worker process outlived serve:\n{output[-3000:]}"
    return took, output


def _wait_progress(client: httpx.Client, job_id: int, above: int, timeout: float = 120.0) -> dict | None:
    """The job once it runs again past ``above`` points of progress; None if it finished first."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/evaluations/{job_id}").json()
        if job["status"] == "succeeded":
            return None
        shards_running = job["shards"] and all(shard["status"] == "running" for shard in job["shards"])
        if job["status"] == "running" and shards_running and job["progress"]["current"] > above:
            return job
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.2)


def test_stopping_serve_mid_job_requeues_it_at_no_cost_and_it_finishes_identically(tmp_path, trained_checkpoint):
    port = free_port()
    serve = _serve(tmp_path, port)
    try:
        ckpt = upload(serve.client, trained_checkpoint).json()
        job_id = serve.client.post("/evaluations", json={"checkpoint_id": ckpt["id"], **EVALUATION}).json()["id"]

        done, stops = 0, 0
        for sig in [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]:
            running = _wait_progress(serve.client, job_id, above=done)
            if running is None:   # a fast machine finished the job before this stop: the earlier ones count
                break
            if stops == 0:
                # The pool child is a fresh interpreter (spawn), not a fork of a parent whose threads may be
                # inside SQLite at that moment (a forked child once deadlocked on SQLite's mutex).
                with sqlite3.connect(tmp_path / "var" / "robaudit.db") as db:
                    (pid,) = db.execute("SELECT worker_pid FROM eval_shards WHERE job_id = ?", (job_id,)).fetchone()
                assert "billiard.spawn" in (Path("/proc") / str(pid) / "cmdline").read_text()
            # An evaluation runs as shards; the earlier stops cost its shard no attempt.
            assert [shard["attempt"] for shard in running["shards"]] == [1], running
            took, output = _stop(serve, sig)
            stops += 1
            assert took < 15, f"serve took {took:.1f} s to stop"
            serve = _serve(tmp_path, port)
            (shard,) = serve.client.get(f"/evaluations/{job_id}").json()["shards"]
            if shard["status"] == "succeeded":   # it finished in the instant the worker was being stopped
                break
            log = "\n".join(line for line in output.splitlines() if '"GET /api' not in line)
            assert f"job {job_id} shard 0" in output and "back in the queue" in output, log[-3000:]
            if shard["status"] == "queued":   # the restarted worker may already have taken it again
                assert shard["attempt"] == 0 and shard["stage"] == SHUTDOWN_STAGE, shard
            done = running["progress"]["current"]
        # The first stop comes a few batches into a job of 24, so at least it always lands mid-job.
        assert stops >= 1

        finished = wait_job(serve.client, job_id, timeout=300)
        assert finished["status"] == "succeeded" and finished["attempt"] == 1, finished
        assert [shard["attempt"] for shard in finished["shards"]] == [1], finished
        results = serve.client.get(f"/evaluations/{job_id}/results").json()
        assert results["timing"]["reused_batches"] > 0   # it resumed from the batches stored before the stops

        undisturbed_id = serve.client.post("/evaluations",
                                           json={"checkpoint_id": ckpt["id"], **EVALUATION}).json()["id"]
        assert wait_job(serve.client, undisturbed_id, timeout=300)["status"] == "succeeded"
        reference = serve.client.get(f"/evaluations/{undisturbed_id}/results").json()
        _stop(serve, signal.SIGTERM)
        assert without_timings(results) == without_timings(reference)
    finally:
        serve.__exit__(None, None, None)
