"""Own test sets: upload (an .npz, or a .zip of class folders), list, read, download and delete.

Every refusal at upload is a 4xx naming the problem, and leaves nothing behind: the upload and its
normal form live in one temp folder that is always removed, and the stored file is placed only when
its row can be written (robaudit/own_data.py and robaudit/image_folder.py say what is checked).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from robaudit.backend.app import crud
from robaudit.backend.app.api.deps import ReadAccess, SessionDep, SettingsDep, WriteAccess
from robaudit.backend.app.checkpoint_store import remove_quietly
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.dataset_store import check_upload, model_shape, place, test_set_path
from robaudit.backend.app.schemas import DatasetPublic, DatasetsPublic, Message
from robaudit.backend.app.uploads import Upload, UploadKind, receive_upload

router = APIRouter(prefix="/datasets", tags=["datasets"])

FIELDS = ("name", "checkpoint_id", "resize", "crop")
MAX_RESIZE = 4096

UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "An .npz with x (uint8 HWC/CHW or floats in [0, 1]) and y (integer labels), or "
                                    "a .zip of class folders of PNG/JPEG images (optional classes.txt: the label "
                                    "order)"},
            "name": {"type": "string", "maxLength": 200},
            "checkpoint_id": {"type": "string", "description": "Check channels, image size and labels against "
                                                               "this checkpoint (else only at evaluation)"},
            "resize": {"type": "string", "description": "Zip only: resize each image's shorter side to this "
                                                        "first (e.g. 256)"},
            "crop": {"type": "string", "description": "Zip only: then centre-crop to this square (e.g. 224)"},
        },
    }}},
}


def dataset_upload(settings: Settings) -> UploadKind:
    return UploadKind("the test set", "file=@my-test-set.zip", FIELDS, settings.max_dataset_upload_mb,
                      "ROBAUDIT_MAX_DATASET_UPLOAD_MB")


def _refuse(message: str, code: int = status.HTTP_422_UNPROCESSABLE_CONTENT) -> HTTPException:
    return HTTPException(code, detail=message)


def _pixels(fields: dict[str, str], key: str) -> int | None:
    text = (fields.get(key) or "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_RESIZE:
        raise _refuse(f"{key} must be a whole number of pixels, 1 to {MAX_RESIZE}")
    return int(text)


def _model_for(request: Request, fields: dict[str, str]) -> dict[str, int] | None:
    text = (fields.get("checkpoint_id") or "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 2**31 - 1:
        raise _refuse("checkpoint_id must be a checkpoint's id")
    with request.app.state.Session() as s:
        row = crud.get_checkpoint(session=s, checkpoint_id=int(text))
        if row is None:
            raise _refuse(f"no checkpoint {text} to check the test set against")
        shape = model_shape({**(row.meta or {}), "dataset": row.dataset})
    if shape is None:
        raise _refuse(f"checkpoint {text}'s metadata does not say its input channels, image size and classes")
    return shape


@router.post("", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess],
             openapi_extra={"requestBody": UPLOAD_BODY},
             responses={200: {"model": DatasetPublic, "description": "The same images and labels are already stored"},
                        413: {"model": Message}, 415: {"model": Message}, 422: {"model": Message}})
async def upload_dataset(request: Request, response: Response, settings: SettingsDep) -> Any:
    """Upload a test set (multipart: file; optional name, checkpoint_id, resize, crop).

    Checked in a subprocess: at least one image and at most ROBAUDIT_MAX_DATASET_IMAGES; archives and arrays
    decompressing past ROBAUDIT_MAX_DATASET_MB, unsafe member names, links, non-images, mixed sizes and
    corrupt images are refused; with checkpoint_id, the images and labels must fit that model. Stored by
    the sha256 of its normal form: 200 with the stored row when the same images and labels are already there."""
    upload: Upload = await receive_upload(request, settings, dataset_upload(settings))
    try:
        if upload.size == 0:
            raise _refuse(f"{upload.filename} is empty")
        resize, crop = _pixels(upload.fields, "resize"), _pixels(upload.fields, "crop")
        if resize is not None and crop is not None and crop > resize:
            raise _refuse(f"crop ({crop}) must not exceed resize ({resize})")
        model = await run_in_threadpool(_model_for, request, upload.fields)
        normal = upload.path.parent / "normal-form.npz"
        filename = Path(upload.filename.replace("\\", "/")).name[:300] or "upload"
        verdict = await check_upload(upload.path, normal, filename=filename, settings=settings, resize=resize,
                                     crop=crop, model=model)
        if not verdict.get("ok"):
            raise _refuse(str(verdict.get("error") or "not a usable test set"))
        sha256 = str(verdict["sha256"])
        name = (upload.fields.get("name") or "").strip()[:200] or Path(filename).stem[:200] or sha256[:12]
        Session = request.app.state.Session

        def register() -> tuple[Any, bool]:
            with Session() as s:
                found = crud.get_dataset_by_sha256(session=s, sha256=sha256)
                if found is not None and test_set_path(settings, sha256).exists():
                    return found, False
            dest = place(settings, normal, sha256)
            try:
                with Session() as s:
                    row, created = crud.create_dataset(session=s, values=dict(
                        sha256=sha256, name=name, filename=filename, source_sha256=upload.sha256,
                        n=verdict["n"], channels=verdict["channels"], height=verdict["height"],
                        width=verdict["width"], dtype=verdict["dtype"], num_classes=verdict["num_classes"],
                        class_names=verdict.get("class_names"), transform=verdict.get("transform"),
                        size_bytes=dest.stat().st_size))
                    return row, created
            except Exception:
                # No row, no file: unless another request stored the same content meanwhile.
                with Session() as s:
                    if crud.get_dataset_by_sha256(session=s, sha256=sha256) is None:
                        remove_quietly(dest)
                raise

        row, created = await run_in_threadpool(register)
        if not created:
            response.status_code = status.HTTP_200_OK
        return DatasetPublic.model_validate(row)
    finally:
        upload.discard()


@router.get("", response_model=DatasetsPublic, dependencies=[ReadAccess])
def list_datasets(session: SessionDep, skip: int = Query(0, ge=0, le=10**9),
                  limit: int = Query(100, ge=1, le=1000)) -> Any:
    """List uploaded test sets, newest first."""
    rows, count = crud.list_datasets(session=session, skip=skip, limit=limit)
    return {"data": [DatasetPublic.model_validate(r) for r in rows], "count": count}


def _find(session, dataset_id: int):
    row = crud.get_dataset(session=session, dataset_id=dataset_id)
    if row is None:
        raise HTTPException(404, detail=f"no dataset {dataset_id}")
    return row


@router.get("/{dataset_id:int}", response_model=DatasetPublic, dependencies=[ReadAccess],
            responses={404: {"model": Message}})
def read_dataset(session: SessionDep, dataset_id: int = PathParam(ge=1, le=2**31 - 1)) -> Any:
    """Get a test set's description."""
    return DatasetPublic.model_validate(_find(session, dataset_id))


