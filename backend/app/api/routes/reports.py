from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy.orm import Session

from robaudit.backend.app import crud, reports
from robaudit.backend.app.api.deps import HasToken, ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.security import share_token
from robaudit.backend.app.models import Report
from robaudit.backend.app.schemas import Message, ReportCreate, ReportPublic, ReportsPublic, ShareLink
from robaudit.frontend import report as rendering
from robaudit.frontend.report import EXPORT_CSP

router = APIRouter(prefix="/reports", tags=["reports"])

ReportId = Path(min_length=1, max_length=16, pattern="^[0-9A-Za-z]+$")
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": Message, "description": "No or wrong API token."}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message, "description": "No such report."}}


@router.post("", response_model=ReportPublic, status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess],
             responses={422: {"model": Message}})
def create_report(body: ReportCreate, session: SessionDep, settings: SettingsDep) -> Any:
    """Save a comparison of evaluations; answers with its id, page URL and read-only share URL."""
    ids = list(dict.fromkeys(body.evaluation_ids))   # keep order, drop repeats
    missing = [i for i in ids if crud.get_job(session=session, job_id=i, kind="evaluation") is None]
    if missing:
        raise HTTPException(422, detail=f"no evaluation(s) {', '.join(map(str, missing))}")
    report = crud.create_report(session=session, title=body.title, evaluation_ids=ids, kind=body.kind)
    return crud.report_public(report, with_share=True, public_url=settings.public_url)


@router.get("", response_model=ReportsPublic, dependencies=[ReadAccess])
def list_reports(session: SessionDep, settings: SettingsDep, with_token: HasToken,
                 skip: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=1000)) -> Any:
    """List saved reports, newest first. `share_url` is null unless the request carries the API token."""
    rows, count = crud.list_reports(session=session, skip=skip, limit=limit)
    return {"data": [crud.report_public(r, with_share=with_token, public_url=settings.public_url) for r in rows],
            "count": count}


def _report(session: Session, report_id: str) -> Report:
    report = crud.get_report(session=session, report_id=report_id)
    if report is None:
        raise HTTPException(404, detail=f"no report {report_id}")
    return report


def _payload(session: Session, report_id: str, settings: Settings) -> dict[str, Any]:
    return reports.get_report_payload(session=session, report=_report(session, report_id), settings=settings)


@router.get("/{report_id}", dependencies=[ReadAccess], responses={404: {"model": Message}})
def read_report(session: SessionDep, settings: SettingsDep, report_id: str = ReportId) -> Any:
    """Get a report's payload: the report, and per evaluation its status, checkpoint metadata, results and a
    few adversarial examples (``gallery``, PNG data URIs)."""
    return JSONResponse(jsonable_encoder(_payload(session, report_id, settings)))


@router.get("/{report_id}/export", dependencies=[ReadAccess],
            responses={200: {"content": {"text/html": {}, "text/csv": {}, "application/json": {}}},
                       404: {"model": Message}})
def export_report(session: SessionDep, settings: SettingsDep, report_id: str = ReportId,
                  format: Literal["html", "csv", "json"] = Query("html")) -> Any:
    """Download a report as self-contained HTML, CSV or JSON."""
    payload = jsonable_encoder(_payload(session, report_id, settings))
    disposition = {"Content-Disposition": f'attachment; filename="report-{report_id}.{format}"'}
    if format == "json":
        # Exports carry aggregated numbers only: the per-sample bitsets stay on the server.
        return JSONResponse(jsonable_encoder(rendering.export_payload(payload)), headers=disposition)
    if format == "csv":
        return PlainTextResponse(rendering.report_csv(payload), media_type="text/csv", headers=disposition)
    return HTMLResponse(rendering.render_report_html(payload),
                        headers={**disposition, "Content-Security-Policy": EXPORT_CSP})


@router.delete("/{report_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess],
               responses={**UNAUTHORIZED, **NOT_FOUND})
def delete_report(session: SessionDep, report_id: str = ReportId) -> Response:
    """Delete a report (its evaluations stay); its share link stops working at once."""
    crud.delete_report(session=session, report=_report(session, report_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{report_id}/share", response_model=ShareLink, dependencies=[WriteAccess],
            responses={**UNAUTHORIZED, 404: {"model": Message, "description": "No such report, or its link "
                                                                             "was revoked."}})
def read_share_link(session: SessionDep, settings: SettingsDep, report_id: str = ReportId) -> Any:
    """Get the report's share link. Needs the API token even when reads are open: the link is a secret."""
    url = crud.share_url(_report(session, report_id), settings.public_url)
    if url is None:
        raise HTTPException(404, detail=f"report {report_id} has no share link (it was revoked)")
    return {"share_url": url}


@router.post("/{report_id}/share", response_model=ShareLink, dependencies=[WriteAccess],
             responses={**UNAUTHORIZED, **NOT_FOUND})
def new_share_link(session: SessionDep, settings: SettingsDep, report_id: str = ReportId) -> Any:
    """Make a new share link for the report: it replaces the current one (rotate), whose URL answers 404
    from now on, or gives a revoked report a link again."""
    report = crud.set_share_token(session=session, report=_report(session, report_id), token=share_token())
    return {"share_url": crud.share_url(report, settings.public_url)}


@router.delete("/{report_id}/share", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess],
               responses={**UNAUTHORIZED, **NOT_FOUND})
def revoke_share_link(session: SessionDep, report_id: str = ReportId) -> Response:
    """Revoke the report's share link: its URL answers 404 from now on. Revoking twice is not an error."""
    crud.set_share_token(session=session, report=_report(session, report_id), token=None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
