"""The dashboard in headless Chromium against the real service (`robaudit serve` in a subprocess:
SQLite, embedded broker, one embedded worker), with reads requiring the API token so that the share
link is the only way in without it.

One scenario, in order: upload a checkpoint through the page, launch an evaluation and watch it
finish, check the charts' DOM, cancel and retry a job, save a comparison report, open its share
link in a fresh browser context, and open the exported HTML from file:// with the network blocked.
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from browser_support import CSP_WATCH
from serve_process import ServeProcess

pytestmark = pytest.mark.browser

TOKEN = "browser-test-token-5c1f"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
N_POINTS = 32


# --------------------------------------------------------------------------- fixtures

def _train_checkpoints(d: Path) -> dict[str, Path]:
    """Two SmallCNNs with robaudit metadata: a "Feature Scattering" one with a training history and a
    "PGD-AT" one without. Both are plain cross-entropy models trained for a moment on mnist10k (the
    dashboard only needs checkpoints that evaluate to something); the second continues the first."""
    import torch
    import torch.nn.functional as F

    import robaudit
    from robaudit.models import CheckpointMetadata, build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0])
    x, y = robaudit.load_dataset("mnist10k", "train")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def train(start: int, stop: int) -> None:
        model.train()
        for i in range(start, stop, 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
        model.eval()

    def meta(method: str, delta: float, history: list[dict]) -> CheckpointMetadata:
        return CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                                  dataset="mnist10k", input_size=28, method=method,
                                  hyperparameters={"method": method, "label_smoothing": delta, "epochs": 3, "eps": 0.1},
                                  metrics={"history": history} if history else {})

    history = [{"epoch": e, "clean_acc": c, "pgd20_acc": p, "lr": lr}
               for e, c, p, lr in ((1, 0.81, 0.12, 0.01), (2, 0.86, 0.18, 0.01), (3, 0.90, 0.25, 0.001))]
    train(0, 1024)
    fs = save_checkpoint(d / "fs-small.safetensors", model, meta("feature-scatter", 0.5, history))
    train(1024, 1536)
    pgd = save_checkpoint(d / "pgd-at-small.safetensors", model, meta("pgd-at", 0.0, []))
    return {"fs": fs, "pgd": pgd}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`robaudit serve` on a free port with a temp data folder. While it boots, the two checkpoints
    are trained here. Yields (base URL, API client with the token, checkpoint paths)."""
    data = tmp_path_factory.mktemp("robaudit-data")
    env = {"ROBAUDIT_READS_REQUIRE_TOKEN": "1", "ROBAUDIT_PROGRESS_INTERVAL": "0.3"}
    with ServeProcess(data, data_dir=data, token=TOKEN, env=env, wait=False) as serve:
        checkpoints = _train_checkpoints(tmp_path_factory.mktemp("ckpt"))
        serve.wait_for_worker()
        yield serve.base_url, serve.client, checkpoints


def new_context(browser, **kwargs):
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, **kwargs)
    ctx.add_init_script(CSP_WATCH)
    return ctx


def csp_violations(pg) -> list[str]:
    return pg.evaluate("window.__cspViolations")


@pytest.fixture(scope="module")
def page(browser, server):
    """The user's browser tab (one context for the whole scenario, like one person's session)."""
    ctx = new_context(browser, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # The browser also logs what the Content-Security-Policy refused as a console error.
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security Policy" in m.text
          else None)
    pg.js_errors = errors
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def state():
    return {}


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def set_token(pg, token: str) -> None:
    pg.click("#token-open")
    pg.fill("#token-input", token)
    pg.click("#token-save")
    pg.wait_for_selector("#token-state[data-set='1']", state="attached")


def wait_job(api: httpx.Client, job_id: int, statuses: tuple[str, ...], timeout: float = 150) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {job}"
        time.sleep(0.3)


