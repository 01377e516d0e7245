"""The README's curl walkthrough, pasted into bash as a user would, against `robaudit serve`."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from serve_process import ServeProcess

from .conftest import free_port

pytestmark = pytest.mark.services
README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough_script() -> str:
    text = README.read_text()
    section = text[text.index("### API walkthrough with curl"):]
    section = section[:section.index("\n### ", 1)]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.S))


def test_the_readme_walkthrough_trains_uploads_evaluates_fetches_and_reports(tmp_path):
    port = free_port()
    script = walkthrough_script().replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    assert "trainings" in script and "checkpoints" in script and "/results" in script
    with ServeProcess(tmp_path, port=port, token=None) as serve:   # as the README starts it: no flags
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=serve.env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        out = run.stdout
        assert re.search(r"trainings/\d+: succeeded", out)
        assert len(re.findall(r"evaluations/\d+: succeeded", out)) == 2
        results = json.loads((tmp_path / "results.json").read_text())   # the results JSON
        assert results["schema_version"] == 1 and results["diagnostics"]["verdict"] in out
        assert "attack,eps,steps,restarts,alpha,robust_accuracy" in out   # the results CSV
        assert "report_id,report_title,evaluation_id" in out   # the report's CSV export
        report = re.search(r"open (http://\S+/reports/\S+)", out).group(1)
        page = httpx.get(report, timeout=30)
        assert page.status_code == 200 and "FS vs PGD-AT" in page.text
