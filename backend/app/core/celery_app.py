"""The Celery app factory and the task names: what the API needs to send jobs, and what the worker
builds its app from (robaudit.worker.celery_app adds the task module).

The API sends tasks by name (``celery.send_task(TASK_NAME, ...)``), so it never imports the worker.
The settings are the ones long GPU jobs need (docs/service.md, "Why these Celery settings").
Neither this module nor the worker's app module imports torch: the prefork parent must never
initialise CUDA.
"""
from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu.entity import Queue
from kombu.transport import sqlalchemy as sqla_transport

from robaudit.backend.app.core.config import Settings

TASK_NAME = "robaudit.run_job"          # a job: a training, or an evaluation's planning and merge steps
SHARD_TASK_NAME = "robaudit.run_shard"  # one shard of an evaluation (robaudit.evaluation.shards)


def make_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app for ``settings``; ``include`` names the task modules a worker imports."""
    app = Celery("robaudit", broker=settings.broker_url, include=list(include))
    visibility = settings.visibility_timeout_s
    if settings.broker_is_redis:
        transport_options: dict = {"visibility_timeout": visibility}
    else:
        # kombu's SQL transport hands its options to create_engine() (a visibility_timeout there is a
        # TypeError; it never redelivers anyway: lost jobs come back through the janitor). SQLite
        # waits for locks instead of failing, and the queue table is polled every 0.5 s, not 1 s.
        transport_options = {"connect_args": {"timeout": 30}}
        sqla_transport.Transport.polling_interval = 0.5
    app.conf.update(
        # The job row is the record; Celery only carries {job_id}. No result backend needed.
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # One long job at a time per worker, acknowledged only when done.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        task_reject_on_worker_lost=True,   # capped: the job row's attempt counter (crud.claim_job)
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.soft_time_limit_s,
        # Above the hard time limit, in every place the Celery docs name.
        broker_transport_options=transport_options,
        result_backend_transport_options={"visibility_timeout": visibility},
        visibility_timeout=visibility,
        worker_soft_shutdown_timeout=30.0,
        task_default_queue=settings.queue,
        task_queues=[Queue(settings.queue)],
        task_routes={TASK_NAME: {"queue": settings.queue}, SHARD_TASK_NAME: {"queue": settings.queue}},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # The SQL transport cannot broadcast: no remote control (revoke, inspect) there.
        worker_enable_remote_control=settings.broker_is_redis,
        worker_send_task_events=False,
        enable_utc=True,
    )
    app.robaudit_settings = settings
    return app
