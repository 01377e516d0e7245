"""Security headers: a same-origin-only Content-Security-Policy, no framing, nosniff and no Referer on
pages, API answers and share pages; the HTML export's own policy; share URLs from the configured
public URL, never from the Host header; /docs from local assets only."""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from robaudit.backend.app import crud
from robaudit.backend.app.main import create_app
from robaudit.frontend.templating import plotly_style_hashes

from .conftest import make_settings

TEMPLATES = Path(__file__).resolve().parents[2] / "frontend" / "templates"
MNIST_META = {"arch": "smallcnn", "dataset": "mnist10k", "num_classes": 10, "in_channels": 1, "input_size": 28,
              "mean": [0.0], "std": [1.0], "arch_kwargs": {}, "method": "standard",
              "hyperparameters": {"label_smoothing": 0.0}}


def _app(tmp_path, **overrides):
    app = create_app(make_settings(tmp_path / "data", **overrides), janitor=False)
    with app.state.Session() as s:
        ckpt, _ = crud.create_checkpoint(session=s, sha256="e" * 64, name="m", filename="m.safetensors",
                                         ext="safetensors", size_bytes=1, meta=MNIST_META, embedded_metadata=True)
        job = crud.create_job(session=s, kind="evaluation", config={}, checkpoint_id=ckpt.id)
        report = crud.create_report(session=s, title="r", evaluation_ids=[job.id])
        app.state.ids = {"report": report.id, "share": f"/share/{report.share_token}", "job": job.id}
    return app


def _sha256(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


@pytest.fixture
def app(tmp_path):
    return _app(tmp_path)


def test_every_answer_carries_the_headers(app, auth):
    ids = app.state.ids
    with TestClient(app) as anon:
        answers = {url: anon.get(url) for url in [
            "/jobs", "/reports", "/checkpoints", f"/reports/{ids['report']}", f"/evaluations/{ids['job']}",
            ids["share"], "/share/" + "A" * 32, "/api/v1/health", "/api/v1/reports", "/api/v1/reports/nope0000",
            "/static/css/app.css", "/vendor/plotly.min.js", "/openapi.json"]}
        answers["POST /api/v1/reports (401)"] = anon.post("/api/v1/reports", json={})
    for url, r in answers.items():
        assert r.status_code in (200, 401, 404), (url, r.status_code)
        csp = _directives(r.headers.get("content-security-policy", ""))
        assert csp.get("default-src") == ["'self'"] and csp.get("script-src") == ["'self'"], (url, csp)
        # 'self', empty <style> elements (plotly.js fills its own through the CSSOM) and the CSS
        # plotly.js writes itself, by hash: no 'unsafe-inline'
        assert csp.get("style-src") == ["'self'", _sha256(""), *plotly_style_hashes()], (url, csp)
        # style attributes: only plotly's bold and italic hover text, by hash
        assert csp.get("style-src-attr") == ["'unsafe-hashes'", *(_sha256(v) for v in ("font-weight:bold",
                                                                                     "font-style:italic"))]
        assert "unsafe-inline" not in r.headers["content-security-policy"], url
        assert csp.get("frame-ancestors") == ["'none'"], (url, csp)
        assert csp.get("object-src") == ["'none'"] and csp.get("base-uri") == ["'none'"], (url, csp)
        assert r.headers.get("x-frame-options") == "DENY", url
        assert r.headers.get("x-content-type-options") == "nosniff", url
        assert r.headers.get("referrer-policy") == "no-referrer", url


def test_html_exports_are_attachments_with_a_sandboxed_inline_policy(app, auth):
    ids = app.state.ids
    with TestClient(app, headers=auth) as client:
        for url in (f"/api/v1/reports/{ids['report']}/export?format=html", f"{ids['share']}/export?format=html"):
            r = client.get(url)
            assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment"), url
            csp = _directives(r.headers["content-security-policy"])
            # Inline scripts and styles are the export's content; nothing may be fetched; and should a
            # browser render it from this origin, the sandbox keeps it away from the origin's storage.
            assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'unsafe-inline'"], url
            assert csp["sandbox"] == ["allow-scripts", "allow-downloads"], url
            assert csp["frame-ancestors"] == ["'none'"] and r.headers["x-content-type-options"] == "nosniff"
            assert "<script src=" not in r.text and "<link " not in r.text   # self-contained


def test_templates_have_no_inline_scripts_styles_or_handlers():
    """What style-src/script-src 'self' would block: the pages carry none of it (the export is exempt)."""
    for path in TEMPLATES.glob("*.html"):
        if path.name == "export.html":
            continue
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\"))[^>]*>", text), path.name
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", text), path.name


def test_share_urls_come_from_the_public_url_not_the_host_header(tmp_path, auth):
    forged = {**auth, "Host": "evil.example"}
    plain = _app(tmp_path / "plain")
    with TestClient(plain, headers=forged) as client:
        r = client.post("/api/v1/reports", json={"title": "t", "evaluation_ids": [plain.state.ids["job"]]})
        assert r.status_code == 201 and r.json()["share_url"].startswith("/share/")   # relative without a setting
        page = client.get(f"/reports/{plain.state.ids['report']}")
        assert page.status_code == 200 and "evil.example" not in page.text
        assert f'value="{plain.state.ids["share"]}"' in page.text
    public = _app(tmp_path / "public", public_url="https://audit.example.org/robaudit/")
    share = public.state.ids["share"]
    with TestClient(public, headers=forged) as client:
        r = client.post("/api/v1/reports", json={"title": "t", "evaluation_ids": [public.state.ids["job"]]})
        assert re.fullmatch(r"https://audit\.example\.org/robaudit/share/[A-Za-z0-9_-]+", r.json()["share_url"])
        report_id = public.state.ids["report"]
        expected = "https://audit.example.org/robaudit" + share
        assert client.get(f"/api/v1/reports/{report_id}/share").json()["share_url"] == expected
        assert client.get("/api/v1/reports").json()["data"][-1]["share_url"] == expected
        rotated = client.post(f"/api/v1/reports/{report_id}/share").json()["share_url"]
        assert rotated.startswith("https://audit.example.org/robaudit/share/")
        page = client.get(f"/reports/{report_id}").text
        assert f'value="{rotated}"' in page and "evil.example" not in page


def test_docs_use_only_local_assets(app):
    with TestClient(app) as anon:
        docs = anon.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        refs = re.findall(r'(?:src|href)="([^"]+)"', docs.text) + re.findall(r"url: '([^']+)'", docs.text)
        assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
        assert "cdn" not in docs.text and "https://" not in docs.text
        for ref in refs:
            asset = anon.get(ref)
            assert asset.status_code == 200 and len(asset.content) > 0, ref
        assert anon.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").content.startswith(b"/*!")
        # The one inline script that starts Swagger UI is allowed by its hash, nothing else inline.
        csp = _directives(docs.headers["content-security-policy"])
        assert csp["script-src"][0] == "'self'" and all(s.startswith("'sha256-") for s in csp["script-src"][1:])
        assert len(csp["script-src"]) == 2 and "unsafe-inline" not in docs.headers["content-security-policy"]
        assert anon.get("/redoc").status_code == 404
