"""`robaudit serve` and `robaudit demo --quick` as a user runs them, in subprocesses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_process import ServeProcess, alive, descendants

from robaudit.backend.app import crud
from robaudit.backend.app.core.db import run_migrations, session_factory

from .conftest import free_port, make_settings

pytestmark = pytest.mark.services
ROBAUDIT = [sys.executable, "-m", "robaudit.cli"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "ROBAUDIT_API_TOKEN", "ROBAUDIT_DATA_DIR")}
    return {**env, "ROBAUDIT_HEARTBEAT_INTERVAL": "1", "ROBAUDIT_TORCH_THREADS": "1"}


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm", "sigkill"])
def test_serve_starts_api_and_worker_and_stopping_it_stops_everything(tmp_path, stop):
    with ServeProcess(tmp_path, data_dir=tmp_path / "var", token=None) as serve:
        health = serve.client.get("/health").json()
        assert health["status"] == "ok", health
        token_file = tmp_path / "var" / "api_token"
        assert token_file.exists() and oct(token_file.stat().st_mode & 0o777) == "0o600"
        started = descendants(serve.pid)
        assert started, "serve started no worker process"
        assert any(health["workers"][0]["pid"] == pid for pid in started)

        if stop == "sigkill":   # serve cannot clean up: the worker notices its parent is gone
            serve.proc.kill()
            serve.proc.wait(timeout=10)
            deadline = time.monotonic() + 30
            while [pid for pid in started if alive(pid)] and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not [pid for pid in started if alive(pid)], "the worker outlived a SIGKILLed serve"
            return
        serve.stop(signal.SIGINT if stop == "ctrl-c" else signal.SIGTERM, timeout=20)
        assert serve.proc.returncode == 0, serve.output[-3000:]
        deadline = time.monotonic() + 10
        while [pid for pid in started if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if alive(pid)], serve.output[-3000:]
        assert token_file.read_text().strip() in serve.output   # the generated token was shown once


def test_demo_quick_trains_audits_and_reports(tmp_path):
    port = free_port()
    out = subprocess.run([*ROBAUDIT, "demo", "--quick", "--exit", "--port", str(port),
                          "--data-dir", str(tmp_path / "var")], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("model"))) + 1:][:3]
    assert [row.split()[0] for row in table] == ["standard", "PGD-AT", "Feature"]
    assert all(row.count("%") == 3 for row in table)   # clean and PGD-20 on the check's digits, worst case
    assert any("clean and PGD-20 on 64 test digits, the audit on the first 16" in line for line in lines)
    report_line = next(line for line in lines if line.startswith("report: "))
    assert f"http://127.0.0.1:{port}/reports/" in report_line
    assert any(line.startswith("read-only share link: ") for line in lines)


def test_worker_command_joins_redis_postgres_and_refuses_without_them(tmp_path, pg_url, redis_url):
    refused = subprocess.run([*ROBAUDIT, "worker"], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "REDIS_URL is not set" in refused.stderr

    settings = make_settings(tmp_path / "data", database_url=pg_url, redis_url=redis_url)
    settings.ensure_dirs()
    run_migrations(settings)   # the API applies migrations; workers only wait for the database
    env = {**_env(tmp_path), **settings.to_env()}
    proc = subprocess.Popen([*ROBAUDIT, "worker", "--hostname", "joined@test", "--data-dir", str(tmp_path / "w")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        Session = session_factory(settings)
        deadline = time.monotonic() + 60
        while True:
            with Session() as s:
                seen = [w for w in crud.list_workers_seen(session=s, within_s=30) if w.hostname == "joined@test"]
            if seen:
                break
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.3)
        assert seen[0].pid == proc.pid   # exec'd into celery: the command's pid is the worker parent
        assert seen[0].queues == settings.queue
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    with Session() as s:
        assert not [w for w in crud.list_workers_seen(session=s, within_s=30) if w.hostname == "joined@test"]
