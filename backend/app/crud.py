"""Database operations, keyword-only. Used by the API routes and by the worker.

State changes on jobs are compare-and-set UPDATEs: the API (cancel, retry, the
stale-job janitor) and the worker (claim, progress, finish) never overwrite each
other's decisions, and only the delivery whose task id is current may run a job.
"""
from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Update, case, delete, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from robaudit.backend.app.core.security import share_token, short_id
from robaudit.backend.app.models import (
    FINISHED,
    Checkpoint,
    Dataset,
    EvalBatch,
    EvalShard,
    EvaluationResult,
    Job,
    Report,
    ReportEvaluation,
    SampleBitset,
    WorkerSeen,
    utcnow,
)
from robaudit.evaluation.results import parse_bit_key


def _upsert(session: Session, model, values: dict[str, Any], keys: list[str], update_cols: Iterable[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on PostgreSQL and SQLite alike."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model).values(**values)
    cols = list(update_cols)
    if cols:
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in cols})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    session.execute(stmt)


def _changed(session: Session, stmt: Update) -> int:
    """Run a compare-and-set UPDATE; returns how many rows it changed (0: the condition did not hold)."""
    result = cast(CursorResult[Any], session.execute(stmt))   # an UPDATE's result is a CursorResult
    return result.rowcount


def new_task_id() -> str:
    return str(uuid.uuid4())


# Checkpoints --------------------------------------------------------------------------
def get_checkpoint(*, session: Session, checkpoint_id: int) -> Checkpoint | None:
    return session.get(Checkpoint, checkpoint_id)


def get_checkpoint_by_sha256(*, session: Session, sha256: str) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).where(Checkpoint.sha256 == sha256))


def list_checkpoints(*, session: Session, skip: int = 0, limit: int = 100) -> tuple[list[Checkpoint], int]:
    count = session.scalar(select(func.count()).select_from(Checkpoint)) or 0
    rows = session.scalars(select(Checkpoint).order_by(Checkpoint.id.desc()).offset(skip).limit(limit)).all()
    return list(rows), count


def create_checkpoint(*, session: Session, sha256: str, name: str, filename: str, ext: str, size_bytes: int,
                      meta: dict[str, Any], embedded_metadata: bool, source: str = "upload",
                      training_job_id: int | None = None, clean_check: dict[str, Any] | None = None,
                      detected_arch: str | None = None) -> tuple[Checkpoint, bool]:
    """Insert a checkpoint row; returns (row, created). A concurrent insert of the same sha256 wins."""
    row = Checkpoint(sha256=sha256, name=name, filename=filename, ext=ext, size_bytes=size_bytes,
                     arch=str(meta.get("arch")), dataset=meta.get("dataset"), method=meta.get("method"),
                     meta=meta, embedded_metadata=embedded_metadata, source=source,
                     training_job_id=training_job_id, clean_check=clean_check, detected_arch=detected_arch)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = get_checkpoint_by_sha256(session=session, sha256=sha256)
        if existing is None:
            raise
        return existing, False
    return row, True


def checkpoint_users(*, session: Session, checkpoint_id: int) -> list[int]:
    """Ids of jobs that evaluate, attack from, or produced this checkpoint."""
    rows = session.scalars(select(Job.id).where(or_(Job.checkpoint_id == checkpoint_id,
                                                    Job.surrogate_id == checkpoint_id,
                                                    Job.output_checkpoint_id == checkpoint_id)).limit(20))
    return list(rows)


def delete_checkpoint(*, session: Session, checkpoint: Checkpoint) -> None:
    session.delete(checkpoint)
    session.commit()


# Own test sets ------------------------------------------------------------------------
def get_dataset(*, session: Session, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_dataset_by_sha256(*, session: Session, sha256: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.sha256 == sha256))


def list_datasets(*, session: Session, skip: int = 0, limit: int = 100) -> tuple[list[Dataset], int]:
    count = session.scalar(select(func.count()).select_from(Dataset)) or 0
    rows = session.scalars(select(Dataset).order_by(Dataset.id.desc()).offset(skip).limit(limit)).all()
    return list(rows), count


