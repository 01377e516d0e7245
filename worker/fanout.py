"""How a worker step sends the next ones: an evaluation's shards as a Celery group, then its merge.

A protocol, so tests can run the steps in one process (tests/service/conftest.py: InlineDispatch).
"""
from __future__ import annotations

from typing import Protocol

from celery import Celery, group

from robaudit.backend.app.core.celery_app import SHARD_TASK_NAME, TASK_NAME


class Dispatch(Protocol):
    def shards(self, job_id: int, deliveries: list[tuple[int, str]], queue: str | None) -> None:
        """Send shard ``index`` of the job for each (index, task id)."""

    def merge(self, job_id: int, task_id: str, queue: str | None) -> None:
        """Send the job's merge step (its own task, under a new task id)."""


class CeleryDispatch:
    """Celery's canvas: the shards go out as one group; any worker takes any shard."""

    def __init__(self, app: Celery):
        self.app = app
        self.default_queue = app.robaudit_settings.queue

    def shards(self, job_id: int, deliveries: list[tuple[int, str]], queue: str | None) -> None:
        if deliveries:
            group(self.app.signature(SHARD_TASK_NAME, args=[job_id, index], task_id=task_id,
                                     queue=queue or self.default_queue)
                  for index, task_id in deliveries).apply_async()

    def merge(self, job_id: int, task_id: str, queue: str | None) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], task_id=task_id, queue=queue or self.default_queue)
