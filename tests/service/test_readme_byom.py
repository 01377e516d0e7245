"""The README's "Bring your own model" walkthrough, pasted as a user would: make a TRADES-layout
model, audit its state_dict (recognised) and its ONNX export from the CLI, audit it from Python,
then upload it to a running `robaudit serve` and push the Python results there."""
from __future__ import annotations

import json
import re
import subprocess

import pytest
from serve_process import ServeProcess

from .conftest import free_port
from .test_readme_walkthrough import README, walkthrough_script

pytestmark = pytest.mark.services


def byom_section() -> str:
    text = README.read_text()
    section = text[text.index("## Bring your own model\n"):]
    return section[:section.index("\n## ", 1)]


def test_the_bring_your_own_model_walkthrough_runs_as_pasted(tmp_path):
    section = byom_section()
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        name = re.match(r"# (\w+\.py)\n", block).group(1)   # each script block names its file
        (tmp_path / name).write_text(block)
    port = free_port()
    setup = walkthrough_script().split("\ncurl -s $API/health")[0]   # API, TOKEN, AUTH, field, wait_for
    commands = "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.S))
    script = (setup + "\n" + commands).replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    with ServeProcess(tmp_path, port=port, token=None) as serve:   # as the README starts it: no flags
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=serve.env,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    out, err = run.stdout, run.stderr
    assert "smallcnn.pt: recognised trades-smallcnn" in err
    for name in ("smallcnn.json", "onnx.json", "audit.json"):
        results = json.loads((tmp_path / name).read_text())
        assert results["clean_accuracy"] > 0.5 and not results["warnings"], name   # a working model, no warning
    assert json.loads((tmp_path / "onnx.json").read_text())["checkpoint"]["metadata"]["arch"] == "onnx"
    assert re.search(r"clean \d+\.\d%, worst case \d+\.\d%: ", out)              # audit_it.py's line
    upload = json.loads(next(line for line in out.splitlines() if line.startswith("{") and "sha256" in line))
    assert upload["detected_arch"] == "trades-smallcnn" and upload["clean_check"]["ran"] is True
    assert upload["clean_check"]["accuracy"] > 0.5
    assert re.search(r"imported as evaluation \d+ \(smallcnn \(python\)\)", out)