def create_dataset(*, session: Session, values: dict[str, Any]) -> tuple[Dataset, bool]:
    """Insert a dataset row; returns (row, created). A concurrent insert of the same sha256 wins."""
    row = Dataset(**values)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = get_dataset_by_sha256(session=session, sha256=values["sha256"])
        if existing is None:
            raise
        return existing, False
    return row, True


def dataset_users(*, session: Session, dataset_id: int) -> list[int]:
    """Ids of the evaluations that use this test set (at most 20, for the message)."""
    return list(session.scalars(select(Job.id).where(Job.dataset_id == dataset_id).order_by(Job.id).limit(20)))


def delete_dataset(*, session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.commit()


# Jobs ---------------------------------------------------------------------------------
class QueueFull(Exception):
    """The queue already holds ``queued`` jobs, the cap: nothing was stored."""

    def __init__(self, queued: int):
        super().__init__(f"{queued} jobs are queued")
        self.queued = queued


# Any constant will do, as long as it differs from the migrations' lock (robaudit.backend.app.core.db).
_QUEUE_LOCK = 728364502


def _queue_in(session: Session, max_queued: int | None) -> None:
    """Commit a change that put one more job in the queue, unless that makes more than ``max_queued``
    queued jobs: then roll it back and raise QueueFull.

    Atomic, so N concurrent requests never overshoot the cap. The caller's write has happened (not yet
    committed) when the count is taken. SQLite: that write holds the database's only write lock until
    the commit or rollback, so no other request can add a queued job in between. PostgreSQL: writers
    run at once and READ COMMITTED would let each miss the others' rows, so every writer that queues a
    job first takes a transaction-scoped advisory lock (_lock_queue), released by the commit.
    """
    if max_queued is not None:
        queued = count_jobs(session=session, status="queued")
        if queued > max_queued:
            session.rollback()
            raise QueueFull(queued - 1)
    session.commit()


def _lock_queue(session: Session, max_queued: int | None) -> None:
    if max_queued is not None and session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_QUEUE_LOCK)))


def create_job(*, session: Session, kind: str, config: dict[str, Any], name: str | None = None,
               checkpoint_id: int | None = None, surrogate_id: int | None = None, dataset_id: int | None = None,
               max_attempts: int = 3, queue: str | None = None, max_queued: int | None = None) -> Job:
    """A new queued job. With ``max_queued``: raises QueueFull, storing nothing, if the queue is full."""
    _lock_queue(session, max_queued)
    job = Job(kind=kind, status="queued", name=name, config=config, checkpoint_id=checkpoint_id,
              surrogate_id=surrogate_id, dataset_id=dataset_id, max_attempts=max_attempts, queue=queue,
              task_id=new_task_id(), metrics=[], summary={})
    session.add(job)
    session.flush()
    _queue_in(session, max_queued)
    return job


def import_evaluation(*, session: Session, results: dict[str, Any], name: str | None,
                      summary: dict[str, Any]) -> Job:
    """A finished evaluation job holding results made elsewhere; row, results and bitsets in one commit."""
    now = utcnow()
    given = results.get("source")
    source = given if isinstance(given, str) else "robaudit evaluate"
    job = Job(kind="evaluation", status="succeeded", name=name, task_id=None, metrics=[], summary=summary,
              config={"imported": {"source": source[:100]}, "spec_args": {"dataset": results["dataset"]},
                      "spec": results.get("config") or {}},
              created_at=now, started_at=now, finished_at=now, max_attempts=0)
    session.add(job)
    session.flush()
    store_results(session=session, job_id=job.id, results=results)
    session.commit()
    return job


def get_job(*, session: Session, job_id: int, kind: str | None = None) -> Job | None:
    job = session.get(Job, job_id)
    if job is None or (kind is not None and job.kind != kind):
        return None
    return job


def list_jobs(*, session: Session, kind: str | None = None, status: str | None = None,
              skip: int = 0, limit: int = 100) -> tuple[list[Job], int]:
    conds = []
    if kind:
        conds.append(Job.kind == kind)
    if status:
        conds.append(Job.status == status)
    count = session.scalar(select(func.count()).select_from(Job).where(*conds)) or 0
    rows = session.scalars(select(Job).where(*conds).order_by(Job.id.desc()).offset(skip).limit(limit)).unique()
    return list(rows), count


