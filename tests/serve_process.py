"""`robaudit serve` in a subprocess, as the service, browser and README tests start it (and, for tests
that drive the app's code in-process, the app under uvicorn in a thread: ``serve_in_thread``).

One place for what every such test needs: a clean environment (no REDIS_URL/DATABASE_URL leaking in
from the caller, one torch thread), output captured to a file (a pipe nobody reads fills up and
blocks serve), a wait for the embedded worker to report in, and a stop that never leaves a process
behind."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

SERVE = [sys.executable, "-m", "robaudit.cli", "serve"]
TOKEN = "robaudit-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread of this process on a free port; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:   # set once the socket listens
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def serve_env(**extra: str) -> dict[str, str]:
    """The caller's environment without the service settings a developer may have exported."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "ROBAUDIT_API_TOKEN", "ROBAUDIT_DATA_DIR")}
    env.update(ROBAUDIT_HEARTBEAT_INTERVAL="1", ROBAUDIT_TORCH_THREADS="1", OMP_NUM_THREADS="1",
               ROBAUDIT_DEVICE="cpu", PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    env.update(extra)
    return env


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class ServeProcess:
    """Starts `robaudit serve` and returns once its worker is registered (``wait=False``: at once,
    for a caller with work to do while serve boots; it then calls ``wait_for_worker``).

    ``data_dir=None`` runs it as the README does: no --data-dir, in ``cwd``. ``token=None`` leaves
    the token to serve (it generates one); otherwise ``client`` carries it."""

    def __init__(self, cwd: Path, *, data_dir: Path | None = None, port: int | None = None,
                 token: str | None = TOKEN, env: dict[str, str] | None = None, wait: bool = True,
                 boot_timeout: float = 90):
        self.cwd, self.port, self.data_dir = Path(cwd), port or free_port(), data_dir
        self.base_url = f"http://127.0.0.1:{self.port}"
        argv = [*SERVE, "--port", str(self.port)]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        self.env = serve_env(**(env or {}))
        if token is not None:
            self.env["ROBAUDIT_API_TOKEN"] = token
        self.log_path = self.cwd / f"serve-{self.port}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.base_url + "/api/v1", headers=headers, timeout=60)
        if wait:
            self.wait_for_worker(boot_timeout)

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_worker(self, timeout: float = 90) -> None:
        """Block until the embedded worker has registered (serve is killed if it never does)."""
        try:
            self._wait(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"robaudit serve exited:\n{self.output[-3000:]}"
            try:
                if self.client.get("/health", timeout=5).json().get("workers"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, f"no worker after {timeout:.0f} s:\n{self.output[-3000:]}"
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> float:
        """Send ``sig`` to serve alone and wait for it to exit; how long that took. Whatever is
        still running in its process group afterwards is killed (and the test should have checked
        there was none)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"serve did not stop within {timeout:.0f} s of {sig!r}:\n"
                                     f"{self.output[-3000:]}") from None
        took = time.monotonic() - started
        self.close()
        return took

    def kill(self) -> None:
        """SIGKILL serve and everything in its process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        self.client.close()
        self._log.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            try:
                self.stop(signal.SIGINT, timeout=20)
            except AssertionError:
                pass
        # A worker orphaned by a failed test must not outlive it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
