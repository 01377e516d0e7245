from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.checkpoint_checks import (
    MAX_SHAPE_ENTRIES,
    CheckRefused,
    clean_check,
    input_range_args,
    inspect_file,
    parse_shape_table,
    preprocessing_args,
    recognise_shapes,
    validate,
)
from robaudit.backend.app.checkpoint_store import EXTENSIONS, checkpoint_path, place, remove_quietly
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.schemas import CheckpointPublic, CheckpointsPublic, InspectPublic, Message
from robaudit.backend.app.uploads import Upload, receive_upload
from robaudit.models.checkpoint import CheckpointError, sniff_format

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"])

UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": ".safetensors (preferred), a torch.save()d state_dict (.pt) or an ONNX "
                                    "graph (.onnx); pickled code is refused"},
            "name": {"type": "string", "maxLength": 200},
            "arch": {"type": "string", "maxLength": 64,
                     "description": "Needed only when the file carries no robaudit metadata and its keys match "
                                    "no catalogue architecture, e.g. smallcnn"},
            "dataset": {"type": "string", "maxLength": 64,
                        "description": "Needed when the file carries no robaudit metadata, e.g. mnist10k"},
            "arch_kwargs": {"type": "string", "maxLength": 2000, "description": "JSON object"},
            "preprocessing": {"type": "string", "maxLength": 64,
                              "description": "Input normalisation of a file without robaudit metadata: a preset "
                                             "(none, cifar-0.5, cifar10, imagenet), or custom with mean and std"},
            "mean": {"type": "string", "maxLength": 400, "description": "JSON list, one value per input channel"},
            "std": {"type": "string", "maxLength": 400, "description": "JSON list, one value per input channel"},
            "input_range": {"type": "string", "maxLength": 20,
                            "description": "The pixel range the network was trained on: [0, 1] (default) or [0, 255]"},
        },
    }}},
}

INSPECT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "type": "object", "required": ["tensors"], "additionalProperties": False,
            "properties": {"tensors": {
                "type": "object", "minProperties": 1, "maxProperties": MAX_SHAPE_ENTRIES,
                "additionalProperties": {"type": "array", "maxItems": 8, "items": {"type": "integer", "minimum": 0}},
                "description": "The file's tensor names -> shapes (what a .safetensors header lists)"}},
        }},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}},
        }},
    },
}


def _refuse(message: str, code: int = status.HTTP_422_UNPROCESSABLE_CONTENT) -> HTTPException:
    return HTTPException(code, detail=message)


