"""Own test sets through the API (POST /api/v1/datasets): stored once by sha256, listed, refused with a
4xx naming the problem and nothing left on disk or in the database, used by evaluations (dataset_id),
named in their results, and kept while an evaluation uses them."""
from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import robaudit
from robaudit.backend.app.main import create_app
from robaudit.backend.app.models import Dataset

from .conftest import count_rows, make_settings, run_inline, save_smallcnn

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture
def client(tmp_path, auth):
    settings = make_settings(tmp_path / "data", max_dataset_images=50, max_dataset_mb=8.0)
    with TestClient(create_app(settings, janitor=False), headers=auth, base_url="http://t/api/v1") as c:
        c.settings = settings
        yield c


@pytest.fixture(scope="module")
def digits():
    x, y = robaudit.load_dataset("mnist10k", "test", limit=20)
    return (x.numpy() * 255).round().astype(np.uint8), y.numpy()


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def digit_zip(digits) -> bytes:
    pixels, labels = digits
    members = {f"{NAMES[c]}/{i:03d}.png": png(pixels[i, 0]) for i, c in enumerate(labels)}
    members["classes.txt"] = "\n".join(NAMES).encode()
    return zip_bytes(members)


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def post(client, filename: str, data: bytes, **fields):
    return client.post("/datasets", files={"file": (filename, data, "application/octet-stream")}, data=fields)


def nothing_stored(client) -> bool:
    s = client.settings
    return (count_rows(s, Dataset) == 0 and not any(s.test_sets_dir.iterdir())
            and not any(s.tmp_dir.iterdir()))


def upload_checkpoint(client, tmp_path) -> int:
    path = save_smallcnn(tmp_path / "random.safetensors")
    with path.open("rb") as fh:
        resp = client.post("/checkpoints", files={"file": (path.name, fh, "application/octet-stream")})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_upload_list_dedupe_and_download(client, digits):
    pixels, labels = digits
    first = post(client, "my-digits.npz", npz_bytes(x=pixels.transpose(0, 2, 3, 1), y=labels), name="my digits")
    assert first.status_code == 201, first.text
    row = first.json()
    assert (row["name"], row["n"], row["channels"], row["height"], row["width"], row["dtype"]) == \
        ("my digits", 20, 1, 28, 28, "uint8")
    # The same points in another layout and compression are the same test set.
    again = post(client, "again.npz", npz_bytes(x=pixels, y=labels))
    assert again.status_code == 200 and again.json()["id"] == row["id"]
    folders = post(client, "digits.zip", digit_zip(digits))
    assert folders.status_code == 201, folders.text
    assert folders.json()["class_names"] == NAMES and folders.json()["n"] == 20
    listed = client.get("/datasets").json()
    assert listed["count"] == 2 and [d["id"] for d in listed["data"]] == [folders.json()["id"], row["id"]]
    stored = client.get(f"/datasets/by-sha256/{row['sha256']}/file")
    assert stored.status_code == 200 and hashlib.sha256(stored.content).hexdigest() == row["sha256"]
    assert client.get(f"/datasets/{row['id']}").json()["source_sha256"] == row["source_sha256"]
    assert client.delete(f"/datasets/{row['id']}").status_code == 204
    assert client.get(f"/datasets/{row['id']}").status_code == 404
    assert not (client.settings.test_sets_dir / f"{row['sha256']}.npz").exists()


def _bomb() -> bytes:
    return zip_bytes({"a/1.png": png(np.zeros((8, 8), np.uint8)), "a/2.png": b"\0" * (64 << 20)})


