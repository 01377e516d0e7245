"""The API bearer token: from ROBAUDIT_API_TOKEN, or generated once and kept in the data folder."""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from robaudit.backend.app.core.config import Settings


def resolve_api_token(settings: Settings, *, announce=None) -> str:
    """The token write endpoints require. Generates and stores one (mode 600) on first start."""
    if settings.api_token:
        return settings.api_token
    path: Path = settings.token_file
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL: if two processes start together, exactly one writes and the other reads it back.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    (announce or _print_once)(token, path)
    return token


def _print_once(token: str, path: Path) -> None:
    print(f"robaudit: generated API token (stored in {path}, shown only now):\n  {token}", file=sys.stderr, flush=True)


UNAUTHORIZED_DETAIL = "missing or wrong bearer token: send 'Authorization: Bearer <API token>'"


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an 'Authorization: Bearer <token>' header (scheme case-insensitive), else None."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def short_id(length: int = 8) -> str:
    """A random base62 id for reports (62^8 ≈ 2e14; collisions are retried by the caller)."""
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def share_token() -> str:
    return secrets.token_urlsafe(24)
