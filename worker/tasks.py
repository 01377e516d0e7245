"""The two tasks (a job; one shard of an evaluation), plus worker lifecycle hooks. Imports no torch: see
robaudit.worker.celery_app."""
from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time

from celery import signals

from robaudit.backend.app import crud, crud_shards
from robaudit.backend.app.core.celery_app import SHARD_TASK_NAME, TASK_NAME
from robaudit.backend.app.core.db import session_factory
from robaudit.worker.celery_app import app
from robaudit.worker.procs import EXIT_WITH_ENV, children, pid_alive

log = logging.getLogger("robaudit.worker")


# celery ships no type hints: its decorator is untyped.
@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def run_job(self, job_id: int) -> str:
    """Run job `job_id` (training or evaluation). The message carries nothing else."""
    # Deliberately here: the runner imports torch and the science, which must load in the pool child,
    # never in the prefork parent.
    from robaudit.worker.fanout import CeleryDispatch
    from robaudit.worker.runner import run_job as run

    # The module's app, not self.app: a spawned pool child rebuilds self.app from its pickle, which keeps
    # Celery's configuration but not the settings robaudit hangs on it.
    return run(app.robaudit_settings, int(job_id), self.request.id, worker_name=self.request.hostname,
               dispatch=CeleryDispatch(app))


@app.task(name=SHARD_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def run_shard(self, job_id: int, index: int) -> str:
    """Run shard `index` of evaluation `job_id`; the last shard to succeed queues the merge."""
    from robaudit.worker.fanout import CeleryDispatch
    from robaudit.worker.shard_runner import run_shard as run

    return run(app.robaudit_settings, int(job_id), int(index), self.request.id,
               worker_name=self.request.hostname, dispatch=CeleryDispatch(app))


# Worker presence: the parent announces itself in the workers table (what /health reports).
_presence_stop = threading.Event()


def _presence_loop(hostname: str, queues: list[str]) -> None:
    settings = app.robaudit_settings
    Session = session_factory(settings)
    first = True
    while True:
        try:
            with Session() as s:
                crud.worker_seen(session=s, hostname=hostname, pid=os.getpid(), queues=queues,
                                 device=settings.device, started=first)
            first = False
        except Exception:
            log.warning("could not record worker presence", exc_info=True)
        if _presence_stop.wait(settings.heartbeat_interval_s):
            return


def _requeue_orphans(hostname: str) -> None:
    try:
        with session_factory(app.robaudit_settings)() as s:
            orphans = crud.requeue_orphans(session=s, hostname=hostname, pid_alive=pid_alive)
            shards = crud_shards.requeue_orphan_shards(session=s, hostname=hostname, pid_alive=pid_alive)
        for job_id, task_id, queue in orphans:
            log.warning("job %s was running here before a restart; requeued as %s", job_id, task_id)
            app.send_task(TASK_NAME, args=[job_id], task_id=task_id, queue=queue or app.robaudit_settings.queue)
        for job_id, index, task_id, queue in shards:
            log.warning("shard %s of job %s was running here before a restart; requeued as %s", index, job_id, task_id)
            app.send_task(SHARD_TASK_NAME, args=[job_id, index], task_id=task_id,
                          queue=queue or app.robaudit_settings.queue)
    except Exception:
        log.warning("could not requeue jobs orphaned by a restart", exc_info=True)


# How long an orphaned worker's own shutdown may take before it kills its pool and exits by force.
ORPHAN_SHUTDOWN_GRACE_S = 15.0
_parent_gone = threading.Event()


def _exit_with(pid: int, hostname: str) -> None:
    # An embedded worker (serve, demo, study) must not outlive the command that started it, even
    # when that command is SIGKILLed and cannot stop it: it would keep taking jobs nobody watches.
    while pid_alive(pid):
        if _presence_stop.wait(1.0):
            return
    log.warning("the process that started this worker (pid %s) is gone; shutting down", pid)
    _parent_gone.set()
    # A cold shutdown at once, as robaudit.launch.service stops its worker: nobody waits for the running
    # task, so no soft shutdown letting it run on. What it was running goes back to the queue at exit.
    app.conf.worker_soft_shutdown_timeout = 0.0
    os.kill(os.getpid(), signal.SIGQUIT)
    # Normally the process has exited long before this. A shutdown that hangs (seen: blocked on a pool
    # semaphore) must still end, or the orphan would sit in the workers table and hold its job.
    time.sleep(ORPHAN_SHUTDOWN_GRACE_S)
    log.warning("shutdown still not done after %.0f s; killing the pool and exiting", ORPHAN_SHUTDOWN_GRACE_S)
    _end_orphan(hostname, 1)


def _end_orphan(hostname: str, code: int) -> None:
    """Kill what is left of the pool, requeue its work, exit now."""
    for child in children(os.getpid()):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while children(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    _release_interrupted(hostname)
    logging.shutdown()
    # Skips billiard's exit handlers, which wait on a pool that no longer exists (seen hanging).
    os._exit(code)


def _release_interrupted(hostname: str) -> None:
    """Put what this worker was running back in the queue at no attempt's cost: its parent died, the job did
    not fail. Called once the pool children are gone (their rows can no longer change under us)."""
    from robaudit.backend.app.dispatch import release_interrupted_work

    try:
        released = release_interrupted_work(app, app.robaudit_settings, session_factory(app.robaudit_settings),
                                            hostname)
    except Exception:   # database gone too: the next worker start requeues them (at an attempt's cost)
        log.warning("could not requeue the interrupted jobs", exc_info=True)
        return
    if released:
        log.warning("back in the queue, resuming at the next start: %s", ", ".join(released))


def _release_at_exit(hostname: str) -> None:
    # atexit runs in the main thread once Celery's cold shutdown is done.
    if _parent_gone.is_set():
        _end_orphan(hostname, 0)


@signals.worker_ready.connect
def _on_worker_ready(sender=None, **_):
    hostname = getattr(sender, "hostname", None) or os.environ.get("ROBAUDIT_WORKER_NAME") or "worker"
    _requeue_orphans(hostname)
    queues = [q.name for q in app.amqp.queues.consume_from.values()] if app.amqp.queues.consume_from else []
    threading.Thread(target=_presence_loop, args=(hostname, queues), name="presence", daemon=True).start()
    if os.environ.get(EXIT_WITH_ENV):
        atexit.register(_release_at_exit, hostname)
        threading.Thread(target=_exit_with, args=(int(os.environ[EXIT_WITH_ENV]), hostname), name="exit-with",
                         daemon=True).start()


@signals.worker_shutdown.connect
def _on_worker_shutdown(sender=None, **_):
    _presence_stop.set()
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    try:
        with session_factory(app.robaudit_settings)() as s:
            crud.worker_offline(session=s, hostname=hostname)
    except Exception:
        log.warning("could not mark worker %s offline", hostname, exc_info=True)