REFUSED = {
    "zip bomb": (lambda d: ("bomb.zip", _bomb()), "over the cap of 8388608 (a zip bomb"),
    "dot-dot": (lambda d: ("evil.zip", zip_bytes({"a/1.png": png(d[0][0, 0]), "../x/1.png": png(d[0][0, 0])})),
                "has '..' in its path"),
    "absolute path": (lambda d: ("evil.zip", zip_bytes({"/tmp/a/1.png": png(d[0][0, 0])})), "has an absolute path"),
    "non-image": (lambda d: ("evil.zip", zip_bytes({"a/1.png": png(d[0][0, 0]), "a/x.exe": b"MZ"})),
                  "'a/x.exe' is not an image"),
    "mixed sizes": (lambda d: ("mixed.zip", zip_bytes({"a/1.png": png(d[0][0, 0]),
                                                       "b/2.png": png(np.zeros((9, 9), np.uint8))})),
                    "mixed image sizes"),
    "corrupt png": (lambda d: ("bad.zip", zip_bytes({"a/1.png": png(d[0][0, 0])[:-40] + b"\1" * 40})),
                    "'a/1.png' is not a readable PNG or JPEG"),
    "too many images": (lambda d: ("many.npz", npz_bytes(x=np.zeros((51, 28, 28), np.uint8),
                                                         y=np.zeros(51, np.int64))),
                        "51 images, over the cap of 50"),
    "no images": (lambda d: ("empty.npz", npz_bytes(x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0, np.int64))),
                  "x holds no images"),
    "not a test set": (lambda d: ("notes.txt", b"hello"), "not an .npz file"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refusals_name_the_problem_and_store_nothing(client, digits, case):
    make, message = REFUSED[case]
    filename, data = make(digits)
    resp = post(client, filename, data)
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"]
    assert nothing_stored(client)


def test_model_checks_at_upload(client, digits, tmp_path):
    pixels, labels = digits
    checkpoint_id = upload_checkpoint(client, tmp_path)
    rgb = post(client, "rgb.npz", npz_bytes(x=np.zeros((4, 32, 32, 3), np.uint8), y=np.zeros(4, np.int64)),
               checkpoint_id=str(checkpoint_id))
    assert rgb.status_code == 422 and "must be (n, 1, 28, 28) or (n, 28, 28, 1)" in rgb.json()["detail"]
    labels_out = post(client, "twelve.npz", npz_bytes(x=pixels, y=labels + 5), checkpoint_id=str(checkpoint_id))
    assert labels_out.status_code == 422
    assert "labels must be in 0..9 (the model's classes)" in labels_out.json()["detail"]
    missing = post(client, "x.npz", npz_bytes(x=pixels, y=labels), checkpoint_id="9999")
    assert missing.status_code == 422 and "no checkpoint 9999" in missing.json()["detail"]
    assert nothing_stored(client)
    ok = post(client, "fits.npz", npz_bytes(x=pixels, y=labels), checkpoint_id=str(checkpoint_id))
    assert ok.status_code == 201, ok.text


def test_upload_over_the_size_cap_is_413(tmp_path, auth, digits):
    settings = make_settings(tmp_path / "data", max_dataset_upload_mb=0.001)
    with TestClient(create_app(settings, janitor=False), headers=auth, base_url="http://t/api/v1") as c:
        c.settings = settings
        resp = post(c, "digits.zip", digit_zip(digits))
        assert resp.status_code == 413 and "ROBAUDIT_MAX_DATASET_UPLOAD_MB" in resp.json()["detail"]
        assert nothing_stored(c)


def test_a_resize_and_crop_is_declared_at_upload(client):
    members = {"a/1.png": png(np.zeros((40, 60, 3), np.uint8)), "b/1.png": png(np.zeros((64, 32, 3), np.uint8))}
    resp = post(client, "photos.zip", zip_bytes(members), resize="36", crop="32")
    assert resp.status_code == 201, resp.text
    row = resp.json()
    assert (row["height"], row["width"], row["transform"]) == (32, 32, {"resize": 36, "crop": 32})
    bad = post(client, "photos.zip", zip_bytes(members), resize="20", crop="32")
    assert bad.status_code == 422 and "crop (32) must not exceed resize (20)" in bad.json()["detail"]


@pytest.fixture
def any_db_client(any_db_settings, auth):
    """The app on SQLite, then on PostgreSQL (the datasets table, its foreign key and the 409)."""
    settings = any_db_settings
    with TestClient(create_app(settings, janitor=False), headers=auth, base_url="http://t/api/v1") as c:
        c.settings = settings
        yield c


def test_an_evaluation_on_an_uploaded_test_set(any_db_client, digits, tmp_path):
    client = any_db_client
    checkpoint_id = upload_checkpoint(client, tmp_path)
    dataset = post(client, "digits.zip", digit_zip(digits), name="ten digit folders").json()
    # A mismatch is found at evaluation creation too (an upload need not name a checkpoint).
    rgb = post(client, "rgb.zip", zip_bytes({"a/1.png": png(np.zeros((28, 28, 3), np.uint8))})).json()
    mismatch = client.post("/evaluations", json={"checkpoint_id": checkpoint_id, "dataset_id": rgb["id"]})
    assert mismatch.status_code == 422
    assert "holds 3-channel 28x28 images; the checkpoint" in mismatch.json()["detail"]
    assert "takes 1-channel 28x28 images" in mismatch.json()["detail"]
    assert client.post("/evaluations", json={"checkpoint_id": checkpoint_id, "dataset_id": 12345}).status_code == 422

    body = {"checkpoint_id": checkpoint_id, "dataset_id": dataset["id"], "attacks": ["fgsm"], "eps": [0.1],
            "n_examples": 16}
    job = client.post("/evaluations", json=body)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    assert job.json()["dataset_id"] == dataset["id"]
    assert run_inline(client.settings, job_id) == "succeeded"
    results = client.get(f"/evaluations/{job_id}/results").json()
    assert results["dataset"] == "ten digit folders" and results["n"] == 16
    assert results["test_points"] == "the first 16 of the 20 points in ten digit folders"
    prov = results["provenance"]["dataset"]
    assert (prov["file_sha256"], prov["file_points"], prov["dataset_id"]) == (dataset["sha256"], 20, dataset["id"])

    refused = client.delete(f"/datasets/{dataset['id']}")
    assert refused.status_code == 409 and f"used by evaluation(s) {job_id}" in refused.json()["detail"]
    assert (client.settings.test_sets_dir / f"{dataset['sha256']}.npz").exists()


def test_a_worker_on_another_host_fetches_the_test_set_by_sha256(tmp_path, digits):
    """Workers elsewhere share only the database and the broker: they download the stored form through
    the API and check its sha256 (worker/transfer.py)."""
    from robaudit.worker.transfer import ensure_local_test_set

    from .conftest import LiveAPI

    api_settings = make_settings(tmp_path / "api")
    with LiveAPI(api_settings) as api:
        pixels, labels = digits
        resp = api.post("/datasets", files={"file": ("d.npz", npz_bytes(x=pixels, y=labels), "application/x-npz")})
        assert resp.status_code == 201, resp.text
        sha = resp.json()["sha256"]
        worker = make_settings(tmp_path / "worker", api_url=str(api.base_url).rstrip("/").removesuffix("/api/v1"))
        path = ensure_local_test_set(worker, sha)
        assert path.parent == worker.test_sets_dir and hashlib.sha256(path.read_bytes()).hexdigest() == sha