def assert_charts_drawn(pg, root: str = "body") -> dict[str, int]:
    """Every embedded figure became a Plotly plot with one SVG trace group per trace it shows (a trace
    waiting in the legend, visible: 'legendonly', is drawn once clicked); returns id -> traces shown."""
    figures = pg.eval_on_selector_all(
        f"{root} script[data-figure-for]",
        "els => els.filter(e => !e.closest('details:not([open])'))"   # a closed section draws on opening
        ".map(e => [e.getAttribute('data-figure-for'), JSON.parse(e.textContent).data"
        ".filter(t => t.visible === undefined || t.visible === true).length])")
    assert figures, "no charts on the page"
    drawn = {}
    for fig_id, n_traces in figures:
        plot = pg.locator(f"#{fig_id}")
        plot.locator(".main-svg").first.wait_for(state="attached", timeout=20_000)
        assert plot.get_attribute("class") and "js-plotly-plot" in plot.get_attribute("class")
        pg.wait_for_function("id => document.getElementById(id).getAttribute('data-traces') !== null", arg=fig_id)
        groups = plot.locator(".scatterlayer .trace, .barlayer .trace").count()
        assert groups == n_traces, f"{fig_id}: {groups} trace groups drawn for {n_traces} traces"
        drawn[fig_id] = n_traces
    assert csp_violations(pg) == [], csp_violations(pg)               # the charts need nothing the policy blocks
    return drawn


# --------------------------------------------------------------------------- the scenario

