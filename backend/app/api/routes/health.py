from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import SettingsDep
from robaudit.backend.app.schemas import Health

router = APIRouter(tags=["health"])


def _broker_check(request: Request) -> tuple[bool, str]:
    settings = request.app.state.settings
    celery = request.app.state.celery
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        kind = "redis" if settings.broker_is_redis else "embedded (SQLite)"
        return True, f"{kind} broker reachable"
    except Exception as exc:
        return False, f"broker unreachable: {type(exc).__name__}: {str(exc)[:200]}"


@router.get("/health", response_model=Health)
def health(request: Request, settings: SettingsDep) -> Any:
    """Report the database, the broker, and the workers seen in the last minute."""
    workers: list[dict[str, Any]] = []
    try:
        with request.app.state.Session() as s:
            s.execute(text("SELECT 1"))
            db = {"ok": True, "detail": f"{s.get_bind().dialect.name} reachable"}
            seen = crud.list_workers_seen(session=s, within_s=max(60.0, 3 * settings.heartbeat_interval_s))
            workers = [{"hostname": w.hostname, "pid": w.pid, "queues": [q for q in w.queues.split(",") if q],
                        "device": w.device, "started_at": w.started_at, "last_seen": w.last_seen} for w in seen]
    except Exception as exc:
        db = {"ok": False, "detail": f"database unreachable: {type(exc).__name__}: {str(exc)[:200]}"}
    ok, detail = _broker_check(request)
    janitor = getattr(request.app.state, "janitor", None)
    problems = janitor.unclaimed.problems if janitor is not None else []
    status = "ok" if db["ok"] and ok and workers and not problems else "degraded"
    return {"status": status, "database": db, "broker": {"ok": ok, "detail": detail}, "workers": workers,
            "problems": problems}
