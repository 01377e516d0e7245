"""What a task does with a job id, in the worker child process. Imports torch and the science, so
only the task body imports this module (robaudit.worker.tasks), never the prefork parent.

Claim the job row (fencing stale deliveries and capping attempts), run it with
throttled progress and cooperative cancellation, store its outputs idempotently,
and record the outcome on the row. Exceptions end as a failed row, never as a
Celery failure: the row is the record.

An evaluation job is two steps of this task around its shards (robaudit.worker.shard_runner):
the first delivery plans the shards and sends them as a Celery group; once the last shard has
succeeded it queues the job again, and that delivery merges the shards' records into the results.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from robaudit.backend.app import crud, crud_shards, galleries
from robaudit.backend.app.checkpoint_store import place
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.models import Checkpoint, Job
from robaudit.backend.app.summaries import results_summary
from robaudit.data import DATASETS
from robaudit.digest import sha256_file
from robaudit.errors import Cancelled, RobauditError
from robaudit.evaluation import ShardOutcome, merge, plan_shards
from robaudit.models.checkpoint import CheckpointError
from robaudit.models.validate import validate_file
from robaudit.training import TrainConfig, train
from robaudit.worker.evaluation_inputs import SqlStore, device_for, load_evaluation, name_own_dataset, spec_for
from robaudit.worker.fanout import Dispatch
from robaudit.worker.procs import pid_alive
from robaudit.worker.transfer import TransferError, upload

log = logging.getLogger("robaudit.worker")


def hostname() -> str:
    return os.environ.get("ROBAUDIT_WORKER_NAME") or socket.gethostname()


class JobContext:
    """Progress writes (≥ progress_interval_s apart), a heartbeat thread, and the cancel flag."""

    def __init__(self, settings: Settings, job_id: int, task_id: str):
        self.settings, self.job_id, self.task_id = settings, job_id, task_id
        self.Session = session_factory(settings)
        self.cancel = threading.Event()
        self._stop = threading.Event()
        self._last_write = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> JobContext:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _write(self, **values) -> None:
        with self._lock, self.Session() as s:
            if crud.update_progress(session=s, job_id=self.job_id, task_id=self.task_id, **values):
                self.cancel.set()

    def _beat(self) -> None:
        # Keeps the row fresh during long steps (the first batch, a slow evaluation) and notices cancels.
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            try:
                self._write()
            except Exception:  # a transient DB error must not kill the job
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)

    def progress(self, *, force: bool = False, **values) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.settings.progress_interval_s:
            return
        self._last_write = now
        try:
            self._write(**values)
        except Exception:
            log.warning("progress write for job %s failed", self.job_id, exc_info=True)

    def should_stop(self) -> bool:
        return self.cancel.is_set()


def run_job(settings: Settings, job_id: int, task_id: str, worker_name: str | None = None, *,
            dispatch: Dispatch) -> str:
    """Entry point from the Celery task. Returns a short outcome string (for the worker log).

    ``worker_name`` is the Celery node name (-n); a restarted worker of that name requeues the
    jobs it was running (worker.tasks), so the row records the same name.
    """
    Session = session_factory(settings)
    with Session() as s:
        job, verdict = crud.claim_job(session=s, job_id=job_id, task_id=task_id,
                                      hostname=worker_name or hostname(),
                                      pid=os.getpid(), stale_after_s=settings.stale_after_s, pid_alive=pid_alive)
        if verdict != "run" or job is None:
            log.info("job %s: not run (%s)", job_id, verdict)
            return verdict
        kind, config = job.kind, dict(job.config or {})

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    with JobContext(settings, job_id, task_id) as ctx:
        try:
            if kind == "training":
                outcome = _run_training(settings, ctx, job_id, config)
            else:
                outcome = _run_evaluation(settings, ctx, job_id, config, dispatch)
        except Cancelled as exc:
            with Session() as s:
                crud.finish_job(session=s, job_id=job_id, task_id=task_id, status="cancelled", error=str(exc) or None)
            return "cancelled"
        except Exception as exc:
            message = failure_message(settings, exc, resumes_from="retry resumes from the stored state")
            if type(exc).__name__ != "SoftTimeLimitExceeded":
                log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            with Session() as s:
                crud.finish_job(session=s, job_id=job_id, task_id=task_id, status="failed", error=message)
            return "failed"
    return outcome


# Errors that say what is wrong with the request itself: shown as they are, and never worth a retry.
PERMANENT = (RobauditError, CheckpointError, TransferError)


def failure_message(settings: Settings, exc: BaseException, *, resumes_from: str) -> str:
    """What a failed job or shard row says: the time limit, a user error as is, or the exception's type and text."""
    if type(exc).__name__ == "SoftTimeLimitExceeded":
        return f"time limit of {settings.soft_time_limit_s} s exceeded (ROBAUDIT_TASK_SOFT_TIME_LIMIT); {resumes_from}"
    if isinstance(exc, PERMANENT):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:1000]}"


