"""Share links are secrets the token's holder manages: listed only with the API token, revoked,
rotated and deleted with it, and a link that is gone answers 404 at once (API and share page)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from robaudit.backend.app import crud
from robaudit.backend.app.main import create_app

from .conftest import make_settings

MNIST_META = {"arch": "smallcnn", "dataset": "mnist10k", "num_classes": 10, "in_channels": 1, "input_size": 28,
              "mean": [0.0], "std": [1.0], "arch_kwargs": {}, "method": "standard",
              "hyperparameters": {"label_smoothing": 0.0}}


@pytest.fixture(params=[False, True], ids=["open-reads", "reads-need-token"])
def app(request, tmp_path):
    app = create_app(make_settings(tmp_path / "data", reads_require_token=request.param), janitor=False)
    with app.state.Session() as s:
        ckpt, _ = crud.create_checkpoint(session=s, sha256="d" * 64, name="m", filename="m.safetensors",
                                         ext="safetensors", size_bytes=1, meta=MNIST_META, embedded_metadata=True)
        app.state.job_id = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=ckpt.id).id
    return app


@pytest.fixture
def client(app, auth):
    with TestClient(app, headers=auth) as c:
        yield c


@pytest.fixture
def anon(app):
    with TestClient(app) as c:
        yield c


def _new_report(client, app) -> tuple[str, str]:
    created = client.post("/api/v1/reports", json={"title": "r", "evaluation_ids": [app.state.job_id]}).json()
    return created["id"], created["share_url"]


def _link_works(anon, share_url: str) -> bool:
    token = share_url.rsplit("/", 1)[1]
    api, page = anon.get(f"/api/v1/shared/{token}").status_code, anon.get(share_url).status_code
    assert api == page, (api, page)                      # the API and the share page always agree
    return api == 200


def test_tokenless_reads_never_show_share_links(app, client, anon):
    report_id, share_url = _new_report(client, app)
    token = share_url.rsplit("/", 1)[1]
    listing = anon.get("/api/v1/reports")
    if app.state.settings.reads_require_token:
        assert listing.status_code == 401
    else:
        assert listing.status_code == 200 and listing.json()["data"][0]["id"] == report_id
        assert listing.json()["data"][0]["share_url"] is None
        assert token not in listing.text and token not in anon.get(f"/api/v1/reports/{report_id}").text
        # The report page shows no link either, only how to see it.
        page = anon.get(f"/reports/{report_id}")
        assert page.status_code == 200 and token not in page.text and "Set the API token" in page.text
    assert anon.get(f"/api/v1/reports/{report_id}/share").status_code == 401
    # With the token the list and the link endpoint show it, and so does the report page.
    assert client.get("/api/v1/reports").json()["data"][0]["share_url"] == share_url
    assert client.get(f"/api/v1/reports/{report_id}/share").json() == {"share_url": share_url}
    assert share_url in client.get(f"/reports/{report_id}").text


def test_revoke_rotate_and_delete_need_the_token(app, anon, client):
    report_id, share_url = _new_report(client, app)
    for method, url in [("post", f"/api/v1/reports/{report_id}/share"),
                        ("delete", f"/api/v1/reports/{report_id}/share"),
                        ("delete", f"/api/v1/reports/{report_id}")]:
        assert getattr(anon, method)(url).status_code == 401, url
        assert getattr(client, method)(url.replace(report_id, "nope0000")).status_code == 404, url
    assert _link_works(anon, share_url)
    assert client.get(f"/api/v1/reports/{report_id}").status_code == 200


def test_revoked_link_is_gone_at_once(app, anon, client):
    report_id, share_url = _new_report(client, app)
    assert _link_works(anon, share_url)
    assert client.delete(f"/api/v1/reports/{report_id}/share").status_code == 204
    assert not _link_works(anon, share_url)
    assert client.get(f"/api/v1/reports/{report_id}/share").status_code == 404
    assert client.get("/api/v1/reports").json()["data"][0]["share_url"] is None
    assert client.delete(f"/api/v1/reports/{report_id}/share").status_code == 204   # twice is fine
    assert "was revoked" in client.get(f"/reports/{report_id}").text
    # A new link brings the report back under a different token.
    again = client.post(f"/api/v1/reports/{report_id}/share").json()["share_url"]
    assert again != share_url and _link_works(anon, again) and not _link_works(anon, share_url)


def test_rotated_link_replaces_the_old_one(app, anon, client):
    report_id, old = _new_report(client, app)
    rotated = client.post(f"/api/v1/reports/{report_id}/share")
    assert rotated.status_code == 200
    new = rotated.json()["share_url"]
    assert new != old and new.startswith("/share/")
    assert not _link_works(anon, old) and _link_works(anon, new)
    assert client.get(f"/api/v1/reports/{report_id}/share").json() == {"share_url": new}


def test_deleted_report_and_its_link_are_gone(app, anon, client):
    report_id, share_url = _new_report(client, app)
    kept_id, kept_url = _new_report(client, app)
    assert client.delete(f"/api/v1/reports/{report_id}").status_code == 204
    assert client.get(f"/api/v1/reports/{report_id}").status_code == 404
    assert client.get(f"/reports/{report_id}").status_code == 404
    assert not _link_works(anon, share_url)
    assert client.delete(f"/api/v1/reports/{report_id}").status_code == 404
    # The other report and the evaluation stay.
    assert [r["id"] for r in client.get("/api/v1/reports").json()["data"]] == [kept_id]
    assert _link_works(anon, kept_url)
    assert client.get(f"/api/v1/evaluations/{app.state.job_id}").status_code == 200


def test_share_link_endpoints_are_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    share = paths["/api/v1/reports/{report_id}/share"]
    assert {"get", "post", "delete"} <= set(share)
    for op in (share["get"], share["post"], share["delete"], paths["/api/v1/reports/{report_id}"]["delete"]):
        assert {"401", "404"} <= set(op["responses"]), op
