from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from sqlalchemy.orm import Session

from robaudit.backend.app import crud, reports
from robaudit.backend.app.api.deps import ReadAccess, SessionDep, WriteAccess
from robaudit.backend.app.schemas import Message, ReportCreate, ReportPublic, ReportsPublic
from robaudit.frontend import report as rendering

router = APIRouter(prefix="/reports", tags=["reports"])

ReportId = Path(min_length=1, max_length=16, pattern="^[0-9A-Za-z]+$")


@router.post("", response_model=ReportPublic, status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess],
             responses={422: {"model": Message}})
def create_report(body: ReportCreate, session: SessionDep) -> Any:
    """Save a comparison of evaluations; answers with its id, page URL and read-only share URL."""
    ids = list(dict.fromkeys(body.evaluation_ids))   # keep order, drop repeats
    missing = [i for i in ids if crud.get_job(session=session, job_id=i, kind="evaluation") is None]
    if missing:
        raise HTTPException(422, detail=f"no evaluation(s) {', '.join(map(str, missing))}")
    report = crud.create_report(session=session, title=body.title, evaluation_ids=ids, kind=body.kind)
    return crud.report_public(report)


@router.get("", response_model=ReportsPublic, dependencies=[ReadAccess])
def list_reports(session: SessionDep, skip: int = Query(0, ge=0, le=10**9),
                 limit: int = Query(100, ge=1, le=1000)) -> Any:
    """List saved reports, newest first."""
    rows, count = crud.list_reports(session=session, skip=skip, limit=limit)
    return {"data": [crud.report_public(r) for r in rows], "count": count}


def _payload(session: Session, report_id: str) -> dict[str, Any]:
    report = crud.get_report(session=session, report_id=report_id)
    if report is None:
        raise HTTPException(404, detail=f"no report {report_id}")
    return reports.get_report_payload(session=session, report=report)


@router.get("/{report_id}", dependencies=[ReadAccess], responses={404: {"model": Message}})
def read_report(session: SessionDep, report_id: str = ReportId) -> Any:
    """Get a report's payload: the report, and per evaluation its status, checkpoint metadata and results."""
    return JSONResponse(jsonable_encoder(_payload(session, report_id)))


@router.get("/{report_id}/export", dependencies=[ReadAccess],
            responses={200: {"content": {"text/html": {}, "text/csv": {}, "application/json": {}}},
                       404: {"model": Message}})
def export_report(session: SessionDep, report_id: str = ReportId,
                  format: Literal["html", "csv", "json"] = Query("html")) -> Any:
    """Download a report as self-contained HTML, CSV or JSON."""
    payload = jsonable_encoder(_payload(session, report_id))
    disposition = {"Content-Disposition": f'attachment; filename="report-{report_id}.{format}"'}
    if format == "json":
        # Exports carry aggregated numbers only: the per-sample bitsets stay on the server.
        return JSONResponse(jsonable_encoder(rendering.export_payload(payload)), headers=disposition)
    if format == "csv":
        return PlainTextResponse(rendering.report_csv(payload), media_type="text/csv", headers=disposition)
    return HTMLResponse(rendering.render_report_html(payload), headers=disposition)
