"""The shards of a sharded evaluation: creating, claiming, progress, finishing, and what happens next.

Same rules as the job rows (robaudit.backend.app.crud): every state change is a compare-and-set
UPDATE, a shard runs only for the delivery whose task id is current, and each shard counts its
own attempts. The job row stays the record the API shows: it carries the summed progress, and it
is finished by whichever shard settles it (the last success queues the merge; a shard that fails
for good fails the job; the last shard to stop after a cancel cancels it).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from robaudit.backend.app.crud import SHUTDOWN_STAGE, _changed, held_elsewhere, new_task_id
from robaudit.backend.app.models import FINISHED, EvalShard, Job, utcnow

ACTIVE = ("queued", "running")
MERGING = "merging"
NOT_MERGING = or_(Job.stage.is_(None), Job.stage != MERGING)


def shard_label(shard: EvalShard, count: int) -> str:
    return f"shard {shard.index + 1} of {count} (points {shard.start}-{shard.end - 1})"


def list_shards(*, session: Session, job_id: int) -> list[EvalShard]:
    return list(session.scalars(select(EvalShard).where(EvalShard.job_id == job_id).order_by(EvalShard.index)))


def create_shards(*, session: Session, job_id: int, ranges: list[tuple[int, int]], max_attempts: int) -> None:
    """The shard rows of a freshly planned evaluation (a redelivered planner finds them already there)."""
    if session.scalar(select(func.count()).select_from(EvalShard).where(EvalShard.job_id == job_id)):
        return
    for index, (start, end) in enumerate(ranges):
        session.add(EvalShard(job_id=job_id, index=index, start=start, end=end, status="queued",
                              max_attempts=max_attempts, task_id=new_task_id()))
    session.commit()


def shards_to_dispatch(*, session: Session, job_id: int) -> list[tuple[int, str]]:
    """Shards that need a delivery: queued ones, and (on a retried job) failed or cancelled ones.

    Each gets a fresh task id, so a copy of an older message still in the broker is a superseded
    delivery. Running and succeeded shards are left alone.
    """
    out = []
    for shard in list_shards(session=session, job_id=job_id):
        if shard.status not in ("queued", "failed", "cancelled"):
            continue
        task_id = new_task_id()
        values: dict[str, Any] = {"status": "queued", "task_id": task_id}
        if shard.status != "queued":
            values.update(attempt=0, error=None, finished_at=None)
        if _changed(session, update(EvalShard).where(EvalShard.id == shard.id, EvalShard.status == shard.status,
                                                     EvalShard.task_id == shard.task_id).values(**values)):
            out.append((shard.index, task_id))
    session.commit()
    return out


def mark_sent(*, session: Session, job_id: int) -> None:
    """The shards' tasks are in the broker: from now on the shards, not the job row, show the job is alive."""
    session.execute(update(EvalShard).where(EvalShard.job_id == job_id, EvalShard.status == "queued",
                                            EvalShard.heartbeat_at.is_(None)).values(heartbeat_at=utcnow()))
    session.commit()


def claim_shard(*, session: Session, job_id: int, index: int, task_id: str, hostname: str, pid: int,
                stale_after_s: float, pid_alive=None) -> tuple[EvalShard | None, str]:
    """The worker's first step for a shard delivery: (shard, "run") or (shard or None, why it is skipped)."""
    shard = session.scalar(select(EvalShard).where(EvalShard.job_id == job_id, EvalShard.index == index)
                           .with_for_update())
    if shard is None:
        return None, "no such shard"
    job = session.get_one(Job, job_id)
    if shard.task_id != task_id:
        return shard, "superseded delivery"
    if shard.status in FINISHED:
        return shard, f"already {shard.status}"
    if job.status in FINISHED or job.cancel_requested:
        shard.status, shard.finished_at = "cancelled", utcnow()
        session.commit()
        settle_job(session=session, job_id=job_id)
        return shard, "evaluation cancelled or finished"
    if shard.status == "running" and held_elsewhere(shard, hostname=hostname, stale_after_s=stale_after_s,
                                                    pid_alive=pid_alive):
        session.rollback()
        return shard, "running elsewhere"
    now = utcnow()
    if shard.attempt + 1 > shard.max_attempts:
        fail_shard(session=session, shard=shard, error=(
            f"gave up after {shard.max_attempts} attempts: the worker running it died each time (out of memory, "
            f"killed, or lost); last error: {shard.error or 'none recorded'}"))
        return shard, "too many attempts"
    shard.attempt += 1
    shard.status, shard.error = "running", None
    shard.started_at = shard.started_at or now
    shard.heartbeat_at, shard.worker_hostname, shard.worker_pid = now, hostname, pid
    session.commit()
    return shard, "run"