# Training -----------------------------------------------------------------------------
def _run_training(settings: Settings, ctx: JobContext, job_id: int, config: dict[str, Any]) -> str:
    cfg = TrainConfig.from_dict(config["train_config"])
    cfg.device = device_for(settings)
    cfg.data_dir = str(settings.datasets_dir) if settings.datasets_dir else None
    out_dir = settings.jobs_dir / str(job_id)   # stable per job: train() resumes from its state.pt

    def on_progress(p) -> None:
        epoch_done = p.batch == p.batches
        ctx.progress(force=epoch_done, current=(p.epoch - 1) * p.batches + p.batch, total=p.epochs * p.batches,
                     stage=f"epoch {p.epoch}/{p.epochs}, batch {p.batch}/{p.batches}, loss {p.loss:.4f}",
                     eta_seconds=p.eta_seconds, metrics=list(p.history))

    ctx.progress(force=True, stage="starting")
    result = train(cfg, out_dir, progress=on_progress, should_stop=ctx.should_stop)
    name = config.get("name") or f"{cfg.method} {cfg.arch} {cfg.dataset} (training #{job_id})"
    checkpoint_id = register_output(settings, Path(result.checkpoint), job_id=job_id, name=name)
    final = result.history[-1] if result.history else {}
    with ctx.Session() as s:
        crud.finish_job(session=s, job_id=job_id, task_id=ctx.task_id, status="succeeded",
                        summary={"final": final, "seconds": round(result.seconds, 2),
                                 "resumed_from_epoch": result.resumed_from_epoch},
                        output_checkpoint_id=checkpoint_id, metrics=list(result.history))
    return "succeeded"


def register_output(settings: Settings, path: Path, *, job_id: int, name: str) -> int:
    """Register a trained checkpoint: through the API when this worker is remote, else in place."""
    Session = session_factory(settings)
    if settings.api_url:
        checkpoint_id = int(upload(settings, path, name=name)["id"])
    else:
        checked = validate_file(path, datasets=DATASETS)
        if not checked["ok"]:
            raise RuntimeError(f"trained checkpoint failed validation: {checked['error']}")
        sha = sha256_file(path)
        tmp = settings.tmp_dir / f"{uuid.uuid4().hex}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp)
        place(settings, tmp, sha, checked["ext"])
        with Session() as s:
            row, _ = crud.create_checkpoint(session=s, sha256=sha, name=name, filename=path.name,
                                            ext=checked["ext"], size_bytes=path.stat().st_size,
                                            meta=checked["metadata"], embedded_metadata=True,
                                            source="training", training_job_id=job_id)
            checkpoint_id = row.id
    with Session() as s:  # link both ways (an upload through the API does not know the job)
        linked = s.get_one(Checkpoint, checkpoint_id)
        linked.source, linked.training_job_id = "training", job_id
        s.commit()
    return checkpoint_id


# Evaluation ---------------------------------------------------------------------------
def _run_evaluation(settings: Settings, ctx: JobContext, job_id: int, config: dict[str, Any],
                    dispatch: Dispatch) -> str:
    """Plan and send the shards, or, once they have all succeeded, merge them into the results."""
    with ctx.Session() as s:
        shards = crud_shards.list_shards(session=s, job_id=job_id)
        queue = s.get_one(Job, job_id).queue
    if shards and all(shard.status == "succeeded" for shard in shards):
        return _merge(settings, ctx, job_id, config, shards)
    if not shards:
        ctx.progress(force=True, stage="planning the shards")
        prepared = load_evaluation(settings, job_id, config)
        with ctx.Session() as s:
            workers = [w for w in crud.list_workers_seen(session=s, within_s=settings.stale_after_s)
                       if not w.queues or (queue or settings.queue) in w.queues.split(",")]
        # "auto" was resolved on this worker's device; the service's cap still holds.
        spec = replace(prepared.spec, batch_size=min(prepared.spec.batch_size, settings.max_batch_size))
        ranges = plan_shards(spec, prepared.n, workers=max(1, len(workers)), shard_size=config.get("shard_size"))
        with ctx.Session() as s:
            job = s.get_one(Job, job_id)
            job.config = {**config, "plan": {"n": prepared.n, "fingerprint": prepared.fingerprint,
                                             "batch_size": spec.batch_size, "shards": ranges}}
            s.commit()
            crud_shards.create_shards(session=s, job_id=job_id, ranges=ranges, max_attempts=job.max_attempts)
    with ctx.Session() as s:
        deliveries = crud_shards.shards_to_dispatch(session=s, job_id=job_id)
    ctx.progress(force=True, stage=f"{len(deliveries)} shard(s) queued")
    dispatch.shards(job_id, deliveries, queue)
    with ctx.Session() as s:
        crud_shards.mark_sent(session=s, job_id=job_id)
    return "sharded"


def _merge(settings: Settings, ctx: JobContext, job_id: int, config: dict[str, Any], shards: list) -> str:
    ctx.progress(force=True, stage="merging the shards")
    plan = config["plan"]
    spec = spec_for(config)
    outcomes = [ShardOutcome.from_dict({**(shard.outcome or {}), "worker": shard.worker_hostname})
                for shard in shards]
    spec = replace(spec, batch_size=plan["batch_size"])
    # The gallery's files go next to the database before the results that index them are committed.
    results = merge(spec, plan["n"], plan["fingerprint"], SqlStore(settings, job_id), outcomes,
                    on_gallery=lambda found: galleries.save(settings, job_id, found))
    with ctx.Session() as s:
        job = s.get_one(Job, job_id)
        results["provenance"]["checkpoint_sha256"] = job.checkpoint.sha256 if job.checkpoint else None
    name_own_dataset(results, config)
    with ctx.Session() as s:
        crud.store_results(session=s, job_id=job_id, results=results)
        # Results and the status change commit together, or not at all (another delivery owns the job).
        if not crud.finish_job(session=s, job_id=job_id, task_id=ctx.task_id, status="succeeded",
                               summary=results_summary(results, config.get("gate")), commit=False):
            s.rollback()
            return "superseded"
        s.commit()
    with ctx.Session() as s:
        crud.purge_job_state(session=s, job_id=job_id)
    return "succeeded"
