"""Where an evaluation keeps finished batches so an interrupted run resumes instead of recomputing.

The contract (docs/architecture.md): anything with ``get(key) -> dict | None`` and
``put(key, dict)``. Keys are stable strings built from a fingerprint of the model and data plus the
job's parameters and batch bounds; values are JSON-safe dicts. Shards of one evaluation write
disjoint keys into one store, and the merge reads them all back.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

Record = dict[str, Any]   # one stored value: a JSON-safe dict


class Store(Protocol):
    def get(self, key: str) -> Record | None: ...

    def put(self, key: str, value: Record) -> None: ...


class MemoryStore:
    """A dict; what evaluate() uses when no store is given."""

    def __init__(self) -> None:
        self.data: dict[str, Record] = {}

    def get(self, key: str) -> Record | None:
        value = self.data.get(key)
        return None if value is None else _json_copy(value)

    def put(self, key: str, value: Record) -> None:
        self.data[key] = _json_copy(value)


class DirectoryStore:
    """One JSON file per key under ``path``, written atomically (temp file, fsync, rename).

    File names are a readable slug of the key plus a hash of the whole key, so two keys never share
    a file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._path.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self._path

    def _file(self, key: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", key)[-80:].strip("_")
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self._path / f"{slug}.{digest}.json"

    def get(self, key: str) -> Record | None:
        try:
            record = json.loads(self._file(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        value = record.get("value")
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: Record) -> None:
        target = self._file(key)
        fd, tmp = tempfile.mkstemp(dir=self._path, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"key": key, "value": value}, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _json_copy(value: Record) -> Record:
    """What a JSON store would give back: no shared references, tuples become lists."""
    copied: Record = json.loads(json.dumps(value))
    return copied
