"""Sharded evaluations in headless Chromium: the status card's shard table follows the job poll, and
the new-evaluation form sends ``aa_examples`` and ``shard_size``.

The app runs in-process under uvicorn (SQLite, no worker: nothing here runs a job). The job answers
the page polls and the evaluation the form creates are played by Playwright routes, shaped like the
API contract, so the test does not depend on a worker planning shards; the pages, their scripts and
the Content-Security-Policy are the real ones.
"""
from __future__ import annotations

import copy

import pytest
from browser_support import assert_clean, open_tab
from serve_process import serve_in_thread

pytestmark = pytest.mark.browser

TOKEN = "browser-shards-token-7d2a"

def _shard(index: int, start: int, end: int, status: str, worker: str | None, attempt: int, done: float,
           *, stage: str | None = None, eta: float | None = None, error: str | None = None) -> dict:
    return {"index": index, "start": start, "end": end, "status": status, "worker": worker, "attempt": attempt,
            "max_attempts": 3, "done": done, "total": 1000.0, "stage": stage, "eta_seconds": eta, "error": error}


FIRST_POLL = [
    _shard(0, 0, 500, "running", "gpu0@host-a", 1, 400.0, stage="pgd eps=0.3", eta=75.0),
    _shard(1, 500, 1000, "running", "gpu1@host-a", 1, 250.0, stage="fgsm eps=0.3", eta=190.0),
    _shard(2, 1000, 1500, "queued", None, 0, 0.0),
]
LATER_POLL = [
    _shard(0, 0, 500, "succeeded", "gpu0@host-a", 1, 1000.0),
    _shard(1, 500, 1000, "running", "gpu0@host-b", 2, 100.0, stage="pgd eps=0.3", eta=20.0,
           error="worker lost: requeued by the janitor"),
    _shard(2, 1000, 1500, "running", "gpu0@host-a", 1, 10.0, stage="clean", eta=None),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The app under uvicorn on a free port, with one checkpoint and one queued evaluation.
    Yields (base URL, {"checkpoint": id, "evaluation": id})."""
    from robaudit.backend.app import crud
    from robaudit.backend.app.core.config import Settings
    from robaudit.backend.app.main import create_app

    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("shards-data"), api_token=TOKEN), janitor=False)
    with app.state.Session() as s:
        meta = {"arch": "smallcnn", "num_classes": 10, "in_channels": 1, "mean": [0.0], "std": [1.0],
                "dataset": "mnist10k", "method": "pgd-at"}
        ck, _ = crud.create_checkpoint(session=s, sha256="5" * 64, name="pgd-at-small", filename="m.safetensors",
                                       ext="safetensors", size_bytes=1000, meta=meta, embedded_metadata=True)
        ev = crud.create_job(session=s, kind="evaluation", name="sharded audit", checkpoint_id=ck.id,
                             config={"spec_args": {"preset": "audit", "n_examples": 1500}})
        ids = {"checkpoint": ck.id, "evaluation": ev.id}
    with serve_in_thread(app) as base:
        yield base, ids


@pytest.fixture
def page(browser):
    ctx, pg = open_tab(browser, timeout_ms=15_000)
    yield pg
    assert_clean(pg)
    ctx.close()


def row_texts(pg) -> list[list[str]]:
    return pg.eval_on_selector_all(
        "#job-shards-rows tr",
        "trs => trs.map(tr => Array.from(tr.cells).map(td => td.innerText.replace(/\\s+/g, ' ').trim()))")


def test_shard_table_follows_the_job_poll(page, live):
    base, ids = live
    served = {"shards": FIRST_POLL}

    def job_answer(route):
        res = route.fetch()
        job = res.json()
        # Running, so the card keeps polling every 2 s (a succeeded one would reload into its results).
        job.update(status="running", shards=copy.deepcopy(served["shards"]),
                   progress={**job["progress"], "stage": "2 of 3 shards running (gpu0@host-a, gpu1@host-a)"})
        route.fulfill(response=res, json=job)

    page.route(f"**/api/v1/jobs/{ids['evaluation']}", job_answer)
    page.goto(f"{base}/evaluations/{ids['evaluation']}")
    page.wait_for_selector("#job-shards:not([hidden]) tr[data-shard='2'][data-status='queued']")
    assert page.inner_text("#job-shards-summary") == "3 shards: 2 running, 1 queued"
    assert row_texts(page) == [
        ["0", "0–499", "running", "gpu0@host-a", "1/3", "40 % · pgd eps=0.3", "≈ 1 min 15 s", ""],
        ["1", "500–999", "running", "gpu1@host-a", "1/3", "25 % · fgsm eps=0.3", "≈ 3 min 10 s", ""],
        ["2", "1000–1499", "queued", "–", "0/3", "0 %", "waiting", ""],
    ]
    assert page.get_attribute("#job-shards-rows tr[data-shard='0'] progress", "value") == "40"
    assert "2 of 3 shards running" in page.inner_text("#job-progress")

    served["shards"] = LATER_POLL
    page.wait_for_selector("#job-shards-rows tr[data-shard='0'][data-status='succeeded']")
    assert page.inner_text("#job-shards-summary") == "3 shards: 2 running, 1 succeeded"
    rows = row_texts(page)
    assert rows[1] == ["1", "500–999", "running", "gpu0@host-b", "2/3", "10 % · pgd eps=0.3", "≈ 20 s",
                       "worker lost: requeued by the janitor"]
    assert rows[2][3:7] == ["gpu0@host-a", "1/3", "1 % · clean", "estimating…"]

    served["shards"] = []
    page.wait_for_selector("#job-shards", state="hidden")
    assert row_texts(page) == []


def test_form_sends_autoattack_points_and_shard_size(page, live):
    base, ids = live
    posted: list[dict] = []

    def create(route):
        if route.request.method != "POST":
            route.continue_()
            return
        posted.append(route.request.post_data_json)
        route.fulfill(status=201, json={"id": ids["evaluation"], "kind": "evaluation", "status": "queued"})

    page.route("**/api/v1/evaluations", create)
    page.goto(f"{base}/evaluations/new?checkpoint={ids['checkpoint']}")
    page.wait_for_selector(f"#ev-checkpoints input[value='{ids['checkpoint']}']:checked")
    page.select_option("#ev-preset", "audit")

    # Checked before anything is sent, each message under its field.
    page.fill("#ev-aa", "-1")
    page.fill("#ev-shard", "0")
    page.click("#eval-submit")
    assert page.inner_text("#ev-aa-error") == "AutoAttack points must be at least 0."
    assert page.inner_text("#ev-shard-error") == "Points per shard must be at least 1."
    assert posted == []

    page.fill("#ev-aa", "0")
    page.fill("#ev-shard", "250")
    page.click("#eval-submit")
    page.wait_for_url(f"**/evaluations/{ids['evaluation']}")
    assert posted == [{"checkpoint_id": ids["checkpoint"], "preset": "audit", "aa_examples": 0, "shard_size": 250}]

    # Left blank, neither is sent: the preset's AutoAttack points, one shard per live worker.
    page.goto(f"{base}/evaluations/new?checkpoint={ids['checkpoint']}")
    page.wait_for_selector(f"#ev-checkpoints input[value='{ids['checkpoint']}']:checked")
    page.click("#eval-submit")
    page.wait_for_url(f"**/evaluations/{ids['evaluation']}")
    assert posted[1] == {"checkpoint_id": ids["checkpoint"], "preset": "quick"}