@router.get("/by-sha256/{sha256}/file", response_class=FileResponse, dependencies=[ReadAccess],
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": Message}})
def download_dataset_by_sha256(session: SessionDep, settings: SettingsDep,
                               sha256: str = PathParam(pattern="^[0-9a-f]{64}$")) -> Any:
    """Download a stored test set's normal form (.npz: x, y, classes) by its sha256 (how remote workers fetch
    it; `robaudit evaluate --data` reads it too)."""
    row = crud.get_dataset_by_sha256(session=session, sha256=sha256)
    path = test_set_path(settings, sha256)
    if row is None or not path.exists():
        raise HTTPException(404, detail=f"no stored dataset with sha256 {sha256}")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{row.name}.npz")


@router.delete("/{dataset_id:int}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess],
               responses={404: {"model": Message}, 409: {"model": Message}})
def delete_dataset(session: SessionDep, settings: SettingsDep,
                   dataset_id: int = PathParam(ge=1, le=2**31 - 1)) -> Response:
    """Delete a test set and its file; 409 while any evaluation uses it (results must stay explainable)."""
    row = _find(session, dataset_id)
    users = crud.dataset_users(session=session, dataset_id=dataset_id)
    if users:
        raise HTTPException(409, detail=f"dataset {dataset_id} is used by evaluation(s) "
                                        f"{', '.join(map(str, users))}; it is kept so their results stay "
                                        "traceable")
    path = test_set_path(settings, row.sha256)
    crud.delete_dataset(session=session, dataset=row)
    remove_quietly(path)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
