"""The CI gate through the service: `gate` fields on POST /evaluations (422s), and the evaluation's
`gate` once the worker's job code has run it (in this process, the task body a worker runs)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.main import create_app
from robaudit.backend.app.models import Job
from robaudit.evaluation.gate import GateSettings, check_gate, primary_worst_case

from .conftest import make_settings, run_inline, save_smallcnn


@pytest.fixture
def client(any_db_settings, auth):
    with TestClient(create_app(any_db_settings, janitor=False), headers=auth, base_url="http://t/api/v1") as c:
        yield c


@pytest.fixture
def sqlite_client(tmp_path, auth):
    """For what the request schema decides before any database work."""
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings, janitor=False), headers=auth, base_url="http://t/api/v1") as c:
        c.settings = settings
        yield c


@pytest.fixture
def checkpoint_id(client, tmp_path) -> int:
    path = save_smallcnn(tmp_path / "random.safetensors")
    with path.open("rb") as fh:
        resp = client.post("/checkpoints", files={"file": (path.name, fh, "application/octet-stream")})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _jobs(settings) -> int:
    with session_factory(settings)() as s:
        return s.scalar(select(func.count()).select_from(Job))


@pytest.mark.parametrize("gate, message", [
    ({"fail_under": 1.5}, "less than or equal to 1"),
    ({"fail_under": -0.1}, "greater than or equal to 0"),
    ({"fail_under": "lots"}, "valid number"),
    ({"fail_on": "sometimes"}, "'suspected' or 'warn'"),
    ({}, "a gate needs fail_under, fail_on or both"),
    ({"fail_under": 0.4, "fail_over": 0.9}, "Extra inputs are not permitted"),
])
def test_bad_gate_fields_are_422_and_store_nothing(sqlite_client, gate, message):
    resp = sqlite_client.post("/evaluations", json={"checkpoint_id": 1, "n_examples": 8, "gate": gate})
    assert resp.status_code == 422, resp.text
    assert message in str(resp.json()["detail"])
    assert _jobs(sqlite_client.settings) == 0


def _run(settings, job_id: int) -> None:
    assert run_inline(settings, job_id) == "succeeded"


def test_evaluation_carries_its_gate_once_results_exist(client, any_db_settings, checkpoint_id):
    body = {"checkpoint_id": checkpoint_id, "attacks": ["fgsm", "pgd"], "steps": [5], "n_examples": 8}
    gated = client.post("/evaluations", json={**body, "gate": {"fail_under": 0.4, "fail_on": "suspected"}})
    plain = client.post("/evaluations", json=body)
    assert gated.status_code == plain.status_code == 201, (gated.text, plain.text)
    gated_id, plain_id = gated.json()["id"], plain.json()["id"]
    assert gated.json()["gate"] is None                      # no results yet
    assert gated.json()["config"]["gate"] == {"fail_under": 0.4, "fail_on": "suspected"}
    assert "gate" not in plain.json()["config"]

    _run(any_db_settings, gated_id)
    _run(any_db_settings, plain_id)
    job = client.get(f"/evaluations/{gated_id}").json()
    results = client.get(f"/evaluations/{gated_id}/results").json()
    # A randomly initialised model is right on about 1 point in 10: its worst case is under 40 %.
    worst = primary_worst_case(results)
    assert worst is not None and worst["robust_accuracy"] < 0.4
    gate = job["gate"]
    assert gate["passed"] is False and gate["fail_under"] == 0.4 and gate["fail_on"] == "suspected"
    assert f"worst case {100 * worst['robust_accuracy']:.2f} % at eps=0.3 on 8 points is below" in gate["reasons"][0]
    assert gate == check_gate(results, GateSettings(fail_under=0.4, fail_on="suspected")).to_dict()
    assert "gate" not in job["summary"]
    assert client.get(f"/evaluations/{plain_id}").json()["gate"] is None
    listed = {j["id"]: j for j in client.get("/evaluations").json()["data"]}
    assert listed[gated_id]["gate"] == gate and listed[plain_id]["gate"] is None


def test_openapi_documents_the_gate(sqlite_client):
    schemas = sqlite_client.get("http://t/openapi.json").json()["components"]["schemas"]
    assert set(schemas["GateCreate"]["properties"]) == {"fail_under", "fail_on"}
    assert "gate" in schemas["EvaluationCreate"]["properties"]
    assert {"passed", "reasons"} <= set(schemas["GatePublic"]["properties"])
    assert "gate" in schemas["JobPublic"]["properties"]
