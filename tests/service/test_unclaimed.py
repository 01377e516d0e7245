"""A queued job that idle workers do not take (its message was lost, or the worker that got it is
stuck) is noticed: /health says "degraded" with the reason, the janitor sends it again under a new
task id, and the job then runs and succeeds."""
from __future__ import annotations

import time

import pytest

from robaudit.backend.app import crud
from robaudit.backend.app.core.db import run_migrations, session_factory
from robaudit.backend.app.dispatch import UnclaimedWatch
from robaudit.backend.app.schemas import EvaluationCreate
from robaudit.backend.app.validation import validate_evaluation

from .conftest import LiveAPI, WorkerProcess, make_settings, upload, wait_job

pytestmark = pytest.mark.services


def _health_until(client, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = client.get("/health").json()
        if predicate(health):
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.2)


def test_a_job_whose_message_was_lost_is_reported_and_sent_again(tmp_path, trained_checkpoint):
    settings = make_settings(tmp_path / "data")
    # Above the few seconds an idle worker takes to start a job (a fresh pool child imports torch),
    # or every delivery would be sent again before it could be claimed.
    for name, value in (("janitor_interval_s", 0.3), ("unclaimed_after_s", 15.0), ("heartbeat_interval_s", 1.0)):
        object.__setattr__(settings, name, value)
    worker = WorkerProcess(settings, "idle@test", tmp_path / "worker.log").start()
    try:
        with LiveAPI(settings) as client:
            worker.wait_ready()
            checkpoint = upload(client, trained_checkpoint).json()
            # A job row in the queue whose task never reached the broker: what a lost message leaves.
            body = EvaluationCreate(checkpoint_id=checkpoint["id"], preset="quick", n_examples=16)
            with session_factory(settings)() as s:
                config = validate_evaluation(body, s, settings)
                job = crud.create_job(session=s, kind="evaluation", config=config, checkpoint_id=checkpoint["id"],
                                      queue=settings.queue)
                job_id, lost_task = job.id, job.task_id

            degraded = _health_until(client, lambda h: h["status"] == "degraded" and h["problems"])
            (problem,) = degraded["problems"]
            assert f"job {job_id} waited" in problem and "idle@test" in problem and "sent again" in problem

            done = wait_job(client, job_id, timeout=180)
            assert done["status"] == "succeeded", done
            with session_factory(settings)() as s:
                assert crud.get_job(session=s, job_id=job_id).task_id != lost_task
            _health_until(client, lambda h: h["status"] == "ok" and not h["problems"])
    finally:
        worker.stop()


class _Recorder:
    """Stands in for the Celery client: records what the janitor sends."""

    def __init__(self):
        self.sent = []

    def send_task(self, name, args, task_id, queue):
        self.sent.append((name, args, task_id, queue))


def test_only_deliveries_waiting_for_an_idle_worker_of_their_queue_are_sent_again(tmp_path):
    settings = make_settings(tmp_path / "data")
    object.__setattr__(settings, "unclaimed_after_s", 100.0)
    settings.ensure_dirs()
    run_migrations(settings)
    Session = session_factory(settings)
    with Session() as s:
        crud.worker_seen(session=s, hostname="gpu0@a", pid=1, queues=["robaudit"], device="cuda", started=True)
        crud.worker_seen(session=s, hostname="cpu@b", pid=2, queues=["other"], device="cpu", started=True)
        running = crud.create_job(session=s, kind="evaluation", config={}, queue="robaudit")
        waiting = crud.create_job(session=s, kind="evaluation", config={}, queue="robaudit")
        elsewhere = crud.create_job(session=s, kind="evaluation", config={}, queue="third")
        running.status, running.worker_hostname = "running", "gpu0@a"
        s.commit()
        first_task = waiting.task_id
    watch, celery = UnclaimedWatch(settings), _Recorder()
    with Session() as s:
        # gpu0 is busy: the waiting job is normal, however long it waits.
        assert watch.sweep(celery, s, now=0.0) == [] and watch.sweep(celery, s, now=500.0) == []
        crud.finish_job(session=s, job_id=running.id, task_id=running.task_id, status="succeeded")
        # gpu0 is idle from now on; the clock starts at the first sweep that sees it idle.
        assert watch.sweep(celery, s, now=600.0) == []
        assert watch.sweep(celery, s, now=699.0) == []
        (problem,) = watch.sweep(celery, s, now=701.0)
    assert f"job {waiting.id} waited 101 s in queue 'robaudit' while idle worker(s) gpu0@a" in problem
    assert watch.problems == [problem]
    ((name, args, task_id, queue),) = celery.sent
    assert args == [waiting.id] and queue == "robaudit" and task_id != first_task
    with Session() as s:
        assert crud.get_job(session=s, job_id=waiting.id).task_id == task_id
        assert crud.get_job(session=s, job_id=elsewhere.id).task_id == elsewhere.task_id   # no worker serves it
        crud.claim_job(session=s, job_id=waiting.id, task_id=task_id, hostname="gpu0@a", pid=1, stale_after_s=120)
        watch.sweep(celery, s, now=702.0)
    assert watch.problems == [] and len(celery.sent) == 1   # taken: no longer reported
