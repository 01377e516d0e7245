from __future__ import annotations

from typing import Any, Literal

from fastapi import HTTPException, Path, Query
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from robaudit.backend.app import crud, galleries
from robaudit.backend.app.api.deps import ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.api.job_routes import MAX_ID, JobKindRoutes, find_job, job_routes
from robaudit.backend.app.schemas import EvaluationCreate, EvaluationImport, JobPublic, Message
from robaudit.backend.app.summaries import results_summary
from robaudit.backend.app.validation import validate_evaluation
from robaudit.evaluation import results_to_csv
from robaudit.evaluation.results_check import ResultsError, check_results
from robaudit.evaluation.robustbench import model_info
from robaudit.frontend.views import evaluation_view

# Results pushed from elsewhere may cover more points than this service would evaluate itself.
MAX_IMPORTED_POINTS = 1_000_000

router = job_routes(JobKindRoutes(
    kind="evaluation", schema=EvaluationCreate, validate=validate_evaluation,
    references=lambda body: {"checkpoint_id": body.checkpoint_id, "surrogate_id": body.surrogate_id,
                             "dataset_id": body.dataset_id},
    create_doc="Queue an evaluation of a checkpoint (a preset, or attacks x eps x steps).",
    list_doc="List evaluation jobs, newest first.",
    read_doc="Get an evaluation job: status, progress, ETA, headline numbers."))


@router.get("/{evaluation_id}/results", dependencies=[ReadAccess],
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "The evaluation engine's results JSON (or its CSV, or a "
                                            "RobustBench model-info JSON)"},
                       404: {"model": Message}, 409: {"model": Message}})
def read_evaluation_results(session: SessionDep, evaluation_id: int = Path(ge=1, le=MAX_ID),
                            format: Literal["json", "csv", "robustbench"] = Query("json")) -> Any:
    """Get an evaluation's results JSON (schema: docs/results-schema.md); ?format=csv for CSV;
    ?format=robustbench for a RobustBench model-info JSON (docs/robustbench.md)."""
    job = find_job(session, evaluation_id, "evaluation")
    results = crud.get_results(session=session, job_id=evaluation_id)
    if results is None:
        raise HTTPException(409, detail=f"evaluation {evaluation_id} has no results yet (status: {job.status})")
    if format == "csv":
        disposition = f'attachment; filename="evaluation-{evaluation_id}.csv"'
        return PlainTextResponse(results_to_csv(results), media_type="text/csv",
                                 headers={"Content-Disposition": disposition})
    if format == "robustbench":
        disposition = f'attachment; filename="evaluation-{evaluation_id}-robustbench.json"'
        # An imported evaluation has no stored checkpoint; its results may carry the metadata.
        metadata = ({**(job.checkpoint.meta or {}), "arch": job.checkpoint.arch} if job.checkpoint is not None
                    else (results.get("checkpoint") or {}).get("metadata") or {})
        return JSONResponse(model_info(results, metadata), headers={"Content-Disposition": disposition})
    return JSONResponse(results)


def _no_gallery(job: Any, evaluation_id: int) -> HTTPException:
    if job.status != "succeeded":
        return HTTPException(409, detail=f"evaluation {evaluation_id} has no results yet (status: {job.status})")
    return HTTPException(404, detail=f"evaluation {evaluation_id} kept no adversarial examples (run with a "
                                     "gallery of at least 1 point, the default; imported results have none)")


@router.get("/{evaluation_id}/adversarial.npz", dependencies=[ReadAccess],
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "The gallery's adversarial examples as .npz: index, clean, "
                                            "adversarial, labels, predictions, attack, eps, step"},
                       404: {"model": Message}, 409: {"model": Message}})
def read_adversarial_examples(session: SessionDep, settings: SettingsDep,
                              evaluation_id: int = Path(ge=1, le=MAX_ID)) -> Any:
    """Download the adversarial examples the evaluation kept (docs/results-schema.md, "Adversarial gallery")."""
    job = find_job(session, evaluation_id, "evaluation")
    path = galleries.npz_path(settings, evaluation_id)
    if path is None:
        raise _no_gallery(job, evaluation_id)
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"evaluation-{evaluation_id}-adversarial.npz")


@router.get("/{evaluation_id}/gallery", dependencies=[ReadAccess],
            responses={404: {"model": Message}, 409: {"model": Message}})
def read_gallery_page(session: SessionDep, settings: SettingsDep, evaluation_id: int = Path(ge=1, le=MAX_ID),
                      offset: int = Query(0, ge=0, le=10_000_000),
                      limit: int = Query(24, ge=1, le=galleries.PAGE_MAX),
                      attack: str | None = Query(None, max_length=100),
                      true_class: int | None = Query(None, alias="class", ge=0, le=1_000_000),
                      missed: bool = Query(False, description="only points PGD-20 missed but an attack broke")) -> Any:
    """One page of the adversarial-example gallery: per point its index, attack, eps, step, true and
    predicted class (with names), and clean | adversarial | magnified perturbation as PNG data URIs."""
    job = find_job(session, evaluation_id, "evaluation")
    found = galleries.page(settings, evaluation_id, offset=offset, limit=limit, attack=attack,
                           true_class=true_class, missed=missed)
    if found is None:
        raise _no_gallery(job, evaluation_id)
    return found


@router.post("/import", dependencies=[WriteAccess], response_model=JobPublic, status_code=201,
             responses={422: {"model": Message}, 413: {"model": Message}})
def import_evaluation(body: EvaluationImport, session: SessionDep) -> Any:
    """Store results made elsewhere (robaudit.audit(), `robaudit evaluate --out`) as a finished evaluation.

    It then appears in lists, comparisons and reports like any other, marked as imported. The results
    are checked field by field first (docs/results-schema.md), and must render as a page: nothing is
    stored otherwise.
    """
    try:
        results = check_results(body.results, max_points=MAX_IMPORTED_POINTS)
        evaluation_view({"id": 0, "status": "succeeded", "name": body.name, "checkpoint": {}, "results": results})
    except ResultsError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    except Exception as exc:  # a shape the checks let through but the pages cannot draw
        detail = f"the results cannot be shown: {type(exc).__name__}: {str(exc)[:200]}"
        raise HTTPException(422, detail=detail) from None
    job = crud.import_evaluation(session=session, results=results, name=body.name, summary=results_summary(results))
    return crud.job_public(job)
