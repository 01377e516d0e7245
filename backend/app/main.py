"""The FastAPI application: `create_app(settings)` (used by `robaudit serve`, tests and uvicorn --factory)."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from robaudit.backend.app import api_contract
from robaudit.backend.app.api.main import api_router
from robaudit.backend.app.body_guard import BodyGuard
from robaudit.backend.app.core.celery_app import make_celery
from robaudit.backend.app.core.config import API_V1_STR, Settings
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.core.security import resolve_api_token
from robaudit.backend.app.core.startup import StartupError, check_data_dir, migrate
from robaudit.backend.app.dispatch import Janitor
from robaudit.backend.app.security_headers import SecurityHeaders, add_docs
from robaudit.frontend.routes import mount_static
from robaudit.frontend.routes import router as pages_router


def custom_generate_unique_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None, *, janitor: bool = True) -> FastAPI:
    """Build the app: data folder, migrations applied, API token resolved, Celery client, janitor.

    Raises StartupError (one line: what is wrong, what to do) for an unwritable data folder or a
    database that cannot be opened."""
    settings = settings or Settings.from_env()
    check_data_dir(settings)
    migrate(settings)
    api_token = resolve_api_token(settings)
    celery = make_celery(settings)
    Session = session_factory(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = app.state.janitor = Janitor(celery, settings, Session) if janitor else None
        if sweeper:
            sweeper.start()
        try:
            yield
        finally:
            if sweeper:
                sweeper.stop()

    app = FastAPI(
        title="robaudit",
        summary="Robustness auditing for adversarially trained image classifiers",
        description="Upload or train checkpoints, run attack evaluations on workers, fetch results and "
                    "build shareable comparison reports. Write endpoints need `Authorization: Bearer <token>`.",
        version="0.1.0",
        generate_unique_id_function=custom_generate_unique_id,
        lifespan=lifespan,
        docs_url=None,     # add_docs serves /docs from local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.Session = Session
    app.state.celery = celery
    app.state.api_token = api_token
    # Added before CORS, so CORS stays the outer layer and its headers reach the 401 and 413 too.
    app.add_middleware(BodyGuard, api_prefix=API_V1_STR, api_token=api_token,
                       max_json_bytes=settings.max_json_bytes, max_import_bytes=settings.max_import_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(SecurityHeaders)
    app.include_router(api_router, prefix=API_V1_STR)
    api_contract.apply(app, reads_require_token=settings.reads_require_token)
    add_docs(app)
    app.include_router(pages_router)
    mount_static(app)
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory robaudit.backend.app.main:app_from_env` (the docker-compose api service)."""
    try:
        return create_app(Settings.from_env())
    except StartupError as exc:
        raise SystemExit(f"robaudit: error: {exc}") from None   # exit code 1, the line on stderr
