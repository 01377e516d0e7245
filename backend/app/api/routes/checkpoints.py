from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.checkpoint_store import checkpoint_path, place, remove_quietly
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.schemas import CheckpointPublic, CheckpointsPublic, Message
from robaudit.backend.app.uploads import Upload, receive_upload
from robaudit.data import DATASETS
from robaudit.models.checkpoint import CheckpointError, sniff_format
from robaudit.models.validate import datasets_json

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"])

UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": ".safetensors (preferred) or a torch.save()d state_dict (.pt); "
                                    "pickled code is refused"},
            "name": {"type": "string", "maxLength": 200},
            "arch": {"type": "string", "maxLength": 64,
                     "description": "Needed when the file carries no robaudit metadata, e.g. smallcnn"},
            "dataset": {"type": "string", "maxLength": 64,
                        "description": "Needed when the file carries no robaudit metadata, e.g. mnist10k"},
            "arch_kwargs": {"type": "string", "maxLength": 2000, "description": "JSON object"},
        },
    }}},
}

# Secrets never reach the process that parses untrusted bytes.
_SCRUBBED_ENV = ("ROBAUDIT_API_TOKEN", "DATABASE_URL", "REDIS_URL")


async def _validate(upload: Upload, settings: Settings) -> dict[str, Any]:
    """Run robaudit.models.validate in a subprocess with a timeout; returns its JSON verdict."""
    args = [sys.executable, "-m", "robaudit.models.validate", str(upload.path), "--datasets", datasets_json(DATASETS)]
    for key in ("arch", "dataset"):
        if upload.fields.get(key):
            args += [f"--{key}", upload.fields[key]]
    if upload.fields.get("arch_kwargs"):
        args += ["--arch-kwargs", upload.fields["arch_kwargs"]]
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = "1"
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=settings.validate_timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"ok": False, "error": f"checking the checkpoint took longer than {settings.validate_timeout_s:g} s"}
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        verdict = json.loads(lines[-1])
        if isinstance(verdict, dict) and "ok" in verdict:
            return verdict
    except (IndexError, ValueError):
        pass
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    return {"ok": False, "error": f"the file could not be checked (validator exited with code "
                                  f"{proc.returncode}: {tail[0][:200]})"}


@router.post("", response_model=CheckpointPublic, status_code=status.HTTP_201_CREATED,
             dependencies=[WriteAccess], openapi_extra={"requestBody": UPLOAD_BODY},
             responses={200: {"model": CheckpointPublic, "description": "The same file was already uploaded"},
                        413: {"model": Message}, 415: {"model": Message}, 422: {"model": Message}})
async def upload_checkpoint(request: Request, response: Response, settings: SettingsDep) -> Any:
    """Upload a checkpoint (multipart: file, optional name/arch/dataset/arch_kwargs); 200 if already stored."""
    upload = await receive_upload(request, settings)
    try:
        if upload.size == 0:
            raise HTTPException(422, detail=f"{upload.filename} is empty")
        if upload.fields.get("arch_kwargs"):
            try:
                if not isinstance(json.loads(upload.fields["arch_kwargs"]), dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise HTTPException(422, detail=f"arch_kwargs must be a JSON object ({exc})") from None
        Session = request.app.state.Session

        def existing():
            with Session() as s:
                return crud.get_checkpoint_by_sha256(session=s, sha256=upload.sha256)

        try:   # reads 16 bytes: garbage is refused without starting the validator
            await run_in_threadpool(sniff_format, upload.path)
        except CheckpointError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        found = await run_in_threadpool(existing)
        if found is not None and checkpoint_path(settings, found.sha256, found.ext).exists():
            response.status_code = status.HTTP_200_OK
            return CheckpointPublic.model_validate(found)
        verdict = await _validate(upload, settings)
        if not verdict.get("ok"):
            raise HTTPException(422, detail=verdict.get("error") or "not a usable checkpoint")
        meta = verdict["metadata"]
        name = (upload.fields.get("name") or "").strip()[:200] or Path(upload.filename).stem[:200] or upload.sha256[:12]

        def register():
            place(settings, upload.path, upload.sha256, verdict["ext"])
            with Session() as s:
                return crud.create_checkpoint(session=s, sha256=upload.sha256, name=name,
                                              filename=upload.filename[:300], ext=verdict["ext"],
                                              size_bytes=upload.size, meta=meta,
                                              embedded_metadata=bool(verdict.get("embedded")))

        row, created = await run_in_threadpool(register)
        if not created:
            response.status_code = status.HTTP_200_OK
        return CheckpointPublic.model_validate(row)
    finally:
        upload.discard()


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


@router.get("/{checkpoint_id}", response_model=CheckpointPublic, dependencies=[ReadAccess],
            responses={404: {"model": Message}})
def read_checkpoint(session: SessionDep, checkpoint_id: int = PathParam(ge=1, le=2**31 - 1)) -> Any:
    """Get a checkpoint's metadata."""
    row = crud.get_checkpoint(session=session, checkpoint_id=checkpoint_id)
    if row is None:
        raise HTTPException(404, detail=f"no checkpoint {checkpoint_id}")
    return CheckpointPublic.model_validate(row)


@router.get("/{checkpoint_id}/file", response_class=FileResponse, dependencies=[ReadAccess],
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


@router.delete("/{checkpoint_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess],
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
