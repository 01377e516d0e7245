"""The dashboard's pages through the real app (create_app, SQLite in a temp folder, no worker):
jobs and results are written with the service's own crud functions, then the pages are read."""
from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from frontend_fixtures import make_payload

from robaudit.backend.app import crud
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.main import create_app

TOKEN = "frontend-test-token"


def seed(app) -> dict:
    """Two checkpoints, two finished evaluations with results, one report; returns their ids."""
    payload = make_payload()
    ids: dict = {"evaluations": []}
    with app.state.Session() as s:
        for i, ev in enumerate(payload["evaluations"]):
            ck = ev["checkpoint"]
            meta = {"arch": "smallcnn", "num_classes": 10, "in_channels": 1, "mean": [0.0], "std": [1.0],
                    "dataset": "mnist10k", "method": ck["method"], "hyperparameters": ck["hyperparameters"],
                    "metrics": {"history": ck["history"]}}
            row, _ = crud.create_checkpoint(session=s, sha256=f"{i:064x}", name=ck["name"], filename="m.safetensors",
                                            ext="safetensors", size_bytes=1000, meta=meta, embedded_metadata=True)
            job = crud.create_job(session=s, kind="evaluation", name=ev["name"], checkpoint_id=row.id,
                                  config={"spec_args": {"preset": "paper", "n_examples": 200}})
            crud.store_results(session=s, job_id=job.id, results=ev["results"])
            assert crud.finish_job(session=s, job_id=job.id, task_id=job.task_id, status="succeeded")
            ids["evaluations"].append(job.id)
        queued = crud.create_job(session=s, kind="evaluation", name="still queued", checkpoint_id=row.id, config={})
        ids["queued"] = queued.id
        report = crud.create_report(session=s, title="Seeded report", evaluation_ids=ids["evaluations"])
        other = crud.create_report(session=s, title="Another team's report", evaluation_ids=ids["evaluations"][:1])
        ids.update(report=report.id, share=report.share_token, other=other.id)
    return ids


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(data_dir=tmp_path, api_token=TOKEN), janitor=False)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def ids(app):
    return seed(app)


def figure_blobs(html: str) -> dict[str, dict]:
    return {i: json.loads(b) for i, b in
            re.findall(r'<script type="application/json" data-figure-for="([^"]+)">(.*?)</script>', html, re.S)}


@pytest.mark.parametrize("path", ["/checkpoints", "/trainings/new", "/evaluations/new", "/jobs", "/compare",
                                  "/reports"])
def test_pages_render_with_navigation_and_token_box(client, path):
    r = client.get(path)
    assert r.status_code == 200, r.text[:500]
    assert 'id="token-dialog"' in r.text and 'aria-label="Main"' in r.text
    assert "cdn" not in r.text.lower()


