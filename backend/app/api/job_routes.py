"""The routes every job kind has, built once: create (validate, store, dispatch), list and read.

trainings.py and evaluations.py are `job_routes` with their own request schema, validator and
wording; jobs.py (both kinds together, cancel, retry) uses the same lookup and listing helpers.
Route names are given explicitly, so the OpenAPI operation ids ("trainings-create_training") and
summaries stay what they were when each route was written out by hand.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import CeleryDep, ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.dispatch import dispatch_or_fail
from robaudit.backend.app.models import Job
from robaudit.backend.app.schemas import JobPublic, JobsPublic, JobStatus, Message
from robaudit.backend.app.validation import JobRequestError

MAX_ID = 2**31 - 1
Skip = Query(0, ge=0, le=10**9)
Limit = Query(100, ge=1, le=1000)


def find_job(session: Session, job_id: int, kind: str | None = None) -> Job:
    """The job, of this kind when one is given, or a 404 naming what was asked for."""
    job = crud.get_job(session=session, job_id=job_id, kind=kind)
    if job is None:
        raise HTTPException(404, detail=f"no {kind or 'job'} {job_id}")
    return job


def queue_full(queued: int) -> HTTPException:
    return HTTPException(429, detail=f"{queued} jobs are queued, the most allowed (ROBAUDIT_MAX_QUEUED_JOBS): "
                                     "wait for some to start or cancel some, then try again")


def require_queue_room(session: Session, settings: Settings) -> None:
    """429 at once when the queue is full, before the request is validated. Only a shortcut: the cap
    itself is kept by the store (crud.create_job, crud.prepare_retry), atomically, so concurrent
    requests that all pass this check still cannot overshoot it."""
    queued = crud.count_jobs(session=session, status="queued")
    if queued >= settings.max_queued_jobs:
        raise queue_full(queued)


def job_page(session: Session, *, kind: str | None, status: str | None, skip: int, limit: int) -> dict[str, Any]:
    rows, count = crud.list_jobs(session=session, kind=kind, status=status, skip=skip, limit=limit)
    return {"data": [crud.job_public(j) for j in rows], "count": count}


@dataclass(frozen=True)
class JobKindRoutes:
    kind: str                                          # "training": the job kind, also its name in URLs
    schema: type[BaseModel]                            # the create request's body (has a `name`)
    # body -> the job's config; raises JobRequestError
    validate: Callable[[Any, Session, Settings], dict[str, Any]]
    create_doc: str
    list_doc: str
    read_doc: str
    # The checkpoints a job refers to, from its request (evaluations: the model and the surrogate).
    references: Callable[[Any], dict[str, int | None]] = lambda body: {}


def job_routes(spec: JobKindRoutes) -> APIRouter:
    """POST /{kind}s, GET /{kind}s and GET /{kind}s/{kind_id}, as one router."""
    kind, plural = spec.kind, f"{spec.kind}s"
    router = APIRouter(prefix=f"/{plural}", tags=[plural])

    def create(body: Any, session: SessionDep, settings: SettingsDep, celery: CeleryDep) -> Any:
        require_queue_room(session, settings)
        try:
            config = spec.validate(body, session, settings)
        except JobRequestError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        try:
            job = crud.create_job(session=session, kind=kind, config=config, name=body.name,
                                  max_attempts=settings.max_attempts, queue=settings.queue,
                                  max_queued=settings.max_queued_jobs, **spec.references(body))
        except crud.QueueFull as exc:
            raise queue_full(exc.queued) from None
        assert job.task_id is not None  # create_job always gives a new job its first task id
        error = dispatch_or_fail(celery, settings, session, job_id=job.id, task_id=job.task_id)
        if error:
            raise HTTPException(503, detail=f"{error}; job {job.id} was marked failed, retry it later")
        return crud.job_public(job)

    # FastAPI reads the body's model from the annotation, which differs per kind.
    create.__annotations__["body"] = spec.schema

    def list_(session: SessionDep, status: JobStatus | None = None, skip: int = Skip, limit: int = Limit) -> Any:
        return job_page(session, kind=kind, status=status, skip=skip, limit=limit)

    # The path parameter keeps its per-kind name ({training_id}) in URLs and in the OpenAPI document.
    def read(session: SessionDep, job_id: int = Path(alias=f"{kind}_id", ge=1, le=MAX_ID)) -> Any:
        return crud.job_public(find_job(session, job_id, kind))

    router.add_api_route("", create, methods=["POST"], name=f"create_{kind}", description=spec.create_doc,
                         response_model=JobPublic, status_code=201, dependencies=[WriteAccess],
                         responses={422: {"model": Message}, 429: {"model": Message}, 503: {"model": Message}})
    router.add_api_route("", list_, methods=["GET"], name=f"list_{plural}", description=spec.list_doc,
                         response_model=JobsPublic, dependencies=[ReadAccess])
    # ":int", so that a GET on a sibling path (/evaluations/import) is a 405, not a malformed id.
    router.add_api_route(f"/{{{kind}_id:int}}", read, methods=["GET"], name=f"read_{kind}", description=spec.read_doc,
                         response_model=JobPublic, dependencies=[ReadAccess], responses={404: {"model": Message}})
    return router
