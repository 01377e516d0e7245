"""Clean accuracy at load and the near-chance warning: a model given the wrong preprocessing is never
presented as audited; with the right one it gets a normal audit. Also robaudit.audit() and the CLI paths.

The model is the catalogue SmallCNN with random convolutions and a classifier trained for 200 Adam steps
on 3000 mnist10k images (seconds on one core),
then rewritten as a network that expects 0..255 pixels (its first convolution divided by 255): loading
it as if it took [0, 1] pixels is the wrong preprocessing, and drives it to chance.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers_training import one_torch_thread  # noqa: F401  (fixture)
from safetensors.torch import save_file

import robaudit
from robaudit.cli import main as cli_main
from robaudit.evaluation import build_spec, evaluate
from robaudit.evaluation.ci_report import summary_markdown
from robaudit.evaluation.clean_check import SUSPECT_MESSAGE, VERDICT_INVALID, clean_check
from robaudit.evaluation.clean_check import main as clean_check_main
from robaudit.evaluation.gate import GateSettings, check_gate
from robaudit.models.registry import build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    x, y = robaudit.load_dataset("mnist10k", "train")
    x, y = x[:3000], y[:3000]
    torch.manual_seed(0)
    net = build_network("smallcnn", num_classes=10, in_channels=1)
    # Only the classifier is trained, on features computed once: seconds, and still above 80 % clean.
    with torch.no_grad():
        features = net.features(x)
    opt = torch.optim.Adam(net.classifier.parameters(), 1e-3)
    net.train()
    for _ in range(200):
        i = torch.randint(0, len(x), (64,))
        loss = torch.nn.functional.cross_entropy(net.classifier(features[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    folder = tmp_path_factory.mktemp("clean")
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "unit.safetensors"))          # takes [0, 1] pixels
    state["features.0.weight"] = state["features.0.weight"] / 255.0
    torch.save({"state_dict": state}, folder / "pixels.pt")     # takes 0..255 pixels
    return folder


def _pixels_model(folder, right: bool) -> torch.nn.Module:
    return robaudit.load_model(folder / "pixels.pt", dataset="mnist10k", preprocessing="none",
                               input_range=[0, 255] if right else None)


def test_wrong_preprocessing_is_suspect_and_the_right_one_is_not(trained):
    right = clean_check(_pixels_model(trained, True), "mnist10k")
    wrong = clean_check(_pixels_model(trained, False), "mnist10k")
    assert right["ran"] and wrong["ran"] and right["n"] == wrong["n"] == 500 and right["chance"] == 0.1
    assert right["accuracy"] > 0.8 and not right["suspect"]
    assert wrong["accuracy"] < 0.2 and wrong["suspect"]
    assert SUSPECT_MESSAGE in wrong["message"] and SUSPECT_MESSAGE not in right["message"]


def test_the_evaluation_of_a_near_chance_model_is_not_an_audit(trained):
    x, y = robaudit.load_dataset("mnist10k", "test")
    spec = build_spec(attacks="fgsm,pgd", steps="5", eps=0.1, dataset="mnist10k", n_examples=60, batch_size=60)
    wrong = evaluate(_pixels_model(trained, False), x, y, spec)
    right = evaluate(_pixels_model(trained, True), x, y, spec)

    assert wrong["clean_check"]["suspect"] and wrong["diagnostics"]["verdict"] == VERDICT_INVALID
    assert SUSPECT_MESSAGE in wrong["diagnostics"]["reasons"][0]
    assert wrong["warnings"] == [wrong["clean_check"]["message"]]
    gate = check_gate(wrong, GateSettings(fail_on="suspected"))
    assert not gate.passed
    assert f"> **Warning:** {wrong['warnings'][0]}" in summary_markdown(wrong, gate)

    assert not right["clean_check"]["suspect"] and right["warnings"] == []
    assert right["diagnostics"]["verdict"] != VERDICT_INVALID
    assert right["clean_check"]["accuracy"] == right["clean_accuracy"] > 0.6


def test_the_check_says_why_when_the_dataset_is_missing(trained, tmp_path):
    result = clean_check(_pixels_model(trained, True), "cifar10", data_dir=tmp_path)
    assert result["ran"] is False
    assert result["reason"].startswith(f"cifar10 not found in {tmp_path}")


def test_the_api_runs_it_as_a_module(trained):
    metadata = {"arch": "smallcnn", "num_classes": 10, "in_channels": 1, "mean": [0.0], "std": [1.0],
                "dataset": "mnist10k", "preprocessing": "none"}
    out = subprocess.run([sys.executable, "-m", "robaudit.evaluation.clean_check", str(trained / "unit.safetensors"),
                          "--metadata", json.dumps(metadata), "--n", "100"],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ran"] and result["n"] == 100 and not result["suspect"]


def test_the_module_entry_reports_a_file_it_cannot_load(trained, capsys):
    metadata = {"arch": "preactresnet18", "num_classes": 10, "in_channels": 1, "mean": [0.0], "std": [1.0],
                "dataset": "mnist10k", "preprocessing": "none"}
    assert clean_check_main([str(trained / "pixels.pt"), "--metadata", json.dumps(metadata)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ran"] is False and "does not match preactresnet18" in result["reason"]


def test_audit_takes_any_module_on_0_1_inputs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    x, y = robaudit.load_dataset("mnist10k", "test")
    results = robaudit.audit(model, x[:30], y[:30], preset="quick", eps=0.1, batch_size=30)
    assert results["source"] == "python-api" and results["dataset"] == "custom" and results["n"] == 30
    assert results["model"]["class"] == "torch.nn.modules.container.Sequential"
    assert {row["attack"] for row in results["summary"]} >= {"fgsm", "pgd", "cw"}
    assert results["config"]["eps"] == [0.1]
    assert "clean_check" in results and "verdict" in results["diagnostics"]
    assert "robaudit.audit()" in results["test_points"]
    with pytest.raises(robaudit.RobauditError, match="give eps"):
        robaudit.audit(model, x[:30], y[:30])
    with pytest.raises(robaudit.RobauditError, match=r"x must hold images in \[0, 1\]"):
        robaudit.audit(model, x[:30] * 255, y[:30], eps=0.1)


def test_cli_recognises_the_architecture_and_warns_near_chance(trained, tmp_path, capsys):
    common = ["--dataset", "mnist10k", "--attacks", "fgsm", "--n-examples", "40", "--eps", "0.1", "--no-progress"]
    out = tmp_path / "right.json"
    assert cli_main(["evaluate", str(trained / "unit.safetensors"), "--preprocessing", "none", "--out", str(out),
                     *common]) == 0
    captured = capsys.readouterr()
    assert "recognised smallcnn: 10 classes, 1 input channel(s)" in captured.err and "using smallcnn" in captured.err
    assert "WARNING" not in captured.out
    results = json.loads(out.read_text())
    assert results["checkpoint"]["detected_arch"] == "smallcnn"
    assert results["checkpoint"]["metadata"]["preprocessing"] == "none"

    # The 0..255 network loaded as if it took [0, 1]: the table says so, and the verdict is not an audit.
    assert cli_main(["evaluate", str(trained / "pixels.pt"), "--preprocessing", "none",
                     "--out", str(tmp_path / "wrong.json"), *common]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: clean accuracy" in printed and SUSPECT_MESSAGE in printed
    assert f"verdict: {VERDICT_INVALID}" in printed
    # Told its pixel range, the same file is a working model again.
    assert cli_main(["evaluate", str(trained / "pixels.pt"), "--preprocessing", "none", "--input-range", "0,255",
                     "--out", str(tmp_path / "range.json"), *common]) == 0
    assert "WARNING" not in capsys.readouterr().out
    assert json.loads((tmp_path / "range.json").read_text())["checkpoint"]["metadata"]["input_range"] == [0, 255]


def test_cli_input_errors_are_one_line_with_exit_2(trained, tmp_path, capsys):
    out = str(tmp_path / "r.json")
    assert cli_main(["evaluate", str(trained / "unit.safetensors"), "--dataset", "mnist10k", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "give a preprocessing preset (none, cifar-0.5, imagenet, cifar10) or mean and std" in err
    assert len(err.splitlines()) == 1

    torch.save({"encoder.weight": torch.zeros(4, 4)}, tmp_path / "other.pt")
    assert cli_main(["evaluate", str(tmp_path / "other.pt"), "--dataset", "mnist10k", "--preprocessing", "none",
                     "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robaudit: error: other.pt: no catalogue architecture matches")
    assert len(err.splitlines()) == 1

    assert cli_main(["evaluate", str(trained / "unit.safetensors"), "--out", out]) == 2
    assert "pass --dataset and --preprocessing" in capsys.readouterr().err
