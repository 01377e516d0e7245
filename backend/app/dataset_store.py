"""Own test sets on disk, addressed by content (data_dir/test_sets/<sha256>.npz), and the check of an upload.

The upload is read in ``python -m robaudit.own_data`` (a subprocess with a timeout, a memory cap and no
secrets in its environment, like a checkpoint's validator): it checks the archive, decodes the images
and writes the normal form next to the upload, in the upload's own temp folder. Only that normal
form is ever stored, by an atomic rename, and only once the database row can be written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from robaudit.backend.app.checkpoint_checks import memory_cap_args, run_json
from robaudit.backend.app.core.config import Settings


def test_set_path(settings: Settings, sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"bad test set address {sha256}")
    return settings.test_sets_dir / f"{sha256}.npz"


def model_shape(meta: dict[str, Any]) -> dict[str, int] | None:
    """What a checkpoint takes, from its metadata: channels, image size and classes (None if it does not say)."""
    from robaudit.data import DATASETS

    channels, classes = meta.get("in_channels"), meta.get("num_classes")
    size = meta.get("input_size") or (DATASETS[meta["dataset"]].size if meta.get("dataset") in DATASETS else None)
    if not (channels and classes and size):
        return None
    return {"channels": int(channels), "size": int(size), "num_classes": int(classes)}


async def check_upload(upload_path: Path, out: Path, *, filename: str, settings: Settings,
                       resize: int | None, crop: int | None, model: dict[str, int] | None) -> dict[str, Any]:
    """Check the uploaded file and write its normal form to ``out``; the subprocess's JSON verdict."""
    args = ["robaudit.own_data", str(upload_path), "--out", str(out), "--name", filename,
            "--max-points", str(settings.max_dataset_images), "--max-bytes", str(settings.max_dataset_bytes),
            *memory_cap_args(settings)]
    if resize is not None:
        args += ["--resize", str(resize)]
    if crop is not None:
        args += ["--crop", str(crop)]
    if model is not None:
        args += ["--model", json.dumps(model)]
    verdict, why = await run_json(args, settings.validate_timeout_s, f"reading {filename}")
    if verdict is None or "ok" not in verdict:
        return {"ok": False, "error": why or f"{filename} could not be read (no verdict)"}
    return verdict


def place(settings: Settings, tmp: Path, sha256: str) -> Path:
    """Move the checked normal form to its content address (atomic; same-content races are harmless)."""
    dest = test_set_path(settings, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    os.chmod(dest, 0o644)
    return dest
