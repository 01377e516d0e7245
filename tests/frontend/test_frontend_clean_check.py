"""The clean-accuracy check on the pages: the evaluation page puts the checkpoint's check from upload at
its top, a near-chance run's warnings next to it, and an "invalid" verdict as a failure."""
from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient
from frontend_fixtures import make_payload

from robaudit.backend.app import crud
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.main import create_app
from robaudit.evaluation.clean_check import VERDICT_INVALID

META = {"arch": "smallcnn", "num_classes": 10, "in_channels": 1, "mean": [0.0], "std": [255.0],
        "dataset": "mnist10k", "preprocessing": "custom"}
NEAR_CHANCE = {"ran": True, "accuracy": 0.1, "n": 500, "chance": 0.1, "suspect": True,
               "message": "clean accuracy 10.0% is below twice chance (10.0%): wrong preprocessing, class order or "
                          "dataset?"}


@pytest.fixture
def client(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, api_token="t"), janitor=False)
    with TestClient(app) as c:
        c.app_state = app.state
        yield c


def _evaluation(client, clean_check, results) -> int:
    with client.app_state.Session() as s:
        ck, _ = crud.create_checkpoint(session=s, sha256="ab" * 32, name="foreign", filename="net.pt", ext="pt",
                                       size_bytes=10, meta=META, embedded_metadata=False, clean_check=clean_check,
                                       detected_arch="smallcnn")
        job = crud.create_job(session=s, kind="evaluation", name="e", checkpoint_id=ck.id,
                              config={"spec_args": {"preset": "quick", "n_examples": 200}})
        crud.store_results(session=s, job_id=job.id, results=results)
        assert crud.finish_job(session=s, job_id=job.id, task_id=job.task_id, status="succeeded")
        return job.id


def test_near_chance_checkpoint_and_run_are_flagged_on_the_evaluation_page(client):
    results = copy.deepcopy(make_payload()["evaluations"][0]["results"])
    results["warnings"] = [NEAR_CHANCE["message"]]
    results["diagnostics"]["verdict"] = VERDICT_INVALID
    page = client.get(f"/evaluations/{_evaluation(client, NEAR_CHANCE, results)}").text
    top = page.index('id="clean-check"')
    assert top < page.index('class="kpis"') and 'data-suspect="1"' in page[top - 200:top + 200]
    assert "wrong preprocessing, class order or dataset?" in page[top:page.index('class="kpis"')]
    assert 'id="result-warnings"' in page
    assert f'<span class="pill fail fs-1">{VERDICT_INVALID}</span>' in page
    facts = page[page.index('class="facts"'):]
    assert "<dt>preprocessing</dt><dd>custom</dd>" in facts and "(recognised)" in facts
    assert "<dt>clean accuracy at upload</dt>" in facts and "near chance" in facts


def test_a_check_that_could_not_run_says_why(client):
    results = make_payload()["evaluations"][0]["results"]
    check = {"ran": False, "reason": "cifar10 not found in /data"}
    page = client.get(f"/evaluations/{_evaluation(client, check, results)}").text
    assert 'id="clean-check"' in page and "could not" in page and "cifar10 not found in /data" in page
    assert 'id="result-warnings"' not in page
