from __future__ import annotations

from typing import Any, Literal

from fastapi import HTTPException, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import ReadAccess, SessionDep
from robaudit.backend.app.api.job_routes import MAX_ID, JobKindRoutes, find_job, job_routes
from robaudit.backend.app.schemas import EvaluationCreate, Message
from robaudit.backend.app.validation import validate_evaluation
from robaudit.evaluation import results_to_csv

router = job_routes(JobKindRoutes(
    kind="evaluation", schema=EvaluationCreate, validate=validate_evaluation,
    references=lambda body: {"checkpoint_id": body.checkpoint_id, "surrogate_id": body.surrogate_id},
    create_doc="Queue an evaluation of a checkpoint (a preset, or attacks x eps x steps).",
    list_doc="List evaluation jobs, newest first.",
    read_doc="Get an evaluation job: status, progress, ETA, headline numbers."))


@router.get("/{evaluation_id}/results", dependencies=[ReadAccess],
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "The evaluation engine's results JSON (or its CSV)"},
                       404: {"model": Message}, 409: {"model": Message}})
def read_evaluation_results(session: SessionDep, evaluation_id: int = Path(ge=1, le=MAX_ID),
                            format: Literal["json", "csv"] = Query("json")) -> Any:
    """Get an evaluation's results JSON (schema: docs/results-schema.md); ?format=csv for CSV."""
    job = find_job(session, evaluation_id, "evaluation")
    results = crud.get_results(session=session, job_id=evaluation_id)
    if results is None:
        raise HTTPException(409, detail=f"evaluation {evaluation_id} has no results yet (status: {job.status})")
    if format == "csv":
        disposition = f'attachment; filename="evaluation-{evaluation_id}.csv"'
        return PlainTextResponse(results_to_csv(results), media_type="text/csv",
                                 headers={"Content-Disposition": disposition})
    return JSONResponse(results)
