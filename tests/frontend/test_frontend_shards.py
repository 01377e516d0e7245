"""Sharded evaluations on the pages: the status card's shard table, the per-shard timing of a finished
evaluation, and the new-evaluation form's AutoAttack and shard-size fields.

The job answers get their ``shards`` from a wrapper around the in-process API client, shaped like
the API contract (GET /api/v1/evaluations/{id} and /jobs/{id}); everything else is the real app on
SQLite, as in test_frontend_pages.py. What the browser does with each poll is tested in
tests/browser/test_shards_browser.py.
"""
from __future__ import annotations

import copy
import re
from html import unescape

import pytest
from fastapi.testclient import TestClient
from frontend_fixtures import make_payload

from robaudit.backend.app import crud
from robaudit.backend.app.core.config import Settings
from robaudit.backend.app.main import create_app
from robaudit.frontend import routes
from robaudit.frontend.views import ShardRow, fmt_duration, shard_rows, shard_summary

TOKEN = "frontend-shards-token"

SHARDS = [
    {"index": 1, "start": 500, "end": 1000, "status": "running", "worker": "gpu1@host-a", "attempt": 2,
     "max_attempts": 3, "done": 2500.0, "total": 5000.0, "stage": "pgd eps=0.3", "eta_seconds": 125.0,
     "error": None},
    {"index": 0, "start": 0, "end": 500, "status": "succeeded", "worker": "gpu0@host-a", "attempt": 1,
     "max_attempts": 3, "done": 5000.0, "total": 5000.0, "stage": None, "eta_seconds": None, "error": None},
    {"index": 2, "start": 1000, "end": 1500, "status": "queued", "worker": None, "attempt": 0, "max_attempts": 3,
     "done": 0.0, "total": 5000.0, "stage": None, "eta_seconds": None, "error": None},
    {"index": 3, "start": 1500, "end": 2000, "status": "failed", "worker": "gpu0@host-b", "attempt": 3,
     "max_attempts": 3, "done": 1200.0, "total": 5000.0, "stage": "cw eps=0.3", "eta_seconds": None,
     "error": "CUDA out of memory <in batch 3>"},
]


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(data_dir=tmp_path, api_token=TOKEN), janitor=False)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def jobs(app) -> dict[str, int]:
    """A checkpoint, a queued evaluation, a finished one whose results were merged from three shards,
    and a training job."""
    ev = make_payload()["evaluations"][0]
    ck = ev["checkpoint"]
    meta = {"arch": "smallcnn", "num_classes": 10, "in_channels": 1, "mean": [0.0], "std": [1.0],
            "dataset": "mnist10k", "method": ck["method"], "hyperparameters": ck["hyperparameters"],
            "metrics": {"history": ck["history"]}}
    results = copy.deepcopy(ev["results"])
    results["timing"].update(
        shards=[{"start": 100, "end": 200, "seconds": 61.25, "worker": "gpu1@host-a"},
                {"start": 0, "end": 100, "seconds": 70.5, "worker": "gpu0@host-a"}],
        merge_seconds=3.75)
    with app.state.Session() as s:
        row, _ = crud.create_checkpoint(session=s, sha256="0" * 64, name=ck["name"], filename="m.safetensors",
                                        ext="safetensors", size_bytes=1000, meta=meta, embedded_metadata=True)
        queued = crud.create_job(session=s, kind="evaluation", name="sharded", checkpoint_id=row.id,
                                 config={"spec_args": {"preset": "audit", "n_examples": 2000}})
        done = crud.create_job(session=s, kind="evaluation", name="merged", checkpoint_id=row.id,
                               config={"spec_args": {"preset": "paper", "n_examples": 200}})
        crud.store_results(session=s, job_id=done.id, results=results)
        assert crud.finish_job(session=s, job_id=done.id, task_id=done.task_id, status="succeeded")
        training = crud.create_job(session=s, kind="training", name="a training",
                                   config={"train_config": {"method": "pgd-at", "arch": "smallcnn",
                                                            "dataset": "mnist10k", "epochs": 2}})
        return {"queued": queued.id, "done": done.id, "training": training.id}


