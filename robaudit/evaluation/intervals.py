"""95% confidence intervals for the accuracies of a results JSON, and for differences between them.

An accuracy here is k stayed-correct points out of n, so its noise is binomial. Two methods, chosen
for audits of a few hundred to ten thousand points:

- One accuracy: the Wilson score interval. Unlike the textbook p ± 1.96·se (Wald) it never leaves
  [0, 1] and does not collapse to a point at 0 % or 100 %, which robust accuracies often reach.
- A difference between two accuracies on the same points (PGD-20 minus the worst case, model A minus
  model B): the points are paired, so the interval comes from the 2×2 table of per-point outcomes,
  by Newcombe's hybrid score method (method 10 of Newcombe, Statistics in Medicine 17:2635, 1998).
  It uses the points where the two disagree, which is why a 2 pp gap on 10,000 points can be sure
  and the same gap on 100 points is not.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from robaudit.evaluation.results import decode_bits, find_row, same_eps

Z95 = 1.959963984540054   # the standard normal's 97.5% quantile
SINGLE_METHOD = "Wilson score interval, 95%"
PAIRED_METHOD = "Newcombe hybrid score interval for paired proportions, 95%"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (n = 0 gives the uninformative [0, 1])."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    low = 0.0 if k == 0 else max(0.0, (centre - spread) / scale)     # exact ends, not 1 - 1e-16
    high = 1.0 if k == n else min(1.0, (centre + spread) / scale)
    return low, high


def paired_difference(a: npt.ArrayLike, b: npt.ArrayLike, z: float = Z95) -> dict[str, Any]:
    """mean(a) - mean(b) for two per-point outcomes on the same points, with its paired interval."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be two 1-D arrays of one length, got {a.shape} and {b.shape}")
    n = int(a.size)
    both, only_a = int(np.sum(a & b)), int(np.sum(a & ~b))
    only_b, neither = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    low, high = newcombe_paired(both, only_a, only_b, neither, z)
    return {"difference": (only_a - only_b) / n if n else 0.0, "ci95": [low, high], "n": n,
            "only_first": only_a, "only_second": only_b, "method": PAIRED_METHOD}


def newcombe_paired(both: int, only_a: int, only_b: int, neither: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's method 10 for p_a - p_b from the 2×2 table of paired outcomes."""
    n = both + only_a + only_b + neither
    if n == 0:
        return -1.0, 1.0
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    low_a, high_a = wilson(both + only_a, n, z)
    low_b, high_b = wilson(both + only_b, n, z)
    # The correlation of the pair, with Newcombe's continuity correction on a positive numerator.
    denominator = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    numerator = float(both * neither - only_a * only_b)
    if numerator > 0:
        numerator = max(numerator - n / 2, 0.0)
    phi = numerator / math.sqrt(denominator) if denominator > 0 else 0.0
    theta = p_a - p_b
    below = math.sqrt(max((p_a - low_a) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2, 0))
    above = math.sqrt(max((high_a - p_a) ** 2 - 2 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2, 0))
    return max(-1.0, theta - below), min(1.0, theta + above)


def newcombe_unpaired(p_a: float, n_a: int, p_b: float, n_b: int, z: float = Z95) -> tuple[float, float]:
    """p_a - p_b for two accuracies on separate samples (Newcombe, Statistics in Medicine 17:873, 1998,
    method 10): the paired construction with zero correlation, hence wider. For headline numbers whose
    per-point records are gone (exports)."""
    low_a, high_a = wilson(round(p_a * n_a), n_a, z)
    low_b, high_b = wilson(round(p_b * n_b), n_b, z)
    theta = p_a - p_b
    below = math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    above = math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return max(-1.0, theta - below), min(1.0, theta + above)


def _interval(accuracy: float, n: int) -> list[float]:
    low, high = wilson(round(accuracy * n), n)
    return [low, high]


def add_intervals(results: dict[str, Any]) -> None:
    """Annotate ``results`` in place: a ``ci95`` next to every accuracy (clean, each attack row, each
    worst case, each eps-curve point), and ``gaps``: PGD-20 minus the worst case and minus AutoAttack
    at each evaluated eps, as paired differences read from the per-point bitsets."""
    n = int(results["n"])
    results["intervals"] = {"single": SINGLE_METHOD, "paired": PAIRED_METHOD}
    results["clean_accuracy_ci95"] = _interval(results["clean_accuracy"], n)
    for row in [*results.get("summary", []), *results.get("worst_case", [])]:
        row["ci95"] = _interval(row["robust_accuracy"], int(row.get("n", n)))
    for curve in results.get("curves", {}).get("eps", []):
        for point in curve["points"]:
            point["ci95"] = _interval(point["robust_accuracy"], n)
    results["gaps"] = gaps(results)


def _bits(results: Mapping[str, Any], key: str, m: int) -> npt.NDArray[np.bool_] | None:
    per_sample = results.get("per_sample") or {}
    n = int(per_sample.get("n", results["n"]))
    if key in per_sample.get("bits", {}):
        return decode_bits(per_sample["bits"][key], n)[:m]
    subset = per_sample.get("subset_bits", {}).get(key)
    if subset is not None and int(subset["n"]) >= m:
        return decode_bits(subset["bits"], int(subset["n"]))[:m]
    return None


def gaps(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """At each eps of the config, PGD-20 minus each stronger measurement, on the points both cover."""
    out: list[dict[str, Any]] = []
    for eps in results.get("config", {}).get("eps", []):
        pgd = find_row(results, "pgd", eps, 20)
        if pgd is None:
            continue
        strong = [("worst case", w) for w in results.get("worst_case", []) if same_eps(w["eps"], eps)]
        autoattack = find_row(results, "autoattack", eps)
        if autoattack is not None:
            strong.append(("AutoAttack", autoattack))
        for label, row in strong:
            m = min(int(row["n"]), int(pgd["n"]))
            first, second = _bits(results, pgd["key"], m), _bits(results, row["key"], m)
            if first is None or second is None:
                continue
            gap = paired_difference(first, second)
            out.append({"eps": eps, "first": "PGD-20", "first_key": pgd["key"], "second": label,
                        "second_key": row["key"], **gap})
    return out