def shard_progress(*, session: Session, job_id: int, index: int, task_id: str, done: float | None = None,
                   total: float | None = None, stage: str | None = None, eta_seconds: float | None = None) -> bool:
    """Write a shard's progress and heartbeat, and the job's sums; returns True when the shard should stop."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    for name, value in (("done", done), ("total", total), ("eta_seconds", eta_seconds)):
        if value is not None:
            values[name] = float(value)
    if stage is not None:
        values["stage"] = stage[:200]
    session.execute(update(EvalShard).where(EvalShard.job_id == job_id, EvalShard.index == index,
                                            EvalShard.task_id == task_id, EvalShard.status == "running")
                    .values(**values))
    _sum_into_job(session, job_id)
    session.commit()
    job = session.get(Job, job_id, populate_existing=True)
    return job is None or job.cancel_requested or job.status in FINISHED


def _sum_into_job(session: Session, job_id: int) -> None:
    """The job row shows the shards' summed progress, the longest ETA and who runs what."""
    shards = list_shards(session=session, job_id=job_id)
    running = [s for s in shards if s.status == "running"]
    finished = sum(s.status == "succeeded" for s in shards)
    workers = sorted({s.worker_hostname for s in running if s.worker_hostname})
    stage = (f"{len(running)} of {len(shards)} shards running" + (f" ({', '.join(workers)})" if workers else "")
             + f"; {finished} done")
    etas = [s.eta_seconds for s in running if s.eta_seconds is not None]
    session.execute(update(Job).where(Job.id == job_id, Job.status == "running", NOT_MERGING)
                    .values(progress_current=int(sum(s.done for s in shards)),
                            progress_total=int(sum(s.total for s in shards)), stage=stage[:200],
                            eta_seconds=max(etas) if etas else None, heartbeat_at=utcnow()))


def finish_shard(*, session: Session, job_id: int, index: int, task_id: str, status: str,
                 error: str | None = None, outcome: dict[str, Any] | None = None) -> bool:
    """Record a shard's outcome if this delivery still owns it."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error, "eta_seconds": None}
    if outcome is not None:
        values["outcome"] = outcome
    if status == "succeeded":
        values["done"] = EvalShard.total
        values["stage"] = "done"
    changed = _changed(session, update(EvalShard).where(EvalShard.job_id == job_id, EvalShard.index == index,
                                                        EvalShard.task_id == task_id,
                                                        EvalShard.status == "running").values(**values))
    _sum_into_job(session, job_id)
    session.commit()
    return bool(changed)


def retry_shard(*, session: Session, job_id: int, index: int, task_id: str, error: str) -> str | None:
    """A shard that failed with attempts left goes back to the queue alone; returns its new task id."""
    new = new_task_id()
    changed = _changed(session, update(EvalShard).where(
        EvalShard.job_id == job_id, EvalShard.index == index, EvalShard.task_id == task_id,
        EvalShard.status == "running", EvalShard.attempt < EvalShard.max_attempts)
        .values(status="queued", task_id=new, error=error, stage=f"retrying after: {error}"[:200]))
    session.commit()
    return new if changed else None


def give_up_shard(*, session: Session, job_id: int, index: int, task_id: str, error: str) -> bool:
    """This delivery's shard failed for good (no attempts left, or an error retrying cannot fix)."""
    shard = session.scalar(select(EvalShard).where(EvalShard.job_id == job_id, EvalShard.index == index,
                                                   EvalShard.task_id == task_id, EvalShard.status == "running")
                           .with_for_update())
    if shard is None:
        session.rollback()
        return False
    fail_shard(session=session, shard=shard, error=error)
    return True


def fail_shard(*, session: Session, shard: EvalShard, error: str) -> None:
    """A shard failed for good: so does the evaluation, with the shard's reason; the other shards stop."""
    count = session.scalar(select(func.count()).select_from(EvalShard).where(EvalShard.job_id == shard.job_id))
    shard.status, shard.error, shard.finished_at = "failed", error, utcnow()
    session.execute(update(Job).where(Job.id == shard.job_id, Job.status.in_(ACTIVE)).values(
        status="failed", finished_at=utcnow(), eta_seconds=None, cancel_requested=True,
        error=f"{shard_label(shard, count or 1)} failed: {error}"))
    session.commit()


