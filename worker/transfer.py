"""Checkpoint and test set files for workers: local content-addressed cache, or fetched through the API.

A worker on another host shares nothing with the API but the database and the
broker: it downloads checkpoints by sha256 (verifying the hash) and uploads the
checkpoints it trains back through the API with the bearer token.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from robaudit.backend.app.checkpoint_store import checkpoint_path, remove_quietly
from robaudit.backend.app.core.config import API_V1_STR, Settings
from robaudit.backend.app.core.security import resolve_api_token
from robaudit.backend.app.dataset_store import test_set_path


class TransferError(RuntimeError):
    pass


def _headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {resolve_api_token(settings)}"}


def ensure_local(settings: Settings, sha256: str, ext: str) -> Path:
    """The checkpoint's file on this host, downloading and verifying it if needed."""
    path = checkpoint_path(settings, sha256, ext)
    return _ensure(settings, path, sha256, f"{API_V1_STR}/checkpoints/by-sha256/{sha256}/file", "checkpoint")


def ensure_local_test_set(settings: Settings, sha256: str) -> Path:
    """An uploaded test set's stored form on this host, downloading and verifying it if needed."""
    path = test_set_path(settings, sha256)
    return _ensure(settings, path, sha256, f"{API_V1_STR}/datasets/by-sha256/{sha256}/file", "test set")


def _ensure(settings: Settings, path: Path, sha256: str, route: str, what: str) -> Path:
    if path.exists():
        return path
    if not settings.api_url:
        raise TransferError(f"{what} file {path.name} is not in {path.parent} and no ROBAUDIT_API_URL is set "
                            "to fetch it from; workers on other hosts need --api-url")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}.part")
    url = f"{settings.api_url}{route}"
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, headers=_headers(settings), timeout=60.0) as resp:
            if resp.status_code != 200:
                raise TransferError(f"fetching {what} {sha256[:12]} from {url} failed: HTTP {resp.status_code}")
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
                    fh.write(chunk)
        if digest.hexdigest() != sha256:
            raise TransferError(f"{what} fetched from {url} has sha256 {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp, path)
        return path
    except httpx.HTTPError as exc:
        raise TransferError(f"fetching {what} {sha256[:12]} from {url} failed: {exc}") from None
    finally:
        remove_quietly(tmp)


def upload(settings: Settings, path: Path, *, name: str) -> dict[str, Any]:
    """POST a checkpoint file to the API; returns the checkpoint JSON (new or existing)."""
    url = f"{settings.api_url}{API_V1_STR}/checkpoints"
    try:
        with path.open("rb") as fh:
            resp = httpx.post(url, headers=_headers(settings), data={"name": name},
                              files={"file": (path.name, fh, "application/octet-stream")}, timeout=600.0)
    except httpx.HTTPError as exc:
        raise TransferError(f"uploading {path.name} to {url} failed: {exc}") from None
    if resp.status_code not in (200, 201):
        raise TransferError(f"uploading {path.name} to {url} failed: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.json()