def count_jobs(*, session: Session, status: str) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.status == status)) or 0


def job_public(job: Job) -> dict[str, Any]:
    total = job.progress_total or 0
    # Results are written in the same transaction that marks an evaluation succeeded.
    has_results = job.kind == "evaluation" and job.status == "succeeded"
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "name": job.name, "config": job.config or {},
        "progress": {"current": job.progress_current, "total": total,
                     "fraction": (job.progress_current / total) if total else None,
                     "stage": job.stage, "eta_seconds": job.eta_seconds},
        "eta_seconds": job.eta_seconds, "metrics": job.metrics or [],
        # The worker judges the gate when it stores the results and keeps the outcome in the summary.
        "summary": {k: v for k, v in (job.summary or {}).items() if k != "gate"},
        "gate": (job.summary or {}).get("gate") if has_results and (job.config or {}).get("gate") else None,
        "error": job.error, "attempt": job.attempt, "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested, "worker_hostname": job.worker_hostname,
        "checkpoint_id": job.checkpoint_id, "surrogate_id": job.surrogate_id,
        "output_checkpoint_id": job.output_checkpoint_id,
        "dataset_id": job.dataset_id,
        "has_results": has_results,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "shards": [shard_public(shard) for shard in job.shards],
        "imported": bool((job.config or {}).get("imported")),
    }


def shard_public(shard: EvalShard) -> dict[str, Any]:
    return {"index": shard.index, "start": shard.start, "end": shard.end, "status": shard.status,
            "worker": shard.worker_hostname, "attempt": shard.attempt, "max_attempts": shard.max_attempts,
            "done": round(shard.done, 1), "total": round(shard.total, 1), "stage": shard.stage,
            "eta_seconds": shard.eta_seconds, "error": shard.error}


def request_cancel(*, session: Session, job_id: int) -> tuple[str, str | None]:
    """Cancel a job: a queued one at once, a running one cooperatively.

    Returns (outcome, task_id to revoke or None); outcome is "cancelled", "requested" or "finished".
    """
    now = utcnow()
    changed = _changed(session, update(Job).where(Job.id == job_id, Job.status == "queued")
                                .values(status="cancelled", cancel_requested=True, finished_at=now,
                                          eta_seconds=None))
    if changed:
        session.commit()
        job = session.get(Job, job_id)
        return "cancelled", job.task_id if job else None
    changed = _changed(session, update(Job).where(Job.id == job_id, Job.status == "running")
                                .values(cancel_requested=True))
    if changed and session.scalar(select(exists().where(EvalShard.job_id == job_id))):
        # A sharded evaluation: queued shards never start, and with none running it is cancelled now.
        session.execute(update(EvalShard).where(EvalShard.job_id == job_id, EvalShard.status == "queued")
                        .values(status="cancelled", finished_at=now))
        if not session.scalar(select(exists().where(EvalShard.job_id == job_id, EvalShard.status == "running"))):
            session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                            .values(status="cancelled", finished_at=now, eta_seconds=None))
            session.commit()
            return "cancelled", None
    session.commit()
    return ("requested", None) if changed else ("finished", None)


def prepare_retry(*, session: Session, job_id: int, max_queued: int | None = None) -> str | None:
    """Put a failed or cancelled job back in the queue; its stored state is kept so it resumes.

    Returns the new task id, or None if the job is not in a retryable state. With ``max_queued``:
    raises QueueFull, changing nothing, if the queue is full.
    """
    _lock_queue(session, max_queued)
    task_id = new_task_id()
    changed = _changed(session, update(Job).where(Job.id == job_id, Job.status.in_(("failed", "cancelled")))
                                .values(status="queued", task_id=task_id, attempt=0, cancel_requested=False,
                                          error=None, finished_at=None, worker_hostname=None, worker_pid=None,
                                          eta_seconds=None))
    if not changed:
        session.rollback()
        return None
    _queue_in(session, max_queued)
    return task_id


