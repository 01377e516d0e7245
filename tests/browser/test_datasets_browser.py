"""An own test set through the browser, in headless Chromium against `robaudit serve`: upload a zip of PNG
class folders on the Datasets page, pick it for an L2 audit of an uploaded checkpoint, and find it named
(name, size, sha256) on the evaluation page; next to an L-inf evaluation of the same model in a report, the
L2 curves get charts of their own; deleting the set is then refused while the evaluations use it."""
from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from browser_support import assert_clean, open_tab
from serve_process import ServeProcess

pytestmark = pytest.mark.browser

TOKEN = "browser-datasets-token-5c1d"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_folders(path: Path, n: int = 24) -> Path:
    from PIL import Image

    import robaudit

    x, y = robaudit.load_dataset("mnist10k", "test", limit=n)
    pixels = (x.numpy() * 255).round().astype(np.uint8)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, label in enumerate(y.tolist()):
            buf = io.BytesIO()
            Image.fromarray(pixels[i, 0]).save(buf, format="PNG")
            zf.writestr(f"digits/{NAMES[label]}/{i:03d}.png", buf.getvalue())
        zf.writestr("digits/classes.txt", "\n".join(NAMES))
    return path


def small_checkpoint(path: Path) -> Path:
    import torch

    from robaudit.models import CheckpointMetadata, build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0])
    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard")
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("robaudit-data")
    env = {"ROBAUDIT_PROGRESS_INTERVAL": "0.3"}
    with ServeProcess(data, data_dir=data, token=TOKEN, env=env) as serve:
        yield serve


@pytest.fixture(scope="module")
def page(browser, server):
    ctx, pg = open_tab(browser, timeout_ms=30_000)
    pg.on("dialog", lambda d: d.accept())       # the delete button's confirm()
    pg.goto(server.base_url + "/datasets")
    pg.click("#token-open")
    pg.fill("#token-input", TOKEN)
    pg.click("#token-save")
    pg.wait_for_selector("#token-state[data-set='1']", state="attached")
    yield pg
    ctx.close()


def test_upload_a_zip_and_audit_a_checkpoint_on_it(page, server, tmp_path):
    path = small_checkpoint(tmp_path / "mine.safetensors")
    with path.open("rb") as fh:
        uploaded = server.client.post("/checkpoints", files={"file": (path.name, fh, "application/octet-stream")})
    assert uploaded.status_code == 201, uploaded.text
    checkpoint_id = uploaded.json()["id"]

    base = server.base_url
    page.goto(base + "/datasets")
    assert page.locator("nav a[aria-current='page']").inner_text() == "Datasets"
    page.set_input_files("#ds-file", str(digit_folders(tmp_path / "digits.zip")))
    page.fill("#ds-name", "my digit folders")
    page.select_option("#ds-checkpoint", str(checkpoint_id))
    page.click("#ds-submit")
    page.wait_for_selector("#ds-message.success", timeout=120_000)
    assert "24 images, 1×28×28" in page.inner_text("#ds-message")
    dataset = server.client.get("/datasets").json()["data"][0]
    row = page.locator(f"#ds-rows tr[data-dataset-id='{dataset['id']}']")
    row.wait_for()
    assert "my digit folders" in row.inner_text() and dataset["sha256"][:12] in row.inner_text()

    # A refusal is shown where the user is looking, naming the member.
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("a/../../x.png", b"\x89PNG")
    page.set_input_files("#ds-file", str(tmp_path / "evil.zip"))
    page.click("#ds-submit")
    page.wait_for_selector("#ds-message.error")
    assert "has '..' in its path" in page.inner_text("#ds-message")

    page.goto(base + f"/evaluations/new?checkpoint={checkpoint_id}")
    page.wait_for_selector(f"#ev-checkpoints input[value='{checkpoint_id}']:checked")
    page.select_option("#ev-own-dataset", str(dataset["id"]))
    page.select_option("#ev-preset", "quick")
    page.select_option("#ev-norm", "l2")
    page.fill("#ev-eps", "1.0, 2.0")
    page.fill("#ev-n", "16")
    page.click("#eval-submit")
    page.wait_for_url(re.compile(r"/evaluations/\d+$"), timeout=60_000)
    evaluation_id = int(page.url.rsplit("/", 1)[1])
    named = page.inner_text("[data-own-dataset]")
    assert "my digit folders" in named and "24 points" in named and dataset["sha256"][:12] in named
    page.wait_for_selector(".kpis", timeout=180_000)
    facts = page.inner_text("[data-test-set]")
    assert "my digit folders" in facts and "24 points" in facts and dataset["sha256"][:12] in facts
    results = server.client.get(f"/evaluations/{evaluation_id}/results").json()
    assert results["dataset"] == "my digit folders" and results["n"] == 16
    assert results["provenance"]["dataset"]["file_sha256"] == dataset["sha256"]
    assert results["norm"] == "l2" and {r["norm"] for r in results["summary"]} == {"l2"}

    # The same model under L-inf on the same set, then both in one report.
    linf = server.client.post("/evaluations", json={"checkpoint_id": checkpoint_id, "dataset_id": dataset["id"],
                                                   "preset": "quick", "eps": [0.05, 0.1], "n_examples": 16})
    assert linf.status_code == 201, linf.text
    linf_id = linf.json()["id"]
    _wait_succeeded(server, linf_id)
    report = server.client.post("/reports", json={"title": "L2 next to L-inf",
                                                  "evaluation_ids": [evaluation_id, linf_id]})
    assert report.status_code == 201, report.text
    page.goto(report.json()["url"] if report.json()["url"].startswith("http") else base + report.json()["url"])
    for chart in ("chart-eps-l2", "chart-eps-linf"):
        page.locator(f"#{chart} .main-svg").first.wait_for(state="attached", timeout=30_000)
    figures = {i: json.loads(b) for i, b in re.findall(
        r'<script type="application/json" data-figure-for="([^"]+)">(.*?)</script>', page.content(), re.S)}
    l2_x = {x for t in figures["chart-eps-l2"]["data"] for x in t["x"]}
    linf_x = {x for t in figures["chart-eps-linf"]["data"] for x in t["x"]}
    assert {1.0, 2.0} <= l2_x and not l2_x & {0.05, 0.1}          # no curve crosses the two norms
    assert {0.05, 0.1} <= linf_x and not linf_x & {1.0, 2.0}
    assert "(L2)" in page.inner_text("#chart-eps-l2") and "(L2)" not in page.inner_text("#chart-eps-linf")

    page.goto(base + "/datasets")
    page.locator(f"#ds-rows button[data-delete='{dataset['id']}']").click()
    page.wait_for_selector("#ds-list-message.error")
    assert f"used by evaluation(s) {evaluation_id}, {linf_id}" in page.inner_text("#ds-list-message")
    assert_clean(page)


def _wait_succeeded(server, job_id: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = server.client.get(f"/evaluations/{job_id}").json()["status"]
        if status == "succeeded":
            return
        assert status not in ("failed", "cancelled"), server.client.get(f"/evaluations/{job_id}").json()
        time.sleep(0.5)   # polling a condition, with a deadline
    raise AssertionError(f"evaluation {job_id} did not finish within {timeout} s")
