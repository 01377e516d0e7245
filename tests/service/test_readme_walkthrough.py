"""The README's curl walkthrough, pasted into bash as a user would, against `robaudit serve`."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "ROBAUDIT_API_TOKEN", "ROBAUDIT_DATA_DIR")}
    env.update(ROBAUDIT_TORCH_THREADS="1", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    serve = subprocess.Popen([sys.executable, "-m", "robaudit.cli", "serve", "--port", str(port)], cwd=tmp_path,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).json()["workers"]:
                    break
            except httpx.HTTPError:
                pass
            assert serve.poll() is None and time.monotonic() < deadline, "robaudit serve did not come up"
            time.sleep(0.5)
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
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
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(timeout=60)
