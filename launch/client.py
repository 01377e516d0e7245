"""What the commands that drive the service over HTTP share (`demo`, `study`): the API client,
the job states that count as finished, and the one-line progress display."""
from __future__ import annotations

import os
import sys
import time
from typing import TextIO

import httpx

# The API's finished job states (robaudit.backend.app.models.FINISHED), as the client sees them;
# not imported, so registering the commands loads no SQLAlchemy models.
FINISHED = ("succeeded", "failed", "cancelled")


def api_client(base_url: str, token: str, *, timeout: float) -> httpx.Client:
    """An HTTP client for the API under ``base_url`` (e.g. http://127.0.0.1:8000), with the token."""
    return httpx.Client(base_url=f"{base_url}/api/v1", headers={"Authorization": f"Bearer {token}"},
                        timeout=timeout)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


class Display:
    """One status line, rewritten in place on a terminal, printed every 15 s otherwise."""

    def __init__(self, stream: TextIO = sys.stdout):
        self.stream, self.tty = stream, stream.isatty()
        self.last = 0.0
        self.started = time.monotonic()

    def update(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        line = f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:os.get_terminal_size().columns - 1])
            self.stream.flush()
        elif time.monotonic() - self.last >= 15:
            print(line, file=self.stream, flush=True)
            self.last = time.monotonic()

    def say(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        print(text, file=self.stream, flush=True)
