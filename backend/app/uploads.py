"""Streaming multipart upload with a byte cap, hashing as it goes.

Starlette's form parser spools file parts to disk without an upper bound, so the
checkpoint route reads ``request.stream()`` itself: Content-Length is checked
first as a fast reject (not trusted: chunked bodies have none), then bytes are
counted while parsing, and the upload stops with 413 the moment the cap is
passed, removing what was written.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from fastapi import HTTPException, Request, status
from python_multipart.multipart import MultipartParser, parse_options_header

from robaudit.backend.app.core.config import Settings

ALLOWED_FIELDS = ("name", "arch", "dataset", "arch_kwargs", "preprocessing", "mean", "std", "input_range")
MAX_FIELD_BYTES = 16 * 1024
# Room for the multipart envelope and the small text fields on top of the file itself.
ENVELOPE_BYTES = 256 * 1024


@dataclass
class Upload:
    path: Path                 # data_dir/tmp/<uuid>/<sanitised filename>
    filename: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def safe_filename(name: str | None) -> str:
    base = Path((name or "").replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:120]
    return base or "upload"


@dataclass(frozen=True)
class UploadKind:
    """What an upload route takes: its form fields, its byte cap and how to name both in messages."""
    what: str                         # "the checkpoint", "the test set"
    example: str                      # curl's file=@... in the messages
    fields: tuple[str, ...]
    limit_mb: float
    limit_env: str

    @property
    def limit_bytes(self) -> int:
        return int(self.limit_mb * 1024 * 1024)


def checkpoint_upload(settings: Settings) -> UploadKind:
    return UploadKind("the checkpoint", "file=@model.safetensors", ALLOWED_FIELDS, settings.max_upload_mb,
                      "ROBAUDIT_MAX_UPLOAD_MB")


def too_large(settings: Settings, kind: UploadKind | None = None) -> HTTPException:
    kind = kind or checkpoint_upload(settings)
    return HTTPException(413, detail=f"upload exceeds the {kind.limit_mb:g} MB limit ({kind.limit_env})")


def bad_request(message: str, code: int = status.HTTP_422_UNPROCESSABLE_CONTENT) -> HTTPException:
    return HTTPException(code, detail=message)


async def receive_upload(request: Request, settings: Settings, kind: UploadKind | None = None) -> Upload:
    """Parse a multipart/form-data body with one 'file' part and optional text fields."""
    kind = kind or checkpoint_upload(settings)
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise bad_request(f"send multipart/form-data with {kind.what} in a 'file' part "
                          f"(curl -F {kind.example})", status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
    limit_file = kind.limit_bytes
    limit_body = limit_file + ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit_body:
                raise too_large(settings, kind)
        except ValueError:
            raise bad_request("invalid Content-Length header", status.HTTP_400_BAD_REQUEST) from None

    workdir = settings.tmp_dir / uuid.uuid4().hex
    workdir.mkdir(parents=True)
    state = _PartState(kind.fields)
    parser = MultipartParser(params[b"boundary"], state.callbacks())
    digest = hashlib.sha256()
    received = 0
    fh = None
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit_body:
                raise too_large(settings, kind)
            parser.write(chunk)
            if state.error:
                raise bad_request(state.error)
            if state.file_started and fh is None:
                fh = await anyio.to_thread.run_sync((workdir / safe_filename(state.filename)).open, "wb")
            if state.pending and fh is not None:   # file bytes only arrive once the file part began
                data, state.pending = b"".join(state.pending), []
                state.file_size += len(data)
                if state.file_size > limit_file:
                    raise too_large(settings, kind)
                digest.update(data)
                await anyio.to_thread.run_sync(fh.write, data)
        parser.finalize()
        if state.error:
            raise bad_request(state.error)
        if not state.file_started:
            raise bad_request(f"no 'file' part in the form: send {kind.what} as file=@PATH")
        if not state.finished:
            raise bad_request("the multipart body ended early (truncated upload)", status.HTTP_400_BAD_REQUEST)
    except HTTPException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    except Exception as exc:  # malformed multipart, client disconnect, disk error
        shutil.rmtree(workdir, ignore_errors=True)
        raise bad_request(f"could not read the upload: {type(exc).__name__}: {str(exc)[:200]}",
                          status.HTTP_400_BAD_REQUEST) from None
    finally:
        if fh is not None:
            await anyio.to_thread.run_sync(fh.close)
    return Upload(path=workdir / safe_filename(state.filename), filename=state.filename or "upload",
                  size=state.file_size, sha256=digest.hexdigest(),
                  fields={k: v.decode("utf-8", "replace") for k, v in state.fields.items()})


class _PartState:
    """Callbacks for python-multipart's streaming parser; file bytes are queued in ``pending``."""

    def __init__(self, allowed: tuple[str, ...] = ALLOWED_FIELDS):
        self.allowed = allowed
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.current: str | None = None      # "file" | field name
        self.is_file = False
        self.file_started = False
        self.filename: str | None = None
        self.file_size = 0
        self.pending: list[bytes] = []
        self.fields: dict[str, bytes] = {}
        self.error: str | None = None
        self.finished = False

    def callbacks(self):
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_end": self.on_end,
        }

    def on_part_begin(self):
        self.headers, self.current, self.is_file = {}, None, False

    def on_header_field(self, data, start, end):
        self.header_field += data[start:end]

    def on_header_value(self, data, start, end):
        self.header_value += data[start:end]

    def on_header_end(self):
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def on_headers_finished(self):
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if self.error:
            return
        if name == "file":
            if self.file_started:
                self.error = "only one 'file' part is allowed"
                return
            self.is_file = self.file_started = True
            self.filename = options.get(b"filename", b"upload").decode("utf-8", "replace")
        elif name in self.allowed:
            if name in self.fields:
                self.error = f"form field {name!r} given twice"
                return
            self.fields[name] = b""
        else:
            self.error = (f"unknown form field {name!r}; expected 'file' and optionally "
                          f"{', '.join(repr(f) for f in self.allowed)}")
            return
        self.current = name

    def on_part_data(self, data, start, end):
        if self.error or self.current is None:
            return
        if self.is_file:
            self.pending.append(bytes(data[start:end]))
        else:
            value = self.fields[self.current] + data[start:end]
            if len(value) > MAX_FIELD_BYTES:
                self.error = f"form field {self.current!r} is longer than {MAX_FIELD_BYTES} bytes"
                return
            self.fields[self.current] = value

    def on_end(self):
        self.finished = True