def test_upload_checkpoint_through_the_page(page, server, state):
    base, api, checkpoints = server
    page.goto(base + "/checkpoints")
    # Reads need the token on this server: the list says so, next to the table.
    page.wait_for_selector("#list-message.error")
    assert "401" in page.inner_text("#list-message")

    # Client-side checks: wrong extension, caught before anything is sent.
    wrong = checkpoints["fs"].with_suffix(".txt")
    wrong.write_bytes(b"not a checkpoint")
    page.set_input_files("#ck-file", str(wrong))
    page.click("#upload-submit")
    assert "not a checkpoint" in page.inner_text("#ck-file-error")
    assert page.get_attribute("#ck-file", "aria-invalid") == "true"

    # Drag and drop: a .pt state_dict carries no metadata, so architecture and dataset become required.
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array([80, 75, 3, 4])], "bare.pt"));
        document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""")
    page.wait_for_function("() => document.getElementById('ck-file-info').textContent.includes('bare.pt')")
    assert page.locator("#ck-arch").evaluate("el => el.required")
    assert page.locator("#ck-dataset").evaluate("el => el.required")
    page.click("#upload-submit")
    assert "is required" in page.inner_text("#ck-arch-error")

    # No token yet: the server's 401 message is shown next to the form.
    page.set_input_files("#ck-file", str(checkpoints["fs"]))
    page.wait_for_function(
        "() => document.getElementById('ck-file-info').textContent.includes('robaudit metadata found')")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.error")
    message = page.inner_text("#upload-message")
    assert "HTTP 401" in message and "missing or wrong bearer token" in message

    # A wrong token is refused with the same message.
    set_token(page, "not-the-token")
    page.click("#upload-submit")
    page.wait_for_function("() => document.getElementById('upload-message').textContent.includes('refused')")

    # The right token: upload with its progress bar, then the new row in the list.
    set_token(page, TOKEN)
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.success", timeout=90_000)
    assert "Uploaded checkpoint #" in page.inner_text("#upload-message")
    row = page.locator("#ck-rows tr[data-checkpoint]").first
    row.wait_for()
    assert "fs-small" in row.inner_text() and "feature-scatter" in row.inner_text()
    state["fs_id"] = int(row.get_attribute("data-checkpoint"))
    shot(page, "checkpoints")

    # The second model goes in through the API and is evaluated in the background meanwhile.
    with checkpoints["pgd"].open("rb") as fh:
        r = api.post("/checkpoints", files={"file": (checkpoints["pgd"].name, fh)})
    assert r.status_code == 201, r.text
    state["pgd_id"] = r.json()["id"]
    ev = api.post("/evaluations", json={"checkpoint_id": state["pgd_id"], "preset": "quick",
                                        "eps": [0.1, 0.05], "n_examples": N_POINTS, "name": "pgd-at quick"})
    assert ev.status_code == 201, ev.text
    state["pgd_eval"] = ev.json()["id"]


def test_evaluation_form_checks_then_runs_to_the_charts(page, server, state):
    base, api, _ = server
    page.goto(f"{base}/evaluations/new?checkpoint={state['fs_id']}")
    box = page.locator(f"#ev-checkpoints input[value='{state['fs_id']}']")
    box.wait_for()
    assert box.is_checked()

    # Client-side: ε out of range, n not a positive integer; nothing is sent.
    page.fill("#ev-eps", "0.3, 2")
    page.fill("#ev-n", "0")
    page.click("#eval-submit")
    assert "outside (0, 1]" in page.inner_text("#ev-eps-error")
    assert "at least 1" in page.inner_text("#ev-n-error")
    shot(page, "evaluation-form-errors")

    # Server-side: a duplicate ε passes the form but not build_spec; its 422 message is shown.
    page.fill("#ev-eps", "0.1, 0.1")
    page.fill("#ev-n", str(N_POINTS))
    page.click("#eval-submit")
    page.wait_for_selector("#eval-message.error")
    assert "HTTP 422" in page.inner_text("#eval-message") and "distinct" in page.inner_text("#eval-message")

    page.fill("#ev-eps", "0.1, 0.05")
    page.select_option("#ev-preset", "quick")
    page.fill("#ev-name", "fs quick")
    page.click("#eval-submit")
    page.wait_for_url(re.compile(r"/evaluations/\d+$"))
    state["fs_eval"] = int(page.url.rsplit("/", 1)[1])
    # Live status while it runs (queued behind the other evaluation, or already running). The card is
    # server-rendered and jobs.js paints its bar after the first poll; a job already done by then
    # reloads straight into its results (.kpis).
    page.wait_for_selector("#job-live #job-progress [role=progressbar], .kpis")
    shot(page, "evaluation-running")

    # When it finishes the page reloads itself with the results.
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=150_000)
    drawn = assert_charts_drawn(page)
    assert {"chart-eps", "chart-steps", "chart-ladder", "chart-train-0"} <= set(drawn)
    assert page.locator("#chart-ladder .barlayer .point").count() >= 4   # clean, FGSM, PGD-20, CW-20, worst case
    assert page.locator(".diagnostics .verdict").count() == 1
    assert page.locator(".diagnostics li.check").count() >= 3
    assert page.locator("table.summary tbody tr").count() >= 7   # clean + 3 attacks x 2 ε
    # Hovering a point shows its exact value.
    point = page.locator("#chart-eps .scatterlayer .trace .points path").first
    point.hover(force=True)
    page.wait_for_selector("#chart-eps .hoverlayer .hovertext", timeout=5_000)
    assert "robust accuracy =" in page.locator("#chart-eps .hoverlayer").text_content()
    # Axis titles carry units.
    assert "ε (L∞, pixel scale [0, 1])" in page.locator("#chart-eps .xtitle").text_content()
    shot(page, "evaluation")
    assert not page.js_errors, page.js_errors


def test_jobs_page_cancel_and_retry(page, server, state):
    base, api, _ = server
    wait_job(api, state["pgd_eval"], ("succeeded",))
    # A bigger job to cancel: the worker is free, so it starts soon.
    ev = api.post("/evaluations", json={"checkpoint_id": state["fs_id"], "preset": "paper", "n_examples": 500,
                                        "name": "to cancel"}).json()
    page.goto(base + "/jobs")
    row = page.locator(f"#jobs-rows tr[data-job='{ev['id']}']")
    row.wait_for()
    # Live progress: the row turns "running" and its bar and ETA move without a reload.
    page.wait_for_selector(f"#jobs-rows tr[data-job='{ev['id']}'][data-status='running']", timeout=60_000)
    page.wait_for_function(f"""() => {{
        const bar = document.querySelector("#jobs-rows tr[data-job='{ev['id']}'] [role=progressbar]");
        return bar && Number(bar.getAttribute("aria-valuenow")) > 0;
    }}""", timeout=60_000)
    shot(page, "jobs-running")
    done = page.locator(f"#jobs-rows tr[data-job='{state['fs_eval']}']")
    assert done.get_attribute("data-status") == "succeeded"
    assert done.locator("[role=progressbar]").get_attribute("aria-valuenow") == "100"

    page.once("dialog", lambda d: d.accept())
    row.locator("button[data-action=cancel]").click()
    page.wait_for_selector("#jobs-message.success")
    wait_job(api, ev["id"], ("cancelled",), timeout=60)
    page.wait_for_selector(f"#jobs-rows tr[data-job='{ev['id']}'][data-status='cancelled'] button[data-action=retry]",
                           timeout=20_000)
    shot(page, "jobs")
    page.locator(f"#jobs-rows tr[data-job='{ev['id']}'] button[data-action=retry]").click()
    page.wait_for_function("() => document.getElementById('jobs-message').textContent.includes('queued again')")
    assert api.get(f"/jobs/{ev['id']}").json()["status"] in ("queued", "running")
    # Stop it again so the worker is free for the rest of the scenario.
    assert api.post(f"/jobs/{ev['id']}/cancel").status_code == 202
    wait_job(api, ev["id"], ("cancelled",), timeout=60)


def test_compare_and_save_a_report(page, server, state):
    base, api, _ = server
    page.goto(base + "/compare")
    page.click("#compare-submit")                                       # nothing ticked
    assert "at least one" in page.inner_text("#cmp-ids-error")
    for eid in (state["fs_eval"], state["pgd_eval"]):
        page.check(f"#compare-form input[name=ids][value='{eid}']")
    page.click("#compare-submit")
    page.wait_for_selector("#report-form")
    drawn = assert_charts_drawn(page)
    assert drawn["cmp-ladder"] == 2                                    # one bar trace per model
    # One δ per method (FS at 0.5, PGD-AT at 0) is a comparison, not a study: no δ chart.
    assert "cmp-label-smoothing" not in drawn
    page.fill("#report-title", "Browser test report")
    page.click("#report-save")
    page.wait_for_selector("#report-saved:not([hidden])")
    share = page.input_value("#share-url")
    assert re.fullmatch(re.escape(base) + r"/share/[A-Za-z0-9_-]+", share)
    state["share_url"] = share
    state["report_url"] = page.get_attribute("#report-link", "href")
    shot(page, "compare")

    # Another report the share link must not lead to.
    other = api.post("/reports", json={"title": "Someone else's report", "evaluation_ids": [state["pgd_eval"]]})
    assert other.status_code == 201
    state["other_report"] = other.json()["id"]

    page.goto(base + state["report_url"])
    assert_charts_drawn(page)
    assert page.input_value("#share-url") == share
    with page.expect_download() as dl:                                 # fetched with the token (reads need it)
        page.click("#export-links a:has-text('Export CSV')")
    csv_text = Path(dl.value.path()).read_text()
    assert csv_text.startswith("report_id,report_title") and "fs-small" in csv_text and "pgd-at-small" in csv_text
    shot(page, "report")


def test_share_link_works_without_token_and_reaches_nothing_else(browser, server, state, tmp_path):
    base, _, _ = server
    ctx = new_context(browser, accept_downloads=True)
    requests: list[str] = []
    ctx.on("request", lambda r: requests.append(r.url))
    pg = ctx.new_page()
    pg.goto(state["share_url"])
    drawn = assert_charts_drawn(pg)
    assert len(drawn) >= 4
    html = pg.content()
    assert "Browser test report" in html and "Someone else's report" not in html
    assert pg.locator("nav, #token-dialog").count() == 0
    hrefs = pg.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
    assert all(h.startswith(("/share/", "#")) for h in hrefs), hrefs   # its downloads and in-page links
    assert not [u for u in requests if "/api/" in u], requests
    assert state["other_report"] not in html and state["report_url"] not in html
    shot(pg, "share")

    # Without the token this browser can reach neither the other report's page nor the API.
    r = pg.goto(f"{base}/reports/{state['other_report']}")
    assert r.status == 401 and "API token needed" in pg.content()
    assert pg.request.get(f"{base}/api/v1/reports").status == 401
    assert pg.request.get(f"{base}/api/v1/reports/{state['other_report']}/export?format=json").status == 401

    # The HTML export, downloaded from the share page.
    pg.goto(state["share_url"])
    with pg.expect_download() as dl:
        pg.click("a:has-text('Download HTML')")
    state["export_path"] = tmp_path / "report.html"
    dl.value.save_as(state["export_path"])
    ctx.close()


def test_html_export_opens_offline_from_file(browser, state):
    path = state["export_path"]
    assert path.stat().st_size > 3_000_000                              # plotly.js is inside
    ctx = new_context(browser)
    blocked: list[str] = []

    def block(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    ctx.route("**/*", block)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)   # CSP violations too
    pg.goto(path.as_uri())
    drawn = assert_charts_drawn(pg)
    assert {"chart-gap", "chart-eps", "chart-steps", "chart-ladder"} <= set(drawn)
    assert "Browser test report" in pg.inner_text("h1")
    pg.locator("#chart-eps .scatterlayer .trace .points path").first.hover(force=True)
    pg.wait_for_selector("#chart-eps .hoverlayer .hovertext", timeout=5_000)   # interactive offline too
    assert blocked == [], blocked                                       # it never tried the network
    assert not errors, errors
    shot(pg, "export-offline")
    ctx.close()


def test_report_page_rotates_revokes_and_deletes_the_share_link(page, server, state):
    """The report page's buttons, with the token this browser keeps: a new link replaces the old one,
    revoking leaves none, deleting removes the report; a link that is gone answers 404 at once."""
    base, api, _ = server
    anon = httpx.Client(timeout=30)                                    # a stranger holding the links
    page.goto(base + state["report_url"])
    old = page.input_value("#share-url")
    assert old == state["share_url"] and anon.get(old).status_code == 200

    page.click("#share-rotate")
    page.wait_for_selector("#share-message.success")
    new = page.input_value("#share-url")
    assert new != old and re.fullmatch(re.escape(base) + r"/share/[A-Za-z0-9_-]+", new)
    assert anon.get(old).status_code == 404 and anon.get(new).status_code == 200
    token = new.rsplit("/", 1)[1]
    assert anon.get(f"{base}/api/v1/shared/{token}").status_code == 200

    page.once("dialog", lambda d: d.accept())
    page.click("#share-revoke")
    page.wait_for_function("() => document.getElementById('share-message').textContent.includes('revoked')")
    assert page.input_value("#share-url") == ""
    assert anon.get(new).status_code == 404 and anon.get(f"{base}/api/v1/shared/{token}").status_code == 404
    page.reload()
    assert "was revoked" in page.inner_text("#share-hint") and page.input_value("#share-url") == ""
    shot(page, "report-link-revoked")

    page.once("dialog", lambda d: d.accept())
    page.click("#report-delete")
    page.wait_for_url(base + "/reports")
    assert csp_violations(page) == [], csp_violations(page)
    report_id = state["report_url"].rsplit("/", 1)[1]
    assert api.get(f"/reports/{report_id}").status_code == 404
    assert page.locator(f"a[href='/reports/{report_id}']").count() == 0
    anon.close()
    assert not page.js_errors, page.js_errors


def test_api_docs_work_offline_under_the_policy(browser, server):
    """/docs draws Swagger UI from this server's own files: nothing else is fetched, nothing is blocked."""
    base, _, _ = server
    ctx = new_context(browser)
    outside: list[str] = []

    def only_this_server(route):
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_this_server)
    pg = ctx.new_page()
    pg.goto(base + "/docs")
    pg.wait_for_selector(".swagger-ui .opblock-tag", timeout=20_000)
    assert pg.locator(".swagger-ui .opblock").count() > 10                 # the endpoints are listed
    pg.locator(".opblock-tag", has_text="reports").first.wait_for()
    assert outside == [], outside
    assert csp_violations(pg) == [], csp_violations(pg)
    ctx.close()