@pytest.fixture
def with_shards(monkeypatch):
    """Job answers carry ``shards``: set ``shards[job id]`` to the list a job's answer should have."""
    shards: dict[int, list[dict]] = {}
    real_get = routes.api_get

    async def api_get(request, path, **params):
        answer = await real_get(request, path, **params)
        m = re.fullmatch(r"/(?:evaluations|jobs)/(\d+)", path)
        if m and answer.ok and int(m.group(1)) in shards:
            answer.data = {**answer.data, "shards": copy.deepcopy(shards[int(m.group(1))])}
        return answer

    monkeypatch.setattr(routes, "api_get", api_get)
    return shards


def shard_table(html: str) -> str:
    m = re.search(r'<div class="shards mt-m" id="job-shards"( hidden)?>(.*?)</table>', html, re.S)
    assert m, "no shard table on the page"
    return m.group(0)


def table_rows(html: str) -> list[list[str]]:
    """The shard table's body rows as lists of cell texts (tags dropped, whitespace collapsed)."""
    body = re.search(r'<tbody id="job-shards-rows">(.*?)</tbody>', html, re.S).group(1)
    rows = []
    for tr in re.findall(r"<tr\b[^>]*>(.*?)</tr>", body, re.S):
        cells = re.findall(r"<td\b[^>]*>(.*?)</td>", tr, re.S)
        rows.append([" ".join(unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells])
    return rows


def test_running_evaluation_page_shows_one_row_per_shard(client, jobs, with_shards):
    with_shards[jobs["queued"]] = SHARDS
    r = client.get(f"/evaluations/{jobs['queued']}")
    assert r.status_code == 200, r.text[:500]
    table = shard_table(r.text)
    assert ' hidden>' not in table.split("\n", 1)[0]
    assert 'id="job-shards-summary">4 shards: 1 running, 1 queued, 1 succeeded, 1 failed<' in r.text
    assert table_rows(r.text) == [
        ["0", "0–499", "succeeded", "gpu0@host-a", "1/3", "100 % 100 %", "–", ""],
        ["1", "500–999", "running", "gpu1@host-a", "2/3", "50 % 50 % · pgd eps=0.3", "≈ 2 min 05 s", ""],
        ["2", "1000–1499", "queued", "–", "0/3", "0 % 0 %", "waiting", ""],
        ["3", "1500–1999", "failed", "gpu0@host-b", "3/3", "24 % 24 % · cw eps=0.3", "–",
         "CUDA out of memory <in batch 3>"],
    ]
    # Bars are <progress> elements: the policy (style-src 'self') blocks style attributes.
    assert '<progress max="100" value="50" aria-label="progress of shard 1">' in table
    assert "style=" not in table
    assert "&lt;in batch 3&gt;" in table                      # a worker's error text is escaped
    assert '<span class="pill failed">failed</span>' in table
    # The live card's script repaints the same table from each poll.
    assert '<script src="/static/js/jobs.js"></script>' in r.text


@pytest.mark.parametrize("shards", [None, []], ids=["field-absent", "not-planned-yet"])
def test_shard_table_is_hidden_without_shards(client, jobs, with_shards, shards):
    if shards is not None:
        with_shards[jobs["queued"]] = shards
    r = client.get(f"/evaluations/{jobs['queued']}")
    assert r.status_code == 200
    assert shard_table(r.text).startswith('<div class="shards mt-m" id="job-shards" hidden>')
    assert table_rows(r.text) == []
    assert 'id="job-live"' in r.text                           # the status card itself is there


def test_training_page_has_the_hidden_shard_table_for_the_live_card(client, jobs):
    r = client.get(f"/jobs/{jobs['training']}")
    assert r.status_code == 200, r.text[:500]
    assert shard_table(r.text).startswith('<div class="shards mt-m" id="job-shards" hidden>')


def test_finished_evaluation_shows_per_shard_timing_and_merge_cost(client, jobs, with_shards):
    with_shards[jobs["done"]] = SHARDS[1:2]        # a finished page draws results, not the live card
    r = client.get(f"/evaluations/{jobs['done']}")
    assert r.status_code == 200
    assert 'id="job-shards"' not in r.text
    timing = re.search(r'<table class="shard-timing small" id="shard-timing">(.*?)</table>', r.text, re.S)
    assert timing, "no per-shard timing table"
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", timing.group(1))).split())
    assert text.startswith("Run as 2 shards; merging their records took 3.8 s.")
    assert "0–99 70.5 s gpu0@host-a 100–199 61.2 s gpu1@host-a" in text      # by start point
    # merge_seconds is in the shard table's caption, not repeated in the timing list.
    assert "<dt>merge_seconds</dt>" not in r.text and "<dt>total_seconds</dt>" in r.text


def test_finished_evaluation_without_shard_timing_has_no_table(client, app):
    ev = make_payload()["evaluations"][1]
    with app.state.Session() as s:
        row, _ = crud.create_checkpoint(session=s, sha256="1" * 64, name="m", filename="m.safetensors",
                                        ext="safetensors", size_bytes=10,
                                        meta={"arch": "smallcnn", "num_classes": 10, "in_channels": 1,
                                              "mean": [0.0], "std": [1.0], "dataset": "mnist10k"},
                                        embedded_metadata=True)
        job = crud.create_job(session=s, kind="evaluation", checkpoint_id=row.id, config={})
        crud.store_results(session=s, job_id=job.id, results=ev["results"])
        assert crud.finish_job(session=s, job_id=job.id, task_id=job.task_id, status="succeeded")
    r = client.get(f"/evaluations/{job.id}")
    assert r.status_code == 200
    assert 'id="shard-timing"' not in r.text and "<dt>total_seconds</dt>" in r.text


def test_form_has_autoattack_and_shard_size_fields(client):
    r = client.get("/evaluations/new")
    assert r.status_code == 200
    html = r.text
    aa = re.search(r'<input type="number" id="ev-aa" name="aa_examples"[^>]*>', html, re.S)
    shard = re.search(r'<input type="number" id="ev-shard" name="shard_size"[^>]*>', html, re.S)
    assert aa and shard
    assert 'min="0"' in aa.group(0) and 'step="1"' in aa.group(0) and "required" not in aa.group(0)
    assert 'min="1"' in shard.group(0) and 'step="1"' in shard.group(0) and "required" not in shard.group(0)
    assert 'placeholder="the preset\'s (200 for audit)"' in aa.group(0)
    assert "0: every test point" in html and "one shard per live worker" in html
    assert 'id="ev-aa-error"' in html and 'id="ev-shard-error"' in html


def test_form_script_sends_both_fields_only_when_filled(client):
    js = client.get("/static/js/evaluate.js").text
    assert 'if ($("ev-aa").value.trim()) out.aa_examples = Number($("ev-aa").value);' in js
    assert 'if ($("ev-shard").value.trim()) out.shard_size = Number($("ev-shard").value);' in js


# --------------------------------------------------------------------------- the view helpers

def test_shard_rows_tolerate_partial_entries():
    rows = shard_rows({"shards": [{"status": "running"}, "junk", {"index": 5, "start": 10, "end": 10,
                                                                 "status": "exploded", "attempt": 1}]})
    assert [r.index for r in rows] == [0, 5]
    first, odd = rows
    assert (first.points, first.percent, first.attempt_text, first.eta_text) == ("–", 0, "–", "estimating…")
    assert (odd.points, odd.status_class, odd.attempt_text) == ("10 (empty)", "unknown", "1")
    assert shard_summary(rows) == "2 shards: 1 running, 1 unknown"
    assert shard_rows({"shards": None}) == [] and shard_rows({}) == [] and shard_summary([]) == ""


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (59.5, "1 min 00 s"), (125, "2 min 05 s"),
                                               (7800, "2 h 10 min"), (None, "–"), ("x", "–")])
def test_durations_read_like_the_live_pages(seconds, text):
    assert fmt_duration(seconds) == text


def test_shard_percent_is_clamped_and_full_once_succeeded():
    def row(**kw) -> ShardRow:
        base = dict(index=0, start=0, end=10, status="running", worker=None, attempt=1, max_attempts=3,
                    done=None, total=None, stage=None, eta_seconds=None, error=None)
        return ShardRow(**{**base, **kw})

    assert row(done=7.0, total=5.0).percent == 100
    assert row(done=1.0, total=0.0).percent == 0
    assert row(status="succeeded").percent == 100
    assert row(done=1.0, total=3.0).percent == 33
