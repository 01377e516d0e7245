"""Engine, sessions, and migrations applied at start.

Both the API and the worker use this module; it imports neither FastAPI nor torch.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from robaudit.backend.app.core.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

_engines: dict[tuple[str, int], Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the API read while the worker writes; busy_timeout waits instead of "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def get_engine(settings: Settings) -> Engine:
    """One engine per URL per process (a forked worker child builds its own)."""
    key = (settings.sqlalchemy_url, os.getpid())
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            if settings.is_sqlite:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            engine = _engines[key] = make_engine(settings.sqlalchemy_url)
        return engine


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: escape % in URLs (e.g. options=-csearch_path%3D...).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def run_migrations(settings: Settings) -> None:
    """alembic upgrade head; on PostgreSQL under an advisory lock so replicas can start together."""
    engine = get_engine(settings)
    cfg = alembic_config(settings.sqlalchemy_url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(728364501)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def wait_for_db(settings: Settings, timeout_s: float = 300.0) -> None:
    """The template's prestart step: retry SELECT 1 until the database answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with get_engine(settings).connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