def test_training_form_checks_then_trains_with_live_curves(page, server, state):
    base, api, _ = server
    page.goto(base + "/trainings/new")
    page.select_option("#tr-method", "pgd-at")
    assert page.locator("#tr-beta").is_disabled()                     # TRADES-only option off for PGD-AT
    page.fill("#tr-ls", "1")
    page.fill("#tr-eps", "8/255, 0.3")
    page.fill("#tr-epochs", "0")
    page.click("#train-submit")
    assert "[0, 1)" in page.inner_text("#tr-ls-error") or "at most" in page.inner_text("#tr-ls-error")
    assert "one value" in page.inner_text("#tr-eps-error").lower()
    assert "at least 1" in page.inner_text("#tr-epochs-error")

    page.fill("#tr-ls", "0.1")
    page.fill("#tr-eps", "0.1")
    page.fill("#tr-epochs", "2")
    page.fill("#tr-milestones", "1")
    page.fill("#tr-ntrain", "64")
    page.fill("#tr-evalex", "16")
    page.fill("#tr-batch", "32")
    page.fill("#tr-name", "tiny pgd-at")
    page.click("#train-submit")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    assert page.locator("#job-live").count() == 1
    # The curves appear after the epochs finish, redrawn in place from the job's history.
    page.wait_for_selector("#training-curves .main-svg", timeout=120_000)
    job = wait_job(api, job_id, ("succeeded", "failed"), timeout=120)
    assert job["status"] == "succeeded", job
    page.wait_for_function("() => Number(document.getElementById('training-curves').getAttribute('data-traces')) >= 2")
    page.wait_for_selector("#output-links a", timeout=20_000)           # "Evaluate the trained model"
    page.wait_for_selector("#training-curves .shapelayer path", state="attached")   # the lr drop after epoch 1
    shot(page, "training")
    assert csp_violations(page) == [] and not page.js_errors, (csp_violations(page), page.js_errors)
