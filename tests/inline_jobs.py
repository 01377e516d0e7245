"""Running a queued job to its end in the test's own process: the shards, then the merge, by the
worker's own job code, with no broker (what one embedded worker does). Used by the service tests
that check what a finished job looks like, and by the gallery's browser test."""
from __future__ import annotations

from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.db import session_factory


class InlineDispatch:
    """Runs an evaluation's steps in this process instead of sending them to Celery: each shard in turn,
    then the merge (what one embedded worker does, minus the broker)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def shards(self, job_id: int, deliveries: list[tuple[int, str]], queue: str | None) -> None:
        from robaudit.worker.shard_runner import run_shard

        for index, task_id in deliveries:
            run_shard(self.settings, job_id, index, task_id, dispatch=self)

    def merge(self, job_id: int, task_id: str, queue: str | None) -> None:
        from robaudit.worker.runner import run_job

        run_job(self.settings, job_id, task_id, dispatch=self)


def run_inline(settings: Settings, job_id: int) -> str:
    """Run a queued job to its end in this process; returns its final status."""
    from robaudit.backend.app.models import Job
    from robaudit.worker.runner import run_job

    with session_factory(settings)() as s:
        task_id = s.get_one(Job, job_id).task_id
    run_job(settings, job_id, task_id, dispatch=InlineDispatch(settings))
    with session_factory(settings)() as s:
        return s.get_one(Job, job_id).status
