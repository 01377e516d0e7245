"""The API without a worker: auth, the generated token, request validation (422 with the science
package's message, nothing stored), job cancel/retry transitions, reports."""
from __future__ import annotations

import json
import stat

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from robaudit.backend.app import crud, reports
from robaudit.backend.app.core.db import session_factory
from robaudit.backend.app.main import create_app
from robaudit.backend.app.models import Job

from .conftest import TOKEN, make_settings

MNIST_META = {"arch": "smallcnn", "dataset": "mnist10k", "num_classes": 10, "in_channels": 1, "input_size": 28,
              "mean": [0.0], "std": [1.0], "arch_kwargs": {}, "method": "standard",
              "hyperparameters": {"label_smoothing": 0.0}}


@pytest.fixture
def checkpoint_id(settings, client):
    with session_factory(settings)() as s:
        row, _ = crud.create_checkpoint(session=s, sha256="b" * 64, name="m", filename="m.safetensors",
                                        ext="safetensors", size_bytes=1, meta=MNIST_META, embedded_metadata=True)
        return row.id


def _jobs(settings) -> int:
    with session_factory(settings)() as s:
        return s.scalar(select(func.count()).select_from(Job))


def test_writes_need_the_token_reads_are_open(settings):
    with TestClient(create_app(settings, janitor=False)) as anon:
        for method, url, kwargs in [
            ("post", "/api/v1/checkpoints", {"files": {"file": ("a.pt", b"x")}}),
            ("post", "/api/v1/trainings", {"json": {"method": "standard"}}),
            ("post", "/api/v1/evaluations", {"json": {"checkpoint_id": 1}}),
            ("post", "/api/v1/reports", {"json": {"title": "t", "evaluation_ids": [1]}}),
            ("post", "/api/v1/jobs/1/cancel", {}),
            ("post", "/api/v1/jobs/1/retry", {}),
            ("delete", "/api/v1/checkpoints/1", {}),
        ]:
            resp = getattr(anon, method)(url, **kwargs)
            assert resp.status_code == 401, (url, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer"
        wrong = anon.post("/api/v1/trainings", json={"method": "standard"},
                          headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        for url in ("/api/v1/checkpoints", "/api/v1/jobs", "/api/v1/trainings", "/api/v1/evaluations",
                    "/api/v1/reports", "/api/v1/health"):
            assert anon.get(url).status_code == 200, url
    assert _jobs(settings) == 0


def test_reads_can_require_the_token(tmp_path, auth):
    settings = make_settings(tmp_path / "data", reads_require_token=True)
    with TestClient(create_app(settings, janitor=False)) as anon:
        assert anon.get("/api/v1/jobs").status_code == 401
        assert anon.get("/api/v1/checkpoints").status_code == 401
        assert anon.get("/api/v1/jobs", headers=auth).status_code == 200
        assert anon.get("/api/v1/health").status_code == 200   # liveness stays open for probes


def test_token_is_generated_once_with_mode_600(tmp_path, capsys):
    settings = make_settings(tmp_path / "data", api_token=None)
    app = create_app(settings, janitor=False)
    token = settings.token_file.read_text().strip()
    assert len(token) >= 32 and stat.S_IMODE(settings.token_file.stat().st_mode) == 0o600
    assert token in capsys.readouterr().err
    create_app(settings, janitor=False)   # second start: same token, not printed again
    assert token not in capsys.readouterr().err and app.state.api_token == token
    with TestClient(app) as c:
        assert c.post("/api/v1/jobs/1/cancel", headers={"Authorization": f"Bearer {token}"}).status_code == 404
        assert c.post("/api/v1/jobs/1/cancel", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401


@pytest.mark.parametrize("body, message", [
    ({"attacks": ["pgd", "deepfool"]}, "unknown attack 'deepfool'"),
    ({"eps": [1.5]}, "eps must be in (0, 1]"),
    ({"eps": [-0.1]}, "eps must be in (0, 1]"),
    ({"preset": "thorough"}, "unknown preset"),
    ({"steps": [5000]}, "steps = 5000 is over the cap of 1000"),
    ({"dataset": "cifar10"}, "dataset/architecture mismatch"),
    ({"dataset": "tinyimagenet"}, "unknown dataset"),
    ({"attacks": ["transfer"]}, "surrogate"),
    ({"checkpoint_id": 999}, "no checkpoint 999"),
    ({"surrogate_id": 999}, "no surrogate checkpoint 999"),
    ({"norm": "l1", "attacks": ["pgd", "autoattack"]}, "pgd has no L1 version; under l1 choose from: apgd-ce"),
    ({"norm": "l1", "preset": "paper"}, "the paper preset has no attack with an L1 version"),
    ({"norm": "l2", "eps": [30.0]}, "L2 eps must be in (0, 28]"),
    ({"norm": "l3"}, "Input should be 'linf', 'l2' or 'l1'"),
])
def test_bad_evaluation_requests_are_422_and_store_nothing(client, settings, checkpoint_id, body, message):
    resp = client.post("/api/v1/evaluations", json={"checkpoint_id": checkpoint_id, "n_examples": 8, **body})
    assert resp.status_code == 422, resp.text
    assert message in str(resp.json()["detail"])
    assert _jobs(settings) == 0


@pytest.mark.parametrize("body, message", [
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"method": "standard", "hyperparameters": {"epochz": 3}}, "unknown training option(s): epochz"),
    ({"method": "standard", "hyperparameters": {"device": "cuda"}}, "the worker chooses"),
    ({"method": "standard", "hyperparameters": {"epochs": 0}}, "epochs must be at least 1"),
    ({"method": "standard", "hyperparameters": {"epochs": "many"}}, "hyperparameter epochs"),
    ({"method": "standard", "hyperparameters": {"steps": 3}}, "not apply to method"),
    ({"method": "pgd-at", "hyperparameters": {"eps": 2}}, "eps must be in (0, 1]"),
    ({"method": "standard", "arch": "resnet9000"}, "unknown architecture"),
    ({"method": "standard", "arch_kwargs": {"depth": 3}}, "bad arguments"),
    ({"method": "standard", "dataset": "tinyimagenet"}, "unknown dataset"),
    ({"method": "standard", "hyperparameters": {"method": "trades"}}, "top level"),
    ({"method": "standard", "hyperparameters": {"lr": float("nan")}}, "finite"),
])
def test_bad_training_requests_are_422_and_store_nothing(client, settings, body, message):
    # Sent as text: Python's json writes NaN (httpx's json= would refuse), as some clients do.
    resp = client.post("/api/v1/trainings", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert message in str(resp.json()["detail"])
    assert _jobs(settings) == 0


def test_queued_job_cancel_retry_and_results_before_done(client, settings, checkpoint_id):
    created = client.post("/api/v1/evaluations", json={"checkpoint_id": checkpoint_id, "preset": "quick",
                                                       "n_examples": 8})
    assert created.status_code == 201
    job = created.json()
    assert job["status"] == "queued" and job["config"]["spec"]["attacks"] == ["fgsm", "pgd", "cw"]
    assert client.get(f"/api/v1/evaluations/{job['id']}/results").status_code == 409
    assert client.get(f"/api/v1/trainings/{job['id']}").status_code == 404   # wrong kind
    cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409
    retried = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    assert client.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 409
    assert client.post("/api/v1/jobs/424242/cancel").status_code == 404
    listing = client.get("/api/v1/jobs", params={"kind": "evaluation", "status": "queued"}).json()
    assert listing["count"] == 1 and listing["data"][0]["id"] == job["id"]
    # The checkpoint is now used by a job: deleting it is refused.
    assert client.delete(f"/api/v1/checkpoints/{checkpoint_id}").status_code == 409


def test_reports_round_trip(client, settings, checkpoint_id):
    ev = client.post("/api/v1/evaluations", json={"checkpoint_id": checkpoint_id, "n_examples": 8}).json()
    assert client.post("/api/v1/reports", json={"title": "x", "evaluation_ids": [ev["id"], 777]}).status_code == 422
    created = client.post("/api/v1/reports", json={"title": "FS vs PGD-AT", "evaluation_ids": [ev["id"]]})
    assert created.status_code == 201
    report = created.json()
    assert len(report["id"]) == 8 and report["url"] == f"/reports/{report['id']}"
    token = report["share_url"].removeprefix("/share/")
    assert len(token) >= 32
    payload = client.get(f"/api/v1/reports/{report['id']}").json()
    assert payload["report"]["title"] == "FS vs PGD-AT" and "share" not in str(payload["report"])
    assert payload["evaluations"][0]["status"] == "queued" and payload["evaluations"][0]["results"] is None
    assert payload["evaluations"][0]["checkpoint"]["method"] == "standard"
    exported = client.get(f"/api/v1/reports/{report['id']}/export", params={"format": "json"})
    assert exported.json()["report"] == payload["report"]
    assert client.post("/api/v1/reports", json={"title": "x", "evaluation_ids": [ev["id"]],
                                                "kind": "nonsense"}).status_code == 422
    study = client.post("/api/v1/reports", json={"title": "s", "evaluation_ids": [ev["id"]],
                                                 "kind": "label-smoothing-study"}).json()
    assert study["kind"] == "label-smoothing-study"
    # No finished results yet: the study section is present but has nothing to analyse.
    assert client.get(f"/api/v1/reports/{study['id']}").json()["study"] is None
    assert client.get("/api/v1/reports/nope0000").status_code == 404
    assert client.get("/api/v1/reports").json()["count"] == 2
    with session_factory(settings)() as s:
        # The share link's payload is the report's, minus the adversarial examples (never shared by link).
        shared = reports.get_report_payload_by_token(s, token)
        assert shared == {**payload, "evaluations": [{k: v for k, v in ev.items() if k != "gallery"}
                                                     for ev in payload["evaluations"]]}
        assert all("gallery" in ev for ev in payload["evaluations"])


def test_shared_report_needs_only_its_share_token(tmp_path, auth):
    """GET /shared/{token}: no API token even when reads need one; that report only, without its id,
    URLs or per-sample data; unknown tokens 404, malformed ones 422."""
    settings = make_settings(tmp_path / "data", reads_require_token=True)
    results = {"clean_accuracy": 0.5, "n": 2, "summary": [], "per_sample": {"n": 2, "clean": "Aw=="}}
    app = create_app(settings, janitor=False)   # applies the migrations
    with app.state.Session() as s:
        ckpt, _ = crud.create_checkpoint(session=s, sha256="c" * 64, name="m", filename="m.safetensors",
                                         ext="safetensors", size_bytes=1, meta=MNIST_META, embedded_metadata=True)
        done = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=ckpt.id)
        crud.claim_job(session=s, job_id=done.id, task_id=done.task_id, hostname="h", pid=1, stale_after_s=60)
        crud.store_results(session=s, job_id=done.id, results=results)
        crud.finish_job(session=s, job_id=done.id, task_id=done.task_id, status="succeeded")
        queued = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=ckpt.id)
        mine = crud.create_report(session=s, title="mine", evaluation_ids=[done.id, queued.id])
        other = crud.create_report(session=s, title="other", evaluation_ids=[queued.id], kind="label-smoothing-study")
        ids = {"mine": mine.id, "mine_token": mine.share_token, "other_token": other.share_token,
               "done": done.id, "queued": queued.id}
    with TestClient(app) as anon:
        assert anon.get(f"/api/v1/reports/{ids['mine']}").status_code == 401
        r = anon.get(f"/api/v1/shared/{ids['mine_token']}")
        assert r.status_code == 200
        shared = r.json()
        assert set(shared) == {"report", "evaluations"}                 # a comparison: no study section
        assert set(shared["report"]) == {"title", "created_at", "kind"} and shared["report"]["title"] == "mine"
        assert ids["mine"] not in r.text and "/reports/" not in r.text and "/share/" not in r.text
        assert [e["id"] for e in shared["evaluations"]] == [ids["done"], ids["queued"]]
        first, second = shared["evaluations"]
        assert first["results"] == {k: v for k, v in results.items() if k != "per_sample"}
        assert second["status"] == "queued" and second["results"] is None
        assert first["checkpoint"]["method"] == "standard"
        other_shared = anon.get(f"/api/v1/shared/{ids['other_token']}").json()
        assert other_shared["report"]["title"] == "other" and other_shared["study"] is None
        assert [e["id"] for e in other_shared["evaluations"]] == [ids["queued"]]
        unknown = anon.get("/api/v1/shared/" + "A" * 32)
        assert unknown.status_code == 404 and unknown.json() == {"detail": "no report is shared under this token"}
        for malformed in ("short", "x" * 65, "bad.token.with.dots", ids["mine_token"][:-1] + "!"):
            assert anon.get(f"/api/v1/shared/{malformed}").status_code == 422, malformed
    with TestClient(app, headers=auth) as client:
        full = client.get(f"/api/v1/reports/{ids['mine']}").json()
        assert full["evaluations"][0]["results"]["per_sample"] == results["per_sample"]
        assert client.get(f"/api/v1/shared/{ids['mine_token']}").json() == shared


def test_health_reports_database_broker_and_no_workers(client):
    health = client.get("/api/v1/health").json()
    assert health["database"]["ok"] and health["broker"]["ok"]
    assert health["workers"] == [] and health["status"] == "degraded"