def mark_dispatch_failed(*, session: Session, job_id: int, error: str) -> None:
    session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                    .values(status="failed", error=error, finished_at=utcnow()))
    session.commit()


def held_elsewhere(row: Job | EvalShard, *, hostname: str, stale_after_s: float, pid_alive=None) -> bool:
    """A running job or shard still owned by a live process: its heartbeat is fresh, and it is not this
    host's process that died (a pool child killed on this host is taken over at once)."""
    if row.heartbeat_at is None:
        return False
    fresh = utcnow() - row.heartbeat_at < timedelta(seconds=stale_after_s)
    same_host_dead = (row.worker_hostname == hostname and row.worker_pid is not None
                      and pid_alive is not None and not pid_alive(row.worker_pid))
    return fresh and not same_host_dead


def claim_job(*, session: Session, job_id: int, task_id: str, hostname: str, pid: int,
              stale_after_s: float, pid_alive=None) -> tuple[Job | None, str]:
    """The worker's first step for a delivery. Returns (job, "run") or (None|job, reason to skip).

    Skips deliveries that are not current (a stale copy after a requeue), jobs already finished,
    and jobs another live process is running. Counts the attempt; past max_attempts the job fails.
    """
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        return None, "no such job"
    if job.task_id and job.task_id != task_id:
        return job, "superseded delivery"
    if job.status in FINISHED:
        return job, f"already {job.status}"
    if job.cancel_requested:
        finish_job(session=session, job_id=job_id, task_id=task_id, status="cancelled")
        return job, "cancelled before start"
    if job.status == "running" and held_elsewhere(job, hostname=hostname, stale_after_s=stale_after_s,
                                                  pid_alive=pid_alive):
        session.rollback()
        return job, "running elsewhere"
    attempt = job.attempt + 1
    now = utcnow()
    if attempt > job.max_attempts:
        job.status, job.finished_at, job.attempt = "failed", now, attempt - 1
        job.error = (f"gave up after {job.max_attempts} attempts: the worker running this job died each time "
                     f"(out of memory, killed, or lost); last error: {job.error or 'none recorded'}")
        session.commit()
        return job, "too many attempts"
    job.attempt, job.status = attempt, "running"
    job.started_at = job.started_at or now
    job.heartbeat_at, job.worker_hostname, job.worker_pid = now, hostname, pid
    session.commit()
    return job, "run"


def update_progress(*, session: Session, job_id: int, task_id: str, current: int | None = None,
                    total: int | None = None, stage: str | None = None, eta_seconds: float | None = None,
                    metrics: list[Any] | None = None) -> bool:
    """Write progress and heartbeat; returns cancel_requested (so the caller can stop)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if current is not None:
        values["progress_current"] = int(current)
    if total is not None:
        values["progress_total"] = int(total)
    if stage is not None:
        values["stage"] = stage[:200]
    if eta_seconds is not None:
        values["eta_seconds"] = float(eta_seconds)
    if metrics is not None:
        values["metrics"] = metrics
    session.execute(update(Job).where(Job.id == job_id, Job.task_id == task_id, Job.status == "running")
                    .values(**values))
    session.commit()
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(*, session: Session, job_id: int, task_id: str, status: str, error: str | None = None,
               summary: dict[str, Any] | None = None, output_checkpoint_id: int | None = None,
               metrics: list[Any] | None = None, commit: bool = True) -> bool:
    """Record a job's outcome, if this delivery still owns it (returns False otherwise)."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error, "eta_seconds": None}
    if status == "succeeded":
        values["stage"] = "done"
    if summary is not None:
        values["summary"] = summary
    if output_checkpoint_id is not None:
        values["output_checkpoint_id"] = output_checkpoint_id
    if metrics is not None:
        values["metrics"] = metrics
    changed = _changed(session, update(Job).where(Job.id == job_id, Job.task_id == task_id,
                                                  Job.status.in_(("queued", "running"))).values(**values))
    if commit:
        session.commit()
    return bool(changed)


