"""Intervals and provenance on the pages: every accuracy table has its 95% interval, every evaluation
says what produced it, and a report that mixes software versions says so."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from robaudit.frontend.report import export_payload, render_report_html

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "audit_tiny.json"
PROVENANCE = {
    "software": {"python": "3.11.9", "robaudit": "0.1.0", "torch": "2.14.1", "torchvision": "0.29.1",
                 "pyautoattack": "0.2.0", "numpy": "2.4.6", "git_commit": "c0ffee" * 6 + "c0ff"},
    "machine": {"device": "cuda:0", "device_name": "NVIDIA H200", "precision": "fp32", "threads": 16},
    "seed": 0, "dataset": {"name": "mnist10k", "points": "0-47", "n": 48, "points_sha256": "ab" * 32},
    "checkpoint_sha256": "cd" * 32, "started_at": "2026-11-30T04:00:00+00:00",
    "finished_at": "2026-11-30T04:03:00+00:00",
}


def _payload(*pyautoattack_versions: str) -> dict:
    golden = json.loads(GOLDEN.read_text())
    evaluations = []
    for i, version in enumerate(pyautoattack_versions, start=1):
        results = copy.deepcopy(golden)
        results["provenance"] = copy.deepcopy(PROVENANCE)
        results["provenance"]["software"]["pyautoattack"] = version
        evaluations.append({"id": i, "status": "succeeded", "results": results,
                            "checkpoint": {"id": i, "name": f"model {i}", "dataset": "mnist10k"}})
    return {"report": {"id": 1, "title": "versions"}, "evaluations": evaluations}


def test_html_export_shows_each_interval_and_the_provenance():
    payload = _payload("0.2.0")
    html = render_report_html(payload)
    worst = payload["evaluations"][0]["results"]["worst_case"][0]
    low, high = (100 * v for v in worst["ci95"])
    assert f"{low:.1f}–{high:.1f} %" in html                    # the worst case's Wilson interval
    assert html.count("95% CI") >= 2                            # attack table and worst-case table
    assert "Provenance" in html and "NVIDIA H200, fp32, 16 CPU threads" in html
    assert "pyautoattack 0.2.0" in html and "cd" * 32 in html and "ab" * 32 in html
    assert "different software versions" not in html
    # The JSON export keeps the provenance (it is not per-point data).
    assert export_payload(payload)["evaluations"][0]["results"]["provenance"] == PROVENANCE


def test_a_report_mixing_pyautoattack_versions_says_so():
    html = render_report_html(_payload("0.2.0", "0.3.1"))
    assert 'id="mixed-versions"' in html
    assert "robaudit 0.1.0 with pyautoattack 0.2.0" in html and "robaudit 0.1.0 with pyautoattack 0.3.1" in html


def test_charts_draw_each_interval_as_an_error_bar():
    from robaudit.frontend.views import report_view

    payload = _payload("0.2.0")
    results = payload["evaluations"][0]["results"]
    view = report_view(payload)
    figures = {c.id: c.figure for c in view.charts}
    ladder = next(f for i, f in figures.items() if "ladder" in i)
    (bars,) = ladder["data"]
    worst = next(r for r in results["worst_case"] if r["n"] == results["n"])
    i = len(bars["x"]) - 1                                   # the worst case is the ladder's last rung
    y = bars["y"][i]
    assert bars["error_y"]["array"][i] == pytest.approx(100 * worst["ci95"][1] - y, abs=0.01)
    assert bars["error_y"]["arrayminus"][i] == pytest.approx(y - 100 * worst["ci95"][0], abs=0.01)
    eps_chart = next(f for i, f in figures.items() if i.endswith("eps"))
    assert all("error_y" in t for t in eps_chart["data"])    # every series, clean point included


def test_models_on_the_same_points_are_compared_paired_also_in_the_export():
    from robaudit.evaluation.intervals import paired_difference
    from robaudit.evaluation.results import decode_bits
    from robaudit.frontend.report import export_payload
    from robaudit.frontend.views import report_view

    payload = _payload("0.2.0", "0.2.0")
    results_b = payload["evaluations"][1]["results"]
    worst_key = next(r["key"] for r in results_b["worst_case"] if r["n"] == results_b["n"])
    bits = decode_bits(results_b["per_sample"]["bits"][worst_key], results_b["n"])
    flipped = bits.copy()
    flipped[:10] = False                                     # model 2 loses ten points model 1 keeps
    from robaudit.evaluation.results import encode_bits
    results_b["per_sample"]["bits"][worst_key] = encode_bits(flipped)
    (d,) = report_view(payload).differences
    expected = paired_difference(bits, flipped)
    assert (d["first"], d["second"], d["n"]) == ("model 1", "model 2", results_b["n"])
    assert d["difference_pp"] == pytest.approx(100 * expected["difference"])
    assert [d["low_pp"], d["high_pp"]] == pytest.approx([100 * v for v in expected["ci95"]])
    exported = export_payload(payload)
    assert "per_sample" not in exported["evaluations"][1]["results"]
    assert report_view(exported).differences == [d]          # the table travels without the records
    html = render_report_html(payload)
    assert 'id="paired-differences"' in html and "model 1 − model 2" in html
    # Different points: no paired difference is claimed.
    results_b["provenance"]["dataset"]["points_sha256"] = "ef" * 32
    assert report_view(payload).differences == []


def test_an_own_test_set_is_named_in_the_report_and_its_csv():
    from robaudit.frontend.report import report_csv

    payload = _payload("0.2.0")
    results = payload["evaluations"][0]["results"]
    results["dataset"] = "my digit folders"
    results["provenance"]["dataset"].update(name="my digit folders", file_sha256="ef" * 32, file_points=480,
                                            dataset_id=3)
    html = render_report_html(payload)
    assert "my digit folders · 480 points · sha256" in html and "efefefefefef" in html
    rows = report_csv(payload).splitlines()
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(","), strict=False))
    named = (first["dataset"], first["dataset_sha256"], first["dataset_points"])
    assert named == ("my digit folders", "ef" * 32, "480")
    # A dataset's test split has no test set to name.
    plain = dict(zip(header, report_csv(_payload("0.2.0")).splitlines()[1].split(","), strict=False))
    assert (plain["dataset"], plain["dataset_sha256"], plain["dataset_points"]) == ("mnist10k", "", "")
