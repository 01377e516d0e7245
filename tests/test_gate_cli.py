"""`robaudit evaluate`'s gate options end to end: exit codes 0/1/2, the JUnit and Markdown files."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers_eval import standard_model
from helpers_training import one_torch_thread  # noqa: F401  (a fixture)

from robaudit.cli import main
from robaudit.models import CheckpointMetadata, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, one_torch_thread) -> Path:
    """helpers_eval's standard SmallCNN on 2,000 digits: most points correct, robust on few at eps 0.1."""
    meta = CheckpointMetadata(arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0],
                              dataset="mnist10k", input_size=28, method="standard")
    path: Path = save_checkpoint(tmp_path_factory.mktemp("gate") / "standard.safetensors",
                                 standard_model(n_train=2000), meta)
    return path


@pytest.fixture
def evaluate(checkpoint, tmp_path):
    def run(*extra: str) -> int:
        # FGSM and PGD-10 on 16 points: enough for a worst case and the diagnostics, in seconds.
        return main(["evaluate", str(checkpoint), "--attacks", "fgsm,pgd", "--steps", "10", "--eps", "0.1",
                     "--n-examples", "16", "--batch-size", "16", "--no-progress",
                     "--out", str(tmp_path / "results.json"), *extra])
    return run


def test_exit_0_when_the_gate_passes_1_when_it_fails_with_reports(evaluate, tmp_path, capsys):
    junit, md = tmp_path / "ci" / "junit.xml", tmp_path / "ci" / "summary.md"
    assert evaluate("--fail-under", "0", "--junit", str(junit), "--summary-md", str(md)) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert "gate" not in results       # the gate sits next to the results, not in them
    # The results say which file they measured, and the table prints each accuracy's interval.
    assert results["provenance"]["checkpoint_sha256"] == results["checkpoint"]["sha256"]
    worst = next(r["robust_accuracy"] for r in results["worst_case"] if r["eps"] == 0.1 and r["n"] == 16)
    assert worst < 1.0                 # so --fail-under 100% below must fail
    out = capsys.readouterr()
    assert "gate: passed" in out.err
    assert "95% CI" in out.out
    assert ET.parse(junit).getroot().get("failures") == "0"
    assert md.read_text().startswith("### robaudit gate passed: standard.safetensors on mnist10k")

    assert evaluate("--fail-under", "100%", "--junit", str(junit), "--summary-md", str(md)) == 1
    err = capsys.readouterr().err
    assert "gate: FAILED" in err and f"worst case {100 * worst:.2f} % at eps=0.1" in err
    root = ET.parse(junit).getroot()
    failure = root.find("testsuite[@name='robaudit.gate']/testcase[@name='fail-under']/failure")
    assert failure is not None and "below the threshold 100.00 %" in failure.get("message")
    assert "❌ `fail-under`" in md.read_text()

    # At exactly the measured worst case the gate passes (equal is not under).
    assert evaluate("--fail-under", repr(worst)) == 0


def test_no_gate_still_exits_0_and_json_stdout_stays_one_document(evaluate, capsys):
    assert evaluate("--json") == 0
    out = capsys.readouterr()
    json.loads(out.out)
    assert "gate:" not in out.err


@pytest.mark.parametrize(("args", "message"), [
    (["--fail-under", "40"], "did you mean 40%?"),
    (["--fail-under", "x"], "such as 0.4 or 40%"),
    (["--fail-on", "maybe"], "invalid choice: 'maybe'"),
])
def test_usage_errors_exit_2(evaluate, capsys, args, message):
    with pytest.raises(SystemExit) as exc:      # argparse's own exit
        evaluate(*args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_input_errors_exit_2(evaluate, checkpoint, tmp_path, capsys):
    missing = main(["evaluate", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "r.json"),
                    "--fail-under", "0.1"])
    assert missing == 2 and "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "garbage.safetensors").write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(tmp_path / "garbage.safetensors"), "--out", str(tmp_path / "r.json")]) == 2
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint), "--eps", "2", "--out", str(tmp_path / "r.json")]) == 2
    assert "eps must be in (0, 1]" in capsys.readouterr().err
    # An output path that cannot be written (its parent is a file) is an input error, not a failed gate.
    (tmp_path / "afile").write_text("")
    assert evaluate("--fail-under", "0", "--junit", str(tmp_path / "afile" / "junit.xml")) == 2
    assert "cannot write" in capsys.readouterr().err