def _shards_unfinished():
    """A sharded evaluation whose shards were sent and are still queued or running: its liveness is then
    the shards' (crud_shards). Shards created but never sent (the planner died) leave the job to the
    janitor, which requeues it so the planner sends them."""
    return exists().where(EvalShard.job_id == Job.id, EvalShard.status.in_(("queued", "running")),
                          EvalShard.heartbeat_at.is_not(None))


def requeue_stale(*, session: Session, stale_after_s: float) -> list[tuple[int, str, str | None]]:
    """Running jobs whose heartbeat stopped (worker killed, host lost) go back to the queue.

    Returns [(job_id, new task id, queue)]; the caller sends the tasks. The attempt counter is
    raised at the next claim, so a job that kills its worker every time ends as failed.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    stale = session.execute(select(Job.id, Job.task_id, Job.queue)
                            .where(Job.status == "running", Job.heartbeat_at < cutoff, ~_shards_unfinished())).all()
    out = []
    for job_id, old_task, queue in stale:
        new = new_task_id()
        changed = _changed(session, update(Job).where(Job.id == job_id, Job.status == "running",
                                                      Job.task_id == old_task, Job.heartbeat_at < cutoff)
                                    .values(status="queued", task_id=new, stage="requeued: worker lost",
                                            error=f"worker {old_task} stopped sending heartbeats"))
        if changed:
            out.append((job_id, new, queue))
    session.commit()
    return out


def requeue_orphans(*, session: Session, hostname: str, pid_alive) -> list[tuple[int, str, str | None]]:
    """At worker start: jobs this host was running in processes that no longer exist go back to
    the queue at once (a restarted `robaudit serve`), instead of waiting for the janitor."""
    rows = session.execute(select(Job.id, Job.task_id, Job.queue, Job.worker_pid)
                           .where(Job.status == "running", Job.worker_hostname == hostname,
                                  ~_shards_unfinished())).all()
    out = []
    for job_id, old_task, queue, pid in rows:
        if pid is not None and pid_alive(pid):
            continue
        new = new_task_id()
        changed = _changed(session, update(Job).where(Job.id == job_id, Job.status == "running",
                                                      Job.task_id == old_task)
                                    .values(status="queued", task_id=new, stage="requeued: worker restarted"))
        if changed:
            out.append((job_id, new, queue))
    session.commit()
    return out


SHUTDOWN_STAGE = "interrupted by a shutdown; waits for a worker (no attempt counted)"


def release_interrupted(*, session: Session, hostname: str) -> list[tuple[int, str, str | None]]:
    """After a clean shutdown of worker ``hostname`` (its processes are gone): the jobs it was running
    go back to the queue without costing an attempt, since a shutdown is not a failure of the job.

    Returns [(job_id, new task id, queue)] for the caller to send. Sharded jobs whose shards are
    still out are left alone: their shards are released by crud_shards.release_interrupted_shards.
    """
    rows = session.execute(select(Job.id, Job.task_id, Job.queue)
                           .where(Job.status == "running", Job.worker_hostname == hostname,
                                  ~_shards_unfinished())).all()
    out = []
    for job_id, old_task, queue in rows:
        new = new_task_id()
        if _changed(session, update(Job).where(Job.id == job_id, Job.status == "running", Job.task_id == old_task)
                    .values(status="queued", task_id=new, stage=SHUTDOWN_STAGE, worker_pid=None, heartbeat_at=None,
                            attempt=case((Job.attempt > 0, Job.attempt - 1), else_=0))):
            out.append((job_id, new, queue))
    session.commit()
    return out


# Evaluation results -------------------------------------------------------------------
def store_results(*, session: Session, job_id: int, results: dict[str, Any]) -> None:
    """Upsert the results JSON and one bitset row per attack setting (no duplicates on re-runs)."""
    _upsert(session, EvaluationResult, {"job_id": job_id, "results": results, "created_at": utcnow()},
            ["job_id"], ["results", "created_at"])
    for row in iter_bitsets(results):
        _upsert(session, SampleBitset, {"job_id": job_id, **row},
                ["job_id", "attack", "eps", "steps", "restarts"], ["n", "bits"])


def iter_bitsets(results: dict[str, Any]):
    """Rows (attack, eps, steps, restarts, n, bits) from the results JSON's per_sample section.

    Keys are the engine's bit keys (per_sample["bits"]); the clean bitset is stored as attack
    "clean" at eps 0. Subset bitsets (probes on the first few hundred points) are not stored here:
    they cover other points and stay in the results JSON.
    """
    per_sample = results.get("per_sample") or {}
    if not isinstance(per_sample, dict):
        return
    n = int(per_sample.get("n") or results.get("n") or 0)
    if isinstance(per_sample.get("clean"), str):
        yield {"attack": "clean", "eps": 0.0, "steps": 0, "restarts": 0, "n": n,
               "bits": base64.b64decode(per_sample["clean"])}
    bitsets = per_sample.get("bits")
    if not isinstance(bitsets, dict):
        bitsets = {k: v for k, v in per_sample.items() if "@" in k}
    for key, text in bitsets.items():
        parts = parse_bit_key(key)
        # Worst-case keys over a subset (".../first=m") cover other points; they stay in the JSON.
        if parts is None or parts.scope is not None or not isinstance(text, str):
            continue
        # The table's key columns are NOT NULL: an attack without steps, or a key without
        # restarts, is stored as 0.
        yield {"attack": parts.attack[:64], "eps": parts.eps, "steps": parts.steps or 0,
               "restarts": parts.restarts or 0, "n": n, "bits": base64.b64decode(text)}


def get_results(*, session: Session, job_id: int) -> dict[str, Any] | None:
    row = session.get(EvaluationResult, job_id)
    return row.results if row else None


def list_bitsets(*, session: Session, job_id: int) -> list[SampleBitset]:
    return list(session.scalars(select(SampleBitset).where(SampleBitset.job_id == job_id)
                                .order_by(SampleBitset.id)))


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def batch_get(*, session: Session, job_id: int, key: str) -> dict[str, Any] | None:
    return session.scalar(select(EvalBatch.value).where(EvalBatch.job_id == job_id,
                                                        EvalBatch.key_hash == _key_hash(key)))


def batch_put(*, session: Session, job_id: int, key: str, value: dict[str, Any]) -> None:
    _upsert(session, EvalBatch, {"job_id": job_id, "key": key, "key_hash": _key_hash(key), "value": value,
                                 "created_at": utcnow()},
            ["job_id", "key_hash"], ["value"])
    session.commit()


# Reports ------------------------------------------------------------------------------
def create_report(*, session: Session, title: str, evaluation_ids: list[int], kind: str = "comparison") -> Report:
    for _ in range(5):  # a short random id; retry on the (unlikely) collision
        report = Report(id=short_id(), title=title, share_token=share_token(), kind=kind)
        report.items = [ReportEvaluation(job_id=jid, position=i) for i, jid in enumerate(evaluation_ids)]
        session.add(report)
        try:
            session.commit()
            return report
        except IntegrityError:
            session.rollback()
    raise RuntimeError("could not allocate a report id")


def get_report(*, session: Session, report_id: str) -> Report | None:
    return session.get(Report, report_id)


def list_reports(*, session: Session, skip: int = 0, limit: int = 100) -> tuple[list[Report], int]:
    count = session.scalar(select(func.count()).select_from(Report)) or 0
    rows = session.scalars(select(Report).order_by(Report.created_at.desc()).offset(skip).limit(limit))
    return list(rows), count


def set_share_token(*, session: Session, report: Report, token: str | None) -> Report:
    """Replace the report's share token (rotate) or drop it (revoke, token None)."""
    report.share_token = token
    session.commit()
    return report


