from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import CeleryDep, ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.dispatch import dispatch_or_fail
from robaudit.backend.app.schemas import JobPublic, JobsPublic, JobStatus, Message, TrainingCreate
from robaudit.backend.app.validation import JobRequestError, validate_training

router = APIRouter(prefix="/trainings", tags=["trainings"])


@router.post("", response_model=JobPublic, status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess],
             responses={422: {"model": Message}, 503: {"model": Message}})
def create_training(body: TrainingCreate, session: SessionDep, settings: SettingsDep, celery: CeleryDep) -> Any:
    """Queue a training job; the trained model is registered as a checkpoint when it finishes."""
    try:
        config = validate_training(body)
    except JobRequestError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    job = crud.create_job(session=session, kind="training", config=config, name=body.name,
                          max_attempts=settings.max_attempts, queue=settings.queue)
    error = dispatch_or_fail(celery, settings, session, job_id=job.id, task_id=job.task_id)
    if error:
        raise HTTPException(503, detail=f"{error}; job {job.id} was marked failed, retry it later")
    return crud.job_public(job)


@router.get("", response_model=JobsPublic, dependencies=[ReadAccess])
def list_trainings(session: SessionDep, status: JobStatus | None = None,
                   skip: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=1000)) -> Any:
    """List training jobs, newest first."""
    rows, count = crud.list_jobs(session=session, kind="training", status=status, skip=skip, limit=limit)
    return {"data": [crud.job_public(j) for j in rows], "count": count}


@router.get("/{training_id}", response_model=JobPublic, dependencies=[ReadAccess],
            responses={404: {"model": Message}})
def read_training(session: SessionDep, training_id: int = Path(ge=1, le=2**31 - 1)) -> Any:
    """Get a training job: status, progress, ETA, per-epoch metrics, produced checkpoint."""
    job = crud.get_job(session=session, job_id=training_id, kind="training")
    if job is None:
        raise HTTPException(404, detail=f"no training {training_id}")
    return crud.job_public(job)
