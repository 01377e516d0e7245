"""Report exports: the self-contained HTML file and the CSV, from the service's report payload."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from frontend_fixtures import payload  # noqa: F401 (fixture)

from robaudit.frontend.report import CSV_COLUMNS, export_payload, render_report_html, report_csv
from robaudit.frontend.templating import plotly_js_path
from robaudit.frontend.views import report_view

MARKER_BITS = "UEVSLVNBTVBMRS1CSVRT"   # a per-sample bitset that must never reach an export


@pytest.fixture
def payload_with_bits(payload):
    for ev in payload["evaluations"]:
        ev["results"]["per_sample"] = {"n": 200, "clean": MARKER_BITS, "bits": {"pgd@eps=0.3": MARKER_BITS}}
    return payload


def figures_in(html: str) -> list[dict]:
    blobs = re.findall(r'<script type="application/json" data-figure-for="([^"]+)">(.*?)</script>', html, re.S)
    return [{"id": i, **json.loads(b)} for i, b in blobs]


def test_html_export_inlines_everything_and_references_nothing(payload_with_bits):
    html = render_report_html(payload_with_bits)
    assert html.startswith("<!DOCTYPE html>")
    # plotly.js itself is in the file (its banner and its size), not linked.
    assert plotly_js_path().read_text()[:200].strip()[:40] in html
    assert len(html) > 3_000_000
    # No element loads anything: no src/href attribute pointing anywhere, no stylesheet link.
    tags = re.findall(r"<(script|link|img|iframe|object|embed|source)\b[^>]*>", html[:20000] + html[-200000:])
    assert all(t == "script" for t in tags)
    assert not re.search(r"<(script|img|iframe|link)[^>]+(src|href)\s*=", html)
    assert "default-src 'none'" in html                          # the CSP forbids network requests too


def test_html_export_has_every_chart_and_only_aggregated_numbers(payload_with_bits):
    html = render_report_html(payload_with_bits)
    ids = [f["id"] for f in figures_in(html)]
    # No δ chart: one δ per training method is not a study.
    assert ids == ["chart-gap", "chart-eps", "chart-steps", "chart-ladder", "chart-train-0"]
    assert MARKER_BITS not in html
    assert "FS vs PGD-AT on MNIST" in html
    assert "unreliable" in html and "PGD vs strongest-ensemble gap" in html     # the diagnostics panel
    assert html.count('class="check ') == 6


def test_html_export_escapes_user_text(payload):
    payload["report"]["title"] = "</script><script>alert(1)</script>"
    payload["evaluations"][0]["checkpoint"]["name"] = "<b onmouseover=x>"
    html = render_report_html(payload)
    assert "<script>alert(1)" not in html
    assert "<b onmouseover" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html
    figures_in(html)   # the embedded JSON still parses: no premature </script>


def test_report_with_missing_sections_still_renders(payload):
    running = {"id": 11, "status": "running", "checkpoint": None, "results": None}
    no_diag = json.loads(json.dumps(payload["evaluations"][1]))
    no_diag["id"] = 12
    del no_diag["results"]["diagnostics"], no_diag["results"]["worst_case"], no_diag["results"]["curves"]
    payload["evaluations"] += [running, no_diag]
    html = render_report_html(payload)
    assert "evaluation 11" in html and "No diagnostics in these results." in html
    view = report_view(payload)
    assert [e.status for e in view.evaluations] == ["succeeded", "succeeded", "running", "succeeded"]


def test_empty_report_renders():
    html = render_report_html({"report": {"title": "Empty"}, "evaluations": []})
    assert "No evaluations in this report." in html
    assert "No attack results yet." in html


def test_csv_has_one_row_per_measurement(payload):
    text = report_csv(payload)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0].keys()) == CSV_COLUMNS
    fs = [r for r in rows if r["evaluation_id"] == "7"]
    fs_results = payload["evaluations"][0]["results"]
    assert len(fs) == 1 + len(fs_results["summary"]) + len(fs_results["worst_case"])
    assert {r["measure"] for r in fs} == {"clean", "attack", "worst_case"}
    clean = next(r for r in fs if r["measure"] == "clean")
    assert clean["accuracy"] == "0.982" and clean["accuracy_pct"] == "98.2" and clean["n"] == "200"
    aa = next(r for r in fs if r["attack"] == "autoattack")
    assert (aa["eps"], aa["accuracy_pct"], aa["verdict"]) == ("0.3", "38.5", "unreliable")
    pgd100 = next(r for r in fs if r["attack"] == "pgd" and r["steps"] == "100" and r["eps"] == "0.3")
    assert pgd100["accuracy"] == "0.52" and pgd100["method"] == "feature-scatter" and pgd100["label_smoothing"] == "0.5"
    assert all(r["report_id"] == "Ab3dE5gH" for r in rows)


def test_csv_defuses_spreadsheet_formulas(payload):
    payload["evaluations"][0]["checkpoint"]["name"] = "=HYPERLINK(\"http://evil\")"
    rows = list(csv.DictReader(io.StringIO(report_csv(payload))))
    assert rows[0]["model"].startswith("'=")


def test_csv_keeps_an_evaluation_without_results(payload):
    payload["evaluations"].append({"id": 13, "status": "failed", "checkpoint": {"id": 5, "name": "broken"},
                                   "results": None})
    rows = [r for r in csv.DictReader(io.StringIO(report_csv(payload))) if r["evaluation_id"] == "13"]
    assert [(r["measure"], r["status"], r["model"]) for r in rows] == [("none", "failed", "broken")]


def test_export_payload_drops_per_sample_data_only(payload_with_bits):
    out = export_payload(payload_with_bits)
    assert MARKER_BITS not in json.dumps(out)
    assert out["evaluations"][0]["results"]["summary"] == payload_with_bits["evaluations"][0]["results"]["summary"]
    assert "per_sample" in payload_with_bits["evaluations"][0]["results"]      # the input is not modified


def test_study_report_shows_conclusions_and_published_numbers_next_to_ours():
    from frontend_fixtures import make_study_payload

    payload = make_study_payload()
    second_delta = json.loads(json.dumps(payload["evaluations"][0]))   # a second δ of Feature Scattering
    second_delta["id"], second_delta["checkpoint"]["id"] = 9, 30
    second_delta["checkpoint"]["name"] = "fs-d0.2"
    second_delta["checkpoint"]["hyperparameters"]["label_smoothing"] = 0.2
    payload["evaluations"].append(second_delta)
    html = render_report_html(payload)
    study = payload["study"]
    assert study["conclusions"], "the analysis should conclude something from two models"
    for c in study["conclusions"]:
        assert c["question"] in html
    assert html.count('<tr><th scope="row">') >= len(study["ours"])
    assert "71.0 %" in html and "38.5 %" in html                     # FS: PGD-20 and AutoAttack at ε = 0.3
    assert "72.03 %" in html and "36.64 %" in html                   # the published table and attacks
    fs = next(r for r in study["ours"] if r["method"] == "feature-scatter")   # its gap, with its noise
    assert f'{fs["gap_pgd20_strongest_pp"]:.1f} pp <span class="small muted">± {2 * fs["gap_se_pp"]:.1f}</span>' in html
    ls = next(f for f in figures_in(html) if f["id"] == "chart-label-smoothing")
    assert "published (seed paper)" in [t["name"] for t in ls["data"]]


def test_study_csv_carries_the_study_table_and_its_gap():
    from frontend_fixtures import make_study_payload

    payload = make_study_payload()
    rows = list(csv.DictReader(io.StringIO(report_csv(payload))))
    study = [r for r in rows if r["measure"] == "study"]
    gaps = [r for r in rows if r["measure"] == "study_gap"]
    ours = payload["study"]["ours"]
    assert len(gaps) == sum(r["gap_pgd20_strongest_pp"] is not None for r in ours) >= 1
    fs = next(r for r in ours if r["method"] == "feature-scatter")
    pgd = next(r for r in study if r["model"] == fs["name"] and r["attack"] == "PGD-20")
    assert float(pgd["accuracy"]) == fs["pgd20"] and pgd["eps"] == "0.3" and int(pgd["n"]) == fs["pgd20_n"]
    gap = next(r for r in gaps if r["model"] == fs["name"])
    assert abs(float(gap["accuracy_pct"]) - fs["gap_pgd20_strongest_pp"]) < 1e-6
    assert gap["attack"].startswith("PGD-20 minus AutoAttack")
    # A plain comparison report has no study rows.
    from frontend_fixtures import make_payload
    assert not [r for r in csv.DictReader(io.StringIO(report_csv(make_payload()))) if r["measure"].startswith("study")]
