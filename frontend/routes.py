"""The dashboard's HTML pages, the share page, and plotly.js served from the installed package.

Pages read data through the service's own REST API, called in-process (``api_get``), so they see
exactly what the API allows: when the server requires the token for reads
(``ROBAUDIT_READS_REQUIRE_TOKEN``), a page forwards the browser's token and otherwise shows a
"set your token" message. The share page reads ``/shared/{token}``, which needs no API token: the
share token unlocks that one report, and the API leaves out what a link holder may not see.

Wire-up (backend/app/main.py): ``app.include_router(pages_router)`` and ``mount_static(app)``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import httpx
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from robaudit.data import DATASETS
from robaudit.evaluation import ATTACKS, PRESETS
from robaudit.evaluation.presets import AUDIT_AUTOATTACK_EXAMPLES
from robaudit.frontend import figures as F
from robaudit.frontend.report import EXPORT_CSP, render_report_html, report_csv
from robaudit.frontend.results_view import Model
from robaudit.frontend.templating import STATIC_DIR, environment, plotly_js_path
from robaudit.frontend.views import Chart, evaluation_view, report_view, shard_rows, shard_summary
from robaudit.models.preprocessing import PREPROCESSING
from robaudit.models.registry import architecture_names
from robaudit.norms import NORM_LABELS, NORMS
from robaudit.sinkhorn import SINKHORN_MODES
from robaudit.training import METHODS

API_PREFIX = "/api/v1"
TOKEN_COOKIE = "robaudit_token"
SHARE_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")

router = APIRouter(include_in_schema=False)


def mount_static(app: FastAPI) -> None:
    """Serve frontend/static at /static (CSS and the page scripts)."""
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")


# --------------------------------------------------------------------------- in-process API client

@dataclass
class ApiAnswer:
    status: int
    data: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        if isinstance(self.data, dict) and "detail" in self.data:
            d = self.data["detail"]
            return d if isinstance(d, str) else json.dumps(d)
        return f"HTTP {self.status}"


def _forwarded_auth(request: Request) -> dict[str, str]:
    auth = request.headers.get("authorization")
    if not auth:
        cookie = request.cookies.get(TOKEN_COOKIE)
        if cookie:
            auth = f"Bearer {unquote(cookie)}"
    return {"authorization": auth} if auth else {}


async def api_get(request: Request, path: str, **params: Any) -> ApiAnswer:
    """GET an /api/v1 endpoint of this same app, with the caller's token if it has one."""
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://robaudit.internal") as client:
        res = await client.get(API_PREFIX + path, params={k: v for k, v in params.items() if v is not None},
                               headers=_forwarded_auth(request))
    try:
        data = res.json()
    except ValueError:
        data = res.text
    return ApiAnswer(res.status_code, data)


# --------------------------------------------------------------------------- rendering helpers

def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def problem(answer: ApiAnswer, *, active: str, what: str) -> HTMLResponse:
    """A page for a failed API read: 401 asks for the token, 404 says what is missing."""
    if answer.status == 401:
        return render("needs_token.html", 401, active=active, page_title="API token needed",
                      message=answer.detail)
    title = "Not found" if answer.status == 404 else f"Could not load {what}"
    return render("error.html", answer.status if answer.status >= 400 else 502, active=active,
                  page_title=title, message=answer.detail, status=answer.status)


def _values(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)


@lru_cache(maxsize=1)
def form_options() -> dict[str, Any]:
    """Choices for the forms, from the science package's own registries."""
    datasets = [{"name": d.name, "default_eps": d.default_eps, "num_classes": d.num_classes,
                 "in_channels": d.in_channels, "size": d.size} for d in DATASETS.values()]
    preprocessing = [{"name": name, "describe": f"mean {_values(mean)}, std {_values(std)}"}
                     for name, (mean, std) in PREPROCESSING.items()]
    return {"architectures": architecture_names(), "datasets": datasets, "preprocessing": preprocessing,
            "methods": list(METHODS),
            "presets": list(PRESETS), "attacks": list(ATTACKS),
            "norms": [{"name": n, "label": NORM_LABELS[n]} for n in NORMS], "sinkhorn_modes": list(SINKHORN_MODES),
            "audit_autoattack_examples": AUDIT_AUTOATTACK_EXAMPLES}


# --------------------------------------------------------------------------- static assets

