"""Model A minus model B in a report: worst-case robust accuracy, paired on the same test points.

Two audits of the same first n points of one dataset score every point twice, so their difference is
a paired one (robaudit.evaluation.intervals.paired_difference: Newcombe's interval). That is much
tighter than comparing the two headline numbers as independent samples, and it is honest: "A beats
B by 3 pp" is only claimed with the interval that says whether the points support it.

The per-point records do not travel in exports and share links, so ``export_differences`` computes
the table first and the payload carries it under ``DIFFERENCES_KEY``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from robaudit.evaluation.intervals import paired_difference
from robaudit.evaluation.results import decode_bits
from robaudit.frontend import results_view as R

DIFFERENCES_KEY = "paired_differences"


def _points_id(results: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What identifies the evaluated points: their sha256 when recorded, else dataset and count (an
    audit always takes the first n points of the test split)."""
    prov = R.section(results, "provenance")
    digest = R.section(prov, "dataset").get("points_sha256")
    if digest:
        return ("sha256", digest)
    dataset, n = results.get("dataset"), R.int_or_none(results.get("n"))
    return ("first", dataset, n) if dataset and n else None


def _worst_bits(results: Mapping[str, Any], eps: float) -> Any:
    per_sample = R.section(results, "per_sample")
    n = R.int_or_none(per_sample.get("n")) or R.int_or_none(results.get("n"))
    rows = [r for r in R.worst_case_rows(results)
            if R.eps_equal(R.to_float(r.get("eps")), eps) and R.int_or_none(r.get("n")) == n]
    key = rows[0].get("key") if rows else None
    text = R.section(per_sample, "bits").get(key) if key else None
    if not isinstance(text, str) or not n:
        return None
    try:
        return decode_bits(text, n)
    except ValueError:
        return None


def model_differences(evaluations: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """For each pair of (label, results) on the same points, norm and headline eps: A minus B in worst-case
    robust accuracy with its paired 95% interval, in percentage points."""
    out: list[dict[str, Any]] = []
    for (label_a, a), (label_b, b) in combinations(evaluations, 2):
        norm = R.norm_of(a)
        if R.norm_of(b) != norm:   # budgets in different norms measure different things: never paired
            continue
        eps = R.headline_eps(a)
        if eps is None or not R.eps_equal(R.headline_eps(b), eps):
            continue
        points = _points_id(a)
        if points is None or points != _points_id(b):
            continue
        bits_a, bits_b = _worst_bits(a, eps), _worst_bits(b, eps)
        if bits_a is None or bits_b is None or len(bits_a) != len(bits_b):
            continue
        gap = paired_difference(bits_a, bits_b)
        out.append({"first": label_a, "second": label_b, "norm": norm, "eps": eps, "n": gap["n"],
                    "difference_pp": 100 * gap["difference"],
                    "low_pp": 100 * gap["ci95"][0], "high_pp": 100 * gap["ci95"][1],
                    "method": gap["method"]})
    return out


def differences_of(payload: Mapping[str, Any],
                   labelled: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The stored table of an exported payload, else computed from the per-point records."""
    stored = payload.get(DIFFERENCES_KEY)
    if isinstance(stored, list):
        return [dict(d) for d in stored if isinstance(d, Mapping)]
    return model_differences(labelled)
