"""Caps on what one job may ask for, and on the queue (issue 13, item 8): each over-the-cap request
is a 422 naming the field, its value and the cap (or a 429 for a full queue), and stores nothing."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.main import create_app

from .conftest import make_settings
from .test_api import MNIST_META, _jobs, checkpoint_id  # noqa: F401 (fixture)


@pytest.mark.parametrize("body, message", [
    ({"method": "standard", "hyperparameters": {"epochs": 1e30}}, "epochs = 1e+30 is over the cap of 1000 "
                                                                  "(ROBAUDIT_MAX_EPOCHS)"),
    ({"method": "pgd-at", "hyperparameters": {"steps": 10_000_000}}, "steps = 10000000 is over the cap of 1000 "
                                                                     "(ROBAUDIT_MAX_ATTACK_STEPS)"),
    ({"method": "standard", "hyperparameters": {"batch_size": 10**9}}, "batch_size = 1000000000 is over the cap "
                                                                       "of 4096 (ROBAUDIT_MAX_BATCH_SIZE)"),
    ({"method": "standard", "hyperparameters": {"n_train": 10**12}}, "n_train = 1000000000000 is over the cap of "
                                                                     "1000000 (ROBAUDIT_MAX_TRAIN_EXAMPLES)"),
    ({"method": "standard", "hyperparameters": {"eval_examples": 10**7}}, "eval_examples = 10000000 is over the "
                                                                          "cap of 100000"),
    ({"method": "standard", "dataset": "cifar10", "arch": "wideresnet", "arch_kwargs": {"depth": 10_000}},
     "arch_kwargs.depth = 10000 is over the cap of 200 (ROBAUDIT_MAX_MODEL_DEPTH)"),
    ({"method": "standard", "dataset": "cifar10", "arch": "wideresnet",
      "arch_kwargs": {"depth": 28, "widen_factor": 200}}, "is over the cap of 500000000 (ROBAUDIT_MAX_MODEL_PARAMS)"),
])
def test_training_over_a_cap_is_422_naming_field_value_and_cap(client, settings, body, message):
    resp = client.post("/api/v1/trainings", json=body)
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"]
    assert _jobs(settings) == 0


def test_training_caps_come_from_the_settings(tmp_path, auth, monkeypatch):
    monkeypatch.setenv("ROBAUDIT_MAX_EPOCHS", "3")
    settings = Settings.from_env(**{k: v for k, v in vars(make_settings(tmp_path / "data")).items()
                                    if k != "max_epochs"})
    assert settings.max_epochs == 3 and settings.to_env()["ROBAUDIT_MAX_EPOCHS"] == "3"
    with TestClient(create_app(settings, janitor=False), headers=auth) as c:
        resp = c.post("/api/v1/trainings", json={"method": "standard", "hyperparameters": {"epochs": 4}})
        assert resp.status_code == 422 and "epochs = 4 is over the cap of 3" in resp.json()["detail"]
        ok = c.post("/api/v1/trainings", json={"method": "standard", "hyperparameters": {"epochs": 3}})
        assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("body, message", [
    ({"n_examples": 500_000}, "n_examples = 500000 is over the cap of 100000 (ROBAUDIT_MAX_EVAL_EXAMPLES)"),
    ({"batch_size": 50_000}, "batch_size = 50000 is over the cap of 4096 (ROBAUDIT_MAX_BATCH_SIZE)"),
    ({"attacks": ["pgd"], "steps": [10, 2000]}, "steps = 2000 is over the cap of 1000 (ROBAUDIT_MAX_ATTACK_STEPS)"),
])
def test_evaluation_over_a_cap_is_422_naming_field_value_and_cap(client, settings, checkpoint_id, body, message):
    resp = client.post("/api/v1/evaluations", json={"checkpoint_id": checkpoint_id, **body})
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"]
    assert _jobs(settings) == 0


def test_a_full_queue_is_429_and_stores_nothing(tmp_path, auth):
    settings = make_settings(tmp_path / "data", max_queued_jobs=2)
    with TestClient(create_app(settings, janitor=False), headers=auth) as c:
        train = {"method": "standard", "hyperparameters": {"epochs": 1}}
        assert [c.post("/api/v1/trainings", json=train).status_code for _ in range(2)] == [201, 201]
        full = c.post("/api/v1/trainings", json=train)
        assert full.status_code == 429, full.text
        assert full.json()["detail"] == ("2 jobs are queued, the most allowed (ROBAUDIT_MAX_QUEUED_JOBS): "
                                         "wait for some to start or cancel some, then try again")
        assert _jobs(settings) == 2
        # A cancelled job leaves the queue, and makes room for one more.
        assert c.post("/api/v1/jobs/1/cancel").status_code == 202
        assert c.post("/api/v1/trainings", json=train).status_code == 201
        # Retrying puts a job back in the queue, so it is capped too.
        retry = c.post("/api/v1/jobs/1/retry")
        assert retry.status_code == 429, retry.text
        assert c.get("/api/v1/jobs/1").json()["status"] == "cancelled"
