"""A report with evaluations under different norms (issue 11): each norm gets its own charts, no curve joins
budgets of two norms, model differences pair only evaluations of one norm, and tables and CSV name the norm."""
from __future__ import annotations

import copy
import csv
import io
import json
import re

import numpy as np
import pytest
from frontend_fixtures import payload  # noqa: F401 (fixture)

from robaudit.evaluation.results import encode_bits
from robaudit.frontend import figures as F
from robaudit.frontend.differences import model_differences
from robaudit.frontend.report import render_report_html, report_csv
from robaudit.frontend.results_view import Model, eps_short, eps_text
from robaudit.frontend.views import report_view

L2_EPS = {0.1: 0.5, 0.2: 1.0, 0.3: 2.0}


def _as_l2(results: dict) -> dict:
    """The same model's results as if evaluated under L2 at eps 0.5, 1.0, 2.0 (headline 2.0)."""
    out = copy.deepcopy(results)
    out["norm"] = "l2"
    out["config"]["norm"] = "l2"
    out["config"]["eps"] = [L2_EPS[e] for e in out["config"]["eps"]]
    for row in [*out["summary"], *out["worst_case"]]:
        row["eps"] = L2_EPS[row["eps"]]
        row["norm"] = "l2"
        row["robust_accuracy"] = round(row["robust_accuracy"] * 0.8, 4)
    for entries in out["curves"].values():
        for c in entries:
            c["norm"] = "l2"
            c["eps"] = L2_EPS.get(c["eps"], c["eps"])
    return out


@pytest.fixture
def mixed(payload):
    """The FS model evaluated under L-inf (the fixture's) and under L2, in one report."""
    linf = payload["evaluations"][0]
    l2 = copy.deepcopy(linf)
    l2.update(id=9, name="fs audit L2", results=_as_l2(linf["results"]))
    payload["evaluations"] = [linf, l2]
    return payload


def _figures(html: str) -> dict[str, dict]:
    blobs = re.findall(r'<script type="application/json" data-figure-for="([^"]+)">(.*?)</script>', html, re.S)
    return {i: json.loads(b) for i, b in blobs}


def test_each_norm_gets_its_own_charts_and_no_curve_crosses_norms(mixed):
    view = report_view(mixed)
    ids = [c.id for c in view.charts]
    assert ids == ["chart-gap-linf", "chart-eps-linf", "chart-steps-linf", "chart-ladder-linf",
                   "chart-gap-l2", "chart-eps-l2", "chart-steps-l2", "chart-ladder-l2"]
    titles = {c.id: c.title for c in view.charts}
    assert titles["chart-eps-linf"] == "Robust accuracy vs ε (L∞)"
    assert titles["chart-eps-l2"] == "Robust accuracy vs ε (L2)"
    figures = _figures(render_report_html(mixed))
    l2_eps, linf_eps = figures["chart-eps-l2"], figures["chart-eps-linf"]
    # Every trace of a chart is one evaluation's, under that chart's norm: its x values are that norm's budgets.
    l2_group, linf_group = {t["legendgroup"] for t in l2_eps["data"]}, {t["legendgroup"] for t in linf_eps["data"]}
    assert len(l2_group) == len(linf_group) == 1 and l2_group != linf_group
    l2_x = {x for t in l2_eps["data"] for x in t["x"]}
    linf_x = {x for t in linf_eps["data"] for x in t["x"]}
    assert {0.5, 1.0, 2.0} <= l2_x and not l2_x & {0.1, 0.3}
    assert {0.1, 0.2, 0.3} <= linf_x and not linf_x & {0.5, 2.0}
    # The norm is in the titles, the legend names and the axis.
    assert l2_eps["layout"]["title"]["text"].endswith("(L2)")
    assert l2_eps["layout"]["xaxis"]["title"]["text"] == "ε (L2 distance, pixels in [0, 1])"
    assert all(t["name"].endswith("(L2)") for t in l2_eps["data"])
    assert linf_eps["layout"]["xaxis"]["title"]["text"] == "ε (L∞, pixel scale [0, 1])"
    ladder = figures["chart-ladder-l2"]
    (bars,) = ladder["data"]
    assert bars["name"].endswith("(#9) (L2, ε = 2)")


def test_one_chart_never_mixes_norms(mixed):
    models = [Model(ev["name"], ev["results"]) for ev in mixed["evaluations"]]
    with pytest.raises(ValueError, match="one chart cannot mix norms"):
        F.accuracy_vs_eps(models)


def test_a_single_norm_report_keeps_its_chart_ids(payload):
    assert [c.id for c in report_view(payload).charts] == ["chart-gap", "chart-eps", "chart-steps", "chart-ladder"]


def test_model_differences_pair_only_the_same_norm():
    bits = encode_bits(np.arange(40) % 3 == 0)

    def results(norm: str, eps: float, sha: str = "same") -> dict:
        return {"norm": norm, "n": 40, "dataset": "mnist10k", "config": {"eps": [eps], "norm": norm},
                "summary": [{"attack": "pgd", "eps": eps, "steps": 20, "restarts": 1, "robust_accuracy": 0.3}],
                "worst_case": [{"eps": eps, "n": 40, "robust_accuracy": 1 / 3, "key": f"worst-case@eps={eps:g}"}],
                "per_sample": {"n": 40, "bits": {f"worst-case@eps={eps:g}": bits}},
                "provenance": {"dataset": {"points_sha256": sha}}}

    # The same number under two norms is two different budgets: never paired.
    assert model_differences([("A", results("linf", 0.5)), ("B", results("l2", 0.5))]) == []
    (pair,) = model_differences([("A", results("l2", 0.5)), ("B", results("l2", 0.5)), ("C", results("linf", 0.5))])
    assert (pair["first"], pair["second"], pair["norm"]) == ("A", "B", "l2")


def test_tables_and_csv_name_the_norm(mixed):
    html = render_report_html(mixed)
    assert "ε (L2)" in html and "ε (L∞)" in html
    rows = list(csv.DictReader(io.StringIO(report_csv(mixed))))
    by_eval = {(r["evaluation_id"], r["norm"]) for r in rows}
    assert by_eval == {("7", "linf"), ("9", "l2")}
    l2_attack = next(r for r in rows if r["norm"] == "l2" and r["measure"] == "attack")
    assert l2_attack["eps_x255"] == ""          # an L2 budget is a distance, not pixel steps
    linf_attack = next(r for r in rows if r["norm"] == "linf" and r["measure"] == "attack")
    assert linf_attack["eps_x255"] != ""


def test_eps_is_written_in_pixel_steps_only_under_linf():
    assert eps_short(8 / 255) == "8/255" and eps_short(8 / 255, "linf") == "8/255"
    assert eps_short(8 / 255, "l2") == "0.03137"
    assert eps_text(0.5, "l2") == "0.5" and eps_text(12.0, "l1") == "12"


def test_the_evaluate_form_offers_the_three_norms(tmp_path):
    from fastapi.testclient import TestClient

    from robaudit.backend.app.core.config import Settings
    from robaudit.backend.app.main import create_app

    with TestClient(create_app(Settings(data_dir=tmp_path, api_token="norm-token"), janitor=False)) as client:
        html = client.get("/evaluations/new").text
    select = re.search(r'<select id="ev-norm" name="norm".*?</select>', html, re.S)
    assert select is not None
    options = re.findall(r'<option value="([^"]+)">([^<]+)</option>', select.group(0))
    assert options == [("linf", "L∞"), ("l2", "L2"), ("l1", "L1")]
    # The ε field no longer claims L-inf only.
    assert "ε grid (in the chosen norm)" in html