def delete_report(*, session: Session, report: Report) -> None:
    session.delete(report)
    session.commit()


def share_path(report: Report) -> str | None:
    return f"/share/{report.share_token}" if report.share_token else None


def share_url(report: Report, public_url: str | None) -> str | None:
    """The share link on the configured public URL, or a path without one (never the request's Host)."""
    path = share_path(report)
    return (public_url or "") + path if path else None


def report_public(report: Report, *, with_share: bool, public_url: str | None = None) -> dict[str, Any]:
    """A report's list entry; the share URL only for callers holding the API token (it is a secret)."""
    return {"id": report.id, "title": report.title, "url": f"/reports/{report.id}",
            "share_url": share_url(report, public_url) if with_share else None,
            "evaluation_ids": [i.job_id for i in report.items], "created_at": report.created_at,
            "kind": report.kind}


# Workers ------------------------------------------------------------------------------
def waiting_deliveries(*, session: Session) -> list[tuple[int, int | None, str, str | None]]:
    """Every delivery a worker should take now: queued jobs, and queued shards whose tasks were sent.
    Rows of (job_id, shard index or None, task id, queue)."""
    jobs = session.execute(select(Job.id, Job.task_id, Job.queue)
                           .where(Job.status == "queued", Job.task_id.is_not(None), ~Job.cancel_requested)).all()
    shards = session.execute(select(EvalShard.job_id, EvalShard.index, EvalShard.task_id, Job.queue)
                             .join(Job, Job.id == EvalShard.job_id)
                             .where(EvalShard.status == "queued", EvalShard.heartbeat_at.is_not(None),
                                    EvalShard.task_id.is_not(None), ~Job.cancel_requested)).all()
    # task ids are never null here (filtered above); str() tells the type checker so.
    waiting: list[tuple[int, int | None, str, str | None]] = [(job_id, None, str(task), queue)
                                                               for job_id, task, queue in jobs]
    return waiting + [(job_id, index, str(task), queue) for job_id, index, task, queue in shards]


