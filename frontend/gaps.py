"""The PGD overstatement: how much higher PGD-20 reads than the strongest measurement, with its noise.

For one evaluation at its headline ε this reads PGD-20, AutoAttack and the per-point worst case, and
the gap PGD-20 minus worst case in percentage points with a 95 % interval:

- paired, when the per-point records (``per_sample`` bitsets) of both are there: every test point is
  scored by both, so the gap is the mean of a per-point difference and its interval is Newcombe's
  hybrid score interval for a difference of paired proportions (Newcombe 1998, Stat. Med. 17:2635,
  method 10): Wilson score intervals for the two accuracies, combined with the correlation of the
  two outcomes over the points;
- unpaired, when the records are missing (exports and share links drop them, so ``export_summary``
  stores this module's answer next to the numbers first): the same construction with zero
  correlation (Newcombe 1998, Stat. Med. 17:873, method 10), which is wider, as it should be.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from robaudit.evaluation.intervals import newcombe_unpaired, paired_difference
from robaudit.evaluation.results import decode_bits
from robaudit.frontend import results_view as R

# Where export_summary keeps the gap inside an exported evaluation's results (no per-point data).
SUMMARY_KEY = "pgd_gap"


@dataclass(frozen=True)
class Gap:
    """PGD-20 against the strongest measurements at one ε; accuracies are fractions."""

    eps: float
    pgd_label: str
    pgd: float
    pgd_n: int | None
    worst: float | None
    worst_n: int | None
    autoattack: float | None
    autoattack_n: int | None
    gap: float | None            # PGD-20 minus worst case (on the paired points when ``paired``)
    low: float | None            # its 95 % interval
    high: float | None
    n: int | None                # points the gap is measured on
    paired: bool

    @property
    def method(self) -> str:
        return ("paired: per-point PGD-20 minus worst case, Newcombe hybrid score interval" if self.paired
                else "unpaired: headline numbers, Newcombe hybrid score interval (no per-point records)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bits(results: Mapping[str, Any], row: Mapping[str, Any], m: int) -> np.ndarray | None:
    """A row's "stayed correct" bits on its first m points, from ``per_sample`` (None if missing)."""
    per_sample = R.section(results, "per_sample")
    key, n = row.get("key"), R.int_or_none(row.get("n")) or 0
    text = R.section(per_sample, "bits").get(key) if key else None
    if text is None and key:
        sub = R.section(R.section(per_sample, "subset_bits"), str(key))
        text, n = sub.get("bits"), R.int_or_none(sub.get("n")) or 0
    if not isinstance(text, str) or n < m or m <= 0:
        return None
    try:
        return decode_bits(text, m)
    except ValueError:
        return None


def _strongest_worst_row(results: Mapping[str, Any], eps: float) -> dict[str, Any] | None:
    """The worst-case row at eps over the most points (then the most attacks): the points PGD-20 ran
    on, so the gap on the chart is the difference of the two headline numbers. (AutoAttack on a
    prefix has a worst case of its own over that prefix; the chart shows AutoAttack itself.)"""
    rows = [r for r in R.worst_case_rows(results)
            if R.eps_equal(R.to_float(r.get("eps")), eps) and R.to_float(r.get("robust_accuracy")) is not None]
    if not rows:
        return None
    return max(rows, key=lambda r: (R.int_or_none(r.get("n")) or 0, len(r.get("attacks") or [])))


def pgd_gap(results: Mapping[str, Any] | None) -> Gap | None:
    """The gap at the headline ε, or None without a PGD row there. A stored summary
    (``results[SUMMARY_KEY]``, written by export_summary) is read back as is."""
    if not results:
        return None
    stored = results.get(SUMMARY_KEY)
    if isinstance(stored, Mapping):
        fields: dict[str, Any] = {k: stored.get(k) for k in Gap.__dataclass_fields__}
        if R.to_float(fields["eps"]) is None or R.to_float(fields["pgd"]) is None:
            return None
        return Gap(**fields)
    eps = R.headline_eps(results)
    if eps is None:
        return None
    lad = R.ladder(results, eps)
    pgd = [(g, r) for g, r in lad if g.family == "pgd" and not g.restarts]
    pick = next(((g, r) for g, r in pgd if g.steps == 20), None) or (pgd[0] if pgd else None)
    if pick is None:
        return None
    rung, pgd_row = pick
    pgd_acc = R.to_float(pgd_row.get("robust_accuracy"))
    if pgd_acc is None:
        return None
    aa = next((r for g, r in lad if g.family == "autoattack"), None)
    worst = _strongest_worst_row(results, eps)
    gap = low = high = None
    n = None
    paired = False
    if worst is not None:
        w_acc = R.to_float(worst.get("robust_accuracy")) or 0.0
        m = R.int_or_none(worst.get("n")) or 0
        a, b = _bits(results, pgd_row, m), _bits(results, worst, m)
        if a is not None and b is not None:
            paired_gap = paired_difference(a, b)
            gap, (low, high) = paired_gap["difference"], paired_gap["ci95"]
            n, paired = m, True
        else:
            n1 = R.int_or_none(pgd_row.get("n")) or m
            if n1 > 0 and m > 0:
                gap = pgd_acc - w_acc
                low, high = newcombe_unpaired(pgd_acc, n1, w_acc, m)
                n = min(n1, m)
    return Gap(eps=eps, pgd_label=rung.label, pgd=pgd_acc, pgd_n=R.int_or_none(pgd_row.get("n")),
               worst=R.to_float(worst.get("robust_accuracy")) if worst else None,
               worst_n=R.int_or_none(worst.get("n")) if worst else None,
               autoattack=R.to_float(aa.get("robust_accuracy")) if aa else None,
               autoattack_n=R.int_or_none(aa.get("n")) if aa else None,
               gap=gap, low=low, high=high, n=n, paired=paired)


def export_summary(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The gap as plain numbers, for an export that leaves the per-point records out."""
    gap = pgd_gap(results)
    return gap.as_dict() if gap else None
