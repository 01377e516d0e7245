"""The issue's done-when for the gate: a CI-style run fails the Feature Scattering model and passes
the PGD-AT one at one threshold.

Both are SmallCNNs trained for one epoch on mnist10k by `robaudit.training.train` (FS on 6,000
digits, about a minute on one core; PGD-AT with 10-step PGD on 4,000, two to three minutes), then
gated by `robaudit evaluate --preset quick` on the first 100 test points at eps 0.3.

Measured on the development machine (quick preset, 100 points, eps 0.3):

    model    clean   PGD-20   CW-20   worst case
    FS       93 %    9 %      6 %     6 %
    PGD-AT   51 %    18 %     17 %    17 %

The threshold, 12 %, sits between the two worst cases: 6 points above FS's and 5 below PGD-AT's,
so a float kernel that flips a few points on another CPU does not change either outcome. At this
scale FS's worst case is only 3 pp under its PGD-20 (the large gap of the paper's CIFAR models needs
full training); what the gate must see, and does, is the worst case rather than PGD-20. The FS
run also failed `--fail-on suspected` there (C4: PGD gained 5 pp from 10 to 20 steps), which the
test does not require: it rests on a few points.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers_training import one_torch_thread  # noqa: F401  (a fixture)

from robaudit.cli import main
from robaudit.evaluation.gate import primary_worst_case
from robaudit.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THRESHOLD = "0.12"


def _train(tmp_path_factory, method: str, n_train: int, **extra) -> Path:
    out = tmp_path_factory.mktemp(method)
    train(TrainConfig(method=method, dataset="mnist10k", arch="smallcnn", epochs=1, batch_size=64, n_train=n_train,
                      eval_examples=20, device="cpu", seed=0, **extra), out)
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def feature_scatter(tmp_path_factory, one_torch_thread) -> Path:
    return _train(tmp_path_factory, "feature-scatter", 6000)


@pytest.fixture(scope="module")
def pgd_at(tmp_path_factory, one_torch_thread) -> Path:
    return _train(tmp_path_factory, "pgd-at", 4000, steps=10)


def ci_run(checkpoint: Path, out: Path) -> tuple[int, dict, ET.Element, str]:
    """What the README's CI step runs; returns the exit code, results, JUnit root and Markdown."""
    code = main(["evaluate", str(checkpoint), "--preset", "quick", "--n-examples", "100", "--no-progress",
                 "--out", str(out / "results.json"), "--fail-under", THRESHOLD, "--fail-on", "suspected",
                 "--junit", str(out / "junit.xml"), "--summary-md", str(out / "summary.md")])
    return (code, json.loads((out / "results.json").read_text()), ET.parse(out / "junit.xml").getroot(),
            (out / "summary.md").read_text())


def test_gate_fails_feature_scattering_and_passes_pgd_at(feature_scatter, pgd_at, tmp_path):
    fs_code, fs, fs_junit, fs_md = ci_run(feature_scatter, tmp_path / "fs")
    at_code, at, at_junit, at_md = ci_run(pgd_at, tmp_path / "at")
    fs_worst, at_worst = primary_worst_case(fs), primary_worst_case(at)
    assert fs_worst is not None and at_worst is not None
    margins = (float(THRESHOLD) - fs_worst["robust_accuracy"], at_worst["robust_accuracy"] - float(THRESHOLD))
    assert fs_code == 1, (fs_md, margins)
    assert at_code == 0, (at_md, margins)
    fail_under = fs_junit.find("testsuite[@name='robaudit.gate']/testcase[@name='fail-under']/failure")
    assert fail_under is not None and "is below the threshold 12.00 %" in fail_under.get("message")
    assert at_junit.get("failures") == "0"
    assert fs_md.startswith("### robaudit gate FAILED") and at_md.startswith("### robaudit gate passed")
