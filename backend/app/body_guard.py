"""Refuse a request before its body is read: a write without the token gets 401, and a body over
the JSON cap gets 413. FastAPI reads and parses a JSON body before it runs any dependency, so the
route's own token check (api/deps.py) comes too late to spare the memory and CPU of a large body.

A pure ASGI middleware: the body is counted as it arrives (chunked requests have no Content-Length)
and reading stops at the cap. Multipart checkpoint uploads pass through untouched; uploads.py
streams them to disk under their own, larger cap (ROBAUDIT_MAX_UPLOAD_MB).
"""
from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from robaudit.backend.app.core.security import UNAUTHORIZED_DETAIL, bearer_token, token_matches

# Every route with one of these methods under the API prefix needs the token (WriteAccess);
# tests/service/test_body_guard.py checks that the routes agree.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyGuard:
    def __init__(self, app: ASGIApp, *, api_prefix: str, api_token: str, max_json_bytes: int,
                 max_import_bytes: int | None = None) -> None:
        self.app, self.api_prefix, self.api_token = app, api_prefix, api_token
        self.max_json_bytes = max_json_bytes
        # The upload and the inspect endpoint stream multipart files under the upload cap.
        # Own test sets likewise, under theirs (ROBAUDIT_MAX_DATASET_UPLOAD_MB).
        self.upload_paths = (f"{api_prefix}/checkpoints", f"{api_prefix}/checkpoints/inspect",
                             f"{api_prefix}/datasets")
        # Imported results carry per-point bitsets, so their route has its own, larger cap.
        self.import_path = f"{api_prefix}/evaluations/import"
        self.max_import_bytes = max_import_bytes or max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        if (method in WRITE_METHODS and path.startswith(self.api_prefix + "/")
                and not token_matches(bearer_token(headers.get("authorization")), self.api_token)):
            await _answer(send, 401, UNAUTHORIZED_DETAIL, {"www-authenticate": "Bearer"})
            return
        if (method == "POST" and path in self.upload_paths
                and headers.get("content-type", "").lower().startswith("multipart/form-data")):
            await self.app(scope, receive, send)
            return
        cap = self.max_import_bytes if path == self.import_path else self.max_json_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            await _answer(send, 413, self._too_large(path))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return                               # the client went away: nobody to answer
            body += message.get("body", b"")
            if len(body) > cap:
                await _answer(send, 413, self._too_large(path))
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    def _too_large(self, path: str) -> str:
        if path == self.import_path:
            return (f"imported results over the {self.max_import_bytes / 2**20:g} MB limit "
                    "(ROBAUDIT_MAX_IMPORT_MB)")
        return (f"request body over the {self.max_json_bytes / 1024:g} KB limit for JSON requests "
                "(ROBAUDIT_MAX_JSON_KB); checkpoints are uploaded as multipart/form-data to "
                f"POST {self.upload_paths[0]}")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then waits on the client as usual."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(send: Send, status: int, detail: str, extra_headers: dict[str, str] | None = None) -> None:
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
