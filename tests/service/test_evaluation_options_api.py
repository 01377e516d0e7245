"""The evaluation request's sharding and speed options, end to end in one process: aa_examples,
shard_size, batch_size "auto" (capped by the service), bf16."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from robaudit.backend.app.main import create_app

from .conftest import make_settings, run_inline, save_smallcnn


@pytest.fixture
def client(tmp_path, auth, monkeypatch):
    monkeypatch.setenv("ROBAUDIT_CACHE_DIR", str(tmp_path / "cache"))   # the auto batch size's cache
    settings = make_settings(tmp_path / "data", max_batch_size=16)
    with TestClient(create_app(settings, janitor=False), headers=auth, base_url="http://t/api/v1") as c:
        c.settings = settings
        path = save_smallcnn(tmp_path / "random.safetensors")
        with path.open("rb") as fh:
            uploaded = c.post("/checkpoints", files={"file": (path.name, fh, "application/octet-stream")})
        c.checkpoint_id = uploaded.json()["id"]
        yield c


def test_options_reach_the_results(client):
    body = {"checkpoint_id": client.checkpoint_id, "attacks": ["fgsm", "apgd-ce"], "n_examples": 40,
            "batch_size": "auto", "precision": "bf16", "aa_examples": 0, "shard_size": 16}
    job = client.post("/evaluations", json=body)
    assert job.status_code == 201, job.text
    assert run_inline(client.settings, job.json()["id"]) == "succeeded"
    done = client.get(f"/evaluations/{job.json()['id']}").json()
    results = client.get(f"/evaluations/{job.json()['id']}/results").json()
    config = results["config"]
    assert config["precision"] == "bf16" and config["auto_batch_size"] is True
    assert 1 <= config["batch_size"] <= 16                            # found, then capped by ROBAUDIT_MAX_BATCH_SIZE
    assert config["autoattack_examples"] is None                      # 0 = every point
    assert [r["n"] for r in results["summary"] if r["attack"] == "apgd-ce"] == [40]
    assert len(done["shards"]) >= 3 and done["shards"][-1]["end"] == 40   # 16 points per shard, whole batches
    assert "gradients_fp32" in results["probes"]


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", "large", "auto"),
    ("batch_size", 0, "batch_size must be 1 to 100000"),
    ("precision", "fp16", "fp32"),
    ("shard_size", 0, "greater than or equal to 1"),
    ("aa_examples", -1, "greater than or equal to 0"),
])
def test_bad_options_are_422(client, field, value, message):
    resp = client.post("/evaluations", json={"checkpoint_id": client.checkpoint_id, field: value})
    assert resp.status_code == 422 and message in str(resp.json()["detail"]), resp.text


def test_norm_reaches_the_results_with_the_norms_default_eps(client):
    body = {"checkpoint_id": client.checkpoint_id, "norm": "l2", "attacks": ["fgsm", "pgd"], "steps": [5],
            "n_examples": 16}
    job = client.post("/evaluations", json=body)
    assert job.status_code == 201, job.text
    assert run_inline(client.settings, job.json()["id"]) == "succeeded"
    results = client.get(f"/evaluations/{job.json()['id']}/results").json()
    assert results["norm"] == "l2" and results["config"]["eps"] == [2.0]   # MNIST's L2 default
    assert {r["norm"] for r in results["summary"]} == {"l2"}
    csv_text = client.get(f"/evaluations/{job.json()['id']}/results", params={"format": "csv"}).text
    header, _clean, *lines = csv_text.splitlines()
    assert header.endswith(",norm") and lines and all(line.endswith(",l2") for line in lines)
