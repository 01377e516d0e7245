"""RobustBench model-info export: the leaderboard's fields and spellings, filled from an audit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from robaudit.evaluation.robustbench import USER_FIELDS, eps_text, model_info

GOLDEN = Path(__file__).parent / "golden" / "audit_tiny.json"


@pytest.mark.parametrize(("eps", "text"), [(8 / 255, "8/255"), (4 / 255, "4/255"), (0.031, "0.031"),
                                           (0.5, "0.5"), (0.3, "0.3")])
def test_eps_is_spelled_as_robustbench_does(eps, text):
    assert eps_text(eps) == text


def _feature_scattering_audit() -> dict:
    """The numbers RobustBench lists for Zhang & Wang 2019 (clean 89.98, AA 36.64 at 8/255, 10,000
    points), as an audit's results would hold them."""
    eps = 8 / 255
    return {"dataset": "cifar10", "n": 10_000, "clean_accuracy": 0.8998, "config": {"eps": [eps]},
            "summary": [{"attack": "pgd", "eps": eps, "steps": 20, "restarts": 1, "robust_accuracy": 0.706,
                         "n": 10_000, "key": "pgd@eps=0.0313725/steps=20/restarts=1"},
                        {"attack": "autoattack", "eps": eps, "steps": None, "restarts": 1, "robust_accuracy": 0.3664,
                         "n": 10_000, "key": "autoattack@eps=0.0313725/steps=-/restarts=1"}],
            "worst_case": [{"eps": eps, "robust_accuracy": 0.3650, "n": 10_000}],
            "diagnostics": {"verdict": "gradient masking suspected", "checks": [{"id": "C11", "status": "pass"}]}}


def test_a_full_audit_gives_the_leaderboard_entry():
    info = model_info(_feature_scattering_audit(), {"arch": "wrn-28-10", "dataset": "cifar10"})
    assert {k: info[k] for k in ("dataset", "architecture", "eps", "clean_acc", "autoattack_acc",
                                 "number_forward_passes", "threat_model", "footnote")} == {
        "dataset": "cifar10", "architecture": "WideResNet-28-10", "eps": "8/255", "clean_acc": "89.98",
        "autoattack_acc": "36.64", "number_forward_passes": 1, "threat_model": "Linf", "footnote": None}
    # What only the paper's authors know is left empty and listed.
    assert all(info[field] is None for field in USER_FIELDS) and info["robaudit"]["to_fill"] == list(USER_FIELDS)
    assert info["robaudit"]["worst_case_acc"] == "36.50" and info["robaudit"]["randomized"] is False
    json.dumps(info)


def test_a_partial_audit_is_footnoted():
    results = json.loads(GOLDEN.read_text())
    info = model_info(results, {"arch": "smallcnn"})
    assert info["eps"] == "0.1" and info["architecture"] == "SmallCNN"
    assert "first 48 of 10000 test points" in info["footnote"] and "AutoAttack on the first 16" in info["footnote"]
    no_aa = {**results, "summary": [r for r in results["summary"] if r["attack"] != "autoattack"]}
    info = model_info(no_aa, {"arch": "smallcnn"})
    assert info["autoattack_acc"] is None and "AutoAttack was not run" in info["footnote"]


def test_a_randomized_model_is_footnoted():
    results = _feature_scattering_audit()
    results["diagnostics"]["checks"] = [{"id": "C11", "status": "fail"}]
    info = model_info(results, {"arch": "wrn-28-10"})
    assert info["robaudit"]["randomized"] is True and "randomized" in info["footnote"]


def test_an_l2_audit_is_filed_under_robustbenchs_l2_threat_model():
    results = _feature_scattering_audit()
    for row in [*results["summary"], *results["worst_case"]]:
        row["eps"] = 0.5
    results.update(norm="l2", config={"eps": [0.5], "norm": "l2"})
    info = model_info(results, {"arch": "wrn-28-10", "dataset": "cifar10"})
    assert info["threat_model"] == "L2" and info["eps"] == "0.5" and info["autoattack_acc"] == "36.64"
    assert eps_text(2 / 255, "l2") == "0.00784314"   # an L2 budget is a distance, never k/255
