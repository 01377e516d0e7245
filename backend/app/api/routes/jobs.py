from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, status

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import CeleryDep, ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.api.job_routes import (
    MAX_ID,
    Limit,
    Skip,
    find_job,
    job_page,
    queue_full,
    require_queue_room,
)
from robaudit.backend.app.dispatch import dispatch_or_fail, revoke
from robaudit.backend.app.schemas import JobKind, JobPublic, JobsPublic, JobStatus, Message

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Path(ge=1, le=MAX_ID)


@router.get("", response_model=JobsPublic, dependencies=[ReadAccess])
def list_jobs(session: SessionDep, kind: JobKind | None = None, status: JobStatus | None = None,
              skip: int = Skip, limit: int = Limit) -> Any:
    """List trainings and evaluations together, newest first."""
    return job_page(session, kind=kind, status=status, skip=skip, limit=limit)


@router.get("/{job_id}", response_model=JobPublic, dependencies=[ReadAccess], responses={404: {"model": Message}})
def read_job(session: SessionDep, job_id: int = JobId) -> Any:
    """Get a job of either kind."""
    return crud.job_public(find_job(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[WriteAccess], responses={404: {"model": Message}, 409: {"model": Message}})
def cancel_job(session: SessionDep, settings: SettingsDep, celery: CeleryDep, job_id: int = JobId) -> Any:
    """Cancel a job: a queued one at once, a running one at its next batch or epoch."""
    job = find_job(session, job_id)
    outcome, task_id = crud.request_cancel(session=session, job_id=job_id)
    session.refresh(job)
    if outcome == "finished":
        raise HTTPException(409, detail=f"job {job_id} is already {job.status}")
    revoke(celery, settings, task_id)
    return crud.job_public(job)


@router.post("/{job_id}/retry", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[WriteAccess], responses={404: {"model": Message}, 409: {"model": Message},
                                                    429: {"model": Message}, 503: {"model": Message}})
def retry_job(session: SessionDep, settings: SettingsDep, celery: CeleryDep, job_id: int = JobId) -> Any:
    """Queue a failed or cancelled job again; it resumes from its stored state."""
    job = find_job(session, job_id)
    if job.status in ("failed", "cancelled"):      # otherwise the 409 below says why not
        require_queue_room(session, settings)
    try:
        task_id = crud.prepare_retry(session=session, job_id=job_id, max_queued=settings.max_queued_jobs)
    except crud.QueueFull as exc:
        raise queue_full(exc.queued) from None
    session.refresh(job)
    if task_id is None:
        raise HTTPException(409, detail=f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried")
    error = dispatch_or_fail(celery, settings, session, job_id=job_id, task_id=task_id)
    if error:
        raise HTTPException(503, detail=error)
    session.refresh(job)
    return crud.job_public(job)
