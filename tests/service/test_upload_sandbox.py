"""Uploaded bytes are parsed only in the validator's subprocess, under its memory cap; the API process
reads the first bytes and the sizes they claim, nothing more. A zip bomb, an oversized header and a
file that needs more memory than the cap each get a 422 that says so, and nothing is stored."""
from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest
import torch
from fastapi.testclient import TestClient

import robaudit.models.checkpoint as checkpoint_module
from robaudit.backend.app.main import create_app
from robaudit.backend.app.models import Checkpoint

from .conftest import count_rows, make_settings, save_smallcnn


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", max_upload_mb=8.0)


def _post(client, filename: str, data: bytes, **fields):
    return client.post("/api/v1/checkpoints", files={"file": (filename, data, "application/octet-stream")},
                       data=fields)


def _nothing_stored(settings) -> bool:
    stored = [p for p in settings.checkpoints_dir.glob("*") if p.is_file()] if settings.checkpoints_dir.exists() else []
    leftovers = [p for p in settings.tmp_dir.rglob("*") if p.is_file()] if settings.tmp_dir.exists() else []
    return count_rows(settings, Checkpoint) == 0 and not stored and not leftovers


def test_a_zip_bomb_pt_is_refused_before_anything_inflates_it(client, settings):
    buffer = io.BytesIO()
    state = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, state)   # a real torch.save archive, then one huge deflated entry
    with zipfile.ZipFile(io.BytesIO(state.getvalue())) as real, zipfile.ZipFile(buffer, "w") as bomb:
        for info in real.infolist():
            bomb.writestr(info, real.read(info))
        bomb.writestr(zipfile.ZipInfo("archive/data/1"), b"\0" * (300 * 2**20), compress_type=zipfile.ZIP_DEFLATED)
    payload = buffer.getvalue()
    assert len(payload) < 2 * 2**20
    resp = _post(client, "bomb.pt", payload, dataset="mnist10k", preprocessing="none")
    assert resp.status_code == 422, resp.text
    assert "zip bomb" in resp.json()["detail"] and "torch.save() never compresses" in resp.json()["detail"]
    assert _nothing_stored(settings)


def test_an_oversized_safetensors_header_is_refused_from_its_first_bytes(client, settings):
    header_len = 17 * 2**20
    payload = struct.pack("<Q", header_len) + b"{" + b" " * 64
    resp = _post(client, "huge.safetensors", payload)
    assert resp.status_code == 422 and "exceeds the 16 MB cap" in resp.json()["detail"]
    assert _nothing_stored(settings)


def test_the_api_process_never_parses_a_header(client, settings, monkeypatch):
    def parsed_here(*args, **kwargs):
        raise AssertionError("the API process parsed an uploaded header")

    monkeypatch.setattr(checkpoint_module, "_check_safetensors_length", parsed_here)
    monkeypatch.setattr(checkpoint_module, "_check_zip_sizes", parsed_here)
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": ["x", null]}}'
    resp = _post(client, "bad.safetensors", struct.pack("<Q", len(header)) + header + b"\0" * 4)
    assert resp.status_code == 422 and "no valid data_offsets" in resp.json()["detail"]   # said by the validator
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr(zipfile.ZipInfo("a/data.pkl"), b"\0" * (50 * 2**20), compress_type=zipfile.ZIP_DEFLATED)
    resp = _post(client, "bomb.pt", bomb.getvalue(), dataset="mnist10k", preprocessing="none")
    assert resp.status_code == 422 and "zip bomb" in resp.json()["detail"]
    assert _nothing_stored(settings)


def test_a_file_that_needs_more_memory_than_the_cap_is_422_naming_the_setting(tmp_path, auth):
    settings = make_settings(tmp_path / "data", max_upload_mb=8.0)
    object.__setattr__(settings, "validate_memory_mb", 64.0)   # below what loading any network takes
    path = save_smallcnn(tmp_path / "model.safetensors")
    with TestClient(create_app(settings, janitor=False), headers=auth) as client:
        resp = _post(client, "model.safetensors", path.read_bytes())
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "needed more memory than the 64 MB allowed" in detail and "ROBAUDIT_VALIDATE_MEMORY_MB" in detail
    assert _nothing_stored(settings)
    assert json.loads(json.dumps(detail))   # one line of text, not a traceback
    assert "\n" not in detail
