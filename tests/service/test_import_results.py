"""Results made elsewhere, pushed into the service: POST /evaluations/import and `robaudit push`.

An imported evaluation is a finished evaluation like any other (lists, results, comparisons,
reports), marked as imported; malformed or hostile results get one 422 line and store nothing.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from robaudit.backend.app.main import create_app
from robaudit.backend.app.models import EvaluationResult, Job, SampleBitset
from robaudit.cli import main as robaudit_main

from .conftest import TOKEN, LiveAPI, count_rows, make_settings

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "audit_tiny.json"


@pytest.fixture(scope="module")
def results() -> dict:
    """A real results JSON: the audit preset on a tiny model (the golden-results test's file)."""
    return json.loads(GOLDEN.read_text())


@pytest.fixture
def client(any_db_settings, auth):
    with TestClient(create_app(any_db_settings, janitor=False), headers=auth, base_url="http://t") as c:
        c.settings = any_db_settings
        yield c


@pytest.fixture
def sqlite_client(tmp_path, auth):
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings, janitor=False), headers=auth, base_url="http://t") as c:
        c.settings = settings
        yield c


def test_imported_results_become_an_evaluation_that_reports_can_compare(client, results):
    resp = client.post("/api/v1/evaluations/import", json={"results": results, "name": "their-wrn"})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "succeeded" and job["imported"] is True and job["has_results"] is True
    assert job["checkpoint_id"] is None and job["name"] == "their-wrn"
    assert job["summary"]["clean_accuracy"] == results["clean_accuracy"]
    assert job["summary"]["verdict"] == results["diagnostics"]["verdict"]

    assert client.get(f"/api/v1/evaluations/{job['id']}/results").json() == results
    csv = client.get(f"/api/v1/evaluations/{job['id']}/results", params={"format": "csv"}).text
    assert "pgd" in csv
    info = client.get(f"/api/v1/evaluations/{job['id']}/results", params={"format": "robustbench"}).json()
    assert info["eps"] == "0.1" and info["clean_acc"] == f"{100 * results['clean_accuracy']:.2f}"
    assert info["autoattack_acc"] is not None and "reported" in info["robaudit"]["to_fill"]
    # Per-point bitsets are stored like a worker's, so per-sample comparisons work too.
    assert count_rows(client.settings, SampleBitset, job_id=job["id"]) >= len(results["per_sample"]["bits"]) // 2

    page = client.get(f"/evaluations/{job['id']}")
    assert page.status_code == 200
    assert "their-wrn (imported)" in page.text and "data-imported" in page.text

    report = client.post("/api/v1/reports", json={"title": "mixed", "evaluation_ids": [job["id"]]}).json()
    shown = client.get(f"/reports/{report['id']}")
    assert shown.status_code == 200 and "their-wrn (imported)" in shown.text
    assert client.get("/api/v1/evaluations", params={"status": "succeeded"}).json()["count"] == 1


def _with(results: dict, change) -> dict:
    bad = copy.deepcopy(results)
    change(bad)
    return bad


BAD = {
    "wrong schema version": (lambda r: r.update(schema_version=7), "schema_version: must be 1"),
    "accuracy over 1": (lambda r: r["summary"][0].update(robust_accuracy=1.5), "summary[0].robust_accuracy"),
    "markup in an attack name": (lambda r: r["summary"][0].update(attack="<script>alert(1)</script>"),
                                 "summary[0].attack: must be a short name"),
    "no attack rows": (lambda r: r.update(summary=[]), "summary: must list at least one attack row"),
    "short bitset": (lambda r: r["per_sample"].update(clean="AAAA"), "per_sample.clean: must be a base64 bitset"),
    "row over n": (lambda r: r["worst_case"][0].update(n=10**6), "worst_case[0].n"),
    "unknown check status": (lambda r: r["diagnostics"]["checks"][0].update(status="meh"),
                             "diagnostics.checks[0].status"),
    "results not an object": (None, "Input should be a valid dictionary"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_results_are_422_with_the_field_and_store_nothing(sqlite_client, results, case):
    change, message = BAD[case]
    body = {"results": [1, 2]} if change is None else {"results": _with(results, change)}
    resp = sqlite_client.post("/api/v1/evaluations/import", json=body)
    assert resp.status_code == 422, resp.text
    assert message in str(resp.json()["detail"])
    assert count_rows(sqlite_client.settings, Job) == 0
    assert count_rows(sqlite_client.settings, EvaluationResult) == 0


def test_nan_in_results_is_refused(sqlite_client, results):
    text = json.dumps({"results": results}).replace(str(results["clean_accuracy"]), "NaN", 1)
    resp = sqlite_client.post("/api/v1/evaluations/import", content=text,
                              headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert "finite" in resp.json()["detail"]
    assert count_rows(sqlite_client.settings, Job) == 0


def test_import_needs_the_token_and_has_its_own_size_cap(tmp_path, auth, results):
    settings = make_settings(tmp_path / "data")
    object.__setattr__(settings, "max_import_mb", 0.01)
    with TestClient(create_app(settings, janitor=False), base_url="http://t") as anon:
        assert anon.post("/api/v1/evaluations/import", json={"results": results}).status_code == 401
        big = anon.post("/api/v1/evaluations/import", json={"results": results}, headers=auth)
        assert big.status_code == 413 and "ROBAUDIT_MAX_IMPORT_MB" in big.json()["detail"]
    assert count_rows(settings, Job) == 0


def test_robaudit_push_imports_a_results_file(tmp_path, results, capsys):
    settings = make_settings(tmp_path / "data")
    path = tmp_path / "wrn-results.json"
    path.write_text(json.dumps(results))
    with LiveAPI(settings) as api:
        url = str(api.base_url).rstrip("/").removesuffix("/api/v1")
        assert robaudit_main(["push", str(path), "--url", url, "--token", TOKEN]) == 0
        out = capsys.readouterr().out
        assert "imported as evaluation 1 (wrn-results)" in out and f"{url}/evaluations/1" in out
        assert api.get("/evaluations/1").json()["imported"] is True

        path.write_text("{not json")
        assert robaudit_main(["push", str(path), "--url", url, "--token", TOKEN]) == 2
        assert "is not a results JSON file" in capsys.readouterr().err
        path.write_text(json.dumps(_with(results, lambda r: r.update(n=0))))
        assert robaudit_main(["push", str(path), "--url", url, "--token", "wrong"]) == 2
        assert "HTTP 401" in capsys.readouterr().err
    assert count_rows(settings, Job) == 1