@router.get("/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly Python package: no CDN, so the dashboard works offline."""
    return FileResponse(plotly_js_path(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


# --------------------------------------------------------------------------- pages

@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/jobs", status_code=307)


@router.get("/checkpoints", response_class=HTMLResponse)
async def checkpoints_page(request: Request) -> HTMLResponse:
    options = await run_in_threadpool(form_options)
    limits = {"max_upload_mb": getattr(getattr(request.app.state, "settings", None), "max_upload_mb", None)}
    return render("checkpoints.html", active="checkpoints", page_title="Checkpoints", options=options,
                  limits=limits)


@router.get("/datasets", response_class=HTMLResponse)
async def datasets_page(request: Request) -> HTMLResponse:
    settings = getattr(request.app.state, "settings", None)
    limits = {"max_upload_mb": getattr(settings, "max_dataset_upload_mb", None),
              "max_images": getattr(settings, "max_dataset_images", None)}
    return render("datasets.html", active="datasets", page_title="Datasets", limits=limits)


async def _own_datasets(request: Request) -> list[dict[str, Any]]:
    """Uploaded test sets for the new-evaluation form's picker (none when they cannot be read)."""
    answer = await api_get(request, "/datasets", limit=1000)
    return (answer.data.get("data") or []) if answer.ok and isinstance(answer.data, dict) else []


@router.get("/trainings/new", response_class=HTMLResponse)
async def new_training_page(request: Request) -> HTMLResponse:
    options = await run_in_threadpool(form_options)
    return render("train_new.html", active="train", page_title="New training", options=options)


@router.get("/evaluations/new", response_class=HTMLResponse)
async def new_evaluation_page(request: Request, checkpoint: int | None = Query(None, ge=1),
                              dataset: int | None = Query(None, ge=1)) -> HTMLResponse:
    options = await run_in_threadpool(form_options)
    return render("evaluate_new.html", active="evaluate", page_title="New evaluation", options=options,
                  preselect=checkpoint, own_datasets=await _own_datasets(request), preselect_dataset=dataset)


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request) -> HTMLResponse:
    return render("jobs.html", active="jobs", page_title="Jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: int) -> Response:
    job = await api_get(request, f"/jobs/{job_id}")
    if not job.ok:
        return problem(job, active="jobs", what=f"job {job_id}")
    if job.data.get("kind") == "evaluation":
        return RedirectResponse(f"/evaluations/{job_id}", status_code=307)
    chart = await _training_chart(request, job.data)
    return render("job.html", active="jobs", page_title=f"Training {job_id}", job=job.data, training_chart=chart,
                  **_shard_context(job.data))


def _shard_context(job: dict[str, Any]) -> dict[str, Any]:
    """The status card's shard table (_job_card.html): the job's shards and a one-line count."""
    rows = shard_rows(job)
    return {"shards": rows, "shard_summary": shard_summary(rows)}


async def _training_chart(request: Request, job: dict[str, Any]) -> Chart:
    label = job.get("name") or f"training {job.get('id')}"
    cfg = (job.get("config") or {}).get("train_config") or {}
    model = Model(label=label, checkpoint={"history": job.get("metrics") or [], "method": cfg.get("method"),
                                           "hyperparameters": cfg})
    fig = F.training_curves(model)
    return Chart(id="training-curves", title="Training curves", figure=fig,
                 caption="Clean and PGD-20 test accuracy after each epoch; dotted lines mark learning-rate changes.",
                 empty="No epoch has finished yet: the curves appear after the first epoch.",
                 traces=len(fig["data"]) if fig else 0)


@router.get("/ui/jobs/{job_id}/training-figure")
async def training_figure(request: Request, job_id: int) -> JSONResponse:
    """The training-curves figure of a training job, for the job page's live refresh."""
    job = await api_get(request, f"/jobs/{job_id}")
    if not job.ok:
        return JSONResponse({"detail": job.detail}, status_code=job.status)
    chart = await _training_chart(request, job.data)
    return JSONResponse({"figure": chart.figure, "epochs": len(job.data.get("metrics") or [])},
                        headers={"Cache-Control": "no-store"})


async def _evaluation_payload(request: Request, evaluation_id: int) -> tuple[ApiAnswer, dict[str, Any] | None]:
    """An evaluation as the report payload shapes it: job fields, checkpoint summary, results."""
    job = await api_get(request, f"/evaluations/{evaluation_id}")
    if not job.ok:
        return job, None
    ev = dict(job.data)
    ck_id = ev.get("checkpoint_id")
    checkpoint: dict[str, Any] = {}
    if ck_id:
        ck = await api_get(request, f"/checkpoints/{ck_id}")
        if ck.ok:
            checkpoint = _checkpoint_summary(ck.data)
            tj = checkpoint.get("training_job_id")
            if tj and not checkpoint.get("history"):
                training = await api_get(request, f"/jobs/{tj}")
                if training.ok:
                    checkpoint["history"] = training.data.get("metrics") or []
    ev["checkpoint"] = checkpoint
    ev["results"] = None
    if ev.get("has_results") or ev.get("status") == "succeeded":
        res = await api_get(request, f"/evaluations/{evaluation_id}/results")
        if res.ok and isinstance(res.data, dict):
            ev["results"] = res.data
    return job, ev


def _checkpoint_summary(ck: dict[str, Any]) -> dict[str, Any]:
    """GET /checkpoints/{id} in the shape report payloads use (method, δ, history at the top)."""
    meta = ck.get("metadata") or {}
    hp = meta.get("hyperparameters") or {}
    metrics = meta.get("metrics") or {}
    return {**ck, "method": ck.get("method") or meta.get("method"), "hyperparameters": hp,
            "label_smoothing": hp.get("label_smoothing"), "metrics": metrics,
            "history": list(metrics.get("history") or []) if isinstance(metrics, dict) else []}


@router.get("/evaluations/{evaluation_id}", response_class=HTMLResponse)
async def evaluation_page(request: Request, evaluation_id: int) -> HTMLResponse:
    answer, ev = await _evaluation_payload(request, evaluation_id)
    if ev is None:
        return problem(answer, active="jobs", what=f"evaluation {evaluation_id}")
    view, charts = evaluation_view(ev)
    return render("evaluation.html", active="jobs", page_title=f"Evaluation {evaluation_id}: {view.label}",
                  job=ev, view=view, charts=charts, **_shard_context(ev))


@router.get("/compare", response_class=HTMLResponse)
async def compare_page(request: Request, ids: list[str] = Query(default=[])) -> HTMLResponse:
    wanted = _parse_ids(ids)
    listing = await api_get(request, "/evaluations", status="succeeded", limit=500)
    if not listing.ok:
        return problem(listing, active="compare", what="the evaluations")
    evaluations = listing.data.get("data") or []
    names = await _checkpoint_names(request)
    preview = None
    missing: list[int] = []
    if wanted:
        payload_evs = []
        for eid in wanted[:50]:
            answer, ev = await _evaluation_payload(request, eid)
            if ev is None:
                missing.append(eid)
            else:
                payload_evs.append(ev)
        preview = report_view({"report": {"title": "Comparison preview"}, "evaluations": payload_evs}, prefix="cmp")
    return render("compare.html", active="compare", page_title="Compare evaluations", evaluations=evaluations,
                  names=names, selected=wanted, preview=preview, missing=missing)


def _parse_ids(raw: list[str]) -> list[int]:
    out: list[int] = []
    for chunk in raw:
        for part in re.split(r"[,\s]+", chunk or ""):
            if part.isdigit() and int(part) > 0 and int(part) not in out:
                out.append(int(part))
    return out


async def _checkpoint_names(request: Request) -> dict[int, str]:
    answer = await api_get(request, "/checkpoints", limit=1000)
    if not answer.ok:
        return {}
    return {c["id"]: c.get("name") or f"checkpoint {c['id']}" for c in answer.data.get("data") or []}


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(request: Request) -> HTMLResponse:
    listing = await api_get(request, "/reports", limit=200)
    if not listing.ok:
        return problem(listing, active="reports", what="the reports")
    return render("reports.html", active="reports", page_title="Reports", reports=listing.data.get("data") or [])


@router.get("/reports/{report_id}", response_class=HTMLResponse)
async def report_page(request: Request, report_id: str) -> HTMLResponse:
    if not re.fullmatch(r"[0-9A-Za-z]{1,16}", report_id):
        return render("error.html", 404, active="reports", page_title="Not found",
                      message=f"no report {report_id}", status=404)
    answer = await api_get(request, f"/reports/{report_id}")
    if not answer.ok:
        return problem(answer, active="reports", what=f"report {report_id}")
    # The share link is a secret: the API shows it only to the token's holder (401), and a revoked
    # report has none (404).
    share = await api_get(request, f"/reports/{report_id}/share")
    share_state = "shared" if share.ok else "revoked" if share.status == 404 else "hidden"
    view = report_view(answer.data)
    return render("report.html", active="reports", page_title=view.title, view=view, report_id=report_id,
                  share_url=share.data["share_url"] if share.ok else "", share_state=share_state)


# --------------------------------------------------------------------------- the share page

async def _shared_report(request: Request, token: str) -> dict[str, Any] | None:
    """The share link's view of its report (GET /shared/{token}), or None when the token unlocks none."""
    # Checked before the call as well: the token becomes part of the API path.
    if not SHARE_TOKEN_RE.fullmatch(token):
        return None
    answer = await api_get(request, f"/shared/{token}")
    return answer.data if answer.ok else None   # 404: no report is shared under this token


def _not_shared() -> HTMLResponse:
    return render("share_missing.html", 404, page_title="Report not found")


@router.get("/share/{token}", response_class=HTMLResponse)
async def share_page(request: Request, token: str) -> HTMLResponse:
    """A read-only report for whoever holds the link: no navigation, no API calls, no token."""
    shared = await _shared_report(request, token)
    if shared is None:
        return _not_shared()
    view = report_view(shared)
    response = render("share.html", page_title=view.title, view=view, token=token)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


@router.get("/share/{token}/export")
async def share_export(request: Request, token: str,
                       format: str = Query("html", pattern="^(html|csv|json)$")) -> Response:
    """The shared report as a file (same exports as the API's, reachable with the share token only)."""
    shared = await _shared_report(request, token)
    if shared is None:
        return _not_shared()
    headers = {"Content-Disposition": f'attachment; filename="shared-report.{format}"',
               "Referrer-Policy": "no-referrer"}
    if format == "json":
        return JSONResponse(shared, headers=headers)
    if format == "csv":
        return PlainTextResponse(await run_in_threadpool(report_csv, shared), media_type="text/csv", headers=headers)
    return HTMLResponse(await run_in_threadpool(render_report_html, shared),
                        headers={**headers, "Content-Security-Policy": EXPORT_CSP})
