"""Checkpoint files on disk, addressed by content: data_dir/checkpoints/<sha256>.<ext>."""
from __future__ import annotations

import os
from pathlib import Path

from robaudit.backend.app.core.config import Settings

EXTENSIONS = ("safetensors", "pt", "onnx")


def checkpoint_path(settings: Settings, sha256: str, ext: str) -> Path:
    if ext not in EXTENSIONS or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"bad checkpoint address {sha256}.{ext}")
    return settings.checkpoints_dir / f"{sha256}.{ext}"


def place(settings: Settings, tmp: Path, sha256: str, ext: str) -> Path:
    """Move a verified temp file to its content address (atomic; same-content races are harmless)."""
    dest = checkpoint_path(settings, sha256, ext)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    os.chmod(dest, 0o644)
    return dest


def remove_quietly(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