def idle_workers(*, session: Session, within_s: float) -> list[WorkerSeen]:
    """Live workers running no job and no shard: they would take a waiting delivery at once."""
    busy = {h for (h,) in session.execute(select(Job.worker_hostname).where(Job.status == "running"))}
    busy |= {h for (h,) in session.execute(select(EvalShard.worker_hostname).where(EvalShard.status == "running"))}
    return [w for w in list_workers_seen(session=session, within_s=within_s) if w.hostname not in busy]


def resend(*, session: Session, job_id: int, index: int | None, old_task: str) -> str | None:
    """A new task id for a queued delivery that was never taken (the old message is lost or stuck);
    None if it was taken meanwhile. The caller sends the new task."""
    new = new_task_id()
    if index is None:
        stmt = update(Job).where(Job.id == job_id, Job.status == "queued", Job.task_id == old_task)
    else:
        stmt = update(EvalShard).where(EvalShard.job_id == job_id, EvalShard.index == index,
                                       EvalShard.status == "queued", EvalShard.task_id == old_task)
    changed = _changed(session, stmt.values(task_id=new))
    session.commit()
    return new if changed else None



def worker_seen(*, session: Session, hostname: str, pid: int, queues: list[str], device: str | None,
                started: bool = False) -> None:
    now = utcnow()
    values = {"hostname": hostname, "pid": pid, "queues": ",".join(queues), "device": device,
              "last_seen": now, "online": True}
    cols = ["pid", "queues", "device", "last_seen", "online"]
    if started:
        values["started_at"] = now
        cols.append("started_at")
    else:
        values["started_at"] = now  # only used when the row is new
    _upsert(session, WorkerSeen, values, ["hostname"], cols)
    session.commit()


def worker_offline(*, session: Session, hostname: str) -> None:
    session.execute(update(WorkerSeen).where(WorkerSeen.hostname == hostname).values(online=False))
    session.commit()


def list_workers_seen(*, session: Session, within_s: float) -> list[WorkerSeen]:
    cutoff = utcnow() - timedelta(seconds=within_s)
    return list(session.scalars(select(WorkerSeen).where(WorkerSeen.online.is_(True),
                                                         WorkerSeen.last_seen >= cutoff)
                                .order_by(WorkerSeen.hostname)))


def purge_job_state(*, session: Session, job_id: int) -> None:
    """Drop stored batches once an evaluation's results are final (they are only for resuming)."""
    session.execute(delete(EvalBatch).where(EvalBatch.job_id == job_id))
    session.commit()

