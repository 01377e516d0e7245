"""The shard state machine on SQLite and PostgreSQL: claims, summed progress, one merge, retries alone,
a shard that fails for good, cancel, and the janitor's view of a sharded job."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from robaudit.backend.app import crud, crud_shards
from robaudit.backend.app.core.db import run_migrations, session_factory
from robaudit.backend.app.models import EvalShard, Job, utcnow


def _sharded_job(settings, shards=((0, 16), (16, 32)), max_attempts=2):
    """A claimed evaluation job with its shards sent; returns (session, job id, {index: task id})."""
    settings.ensure_dirs()
    run_migrations(settings)
    s = session_factory(settings)()
    job = crud.create_job(session=s, kind="evaluation", config={}, max_attempts=max_attempts)
    _, verdict = crud.claim_job(session=s, job_id=job.id, task_id=job.task_id, hostname="planner", pid=1,
                                stale_after_s=60)
    assert verdict == "run"
    crud_shards.create_shards(session=s, job_id=job.id, ranges=list(shards), max_attempts=max_attempts)
    crud_shards.create_shards(session=s, job_id=job.id, ranges=list(shards), max_attempts=max_attempts)  # no-op
    tasks = dict(crud_shards.shards_to_dispatch(session=s, job_id=job.id))
    crud_shards.mark_sent(session=s, job_id=job.id)
    return s, job.id, tasks


def _claim(s, job_id, index, task, host="w", pid=10):
    return crud_shards.claim_shard(session=s, job_id=job_id, index=index, task_id=task, hostname=host, pid=pid,
                                   stale_after_s=60)[1]


def test_last_shard_to_succeed_queues_the_merge_exactly_once(any_db_settings):
    s, job_id, tasks = _sharded_job(any_db_settings)
    assert len(tasks) == 2 and _claim(s, job_id, 0, "stale-copy") == "superseded delivery"
    for index, task in tasks.items():
        assert _claim(s, job_id, index, task, host=f"w{index}") == "run"
    assert _claim(s, job_id, 0, tasks[0], host="other") == "running elsewhere"
    crud_shards.shard_progress(session=s, job_id=job_id, index=0, task_id=tasks[0], done=5, total=10, stage="pgd")
    crud_shards.shard_progress(session=s, job_id=job_id, index=1, task_id=tasks[1], done=1, total=30, stage="pgd")
    job = s.get_one(Job, job_id, populate_existing=True)
    assert (job.progress_current, job.progress_total) == (6, 40)
    assert job.stage == "2 of 2 shards running (w0, w1); 0 done"

    assert crud_shards.finish_shard(session=s, job_id=job_id, index=0, task_id=tasks[0], status="succeeded",
                                    outcome={"start": 0})
    assert crud_shards.settle_job(session=s, job_id=job_id).action == "wait"
    assert crud_shards.finish_shard(session=s, job_id=job_id, index=1, task_id=tasks[1], status="succeeded")
    first = crud_shards.settle_job(session=s, job_id=job_id)
    second = crud_shards.settle_job(session=s, job_id=job_id)   # a second shard settling at the same time
    assert first.action == "merge" and second.action == "wait"
    job = s.get_one(Job, job_id, populate_existing=True)
    assert (job.status, job.stage, job.task_id, job.attempt) == ("queued", "merging", first.task_id, 0)
    assert job.progress_current == job.progress_total == 40
    # The merge delivery claims the job like any other.
    assert crud.claim_job(session=s, job_id=job_id, task_id=first.task_id, hostname="m", pid=2,
                          stale_after_s=60)[1] == "run"


def test_a_failed_shard_is_retried_alone_then_fails_the_job_with_its_reason(any_db_settings):
    s, job_id, tasks = _sharded_job(any_db_settings, max_attempts=2)
    assert _claim(s, job_id, 0, tasks[0]) == _claim(s, job_id, 1, tasks[1]) == "run"
    retry = crud_shards.retry_shard(session=s, job_id=job_id, index=1, task_id=tasks[1], error="CUDA OOM")
    assert retry is not None
    s.expire_all()
    shard = crud_shards.list_shards(session=s, job_id=job_id)[1]
    assert (shard.status, shard.attempt) == ("queued", 1)
    assert _claim(s, job_id, 1, tasks[1]) == "superseded delivery"
    assert _claim(s, job_id, 1, retry) == "run"
    # Out of attempts: no retry; giving up fails the whole evaluation and asks the other shard to stop.
    assert crud_shards.retry_shard(session=s, job_id=job_id, index=1, task_id=retry, error="CUDA OOM") is None
    assert crud_shards.give_up_shard(session=s, job_id=job_id, index=1, task_id=retry, error="CUDA OOM")
    job = s.get_one(Job, job_id, populate_existing=True)
    assert job.status == "failed" and job.error == "shard 2 of 2 (points 16-31) failed: CUDA OOM"
    assert crud_shards.shard_progress(session=s, job_id=job_id, index=0, task_id=tasks[0], done=1)   # stop
    s.close()


def test_cancel_stops_every_shard(any_db_settings):
    s, job_id, tasks = _sharded_job(any_db_settings, shards=((0, 8), (8, 16), (16, 24)))
    assert _claim(s, job_id, 0, tasks[0]) == "run"
    assert crud.request_cancel(session=s, job_id=job_id) == ("requested", None)
    statuses = [sh.status for sh in crud_shards.list_shards(session=s, job_id=job_id)]
    assert statuses == ["running", "cancelled", "cancelled"]   # queued shards never start
    assert _claim(s, job_id, 1, tasks[1]) == "already cancelled"
    assert crud_shards.shard_progress(session=s, job_id=job_id, index=0, task_id=tasks[0], done=3)  # told to stop
    crud_shards.finish_shard(session=s, job_id=job_id, index=0, task_id=tasks[0], status="cancelled")
    assert crud_shards.settle_job(session=s, job_id=job_id).action == "cancelled"
    assert s.get_one(Job, job_id, populate_existing=True).status == "cancelled"
    # With no shard running at the time, the cancel is immediate.
    s2, other, _ = _sharded_job(any_db_settings)
    assert crud.request_cancel(session=s2, job_id=other) == ("cancelled", None)
    s.close()
    s2.close()


def test_janitor_requeues_stale_shards_and_leaves_their_job_alone(any_db_settings):
    s, job_id, tasks = _sharded_job(any_db_settings)
    assert _claim(s, job_id, 0, tasks[0]) == "run"
    long_ago = utcnow() - timedelta(seconds=600)
    s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=long_ago))
    s.execute(update(EvalShard).where(EvalShard.job_id == job_id, EvalShard.index == 0)
              .values(heartbeat_at=long_ago))
    s.commit()
    assert crud.requeue_stale(session=s, stale_after_s=60) == []   # the shards say whether it is alive
    requeued = crud_shards.requeue_stale_shards(session=s, stale_after_s=60)
    assert [(j, i) for j, i, _, _ in requeued] == [(job_id, 0)]
    assert _claim(s, job_id, 0, requeued[0][2], host="rescuer") == "run"
    assert crud_shards.list_shards(session=s, job_id=job_id)[0].attempt == 2
    # Shards created but never sent (the planner died first): the job itself is requeued.
    s.execute(update(EvalShard).where(EvalShard.job_id == job_id).values(status="queued", heartbeat_at=None))
    s.commit()
    assert [j for j, _, _ in crud.requeue_stale(session=s, stale_after_s=60)] == [job_id]
    s.close()