def test_plotly_js_is_served_from_the_installed_package(client):
    r = client.get("/vendor/plotly.min.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert b"plotly.js v" in r.content[:200]


def test_forms_carry_html5_constraints(client):
    train = client.get("/trainings/new").text
    assert re.search(r'id="tr-epochs"[^>]*required[^>]*min="1"', train)
    assert re.search(r'id="tr-ls"[^>]*min="0"[^>]*max="0.999"', train)
    evaluate = client.get("/evaluations/new").text
    assert re.search(r'id="ev-n"[^>]*min="1"[^>]*step="1"', evaluate)
    assert 'value="feature-scatter"' in train and 'value="audit"' in evaluate
    upload = client.get("/checkpoints").text
    assert 'accept=".safetensors,.pt,.pth,.onnx"' in upload


def test_evaluation_page_shows_table_charts_and_diagnostics(client, ids):
    r = client.get(f"/evaluations/{ids['evaluations'][0]}")
    assert r.status_code == 200
    figs = figure_blobs(r.text)
    assert set(figs) == {"chart-eps", "chart-steps", "chart-ladder", "chart-train-0"}
    ladder = figs["chart-ladder"]["data"]                          # one bar trace (the model), seven rungs
    assert len(ladder) == 1 and len(ladder[0]["x"]) == 7
    assert "Verdict: unreliable" in r.text
    assert r.text.count('class="check ') == 3
    assert "AutoAttack after APGD-CE" in r.text                  # cumulative stage listed in the table
    assert '<script src="/vendor/plotly.min.js">' in r.text


def test_unfinished_evaluation_page_shows_live_progress(client, ids):
    r = client.get(f"/evaluations/{ids['queued']}")
    assert r.status_code == 200
    assert 'id="job-live"' in r.text and 'data-status="queued"' in r.text
    assert "data-figure-for" not in r.text


def test_missing_things_are_404_pages(client, ids):
    assert client.get("/evaluations/999").status_code == 404
    assert client.get("/reports/zzzzzzzz").status_code == 404
    assert client.get("/share/not-a-real-token-123").status_code == 404
    assert client.get("/share/abc").status_code == 404
    assert client.get("/share/" + "x" * 80 + "/export").status_code == 404


def test_compare_preview_overlays_the_chosen_evaluations(client, ids):
    a, b = ids["evaluations"]
    r = client.get(f"/compare?ids={a}&ids={b}")
    assert r.status_code == 200
    figs = figure_blobs(r.text)
    pgd20 = {t["legendgroup"] for t in figs["cmp-eps"]["data"] if t["name"] == "PGD-20"}
    assert pgd20 == {"fs-mnist-d0.5", "pgd-at-mnist"}                # a legend group per model
    assert list(figs)[:2] == ["cmp-gap", "cmp-eps"]                  # the PGD overstatement first
    assert f'data-ids="{a},{b}"' in r.text


def test_report_page_has_share_link_and_exports(client, ids):
    # The share link is a secret: shown with the API token only, even though reads are open.
    r = client.get(f"/reports/{ids['report']}")
    assert r.status_code == 200
    assert ids["share"] not in r.text and "Set the API token" in r.text
    r = client.get(f"/reports/{ids['report']}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert f'value="/share/{ids["share"]}"' in r.text
    assert 'id="share-rotate"' in r.text and 'id="share-revoke"' in r.text and 'id="report-delete"' in r.text
    for fmt in ("html", "csv", "json"):
        assert f"/api/v1/reports/{ids['report']}/export?format={fmt}" in r.text


def test_share_page_shows_this_report_only(client, ids):
    r = client.get(f"/share/{ids['share']}")
    assert r.status_code == 200
    html = r.text
    assert "Seeded report" in html and "Another team's report" not in html
    assert "<nav" not in html and 'href="/reports' not in html and 'href="/jobs' not in html
    assert "/api/" not in html                                     # no API calls, no API links
    assert ids["report"] not in html                               # not even its internal id
    assert 'id="token-dialog"' not in html and "api.js" not in html
    assert len(figure_blobs(html)) == 5
    assert r.headers["referrer-policy"] == "no-referrer"


def test_share_exports(client, ids):
    base = f"/share/{ids['share']}/export"
    html = client.get(base, params={"format": "html"})
    assert html.status_code == 200 and "Seeded report" in html.text and "plotly.js v" in html.text
    data = client.get(base, params={"format": "json"}).json()
    assert [e["id"] for e in data["evaluations"]] == ids["evaluations"]
    assert "per_sample" not in data["evaluations"][0]["results"] and "id" not in data["report"]
    csv_text = client.get(base, params={"format": "csv"}).text
    assert csv_text.startswith("report_id,report_title,evaluation_id")
    assert client.get(base, params={"format": "xml"}).status_code == 422


def test_pages_ask_for_the_token_when_reads_need_it(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, api_token=TOKEN, reads_require_token=True), janitor=False)
    ids = seed(app)
    with TestClient(app) as c:
        r = c.get("/reports")
        assert r.status_code == 401 and "API token needed" in r.text and "missing or wrong bearer token" in r.text
        c.cookies.set("robaudit_token", "wrong-token")
        assert c.get(f"/evaluations/{ids['evaluations'][0]}").status_code == 401
        c.cookies.set("robaudit_token", TOKEN)
        assert c.get(f"/evaluations/{ids['evaluations'][0]}").status_code == 200
        assert c.get("/reports").status_code == 200
        c.cookies.clear()
        assert c.get(f"/share/{ids['share']}").status_code == 200   # the share link needs no token


def test_training_job_page_draws_the_history_and_serves_it_live(client, app):
    history = [{"epoch": 1, "clean_acc": 0.9, "pgd20_acc": 0.4, "lr": 0.1},
               {"epoch": 2, "clean_acc": 0.93, "pgd20_acc": 0.5, "lr": 0.01}]
    with app.state.Session() as s:
        job = crud.create_job(session=s, kind="training", name="fs run",
                              config={"train_config": {"method": "feature-scatter", "dataset": "mnist10k",
                                                       "arch": "smallcnn", "epochs": 2, "eps": 0.3,
                                                       "label_smoothing": 0.5}})
        assert crud.finish_job(session=s, job_id=job.id, task_id=job.task_id, status="succeeded", metrics=history)
        fresh = crud.create_job(session=s, kind="training", name="not started", config={})
    r = client.get(f"/jobs/{job.id}")
    assert r.status_code == 200, r.text[:300]
    fig = figure_blobs(r.text)["training-curves"]
    assert [t["name"] for t in fig["data"]][:2] == ["clean test accuracy", "PGD-20 test accuracy"]
    assert fig["layout"]["shapes"][0]["x0"] == 1.5
    assert "feature-scatter" in r.text and 'id="job-live"' in r.text
    live = client.get(f"/ui/jobs/{job.id}/training-figure").json()
    assert live["epochs"] == 2 and live["figure"]["data"][1]["y"] == [40.0, 50.0]
    # Before the first epoch: a note instead of the chart, and the live endpoint has no figure yet.
    r = client.get(f"/jobs/{fresh.id}")
    assert r.status_code == 200 and "No epoch has finished yet" in r.text
    assert client.get(f"/ui/jobs/{fresh.id}/training-figure").json()["figure"] is None
    assert client.get(f"/jobs/{fresh.id + 100}").status_code == 404


def test_an_evaluation_job_page_is_its_evaluation_page(client, ids):
    r = client.get(f"/jobs/{ids['evaluations'][0]}", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == f"/evaluations/{ids['evaluations'][0]}"


def test_a_randomized_model_is_named_with_its_averaged_accuracies(app, client):
    payload = make_payload()
    results = payload["evaluations"][0]["results"]
    results["randomized"] = {"detected": True, "passes": 20, "clean_accuracy": 0.915, "auto_eot": True, "attacks": [
        {"attack": "eot-pgd", "eps": 0.3, "robust_accuracy": 0.425, "n": results["n"]},
        {"attack": "autoattack-rand", "eps": 0.3, "robust_accuracy": 0.375, "n": 8}]}
    with app.state.Session() as s:
        row, _ = crud.create_checkpoint(session=s, sha256="ab" * 32, name="noisy", filename="m.safetensors",
                                        ext="safetensors", size_bytes=1000, meta={"dataset": "mnist10k"},
                                        embedded_metadata=True)
        job = crud.create_job(session=s, kind="evaluation", name="noisy", checkpoint_id=row.id, config={})
        crud.store_results(session=s, job_id=job.id, results=results)
        assert crud.finish_job(session=s, job_id=job.id, task_id=job.task_id, status="succeeded")
    page = client.get(f"/evaluations/{job.id}").text
    note = re.search(r'<div class="alert warn" id="randomized".*?</div>', page, re.S).group(0)
    note = " ".join(note.split())
    assert "Randomized model." in note and "averaged over 20 passes" in note
    assert "clean 91.5 %" in note and "EOT-PGD 42.5 %" in note and "AutoAttack rand 37.5 % (first 8 points)" in note
    # A deterministic model's page has no such note.
    assert 'id="randomized"' not in client.get(f"/evaluations/{seed(app)['evaluations'][0]}").text
