"""Property-based requests generated from the OpenAPI schema, with a valid bearer token: no 5xx."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from robaudit.backend.app.main import create_app

from .conftest import TOKEN, make_settings, save_smallcnn

# The schema is loaded at collection time (schemathesis.pytest.from_fixture does not work with
# pytest 9), so the app lives in a temporary folder removed after the module.
_DATA = Path(tempfile.mkdtemp(prefix="robaudit-schemathesis-"))
app = create_app(make_settings(_DATA / "data", max_upload_mb=2.0), janitor=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def seeded():
    """One real checkpoint and evaluation, so id 1 exists and the happy paths are reached too."""
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        path = save_smallcnn(_DATA / "m.safetensors")
        assert c.post("/api/v1/checkpoints", files={"file": ("m.safetensors", path.read_bytes())}).status_code == 201
        assert c.post("/api/v1/evaluations", json={"checkpoint_id": 1, "n_examples": 8}).status_code == 201
    yield
    shutil.rmtree(_DATA, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])
