"""Sending jobs to the queue, revoking them, and the janitor that requeues jobs of dead workers."""
from __future__ import annotations

import logging
import threading
import time

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from robaudit.backend.app import crud, crud_shards
from robaudit.backend.app.core.celery_app import SHARD_TASK_NAME, TASK_NAME
from robaudit.backend.app.core.config import Settings

log = logging.getLogger("robaudit.api")


def dispatch(celery: Celery, settings: Settings, *, job_id: int, task_id: str, queue: str | None = None) -> None:
    """Publish the task for a job. The message carries only the job id."""
    celery.send_task(TASK_NAME, args=[job_id], task_id=task_id, queue=queue or settings.queue)


def dispatch_or_fail(celery: Celery, settings: Settings, session: Session, *, job_id: int, task_id: str,
                     queue: str | None = None) -> str | None:
    """Dispatch; on a broker error mark the job failed and return the error message."""
    try:
        dispatch(celery, settings, job_id=job_id, task_id=task_id, queue=queue)
        return None
    except Exception as exc:  # broker down or unreachable
        message = f"could not queue the job: broker unavailable ({type(exc).__name__}: {str(exc)[:200]})"
        crud.mark_dispatch_failed(session=session, job_id=job_id, error=message)
        log.error("job %s: %s", job_id, message)
        return message


def revoke(celery: Celery, settings: Settings, task_id: str | None) -> None:
    """Best effort: tell workers to drop a queued task. The job row (cancelled) is what really stops it."""
    if task_id and settings.broker_is_redis:
        try:
            celery.control.revoke(task_id)
        except Exception:
            log.warning("revoke of %s failed", task_id, exc_info=True)


def requeue_stale_jobs(celery: Celery, settings: Settings, Session: sessionmaker) -> list[int]:
    with Session() as s:
        stale = crud.requeue_stale(session=s, stale_after_s=settings.stale_after_s)
        for job_id, task_id, queue in stale:
            log.warning("job %s: worker stopped sending heartbeats; requeued as task %s", job_id, task_id)
            dispatch_or_fail(celery, settings, s, job_id=job_id, task_id=task_id, queue=queue)
    return [job_id for job_id, _, _ in stale]


def requeue_stale_shards(celery: Celery, settings: Settings, Session: sessionmaker) -> list[tuple[int, int]]:
    """Shards whose worker stopped sending heartbeats go back to the queue alone; they resume from their
    stored batches. A broker error leaves them queued and is retried on the next pass."""
    with Session() as s:
        stale = crud_shards.requeue_stale_shards(session=s, stale_after_s=settings.stale_after_s)
    for job_id, index, task_id, queue in stale:
        log.warning("job %s shard %s: worker stopped sending heartbeats; requeued as task %s", job_id, index, task_id)
        try:
            celery.send_task(SHARD_TASK_NAME, args=[job_id, index], task_id=task_id, queue=queue or settings.queue)
        except Exception:
            log.warning("could not requeue shard %s of job %s", index, job_id, exc_info=True)
    return [(job_id, index) for job_id, index, _, _ in stale]


def release_interrupted_work(celery: Celery, settings: Settings, Session: sessionmaker, hostname: str) -> list[str]:
    """After worker ``hostname`` was shut down on purpose (its processes are gone): its jobs and shards go
    back to the queue without costing an attempt, and it is marked offline. Returns what was released."""
    with Session() as s:
        jobs = crud.release_interrupted(session=s, hostname=hostname)
        shards = crud_shards.release_interrupted_shards(session=s, hostname=hostname)
        crud.worker_offline(session=s, hostname=hostname)
    released = []
    for job_id, task_id, queue in jobs:
        released.append(f"job {job_id}")
        try:
            dispatch(celery, settings, job_id=job_id, task_id=task_id, queue=queue)
        except Exception:   # it stays queued; the next worker start sends it (requeue of interrupted work)
            log.warning("could not requeue job %s after the shutdown", job_id, exc_info=True)
    for job_id, index, task_id, queue in shards:
        released.append(f"job {job_id} shard {index}")
        try:
            celery.send_task(SHARD_TASK_NAME, args=[job_id, index], task_id=task_id, queue=queue or settings.queue)
        except Exception:
            log.warning("could not requeue shard %s of job %s after the shutdown", index, job_id, exc_info=True)
    return released


class UnclaimedWatch:
    """Deliveries that idle workers have not taken: found, reported and sent again.

    A queued job or shard normally starts within seconds when a worker of its queue is idle. If it
    is still waiting, with the same task id, unclaimed_after_s after the janitor first saw it while
    such a worker was idle, its message is lost (or the worker that got it is stuck): the janitor
    sends it again under a new task id, and /health says "degraded" with the reason until it is taken.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.first_seen: dict[tuple[int, int | None, str], float] = {}
        # (job_id, shard index) sent again -> why; reported by /health until a worker takes it.
        self.resent: dict[tuple[int, int | None], str] = {}

    @property
    def problems(self) -> list[str]:
        return list(self.resent.values())

    def sweep(self, celery: Celery, session: Session, now: float) -> list[str]:
        """One pass; returns the deliveries sent again in it."""
        waiting = crud.waiting_deliveries(session=session)
        idle = crud.idle_workers(session=session, within_s=max(60.0, 3 * self.settings.heartbeat_interval_s))
        self.first_seen = {k: t for k, t in self.first_seen.items() if k in {w[:3] for w in waiting}}
        self.resent = {k: v for k, v in self.resent.items() if k in {w[:2] for w in waiting}}
        found = []
        for job_id, index, task, queue in waiting:
            queue = queue or self.settings.queue
            takers = [w.hostname for w in idle if queue in w.queues.split(",")]
            if not takers:   # every worker of the queue is busy, or none is up: waiting is normal
                self.first_seen.pop((job_id, index, task), None)
                continue
            since = self.first_seen.setdefault((job_id, index, task), now)
            if now - since < self.settings.unclaimed_after_s:
                continue
            new = crud.resend(session=session, job_id=job_id, index=index, old_task=task)
            if new is None:   # taken meanwhile
                continue
            what = f"job {job_id}" if index is None else f"job {job_id} shard {index}"
            problem = (f"{what} waited {now - since:.0f} s in queue {queue!r} while idle worker(s) "
                       f"{', '.join(takers)} did not take it; sent again")
            log.warning("%s", problem)
            self.resent[(job_id, index)] = problem
            found.append(problem)
            try:
                if index is None:
                    dispatch(celery, self.settings, job_id=job_id, task_id=new, queue=queue)
                else:
                    celery.send_task(SHARD_TASK_NAME, args=[job_id, index], task_id=new, queue=queue)
            except Exception:
                log.warning("could not send %s again", what, exc_info=True)
        return found


class Janitor:
    """A thread in the API process: every janitor_interval_s, requeue running jobs and shards whose heartbeat stopped.

    This is what brings a job back after its worker was SIGKILLed or its host vanished: with
    acks_late the message would otherwise wait for Redis' visibility timeout (longer than the
    longest job) or, on the SQL broker, never come back.
    """

    def __init__(self, celery: Celery, settings: Settings, Session: sessionmaker):
        self.celery, self.settings, self.Session = celery, settings, Session
        self.unclaimed = UnclaimedWatch(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.janitor_interval_s):
            try:
                requeue_stale_jobs(self.celery, self.settings, self.Session)
                requeue_stale_shards(self.celery, self.settings, self.Session)
                with self.Session() as s:
                    self.unclaimed.sweep(self.celery, s, time.monotonic())
            except Exception:
                log.warning("janitor pass failed", exc_info=True)