def _check_form(upload: Upload) -> None:
    """The text fields the API can judge without the file (the validator judges the rest)."""
    if upload.size == 0:
        raise _refuse(f"{upload.filename} is empty")
    if upload.fields.get("arch_kwargs"):
        try:
            if not isinstance(json.loads(upload.fields["arch_kwargs"]), dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise _refuse(f"arch_kwargs must be a JSON object ({exc})") from None
    try:
        preprocessing_args(upload.fields)
        input_range_args(upload.fields)
    except CheckRefused as exc:
        raise _refuse(str(exc)) from None


async def _sniff(upload: Upload) -> None:
    # The first bytes and the sizes they claim only: garbage is refused without starting the validator,
    # and every parse of the file (headers, archives, graphs) happens in the capped subprocess.
    try:
        await run_in_threadpool(partial(sniff_format, parse=False), upload.path)
    except CheckpointError as exc:
        raise _refuse(str(exc)) from None


@router.post("", response_model=CheckpointPublic, status_code=status.HTTP_201_CREATED,
             dependencies=[WriteAccess], openapi_extra={"requestBody": UPLOAD_BODY},
             responses={200: {"model": CheckpointPublic, "description": "The same file was already uploaded"},
                        413: {"model": Message}, 415: {"model": Message}, 422: {"model": Message}})
async def upload_checkpoint(request: Request, response: Response, settings: SettingsDep) -> Any:
    """Upload a checkpoint (multipart: file; optional name, arch, dataset, arch_kwargs, preprocessing, mean, std,
    input_range).

    The file is loaded strictly in a subprocess, then its clean accuracy is measured (clean_check in the
    answer); nothing is stored unless it loads. 200 with the stored row if the same file is already stored."""
    upload = await receive_upload(request, settings)
    try:
        _check_form(upload)
        Session = request.app.state.Session

        def existing():
            with Session() as s:
                return crud.get_checkpoint_by_sha256(session=s, sha256=upload.sha256)

        await _sniff(upload)
        found = await run_in_threadpool(existing)
        if found is not None and checkpoint_path(settings, found.sha256, found.ext).exists():
            response.status_code = status.HTTP_200_OK
            return CheckpointPublic.model_validate(found)
        verdict = await validate(upload.path, upload.fields, settings)
        if not verdict.get("ok"):
            raise _refuse(verdict.get("error") or "not a usable checkpoint")
        if verdict.get("ext") not in EXTENSIONS:
            raise _refuse(f"unsupported checkpoint format {verdict.get('ext')!r}")
        meta = verdict["metadata"]
        # Before storing: the file is still the temp copy, so a failure here leaves nothing behind.
        check = await clean_check(upload.path, meta, settings)
        name = (upload.fields.get("name") or "").strip()[:200] or Path(upload.filename).stem[:200] or upload.sha256[:12]

        def register():
            place(settings, upload.path, upload.sha256, verdict["ext"])
            with Session() as s:
                return crud.create_checkpoint(session=s, sha256=upload.sha256, name=name,
                                              filename=upload.filename[:300], ext=verdict["ext"],
                                              size_bytes=upload.size, meta=meta,
                                              embedded_metadata=bool(verdict.get("embedded")),
                                              clean_check=check, detected_arch=verdict.get("detected_arch"))

        row, created = await run_in_threadpool(register)
        if not created:
            response.status_code = status.HTTP_200_OK
        return CheckpointPublic.model_validate(row)
    finally:
        upload.discard()


async def _json_body(request: Request, settings: Settings) -> bytes:
    body = bytearray()
    async for chunk in request.stream():   # BodyGuard caps it first; this holds without the middleware too
        body += chunk
        if len(body) > settings.max_json_bytes:
            raise _refuse(f"the shape table exceeds {settings.max_json_kb:g} KB (ROBAUDIT_MAX_JSON_KB)",
                          status.HTTP_413_CONTENT_TOO_LARGE)
    return bytes(body)


@router.post("/inspect", response_model=InspectPublic, dependencies=[WriteAccess],
             openapi_extra={"requestBody": INSPECT_BODY},
             responses={413: {"model": Message}, 415: {"model": Message}, 422: {"model": Message}})
async def inspect_checkpoint(request: Request, settings: SettingsDep) -> Any:
    """Recognise a checkpoint without storing anything: the catalogue architecture its names and shapes
    match, its classes, input channels and size, and the datasets it fits; 422 with the first difference.

    Send either a multipart file (read in the validator subprocess, like an upload), or JSON
    {"tensors": {key: shape}}: the names and shapes of a .safetensors header, which the upload page reads
    in the browser so that a large file is recognised without sending its weights."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            shapes = parse_shape_table(await _json_body(request, settings))
        except CheckRefused as exc:
            raise _refuse(str(exc)) from None
        verdict = await run_in_threadpool(recognise_shapes, shapes)
    elif content_type == "multipart/form-data":
        upload = await receive_upload(request, settings)
        try:
            if upload.size == 0:
                raise _refuse(f"{upload.filename} is empty")
            await _sniff(upload)
            verdict = await inspect_file(upload.path, settings)
        finally:
            upload.discard()
    else:
        raise _refuse('send JSON {"tensors": {key: shape}}, or multipart/form-data with the checkpoint in a '
                      "'file' part", status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
    if not verdict.get("ok"):
        raise _refuse(verdict.get("error") or "the file matches no known architecture")
    return InspectPublic.model_validate(verdict)


@router.get("", response_model=CheckpointsPublic, dependencies=[ReadAccess])
def list_checkpoints(session: SessionDep, skip: int = Query(0, ge=0, le=10**9),
                     limit: int = Query(100, ge=1, le=1000)) -> Any:
    """List checkpoints, newest first."""
    rows, count = crud.list_checkpoints(session=session, skip=skip, limit=limit)
    return {"data": [CheckpointPublic.model_validate(r) for r in rows], "count": count}


def _existing_file(settings: Settings, row) -> Path:
    path = checkpoint_path(settings, row.sha256, row.ext)
    if not path.exists():
        raise HTTPException(404, detail=f"the file of checkpoint {row.id} is missing from {path.parent}")
    return path


@router.get("/by-sha256/{sha256}/file", response_class=FileResponse, dependencies=[ReadAccess],
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": Message}})
def download_checkpoint_by_sha256(session: SessionDep, settings: SettingsDep,
                                  sha256: str = PathParam(pattern="^[0-9a-f]{64}$")) -> Any:
    """Download a checkpoint file by its sha256 (how remote workers fetch models)."""
    row = crud.get_checkpoint_by_sha256(session=session, sha256=sha256)
    if row is None:
        raise HTTPException(404, detail=f"no checkpoint with sha256 {sha256}")
    return FileResponse(_existing_file(settings, row), media_type="application/octet-stream",
                        filename=f"{row.sha256}.{row.ext}")


# ":int": /checkpoints/inspect must not match this route (a GET there is a 405, not a bad id).
@router.get("/{checkpoint_id:int}", response_model=CheckpointPublic, dependencies=[ReadAccess],
            responses={404: {"model": Message}})
def read_checkpoint(session: SessionDep, checkpoint_id: int = PathParam(ge=1, le=2**31 - 1)) -> Any:
    """Get a checkpoint's metadata."""
    row = crud.get_checkpoint(session=session, checkpoint_id=checkpoint_id)
    if row is None:
        raise HTTPException(404, detail=f"no checkpoint {checkpoint_id}")
    return CheckpointPublic.model_validate(row)


@router.get("/{checkpoint_id:int}/file", response_class=FileResponse, dependencies=[ReadAccess],
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": Message}})
def download_checkpoint(session: SessionDep, settings: SettingsDep,
                        checkpoint_id: int = PathParam(ge=1, le=2**31 - 1)) -> Any:
    """Download a checkpoint file."""
    row = crud.get_checkpoint(session=session, checkpoint_id=checkpoint_id)
    if row is None:
        raise HTTPException(404, detail=f"no checkpoint {checkpoint_id}")
    stem = Path(row.filename).stem or row.sha256[:12]
    return FileResponse(_existing_file(settings, row), media_type="application/octet-stream",
                        filename=f"{stem}.{row.ext}")


@router.delete("/{checkpoint_id:int}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess],
               responses={404: {"model": Message}, 409: {"model": Message}})
def delete_checkpoint(session: SessionDep, settings: SettingsDep,
                      checkpoint_id: int = PathParam(ge=1, le=2**31 - 1)) -> Response:
    """Delete a checkpoint and its file; 409 while any job uses it (results must stay explainable)."""
    row = crud.get_checkpoint(session=session, checkpoint_id=checkpoint_id)
    if row is None:
        raise HTTPException(404, detail=f"no checkpoint {checkpoint_id}")
    users = crud.checkpoint_users(session=session, checkpoint_id=checkpoint_id)
    if users:
        raise HTTPException(409, detail=f"checkpoint {checkpoint_id} is used by job(s) "
                                        f"{', '.join(map(str, users))}; it is kept so their results stay "
                                        "traceable")
    path = checkpoint_path(settings, row.sha256, row.ext)
    crud.delete_checkpoint(session=session, checkpoint=row)
    remove_quietly(path)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
