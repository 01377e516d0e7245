"""What a report's JSON holds: the payload the report pages, the exports and the share link render.

A payload is assembled from the stored rows each time it is read (jobs, checkpoints, results);
nothing here writes. The share link's view is the same payload without per-sample data, server
paths or the report's own id: the share token unlocks one report's numbers and nothing else.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from robaudit.backend.app import crud, galleries
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.models import Checkpoint, Job, Report
from robaudit.frontend.report import export_payload
from robaudit.study import StudyModel, analyze

# Report fields a share-link holder does not see: the id and page URL lead to the rest of the service.
_UNSHARED_REPORT_KEYS = ("id", "url", "share_url")


def checkpoint_summary(*, session: Session, checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    """Checkpoint metadata for reports: method, label smoothing, training history."""
    if checkpoint is None:
        return None
    meta = checkpoint.meta or {}
    hp = meta.get("hyperparameters") or {}
    history: list[Any] = []
    if checkpoint.training_job_id:
        job = session.get(Job, checkpoint.training_job_id)
        history = list(job.metrics or []) if job else []
    if not history:
        metrics = meta.get("metrics") or {}
        history = list(metrics.get("history") or []) if isinstance(metrics, dict) else []
    return {"id": checkpoint.id, "name": checkpoint.name, "sha256": checkpoint.sha256, "arch": checkpoint.arch,
            "dataset": checkpoint.dataset, "method": checkpoint.method or meta.get("method"),
            "label_smoothing": hp.get("label_smoothing"), "eps": hp.get("eps"), "epochs": hp.get("epochs"),
            "hyperparameters": hp, "metrics": meta.get("metrics") or {}, "history": history,
            "source": checkpoint.source, "training_job_id": checkpoint.training_job_id,
            "created_at": checkpoint.created_at.isoformat()}


def get_report_payload(*, session: Session, report: Report, settings: Settings | None = None) -> dict[str, Any]:
    """{"report": {...}, "evaluations": [{id, status, checkpoint, results}]}; what pages and exports render.

    With ``settings`` each evaluation also brings a few of its adversarial examples (``gallery``, pictures
    as data URIs: the HTML export carries them inside). The share link's payload is made without.
    """
    evaluations = []
    for item in report.items:
        job = session.get(Job, item.job_id)
        if job is None:
            continue
        evaluations.append({
            "id": job.id, "name": job.name, "status": job.status, "config": job.config or {},
            "summary": job.summary or {}, "error": job.error,
            "checkpoint": checkpoint_summary(session=session, checkpoint=job.checkpoint),
            "results": crud.get_results(session=session, job_id=job.id) if job.status == "succeeded" else None,
            **({"gallery": galleries.examples(settings, job.id)} if settings is not None else {}),
        })
    payload: dict[str, Any] = {
        "report": {"id": report.id, "title": report.title, "created_at": report.created_at.isoformat(),
                   "url": f"/reports/{report.id}", "kind": report.kind},
        "evaluations": evaluations}
    if report.kind == "label-smoothing-study":
        payload["study"] = study_analysis(evaluations)
    return payload


def study_analysis(evaluations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """robaudit.study.analyze over a study report's models: one entry per checkpoint, all its results.

    Computed from the stored numbers every time the report is read, so the conclusion can never
    disagree with the tables next to it.
    """
    models: dict[int, StudyModel] = {}
    eps = None
    for ev in evaluations:
        ckpt, results = ev.get("checkpoint"), ev.get("results")
        if ckpt is None or results is None:
            continue
        eps = eps if eps is not None else (results.get("config", {}).get("eps") or [None])[0]
        model = models.get(ckpt["id"])
        if model is None:
            method = ckpt.get("method") or "unknown"
            hp = ckpt.get("hyperparameters") or {}
            delta = ckpt.get("label_smoothing") if method == "feature-scatter" else None
            model = models[ckpt["id"]] = StudyModel(
                name=ckpt.get("name") or f"checkpoint {ckpt['id']}", method=method, delta=delta,
                history=list(ckpt.get("history") or []), lr_milestones=list(hp.get("lr_milestones") or []))
        model.results.append(results)
    if not models or eps is None:
        return None
    return analyze(list(models.values()), float(eps))


def get_report_payload_by_token(session: Session, token: str) -> dict[str, Any] | None:
    """The payload of the one report this share token unlocks, or None."""
    if not token or len(token) > 64:
        return None
    report = session.scalar(select(Report).where(Report.share_token == token))
    return get_report_payload(session=session, report=report) if report else None


def shared_payload(session: Session, token: str) -> dict[str, Any] | None:
    """What the share link's holder sees: the report's aggregated numbers, as its exports carry them,
    without the report's id or page URL. None when the token unlocks nothing."""
    payload = get_report_payload_by_token(session, token)
    if payload is None:
        return None
    shared = export_payload(payload)
    shared["report"] = {k: v for k, v in shared["report"].items() if k not in _UNSHARED_REPORT_KEYS}
    return shared
