"""Property-based requests generated from the OpenAPI schema, with a valid bearer token, under every
schemathesis check: no 5xx, and every answer (status, body, headers) is the one the schema documents."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from robaudit.backend.app.main import create_app

from .conftest import TOKEN, make_settings, save_smallcnn

# The schema is loaded at collection time (schemathesis.pytest.from_fixture does not work with
# pytest 9), so the app lives in a temporary folder removed after the module.
_DATA = Path(tempfile.mkdtemp(prefix="robaudit-schemathesis-"))
app = create_app(make_settings(_DATA / "data", max_upload_mb=2.0), janitor=False)
# Every check, with two settings. A request the schema allows may still be refused with a one-line 422
# (documented on every operation): whether a dataset fits a checkpoint, an architecture or attack name
# exists, or a value is under its configured cap is decided by the validators, not by the schema's
# types and ranges. And a request the schema forbids may be refused by its size first (413, from the
# body cap, before it is parsed).
_CONFIG = _DATA / "schemathesis.toml"
_CONFIG.write_text('[checks.positive_data_acceptance]\n'
                   'expected-statuses = ["2xx", "401", "404", "409", "422", "429"]\n'
                   '[checks.negative_data_rejection]\n'
                   'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", '
                   '"428", "429", "5xx"]\n')
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_path(_CONFIG))


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
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
