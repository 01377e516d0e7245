"""Where an evaluation keeps finished batches so an interrupted run resumes instead of recomputing.

The contract (docs/architecture.md): anything with ``get(key) -> dict | None`` and
``put(key, dict)``. Keys are stable strings built from a fingerprint of the model and data plus the
job's parameters and batch bounds; values are JSON-safe dicts.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


class MemoryStore:
    """A dict; what evaluate() uses when no store is given."""

    def __init__(self):
        self.data: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        value = self.data.get(key)
        return None if value is None else json.loads(json.dumps(value))

    def put(self, key: str, value: dict) -> None:
        self.data[key] = json.loads(json.dumps(value))


class DirectoryStore:
    """One JSON file per key under ``path``, written atomically (temp file, fsync, rename).

    File names are a readable slug of the key plus a hash of the whole key, so two keys never share
    a file. AutoAttack's own resume state lives in ``path / "autoattack"``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", key)[-80:].strip("_")
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.path / f"{slug}.{digest}.json"

    def get(self, key: str) -> dict | None:
        try:
            record = json.loads(self._file(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record.get("value") if record.get("key") == key else None

    def put(self, key: str, value: dict) -> None:
        target = self._file(key)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"key": key, "value": value}, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
