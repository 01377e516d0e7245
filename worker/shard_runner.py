"""One shard of an evaluation, in the worker child: claim it, compute its batches, settle the job.

Like a job (robaudit.worker.runner): the shard row's task id fences stale deliveries, its attempts
are its own, and a heartbeat keeps it alive. A shard that fails is retried alone while it has
attempts left; one that fails for good fails the evaluation with its reason. The last shard to
succeed queues the merge (crud_shards.settle_job decides, race-free).
"""
from __future__ import annotations

import logging
import os
import traceback

import torch

from robaudit.backend.app import crud_shards
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.models import Job
from robaudit.errors import Cancelled, RobauditError
from robaudit.evaluation import evaluate_shard
from robaudit.worker.evaluation_inputs import SqlStore, load_evaluation
from robaudit.worker.fanout import Dispatch
from robaudit.worker.procs import pid_alive
from robaudit.worker.runner import PERMANENT, JobContext, failure_message, hostname

log = logging.getLogger("robaudit.worker")


class ShardContext(JobContext):
    """JobContext's throttled progress, heartbeat and cancel flag, written to the shard row (and summed
    into the job's)."""

    def __init__(self, settings: Settings, job_id: int, index: int, task_id: str):
        super().__init__(settings, job_id, task_id)
        self.index = index

    def _write(self, **values) -> None:
        with self._lock, self.Session() as s:
            if crud_shards.shard_progress(session=s, job_id=self.job_id, index=self.index, task_id=self.task_id,
                                          done=values.get("current"), total=values.get("total"),
                                          stage=values.get("stage"), eta_seconds=values.get("eta_seconds")):
                self.cancel.set()


def run_shard(settings: Settings, job_id: int, index: int, task_id: str, worker_name: str | None = None, *,
              dispatch: Dispatch) -> str:
    Session = session_factory(settings)
    worker = worker_name or hostname()
    with Session() as s:
        shard, verdict = crud_shards.claim_shard(session=s, job_id=job_id, index=index, task_id=task_id,
                                                 hostname=worker, pid=os.getpid(),
                                                 stale_after_s=settings.stale_after_s, pid_alive=pid_alive)
        if verdict != "run" or shard is None:
            log.info("job %s shard %s: not run (%s)", job_id, index, verdict)
            return verdict
        bounds = (shard.start, shard.end)
        config = dict(s.get_one(Job, job_id).config or {})
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    with ShardContext(settings, job_id, index, task_id) as ctx:
        try:
            ctx.progress(force=True, stage="loading model and data")
            prepared = load_evaluation(settings, job_id, config)
            if prepared.fingerprint != config["plan"]["fingerprint"]:
                raise RobauditError("this worker's copy of the checkpoint or of the test set differs from the one "
                                    "the evaluation was planned with (fingerprints differ)")

            def on_progress(p) -> None:
                ctx.progress(force=p.done >= p.total, current=p.done, total=p.total, stage=p.stage,
                             eta_seconds=p.eta_seconds)

            outcome = evaluate_shard(prepared, shard=bounds, store=SqlStore(settings, job_id),
                                     progress=on_progress, should_stop=ctx.should_stop)
            outcome.worker = worker
            with Session() as s:
                if not crud_shards.finish_shard(session=s, job_id=job_id, index=index, task_id=task_id,
                                                status="succeeded", outcome=outcome.to_dict()):
                    return "superseded"
            status = "succeeded"
        except Cancelled as exc:
            with Session() as s:
                crud_shards.finish_shard(session=s, job_id=job_id, index=index, task_id=task_id, status="cancelled",
                                         error=str(exc) or None)
            status = "cancelled"
        except Exception as exc:
            return _failed(settings, dispatch, job_id, index, task_id, exc)
    with Session() as s:
        step = crud_shards.settle_job(session=s, job_id=job_id)
    if step.action == "merge" and step.task_id is not None:
        dispatch.merge(job_id, step.task_id, step.queue)
    return status


def _failed(settings: Settings, dispatch: Dispatch, job_id: int, index: int, task_id: str, exc: Exception) -> str:
    message = failure_message(settings, exc, resumes_from="a retry resumes from the stored batches")
    if type(exc).__name__ != "SoftTimeLimitExceeded" and not isinstance(exc, PERMANENT):
        log.error("job %s shard %s failed:\n%s", job_id, index, traceback.format_exc())
    with session_factory(settings)() as s:
        retry = None if isinstance(exc, PERMANENT) else crud_shards.retry_shard(
            session=s, job_id=job_id, index=index, task_id=task_id, error=message)
        if retry is not None:
            queue = s.get_one(Job, job_id).queue
        else:
            crud_shards.give_up_shard(session=s, job_id=job_id, index=index, task_id=task_id, error=message)
    if retry is not None:
        log.warning("job %s shard %s failed (%s); retrying it alone as %s", job_id, index, message, retry)
        dispatch.shards(job_id, [(index, retry)], queue)
        return "retrying"
    return "failed"
