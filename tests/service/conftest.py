"""Shared fixtures for the service tests: settings for SQLite or PostgreSQL (a fresh schema per
test), Redis queues unique to the test session, real worker processes, a live API over HTTP,
and small checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
import redis
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from inline_jobs import InlineDispatch, run_inline  # noqa: F401  (re-exported for the service tests)
from serve_process import free_port
from sqlalchemy import func, select

import robaudit
from robaudit.backend.app import crud
from robaudit.backend.app.core import db as dbmod
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.main import create_app
from robaudit.data import dataset_info
from robaudit.launch.service import EmbeddedService
from robaudit.launch.worker import celery_argv, worker_env
from robaudit.models import CheckpointMetadata, build_model, save_checkpoint

TOKEN = "robaudit-test-token"
PG_URL = os.environ.get("ROBAUDIT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ROBAUDIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SESSION_TAG = f"{os.getpid():x}"
FINISHED = ("succeeded", "failed", "cancelled")


def _service_missing(what: str, exc: Exception):
    # On CI the services are started by .ci/run: a missing one is a failure, not a skip.
    message = f"{what} not reachable ({type(exc).__name__}: {exc})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _pg_admin_url() -> str:
    return PG_URL.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def pg_url():
    """A DATABASE_URL on PostgreSQL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"robaudit_t_{SESSION_TAG}_{uuid.uuid4().hex[:6]}"
    try:
        with psycopg.connect(_pg_admin_url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        _service_missing("PostgreSQL", exc)
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    for key, engine in list(dbmod._engines.items()):
        if schema in key[0]:
            engine.dispose()
            dbmod._engines.pop(key, None)
    with psycopg.connect(_pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def redis_url():
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        _service_missing("Redis", exc)
    return REDIS_URL


def make_settings(data_dir: Path, *, database_url: str | None = None, redis_url: str | None = None,
                  **overrides) -> Settings:
    values = dict(data_dir=data_dir, database_url=database_url, redis_url=redis_url, api_token=TOKEN,
                  # A queue of our own, so parallel test runs never take each other's tasks.
                  queue=f"robaudit-test-{SESSION_TAG}-{uuid.uuid4().hex[:6]}",
                  heartbeat_interval_s=1.0, janitor_interval_s=1.0, stale_after_s=6.0,
                  progress_interval_s=0.2, validate_timeout_s=60.0, device="cpu",
                  # One thread per job: on a shared 2-core machine two OpenMP threads oversubscribe.
                  torch_threads=1)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_settings(request, tmp_path):
    """Settings on SQLite, then on PostgreSQL (embedded SQL broker either way)."""
    if request.param == "sqlite":
        return make_settings(tmp_path / "data")
    return make_settings(tmp_path / "data", database_url=request.getfixturevalue("pg_url"))


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    """SQLite in a temp folder; a module overrides this fixture to change a setting."""
    return make_settings(tmp_path / "data")


@pytest.fixture
def client(settings, auth):
    """The app in-process (no janitor thread), with the token."""
    with TestClient(create_app(settings, janitor=False), headers=auth) as c:
        yield c


def save_smallcnn(path: Path, *, seed: int = 0, dataset: str = "mnist10k", metadata: bool = True) -> Path:
    """A randomly initialised SmallCNN as a robaudit checkpoint (or a bare .pt state_dict)."""
    info = dataset_info(dataset)
    torch.manual_seed(seed)
    model = build_model("smallcnn", num_classes=info.num_classes, in_channels=info.in_channels,
                        mean=info.mean, std=info.std)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not metadata:
        torch.save(model.state_dict(), path)
        return path
    meta = CheckpointMetadata(arch="smallcnn", num_classes=info.num_classes, in_channels=info.in_channels,
                              mean=list(info.mean), std=list(info.std), dataset=dataset, input_size=info.size,
                              method="standard", hyperparameters={"label_smoothing": 0.0})
    return save_checkpoint(path, model, meta)


class WorkerProcess:
    """A real `celery worker` (prefork, -c 1) in its own process group, as `robaudit serve` runs it."""

    def __init__(self, settings: Settings, name: str, log_path: Path):
        self.settings, self.name, self.log_path = settings, name, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.settings.ensure_dirs()
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(celery_argv(self.settings, hostname=self.name),
                                     env=worker_env(self.settings, self.name), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        Session = session_factory(self.settings)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited: {self.log_path.read_text()[-3000:]}"
            with Session() as s:
                if any(w.hostname == self.name and w.pid == self.proc.pid
                       for w in crud.list_workers_seen(session=s, within_s=30)):
                    return
            time.sleep(0.3)
        raise AssertionError(f"worker {self.name} not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: parent and pool child die at once, nothing is acked."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGQUIT)
                self.proc.wait(15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()


class LiveAPI:
    """The real app under uvicorn on a free port, in a thread of the test process."""

    def __init__(self, settings: Settings):
        self.service = EmbeddedService(settings, port=free_port(), worker=False, log_level="warning")

    def __enter__(self) -> httpx.Client:
        self.service.start_background()
        self.client = httpx.Client(base_url=self.service.url + "/api/v1", timeout=120.0,
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.service.stop()


def count_rows(settings: Settings, model, **where) -> int:
    """How many rows of ``model`` match ``where`` (column=value)."""
    with session_factory(settings)() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return s.scalar(stmt)


def wait_job(client: httpx.Client, job_id: int, *, timeout: float = 180.0, until=FINISHED) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.3)


def upload(client: httpx.Client, path: Path, **fields) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/checkpoints", files={"file": (path.name, fh, "application/octet-stream")},
                           data=fields)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A SmallCNN trained for a few seconds (most test points correct), so attacks have correct points to work on."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # much faster than 2 OpenMP threads on a busy 2-core machine
    try:
        torch.manual_seed(0)
        model = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0])
        x, y = robaudit.load_dataset("mnist10k", "train")
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)   # one pass over 2,048 digits: ~85% clean
        model.train()
        for i in range(0, 2048, 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard",
                              hyperparameters={"label_smoothing": 0.0, "epochs": 2})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "trained.safetensors", model.eval(), meta)
