"""An evaluation as a RobustBench model-info JSON (the files its leaderboard is built from).

RobustBench keeps one JSON per model and threat model (``model_info/<dataset>/<threat model>/<id>.json``)
with accuracies as percentage strings, ``eps`` as a string ("8/255"), the architecture's display name
and the paper's bibliographic fields. robaudit fills what an audit measured or knows; the paper's own
fields (link, name, authors, venue, the reported number, extra training data) only the user can give,
so they are ``null`` here and listed in ``robaudit.to_fill``. docs/robustbench.md has the table.

RobustBench's numbers are AutoAttack (standard version) on the full test set; an audit on fewer points,
or whose AutoAttack ran on a prefix, says so in ``footnote``.
"""
from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from robaudit.evaluation.results import find_row, same_eps

# RobustBench's display names for the catalogue's architectures (its model_info files use these).
ARCHITECTURES = {
    "smallcnn": "SmallCNN", "trades-smallcnn": "SmallCNN",
    "preactresnet18": "PreActResNet-18", "preactresnet18-nobn": "PreActResNet-18 (no BN)",
    "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
    "wrn-28-10": "WideResNet-28-10", "wrn-34-10": "WideResNet-34-10", "wrn-34-20": "WideResNet-34-20",
    "wrn-70-16": "WideResNet-70-16", "trades-wrn-34-10": "WideResNet-34-10", "trades-wrn-34-20": "WideResNet-34-20",
    "dm-wrn-28-10": "WideResNet-28-10", "dm-wrn-70-16": "WideResNet-70-16",
    "torchvision:resnet50": "ResNet-50", "torchvision:wide_resnet50_2": "WideResNet-50-2",
}
# Full test-set sizes: an audit on fewer points is footnoted.
TEST_SET_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "svhn": 26_032, "mnist": 10_000, "mnist10k": 10_000,
                  "imagenet": 5_000}   # RobustBench evaluates ImageNet on a fixed 5,000-image subset
# RobustBench's threat-model names (its folders); it has no L1 board, so L1 keeps AutoAttack's spelling.
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
USER_FIELDS = ("link", "name", "authors", "venue", "reported", "additional_data")


def eps_text(eps: float, norm: str = "linf") -> str:
    """8/255 for an L-inf eps = 8/255 (RobustBench's spelling), the decimal otherwise (0.5, 0.031)."""
    if norm != "linf":
        return f"{eps:.6g}"
    fraction = Fraction(eps).limit_denominator(255)
    if fraction.denominator == 255 and abs(float(fraction) - eps) < 1e-9:
        return f"{fraction.numerator}/255"
    return f"{eps:.6g}"


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def model_info(results: Mapping[str, Any], metadata: Mapping[str, Any] | None = None,
               eps: float | None = None) -> dict[str, Any]:
    """The model-info JSON for ``results`` at ``eps`` (default: the first evaluated eps)."""
    metadata = metadata or {}
    config = results.get("config") or {}
    eps = eps if eps is not None else (config.get("eps") or [None])[0]
    if eps is None:
        raise ValueError("the results evaluated no eps")
    dataset = str(results.get("dataset") or metadata.get("dataset") or "")
    norm = results.get("norm") or config.get("norm") or "linf"
    n = int(results["n"])
    autoattack = find_row(results, "autoattack", eps)
    worst = [w for w in results.get("worst_case", []) if same_eps(w["eps"], eps)]
    notes = []
    full = TEST_SET_SIZES.get(dataset)
    if full is not None and n < full:
        notes.append(f"clean accuracy on the first {n} of {full} test points")
    if autoattack is None:
        notes.append("AutoAttack was not run: autoattack_acc is null")
    elif int(autoattack["n"]) < (full or n):
        notes.append(f"AutoAttack on the first {autoattack['n']} test points")
    randomized = _randomized(results)
    rand_row = find_row(results, "autoattack-rand", eps)
    if randomized and rand_row is not None:
        notes.append(f"the forward pass is randomized (check C11): AutoAttack's rand version, judged by the "
                     f"logits averaged over {rand_row.get('passes')} passes, leaves "
                     f"{_pct(rand_row['robust_accuracy'])} % on {rand_row['n']} points")
    elif randomized:
        notes.append("the forward pass is randomized (check C11): AutoAttack's rand version is the right test")
    arch = str(metadata.get("arch") or "")
    info: dict[str, Any] = {
        "link": None, "name": None, "authors": None,
        "additional_data": None,
        # A randomized model's decisions average eot_draws passes (results.randomized).
        "number_forward_passes": (results.get("randomized") or {}).get("passes", 1) if randomized else 1,
        "dataset": dataset,
        "venue": None,
        "architecture": ARCHITECTURES.get(arch, arch or None),
        "eps": eps_text(eps, norm),
        "clean_acc": _pct(results.get("clean_accuracy")),
        "reported": None,
        "autoattack_acc": _pct(autoattack["robust_accuracy"]) if autoattack else None,
        "footnote": "; ".join(notes) or None,
        "threat_model": THREAT_MODELS.get(norm, norm),
        "robaudit": {
            "to_fill": list(USER_FIELDS),
            "worst_case_acc": _pct(max(worst, key=lambda w: w["n"])["robust_accuracy"]) if worst else None,
            "n": n,
            "verdict": (results.get("diagnostics") or {}).get("verdict"),
            "randomized": randomized,
        },
    }
    return info


def _randomized(results: Mapping[str, Any]) -> bool:
    checks = (results.get("diagnostics") or {}).get("checks") or []
    return any(c.get("id") == "C11" and c.get("status") == "fail" for c in checks)
