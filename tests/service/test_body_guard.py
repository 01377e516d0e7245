"""Bodies are refused before they are read: 401 for a write without the token, 413 past the JSON cap
(issue 13, item 1). The app is called as a bare ASGI callable with a receive() that makes each
chunk on demand and counts what was taken, so "not read" is observed rather than inferred."""
from __future__ import annotations

import asyncio
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from robaudit.backend.app.api.main import api_router
from robaudit.backend.app.body_guard import WRITE_METHODS
from robaudit.backend.app.core.config import API_V1_STR
from robaudit.backend.app.main import create_app

from .conftest import TOKEN, make_settings
from .test_api import _jobs

MB = 1024 * 1024


class Body:
    """A request body of ``chunks`` x ``size`` bytes, made only when the app asks for the next chunk."""

    def __init__(self, chunks: int, size: int = MB):
        self.chunks, self.size, self.taken = chunks, size, 0

    async def receive(self):
        if self.taken == self.chunks:
            await asyncio.Event().wait()          # a client that keeps the connection open
        self.taken += 1
        return {"type": "http.request", "body": b" " * self.size, "more_body": self.taken < self.chunks}


def call(app, path: str, body: Body, headers: dict[str, str]) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, body.receive, send), timeout=60))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data")


def test_a_write_without_the_token_is_refused_before_its_body_is_read(settings):
    app = create_app(settings, janitor=False)
    # 50 MB, chunked (no Content-Length), the reproduction.
    body = Body(50)
    status, text = call(app, f"{API_V1_STR}/evaluations", body, {"content-type": "application/json"})
    assert status == 401 and b"bearer token" in text
    assert body.taken == 0
    body = Body(50)
    status, _ = call(app, f"{API_V1_STR}/trainings", body,
                     {"content-type": "application/json", "authorization": "Bearer wrong"})
    assert status == 401 and body.taken == 0
    assert _jobs(settings) == 0


def test_a_chunked_body_over_the_cap_is_413_and_reading_stops_at_the_cap(settings):
    app = create_app(settings.with_(max_json_kb=256), janitor=False)
    body = Body(50, size=64 * 1024)
    status, text = call(app, f"{API_V1_STR}/evaluations", body,
                        {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
    assert status == 413 and b"256 KB" in text and b"ROBAUDIT_MAX_JSON_KB" in text
    assert body.taken == 256 // 64 + 1            # the chunk that crossed the cap, and no further
    assert _jobs(settings) == 0


def test_an_oversized_json_post_is_413_with_the_limit_and_stores_nothing(settings, auth):
    with TestClient(create_app(settings.with_(max_json_kb=1), janitor=False)) as client:
        big = {"checkpoint_id": 1, "name": "x" * 100, "eps": [0.01] * 500}
        resp = client.post(f"{API_V1_STR}/evaluations", json=big, headers=auth)
        assert resp.status_code == 413, resp.text
        assert "over the 1 KB limit" in resp.json()["detail"]
        # Far over the cap without the token: 401, since the body is never looked at.
        resp = client.post(f"{API_V1_STR}/evaluations", json=big)
        assert resp.status_code == 401
        # Under the cap the request goes on to the route as before (here: no such checkpoint).
        resp = client.post(f"{API_V1_STR}/evaluations", json={"checkpoint_id": 1}, headers=auth)
        assert resp.status_code == 422 and "no checkpoint 1" in resp.json()["detail"]
    assert _jobs(settings) == 0


def test_multipart_checkpoint_uploads_keep_their_own_cap(settings, auth):
    with TestClient(create_app(settings.with_(max_json_kb=1), janitor=False)) as client:
        resp = client.post(f"{API_V1_STR}/checkpoints", files={"file": ("a.pt", b"x" * 10_000)}, headers=auth)
        # Past the 1 KB JSON cap, yet read: refused by the format check, not by size.
        assert resp.status_code == 422, resp.text


def test_every_write_route_needs_the_token_by_itself(settings):
    """BodyGuard answers 401 to any write under the API without the token, so no write route may be
    open: each one, mounted without the middleware, must refuse an anonymous request on its own."""
    app = create_app(settings, janitor=False)
    bare = FastAPI()
    bare.include_router(api_router, prefix=API_V1_STR)
    for key in ("settings", "Session", "celery", "api_token"):
        setattr(bare.state, key, getattr(app.state, key))
    writes = [(method.upper(), re.sub(r"{[^}]+}", "1", path))
              for path, operations in app.openapi()["paths"].items() if path.startswith(API_V1_STR + "/")
              for method in operations if method.upper() in WRITE_METHODS]
    assert len(writes) >= 7
    with TestClient(bare) as anon:
        for method, path in writes:
            assert anon.request(method, path).status_code == 401, (method, path)
