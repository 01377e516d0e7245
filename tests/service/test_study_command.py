"""`robaudit study label-smoothing` end to end at a tiny budget: the jobs go through the queue of
an embedded service, the report is a study report, and the exports land next to run.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import free_port

pytestmark = pytest.mark.services


def test_study_runs_through_the_queue_and_exports_its_report(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "ROBAUDIT_API_TOKEN", "ROBAUDIT_DATA_DIR")}
    env.update(ROBAUDIT_HEARTBEAT_INTERVAL="1", ROBAUDIT_TORCH_THREADS="1")
    out_dir = tmp_path / "published"
    cmd = [sys.executable, "-m", "robaudit.cli", "study", "label-smoothing", "--dataset", "mnist10k",
           "--epochs", "1", "--n-train", "128", "--batch-size", "64", "--eval-examples", "16", "--n-examples", "16",
           "--deltas", "0,0.5", "--pgd-steps", "2", "--presets", "quick", "--port", str(free_port()),
           "--service-dir", str(tmp_path / "var"), "--out", str(out_dir), "--exit"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "study report: http://127.0.0.1:" in proc.stdout
    # The printed table has one row per model: FS at each delta, PGD-AT, standard.
    assert "feature-scatter δ=0" in proc.stdout and "feature-scatter δ=0.5" in proc.stdout
    assert "Does PGD robustness rise with label smoothing?" in proc.stdout

    report = json.loads((out_dir / "report.json").read_text())
    assert report["report"]["kind"] == "label-smoothing-study"
    assert len(report["evaluations"]) == 4 and all(e["status"] == "succeeded" for e in report["evaluations"])
    assert [r["method"] for r in report["study"]["ours"]] == ["feature-scatter", "feature-scatter", "pgd-at",
                                                             "standard"]
    # The gap was read from the stored per-point bitsets (on the same points), yet none are exported.
    assert {r["gap_points"] for r in report["study"]["ours"]} == {"same"}
    assert "per_sample" not in json.dumps(report)   # exports carry aggregated numbers only
    html = (out_dir / "report.html").read_text()
    assert "72.03" in html and "<script" in html     # the seed's table is next to ours; plotly inlined
    assert "feature-scatter" in (out_dir / "report.csv").read_text()
    run = json.loads((out_dir / "run.json").read_text())
    assert "study label-smoothing" in run["command"] and run["machine"]["cores"] >= 1
    assert run["budget"]["hyperparameters"]["Feature Scattering δ=0.5"]["label_smoothing"] == 0.5