@dataclass(frozen=True)
class NextStep:
    action: str               # "merge" (task_id: the merge delivery's), "cancelled", or "wait"
    task_id: str | None = None
    queue: str | None = None


def settle_job(*, session: Session, job_id: int) -> NextStep:
    """After a shard finished or stopped: queue the merge once all succeeded, or cancel a cancelled job
    once none runs. Race-free: the job row is changed by one compare-and-set UPDATE, so of two shards
    finishing at once exactly one queues the merge."""
    shards = list_shards(session=session, job_id=job_id)
    job = session.get_one(Job, job_id, populate_existing=True)
    if job.cancel_requested and job.status in ACTIVE and not any(s.status in ACTIVE for s in shards):
        session.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                        .values(status="cancelled", finished_at=utcnow(), eta_seconds=None))
        session.commit()
        return NextStep("cancelled")
    if shards and all(s.status == "succeeded" for s in shards):
        # Back to "queued" with a new task id: the merge is a delivery of the job's own task, claimed
        # (and its attempts counted afresh) like the planning was.
        task_id = new_task_id()
        if _changed(session, update(Job).where(Job.id == job_id, Job.status == "running", NOT_MERGING,
                                               Job.cancel_requested.is_(False))
                    .values(status="queued", task_id=task_id, stage=MERGING, attempt=0, eta_seconds=None)):
            session.commit()
            return NextStep("merge", task_id, job.queue)
    session.commit()
    return NextStep("wait")


def requeue_stale_shards(*, session: Session, stale_after_s: float) -> list[tuple[int, int, str, str | None]]:
    """Running shards whose heartbeat stopped go back to the queue: [(job_id, index, new task id, queue)]."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    stale = session.execute(select(EvalShard.job_id, EvalShard.index, EvalShard.task_id, Job.queue)
                            .join(Job, Job.id == EvalShard.job_id)
                            .where(EvalShard.status == "running", EvalShard.heartbeat_at < cutoff)).all()
    return _requeue(session, stale, "requeued: worker lost", EvalShard.heartbeat_at < cutoff)


def requeue_orphan_shards(*, session: Session, hostname: str, pid_alive) -> list[tuple[int, int, str, str | None]]:
    """At worker start: shards this host was running in processes that no longer exist."""
    rows = session.execute(select(EvalShard.job_id, EvalShard.index, EvalShard.task_id, Job.queue,
                                  EvalShard.worker_pid)
                           .join(Job, Job.id == EvalShard.job_id)
                           .where(EvalShard.status == "running", EvalShard.worker_hostname == hostname)).all()
    orphans = [(job_id, index, task, queue) for job_id, index, task, queue, pid in rows
               if pid is None or not pid_alive(pid)]
    return _requeue(session, orphans, "requeued: worker restarted")


def release_interrupted_shards(*, session: Session, hostname: str) -> list[tuple[int, int, str, str | None]]:
    """After a clean shutdown of worker ``hostname``: its running shards go back to the queue without
    costing an attempt (crud.release_interrupted does the same for jobs)."""
    rows = session.execute(select(EvalShard.job_id, EvalShard.index, EvalShard.task_id, Job.queue)
                           .join(Job, Job.id == EvalShard.job_id)
                           .where(EvalShard.status == "running", EvalShard.worker_hostname == hostname)).all()
    return _requeue(session, rows, SHUTDOWN_STAGE, refund=True)


def _requeue(session: Session, rows, stage: str, *conditions,
             refund: bool = False) -> list[tuple[int, int, str, str | None]]:
    out = []
    for job_id, index, old_task, queue in rows:
        new = new_task_id()
        values: dict[str, Any] = {"status": "queued", "task_id": new, "stage": stage}
        if refund:
            # heartbeat_at stays set: it marks a shard whose task is in the broker (mark_sent).
            values.update(attempt=case((EvalShard.attempt > 0, EvalShard.attempt - 1), else_=0),
                          worker_pid=None, heartbeat_at=utcnow())
        if _changed(session, update(EvalShard).where(EvalShard.job_id == job_id, EvalShard.index == index,
                                                     EvalShard.task_id == old_task, EvalShard.status == "running",
                                                     *conditions)
                    .values(**values)):
            out.append((job_id, index, new, queue))
    session.commit()
    return out
