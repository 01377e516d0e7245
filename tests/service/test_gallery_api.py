"""The adversarial-example gallery through the service: the worker's merge stores it, the API serves it
as pages (filters, PNGs) and as the .npz download; without a gallery both answer a specific 404."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from robaudit.backend.app.main import create_app
from robaudit.evaluation.results import decode_bits
from robaudit.models import load_checkpoint

from .conftest import make_settings, run_inline, upload


@pytest.fixture
def live(tmp_path, auth):
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings, janitor=False), headers=auth, base_url="http://t/api/v1") as c:
        c.settings = settings
        yield c


def _evaluate(client, checkpoint_id: int, **body) -> int:
    resp = client.post("/evaluations", json={"checkpoint_id": checkpoint_id, "attacks": ["fgsm", "pgd", "cw"],
                                             "steps": [20, 40], "eps": [0.1], "n_examples": 32,
                                             "batch_size": 16, **body})
    assert resp.status_code == 201, resp.text
    job_id = int(resp.json()["id"])
    assert run_inline(client.settings, job_id) == "succeeded"
    return job_id


def test_the_gallery_pages_and_download(live, trained_checkpoint):
    ckpt = upload(live, trained_checkpoint).json()
    job_id = _evaluate(live, ckpt["id"], gallery=24)
    results = live.get(f"/evaluations/{job_id}/results").json()
    index = results["gallery"]
    assert index["limit"] == 24 and index["count"] == len(index["points"]["index"]) > 5

    first = live.get(f"/evaluations/{job_id}/gallery", params={"limit": 4}).json()
    assert first["total"] == index["count"] and len(first["items"]) == 4
    assert [i["index"] for i in first["items"]] == index["points"]["index"][:4]
    item = first["items"][0]
    assert set(item["images"]) == {"clean", "adversarial", "perturbation"}
    assert all(uri.startswith("data:image/png;base64,") for uri in item["images"].values())
    assert item["true_name"] == str(item["true"]) and item["predicted"] != item["true"]
    rest = live.get(f"/evaluations/{job_id}/gallery", params={"offset": 4, "limit": 100}).json()
    assert [i["index"] for i in first["items"] + rest["items"]] == index["points"]["index"]

    for attack in first["attacks"]:
        page = live.get(f"/evaluations/{job_id}/gallery", params={"attack": attack, "limit": 100}).json()
        assert page["total"] == index["points"]["attack"].count(attack)
        assert {i["attack"] for i in page["items"]} == {attack}
    label = item["true"]
    page = live.get(f"/evaluations/{job_id}/gallery", params={"class": label, "limit": 100}).json()
    assert page["total"] == index["points"]["true"].count(label) and all(i["true"] == label for i in page["items"])
    # "missed by PGD-20": PGD-20 robust, worst case not, straight from the bitsets
    bits = results["per_sample"]["bits"]
    missed = np.flatnonzero(decode_bits(bits["pgd@eps=0.1/steps=20/restarts=1"], 32)
                            & ~decode_bits(bits["worst-case@eps=0.1"], 32))
    page = live.get(f"/evaluations/{job_id}/gallery", params={"missed": "true", "limit": 100}).json()
    assert [i["index"] for i in page["items"]] == [int(p) for p in missed if p < 24]

    resp = live.get(f"/evaluations/{job_id}/adversarial.npz")
    assert resp.status_code == 200 and "attachment" in resp.headers["content-disposition"]
    with np.load(io.BytesIO(resp.content), allow_pickle=False) as data:
        assert list(data["index"]) == index["points"]["index"]
        model, _ = load_checkpoint(trained_checkpoint)
        with torch.no_grad():
            predicted = model(torch.as_tensor(data["adversarial"])).argmax(1).numpy()
        assert (predicted == data["predictions"]).all() and (predicted != data["labels"]).all()
        assert list(data["attack"]) == index["points"]["attack"]

    # A report brings up to 8 examples per model, missed-by-PGD-20 first, inside its HTML export too;
    # the share link's payload has none.
    report = live.post("/reports", json={"title": "gallery", "evaluation_ids": [job_id]}).json()
    shown = live.get(f"/reports/{report['id']}").json()["evaluations"][0]["gallery"]
    missed = index["missed_by_pgd20"]
    missed_first = missed + [p for p in index["points"]["index"] if p not in missed]
    assert [g["index"] for g in shown] == missed_first[:8]
    html = live.get(f"/reports/{report['id']}/export").text
    assert html.count('<img src="data:image/png;base64,') == 3 * len(shown)
    assert 'class="gallery-grid report-gallery"' in html
    token = report["share_url"].rsplit("/", 1)[-1]
    shared = live.get(f"http://t/share/{token}/export")
    assert shared.status_code == 200 and "Summary" in shared.text and "report-gallery" not in shared.text


def test_no_gallery_is_a_specific_404_and_bad_sizes_a_422(live, trained_checkpoint):
    ckpt = upload(live, trained_checkpoint).json()
    job_id = _evaluate(live, ckpt["id"], gallery=0, attacks=["fgsm"], steps=None)
    for path in ("gallery", "adversarial.npz"):
        resp = live.get(f"/evaluations/{job_id}/{path}")
        assert resp.status_code == 404 and "kept no adversarial examples" in resp.json()["detail"]
    assert "gallery" not in live.get(f"/evaluations/{job_id}/results").json()
    assert live.get("/evaluations/999/gallery").status_code == 404
    bad = live.post("/evaluations", json={"checkpoint_id": ckpt["id"], "gallery": -1})
    assert bad.status_code == 422
    assert live.get(f"/evaluations/{job_id}/gallery", params={"limit": 0}).status_code == 422
