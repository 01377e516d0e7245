"""Checkpoint uploads through the real app: validation in a subprocess, dedup by sha256, the byte
cap, pickled code, deletion rules."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from .conftest import make_settings, save_smallcnn


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", max_upload_mb=2.0)


def _files(settings) -> list[Path]:
    return sorted(p for p in settings.data_dir.rglob("*") if p.is_file()
                  and p.parent.name in ("checkpoints",) or (p.is_file() and "tmp" in p.parts))


def _post(client, filename: str, data: bytes, **fields):
    return client.post("/api/v1/checkpoints", files={"file": (filename, data, "application/octet-stream")}, data=fields)


def test_upload_dedup_download_and_metadata(client, settings, tmp_path):
    path = save_smallcnn(tmp_path / "model.safetensors")
    first = _post(client, "model.safetensors", path.read_bytes(), name="baseline")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"] >= 1 and body["ext"] == "safetensors" and body["embedded_metadata"]
    assert body["arch"] == "smallcnn" and body["dataset"] == "mnist10k" and body["name"] == "baseline"
    stored = settings.checkpoints_dir / f"{body['sha256']}.safetensors"
    assert stored.read_bytes() == path.read_bytes()

    again = _post(client, "copy.safetensors", path.read_bytes())
    assert again.status_code == 200 and again.json()["id"] == body["id"]

    assert client.get(f"/api/v1/checkpoints/{body['id']}").json()["sha256"] == body["sha256"]
    assert client.get(f"/api/v1/checkpoints/{body['id']}/file").content == path.read_bytes()
    assert client.get(f"/api/v1/checkpoints/by-sha256/{body['sha256']}/file").content == path.read_bytes()
    assert client.get(f"/api/v1/checkpoints/by-sha256/{'0' * 64}/file").status_code == 404
    listing = client.get("/api/v1/checkpoints").json()
    assert listing["count"] == 1 and listing["data"][0]["id"] == body["id"]
    assert not any((settings.tmp_dir).iterdir())   # no temp files left behind


def test_bare_state_dict_needs_dataset_and_preprocessing(client, settings, tmp_path):
    path = save_smallcnn(tmp_path / "bare.pt", metadata=False)
    data = path.read_bytes()
    missing = _post(client, "bare.pt", data)
    assert missing.status_code == 422 and "dataset" in missing.json()["detail"]
    no_preprocessing = _post(client, "bare.pt", data, dataset="mnist10k")
    assert no_preprocessing.status_code == 422 and "preprocessing" in no_preprocessing.json()["detail"]
    wrong = _post(client, "bare.pt", data, arch="smallcnn", dataset="cifar10", preprocessing="none")
    assert wrong.status_code == 422 and "does not match" in wrong.json()["detail"]
    assert client.get("/api/v1/checkpoints").json()["count"] == 0 and not any(settings.checkpoints_dir.iterdir())
    ok = _post(client, "bare.pt", data, arch="smallcnn", dataset="mnist10k", preprocessing="none")
    assert ok.status_code == 201, ok.text
    assert ok.json()["ext"] == "pt" and not ok.json()["embedded_metadata"]
    assert ok.json()["preprocessing"] == "none" and ok.json()["metadata"]["mean"] == [0.0]


@pytest.mark.parametrize("payload, reason", [
    (b"", "empty"),
    (b"definitely not a checkpoint" * 10, "not a checkpoint"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", "truncated"),
    *[(len(h).to_bytes(8, "little") + h, reason) for h, reason in (
        (b'{"a": {"data_offsets": [0, "x"]}}', "no valid data_offsets"),
        (b'{"a": {"data_offsets": [0, 4]}, "b": {"data_offsets": [0, "4"]}}', "no valid data_offsets"),
        (b'{"a": {"data_offsets": [8, 4]}}', "no valid data_offsets"),
        (b'{"a": {"data_offsets": [0, true]}}', "no valid data_offsets"),
        (b'{"a": [1, 2]}', "no valid data_offsets"),
        (b'{"a": {"dtype": "F32"}}', "no valid data_offsets"),
        (b'{"a": {"data_offsets": [0, 99999999999999999999]}}', "truncated"),
        (b'{"a": 1' + b" " * 8, "not valid JSON"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),   # nested past the stack
    )],
])
def test_bad_files_are_refused_and_nothing_is_stored(client, settings, payload, reason):
    resp = _post(client, "x.safetensors", payload)
    assert resp.status_code == 422 and reason in resp.json()["detail"]
    assert client.get("/api/v1/checkpoints").json()["count"] == 0
    assert not any(settings.checkpoints_dir.iterdir()) and not any(settings.tmp_dir.iterdir())


def test_mismatched_dataset_is_refused(client, tmp_path):
    path = save_smallcnn(tmp_path / "m.safetensors")
    resp = _post(client, "m.safetensors", path.read_bytes(), dataset="cifar100")
    assert resp.status_code == 422 and "mismatch" in resp.json()["detail"]


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_and_never_runs(client, settings, tmp_path):
    marker = tmp_path / "PWNED"
    evil_zip = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, evil_zip)
    assert zipfile.is_zipfile(io.BytesIO(evil_zip.getvalue()))
    evil_raw = pickle.dumps({"payload": _RunsCode(marker)}, protocol=2)
    for name, data in (("evil.pt", evil_zip.getvalue()), ("evil.pkl", evil_raw)):
        resp = _post(client, name, data, arch="smallcnn", dataset="mnist10k")
        assert resp.status_code == 422, resp.text
        assert "refused" in resp.json()["detail"] or "not a checkpoint" in resp.json()["detail"]
    assert not marker.exists()
    assert client.get("/api/v1/checkpoints").json()["count"] == 0
    assert not any(settings.checkpoints_dir.iterdir())


def test_oversize_upload_is_413_and_leaves_no_file(client, settings):
    big = os.urandom(3 * 1024 * 1024)
    resp = _post(client, "big.safetensors", big)   # Content-Length present: the fast reject
    assert resp.status_code == 413 and "2 MB" in resp.json()["detail"]

    boundary = "robauditboundary"

    def chunked():   # no Content-Length: the cap is enforced while streaming
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pt\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = client.post("/api/v1/checkpoints", content=chunked(),
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert resp.status_code == 413
    assert not any(settings.tmp_dir.iterdir()) and not any(settings.checkpoints_dir.iterdir())
    assert client.get("/api/v1/checkpoints").json()["count"] == 0


def test_upload_form_errors_say_what_to_fix(client):
    no_file = client.post("/api/v1/checkpoints", data={"name": "x"}, files={"other": ("a", b"b")})
    assert no_file.status_code == 422 and "unknown form field" in no_file.json()["detail"]
    not_multipart = client.post("/api/v1/checkpoints", content=b"abc", headers={"Content-Type": "text/plain"})
    assert not_multipart.status_code == 415 and "multipart" in not_multipart.json()["detail"]
    bad_kwargs = _post(client, "x.pt", b"abc", arch_kwargs="[1]")
    assert bad_kwargs.status_code == 422 and "arch_kwargs" in bad_kwargs.json()["detail"]


def test_delete_is_409_while_a_job_uses_the_checkpoint(client, settings, tmp_path):
    from robaudit.backend.app import crud
    from robaudit.backend.app.core.db import session_factory

    used = _post(client, "a.safetensors", save_smallcnn(tmp_path / "a.safetensors", seed=1).read_bytes()).json()
    free = _post(client, "b.safetensors", save_smallcnn(tmp_path / "b.safetensors", seed=2).read_bytes()).json()
    with session_factory(settings)() as s:
        job = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=used["id"])
    conflict = client.delete(f"/api/v1/checkpoints/{used['id']}")
    assert conflict.status_code == 409 and str(job.id) in conflict.json()["detail"]
    assert client.delete(f"/api/v1/checkpoints/{free['id']}").status_code == 204
    assert not (settings.checkpoints_dir / f"{free['sha256']}.safetensors").exists()
    assert client.get(f"/api/v1/checkpoints/{free['id']}").status_code == 404
    assert client.delete(f"/api/v1/checkpoints/{free['id']}").status_code == 404
