"""The comparison report at a glance (issue 15), from the figure JSON: one colour per model across
every chart, legend groups per model, honest lines, the PGD overstatement and its interval."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from frontend_fixtures import demo_payload, make_payload

from robaudit.frontend import figures as F
from robaudit.frontend import gaps as G
from robaudit.frontend.report import export_payload, render_report_html
from robaudit.frontend.views import report_view

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "audit_tiny.json"


def _golden_payload() -> dict:
    """A report of two evaluations: the demo's first two models, and the golden audit results (which
    keep their per-point records, so its gap interval is paired)."""
    payload = demo_payload()
    golden = json.loads(GOLDEN.read_text())
    payload["evaluations"][2]["results"] = golden
    return payload


@pytest.mark.parametrize("make", [demo_payload, make_payload, _golden_payload])
def test_each_model_has_one_colour_in_every_chart_and_a_legend_group(make):
    view = report_view(make())
    charts = [c for c in view.all_charts if c.figure]
    assert len(charts) >= 4
    colour = {ev.label: ev.color for ev in view.evaluations}
    assert len(set(colour.values())) == len(colour)
    seen: dict[str, set[str]] = {}
    for c in charts:
        for t in c.figure["data"]:
            group = t.get("legendgroup")
            if group is None:              # reference lines of no model (lr changes, published numbers)
                continue
            assert group in colour, (c.id, group)
            colours = {t.get("line", {}).get("color"), t.get("marker", {}).get("color")} - {None}
            colours = {x for x in colours if isinstance(x, str)}
            seen.setdefault(group, set()).update(colours)
    assert set(seen) == {ev.label for ev in view.with_results}
    for label, found in seen.items():
        assert found == {colour[label]}, (label, found)
    # The summary table's swatch names the same colour (a CSS class: style attributes are blocked).
    css = (ROOT / "frontend" / "static" / "css" / "app.css").read_text()
    for i, hexcode in enumerate(F.MODEL_COLORS):
        assert re.search(rf"\.swatch\.m{i} {{ background: {hexcode}; }}", css), hexcode
    html = render_report_html(make())
    for ev in view.evaluations:
        assert f'<span class="swatch {ev.swatch_class}" aria-hidden="true"></span>' in html


def test_eps_chart_opens_on_pgd20_and_the_worst_case_per_model():
    fig = report_view(demo_payload()).charts[1].figure
    shown = {(t["legendgroup"], t["name"]) for t in fig["data"] if t["visible"] is True}
    for model in ("standard", "PGD-AT", "Feature Scattering"):
        assert {(model, "PGD-20"), (model, "worst case")} <= shown
        assert {n for g, n in shown if g == model} <= set(F.DEFAULT_VISIBLE)
    assert all(t["visible"] == "legendonly" for t in fig["data"] if t["name"] not in F.DEFAULT_VISIBLE)
    assert all(t["legendgrouptitle"]["text"] == t["legendgroup"] for t in fig["data"])


@pytest.mark.parametrize("make", [demo_payload, _golden_payload])
def test_no_line_joins_the_clean_point_to_a_large_eps_check(make):
    fig = report_view(make()).charts[1].figure
    sanity = [t for t in fig["data"] if "large-ε check" in t["name"]]
    assert sanity, "the audit preset's PGD-50 at ε = 0.5 and 1 should be in the chart"
    for t in sanity:
        assert t["mode"] == "markers" and 0.0 not in t["x"] and min(t["x"]) >= 0.5
    for t in fig["data"]:
        if "lines" in t["mode"]:
            assert max(t["x"]) < 0.5, f"{t['name']} runs into the large-ε range: {t['x']}"
            assert len(set(t["x"])) == len(t["x"]), f"{t['name']} has two points at one ε"


def test_the_overstatement_chart_comes_first_with_the_gap_in_points():
    view = report_view(_golden_payload())
    gap = view.charts[0]
    assert gap.id == "chart-gap"
    labels = [a["text"] for a in gap.figure["layout"]["annotations"]]
    assert len(labels) == 3 and all(" pp</b> (95% CI " in t for t in labels)
    golden = view.evaluations[2].gap
    assert golden.paired and golden.n == 48
    assert abs(golden.gap - (golden.pgd - golden.worst)) < 1e-9       # same points: the headline difference
    assert f"overstates by {100 * golden.gap:.1f} pp" in labels[2]
    assert not view.evaluations[0].gap.paired                          # an export: no per-point records


def test_delta_chart_only_for_two_deltas_of_one_method():
    assert "chart-label-smoothing" not in [c.id for c in report_view(demo_payload()).charts]
    payload = make_payload()
    second = json.loads(json.dumps(payload["evaluations"][0]))
    second["id"], second["checkpoint"]["id"] = 9, 30
    second["checkpoint"]["hyperparameters"]["label_smoothing"] = 0.2
    payload["evaluations"].append(second)
    assert "chart-label-smoothing" in [c.id for c in report_view(payload).charts]


def test_exports_keep_the_gap_but_not_the_per_point_records():
    golden = json.loads(GOLDEN.read_text())
    payload = {"report": {"title": "t"}, "evaluations": [{"id": 1, "status": "succeeded", "results": golden,
                                                          "checkpoint": {"id": 1, "name": "tiny"}}]}
    out = export_payload(payload)
    results = out["evaluations"][0]["results"]
    assert "per_sample" not in results
    assert results[G.SUMMARY_KEY] == G.pgd_gap(golden).as_dict()
    assert G.pgd_gap(results) == G.pgd_gap(golden) and G.pgd_gap(results).paired
    assert "per_sample" not in json.dumps(out)
