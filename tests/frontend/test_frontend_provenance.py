"""Intervals and provenance on the pages: every accuracy table has its 95% interval, every evaluation
says what produced it, and a report that mixes software versions says so."""
from __future__ import annotations

import copy
import json
from pathlib import Path

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
