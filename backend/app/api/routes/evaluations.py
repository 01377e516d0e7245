from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import JSONResponse, PlainTextResponse

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import CeleryDep, ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.dispatch import dispatch_or_fail
from robaudit.backend.app.schemas import EvaluationCreate, JobPublic, JobsPublic, JobStatus, Message
from robaudit.backend.app.validation import JobRequestError, validate_evaluation

router = APIRouter(prefix="/evaluations", tags=["evaluations"])


@router.post("", response_model=JobPublic, status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess],
             responses={422: {"model": Message}, 503: {"model": Message}})
def create_evaluation(body: EvaluationCreate, session: SessionDep, settings: SettingsDep,
                      celery: CeleryDep) -> Any:
    """Queue an evaluation of a checkpoint (a preset, or attacks x eps x steps)."""
    try:
        config = validate_evaluation(body, session)
    except JobRequestError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    job = crud.create_job(session=session, kind="evaluation", config=config, name=body.name,
                          checkpoint_id=body.checkpoint_id, surrogate_id=body.surrogate_id,
                          max_attempts=settings.max_attempts, queue=settings.queue)
    error = dispatch_or_fail(celery, settings, session, job_id=job.id, task_id=job.task_id)
    if error:
        raise HTTPException(503, detail=f"{error}; job {job.id} was marked failed, retry it later")
    return crud.job_public(job)


@router.get("", response_model=JobsPublic, dependencies=[ReadAccess])
def list_evaluations(session: SessionDep, status: JobStatus | None = None,
                     skip: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=1000)) -> Any:
    """List evaluation jobs, newest first."""
    rows, count = crud.list_jobs(session=session, kind="evaluation", status=status, skip=skip, limit=limit)
    return {"data": [crud.job_public(j) for j in rows], "count": count}


@router.get("/{evaluation_id}", response_model=JobPublic, dependencies=[ReadAccess],
            responses={404: {"model": Message}})
def read_evaluation(session: SessionDep, evaluation_id: int = Path(ge=1, le=2**31 - 1)) -> Any:
    """Get an evaluation job: status, progress, ETA, headline numbers."""
    job = crud.get_job(session=session, job_id=evaluation_id, kind="evaluation")
    if job is None:
        raise HTTPException(404, detail=f"no evaluation {evaluation_id}")
    return crud.job_public(job)


@router.get("/{evaluation_id}/results", dependencies=[ReadAccess],
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "The evaluation engine's results JSON (or its CSV)"},
                       404: {"model": Message}, 409: {"model": Message}})
def read_evaluation_results(session: SessionDep, evaluation_id: int = Path(ge=1, le=2**31 - 1),
                            format: Literal["json", "csv"] = Query("json")) -> Any:
    """Get an evaluation's results JSON (schema: docs/results-schema.md); ?format=csv for CSV."""
    job = crud.get_job(session=session, job_id=evaluation_id, kind="evaluation")
    if job is None:
        raise HTTPException(404, detail=f"no evaluation {evaluation_id}")
    results = crud.get_results(session=session, job_id=evaluation_id)
    if results is None:
        raise HTTPException(409, detail=f"evaluation {evaluation_id} has no results yet (status: {job.status})")
    if format == "csv":
        from robaudit.evaluation import results_to_csv

        return PlainTextResponse(results_to_csv(results), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="evaluation-{evaluation_id}.csv"'})
    return JSONResponse(results)
