"""The embedded service: the API (uvicorn) plus one `celery worker` subprocess, stopped together.

Used by `robaudit serve` (API in the foreground) and by `robaudit demo` and `robaudit study`
(API in a thread while the command drives it over HTTP: ``drive_embedded``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.core.startup import check_data_dir
from robaudit.launch.client import Display
from robaudit.launch.worker import celery_argv, worker_env
from robaudit.worker.procs import EXIT_WITH_ENV


def settings_for(data_dir: str | None) -> Settings:
    """Settings from the environment, data in ``data_dir`` (default $ROBAUDIT_DATA_DIR, else ./var)."""
    return Settings.from_env(data_dir=Path(data_dir or os.environ.get("ROBAUDIT_DATA_DIR") or "./var"))


class EmbeddedService:
    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, worker: bool = True,
                 worker_name: str = "embedded@localhost", log_level: str = "info"):
        self.settings, self.host, self.port = settings, host, port
        self.with_worker, self.worker_name, self.log_level = worker, worker_name, log_level
        self.worker: subprocess.Popen | None = None
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        """The API token (after start: a generated one is in the data folder by then)."""
        return self.settings.api_token or self.settings.token_file.read_text().strip()

    @property
    def worker_log(self) -> Path:
        return self.settings.data_dir / "worker.log"

    def build_server(self) -> uvicorn.Server:
        # Deliberately here: `robaudit` imports every command's module to register it, and the API
        # (routes, pages, Plotly) should load only when a service actually starts.
        from robaudit.backend.app.main import create_app

        app = create_app(self.settings)   # migrations applied, token resolved (printed if new)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level=self.log_level,
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        return self.server

    def start_worker(self, log_file=None) -> None:
        if not self.with_worker:
            return
        # Own session/process group: Ctrl-C reaches us, not the worker, and we stop the whole group.
        self.worker = subprocess.Popen(celery_argv(self.settings, hostname=self.worker_name,
                                                   loglevel="WARNING" if log_file is None else "INFO"),
                                       env={**worker_env(self.settings, self.worker_name),
                                            EXIT_WITH_ENV: str(os.getpid())},
                                       start_new_session=True, stdout=log_file, stderr=log_file)

    def stop_worker(self, timeout: float = 5.0) -> None:
        """Stop the worker within about ``timeout`` seconds, then put what it was running back in the queue.

        Cold shutdown: a running job stops now (waiting for a 48-hour job is no shutdown). Its row goes
        back to queued at no attempt's cost, and it resumes from its stored batches when a worker takes
        it again. A worker whose own shutdown hangs (seen: blocked on a pool semaphore) is killed.
        """
        proc, self.worker = self.worker, None
        if proc is None or proc.poll() is not None:
            return
        try:
            # The first SIGQUIT starts Celery's soft shutdown (worker_soft_shutdown_timeout lets a task run on);
            # a second one during it cancels the running task at once.
            os.kill(proc.pid, signal.SIGQUIT)
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGQUIT)
                proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        except ProcessLookupError:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the pool children, whatever state they are in
        except ProcessLookupError:
            pass
        proc.wait()
        self.release_interrupted()

    def release_interrupted(self) -> None:
        from robaudit.backend.app.core.celery_app import make_celery
        from robaudit.backend.app.core.db import session_factory
        from robaudit.backend.app.dispatch import release_interrupted_work

        try:
            released = release_interrupted_work(make_celery(self.settings), self.settings,
                                                session_factory(self.settings), self.worker_name)
        except Exception as exc:   # database gone too: the next worker start requeues them (at an attempt's cost)
            print(f"robaudit: could not requeue the interrupted jobs: {exc}", file=sys.stderr, flush=True)
            return
        if released:
            print(f"robaudit: stopped; back in the queue, resuming at the next start: {', '.join(released)}",
                  file=sys.stderr, flush=True)

    # Foreground (serve) -------------------------------------------------------------------
    def serve_forever(self) -> None:
        server = self.server or self.build_server()
        self.start_worker()
        try:
            server.run()
        finally:
            self.stop_worker()

    # Background (demo, tests) -------------------------------------------------------------
    def start_background(self, log_file=None, wait_s: float = 60.0) -> None:
        server = self.build_server()
        self.start_worker(log_file)
        self._thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop_worker()
                raise RuntimeError(f"the API did not start on {self.url} (port in use?)")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.stop_worker()


def announce(settings: Settings, url: str) -> None:
    token_hint = ("ROBAUDIT_API_TOKEN" if settings.api_token else f"the file {settings.token_file}")
    print(f"robaudit: API on {url}/api/v1 (docs: {url}/docs); write requests need the token in {token_hint}",
          file=sys.stderr, flush=True)


def until_interrupted(out: Display, work: Callable[[], int | None]) -> int:
    """Run ``work``; unless it returns an exit code, keep serving until Ctrl-C. Ctrl-C ends with 130."""
    try:
        code = work()
        if code is not None:
            return code
        out.say("serving until Ctrl-C ...")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out.say("\nstopping ...")
        return 130


def drive_embedded(out: Display, drive: Callable[[EmbeddedService], int | None], *, data_dir: str | None,
                   port: int, worker_name: str) -> int:
    """What `demo` and `study` share: start the embedded service in the background (its worker
    logging to worker.log in the data folder), run ``drive(service)`` against it over HTTP, then
    serve until Ctrl-C unless ``drive`` returned an exit code. The API and the worker stop on every
    way out."""
    settings = settings_for(data_dir)
    check_data_dir(settings)   # a bad data folder is one line, as for `robaudit serve`
    service = EmbeddedService(settings, host="127.0.0.1", port=port, worker_name=worker_name, log_level="warning")
    with service.worker_log.open("ab") as log:

        def start_and_drive() -> int | None:
            service.start_background(log_file=log)
            return drive(service)

        try:
            return until_interrupted(out, start_and_drive)
        finally:
            service.stop()
