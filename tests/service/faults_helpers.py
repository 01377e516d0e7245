"""What the fault-injection suite (test_faults.py) drives: `robaudit serve` as a subprocess, private Redis
and PostgreSQL servers on free ports (so the shared services are never touched), and the checks every
scenario ends with."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from helpers_eval import without_timings
from serve_process import ServeProcess, descendants
from serve_process import alive as alive_pid

from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.models import EvalBatch, EvalShard, EvaluationResult, SampleBitset

from .conftest import TOKEN, count_rows, free_port


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 120.0, every: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def alive(pids) -> list[int]:
    return [pid for pid in pids if alive_pid(pid)]


class FaultServe(ServeProcess):
    """`robaudit serve` on a data folder, with what the fault scenarios need on top: its processes, the
    pid of the pool child running a job, a SIGTERM stop that waits for all of them, and a kill-all."""

    def __init__(self, data_dir: Path, port: int):
        # Progress every 0.2 s: the fault can land as soon as the first batches are stored.
        super().__init__(data_dir.parent, data_dir=data_dir, port=port, token=TOKEN,
                         env={"ROBAUDIT_PROGRESS_INTERVAL": "0.2"}, boot_timeout=120)

    def processes(self) -> set[int]:
        """serve and everything it started (the worker, its pool child)."""
        return {self.proc.pid} | descendants(self.proc.pid)

    def shard_pid(self, job_id: int) -> int | None:
        """The pid of the pool child running the job's (only) shard, as the worker recorded it."""
        with sqlite3.connect(self.data_dir / "robaudit.db") as db:
            row = db.execute("SELECT worker_pid FROM eval_shards WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def stop_all(self) -> None:
        """SIGTERM (a clean stop); everything it started must be gone with it."""
        processes = self.processes()
        self.stop(signal.SIGTERM)
        assert self.proc.returncode == 0, self.output[-3000:]
        wait_for(lambda: not alive(processes), "serve's processes to exit after SIGTERM", timeout=15)

    def kill_all(self) -> None:
        """Teardown after a failure: nothing of this serve may outlive the test."""
        for pid in alive(self.processes()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.kill()


def wait_mid_job(client: httpx.Client, job_id: int, timeout: float = 180.0) -> dict:
    """The evaluation once its shard is running and has stored some work (the moment to inject a fault)."""
    def running() -> dict | None:
        job = client.get(f"/evaluations/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        shards = job["shards"]
        if shards and all(s["status"] == "running" for s in shards) and job["progress"]["current"] > 0:
            return job
        return None

    return wait_for(running, f"evaluation {job_id} to be running with some progress", timeout=timeout)


def shard_states(settings: Settings, job_id: int) -> list[str]:
    with session_factory(settings)() as s:
        return [sh.status for sh in s.query(EvalShard).filter_by(job_id=job_id).order_by(EvalShard.index)]


def assert_finished_identically(settings: Settings, job_id: int, results: dict, reference: dict, *,
                                resumed: bool = True) -> None:
    """Results equal to the undisturbed run's, and no row stored twice. ``resumed``: a new delivery finished
    the job from the batches stored before the fault (it did not start over)."""
    assert without_timings(results) == without_timings(reference)
    assert (results["timing"]["reused_batches"] > 0) == resumed, results["timing"]
    assert count_rows(settings, EvaluationResult, job_id=job_id) == 1
    assert count_rows(settings, SampleBitset, job_id=job_id) == len(reference["per_sample"]["bits"]) + 1
    # Every batch of the undisturbed run once: either stored before the fault and reused, or computed after
    # it (the batch cut short by the fault was never stored). The stored batches are purged on success.
    timing, shards = results["timing"], len(results["timing"]["shards"])
    assert timing["computed_batches"] + timing["reused_batches"] == reference["timing"]["computed_batches"], timing
    assert count_rows(settings, EvalBatch, job_id=job_id) == 0
    assert count_rows(settings, EvalShard, job_id=job_id) == shards


class PrivateRedis:
    """A redis-server of this test's own on a free port, without persistence: a restart loses every
    message it held, as a crashed broker without AOF does."""

    def __init__(self, workdir: Path):
        self.workdir, self.port = workdir, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            _missing("redis-server is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def ping() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(ping, "the private redis-server", timeout=30, every=0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()   # a crash, not a shutdown: nothing is saved either way
            self.proc.wait(10)


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own: initdb in a temporary folder (owned by the postgres user
    when we are root: the server refuses to run as root), on a free port, its socket in that folder."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            _missing("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="robaudit-pg-"))
        # As root, the server runs as the postgres user; as anyone else, as that user.
        self.runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.runas:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start()
        self._as_postgres("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "robaudit")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/robaudit"

    def _as_postgres(self, tool: str, *args: str) -> None:
        out = subprocess.run([*self.runas, str(self.bin / tool), *args],
                             capture_output=True, text=True, timeout=120, cwd=self.dir)
        assert out.returncode == 0, f"{tool} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=100")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _missing(reason: str):
    # On CI the private servers must be possible: a missing binary is a failure there, not a skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
