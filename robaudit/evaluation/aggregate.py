"""Aggregation into the results JSON: summary rows, per-sample bitsets, curves, the worst case.

Runners hand over "stayed correct" arrays; this module names them (keys from results.py), keeps
full-n and first-m bitsets apart, and builds the results dict (docs/results-schema.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robaudit.evaluation.results import (
    RESULTS_SCHEMA_VERSION,
    STEPS_CURVE,
    Bits,
    accuracy,
    bit_key,
    encode_bits,
    parse_bit_key,
    within_eps,
    worst_case,
    worst_case_key,
)

if TYPE_CHECKING:
    from robaudit.evaluation.gallery import Source
    from robaudit.evaluation.presets import EvalSpec

PerPoint = np.ndarray[Any, np.dtype[np.int64]]   # one integer per test point (e.g. the first fooling iterate)
BITS_ENCODING = "base64 of np.packbits(stayed_correct, bitorder='little'); bit i = test point i"


def _curves() -> dict[str, list[dict[str, Any]]]:
    return {"eps": [], "steps": [], "restarts": [], "loss": []}


@dataclass
class Aggregate:
    rows: list[dict[str, Any]] = field(default_factory=list)
    bits: dict[str, tuple[float, Bits]] = field(default_factory=dict)   # full-n bitsets, with their eps
    subset_bits: dict[str, Bits] = field(default_factory=dict)          # bitsets over the first m points
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=_curves)
    notes: list[str] = field(default_factory=list)
    attack_warnings: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    # (where from, a record's ``adv``): the gallery's candidates, collected by Run.attack
    captures: list[tuple[Source, dict[str, Any]]] = field(default_factory=list)
    gallery_clean: list[dict[str, Any]] = field(default_factory=list)   # the clean pass's gallery records
    norm: str = "linf"   # the evaluation's threat model: every row, curve and worst case states it

    def add_row(self, attack: str, eps: float, robust: Bits, *, steps: int | None = None, restarts: int = 1,
                alpha: float | None = None, bits_key: str | None = None, subset: int | None = None,
                **extra: Any) -> dict[str, Any]:
        """A summary row and its bitset; ``subset=m``: the attack ran on the first m points only."""
        key = bits_key or bit_key(attack, eps, steps, restarts)
        row = {"attack": attack, "norm": self.norm, "eps": eps, "steps": steps, "restarts": restarts, "alpha": alpha,
               "robust_accuracy": accuracy(robust), "n": int(len(robust)), "key": key, **extra}
        if subset is not None:
            row["subset"] = f"first {subset} test points"
        self.rows.append(row)
        if subset is None:
            self.bits[key] = (eps, robust)
        else:
            self.subset_bits[key] = robust
        return row

    def add_point(self, attack: str, eps: float, robust: Bits, *, steps: int | None = None,
                  restarts: int = 1) -> dict[str, Any]:
        """A curve point's bitset over all points; returns the point's ``robust_accuracy`` and ``key``."""
        key = bit_key(attack, eps, steps, restarts)
        self.bits[key] = (eps, robust)
        return {"robust_accuracy": accuracy(robust), "key": key}

    def warn(self, messages: list[str]) -> None:
        self.attack_warnings += [m for m in messages if m not in self.attack_warnings]

    def worst_cases(self, spec: EvalSpec, clean: Bits) -> list[dict[str, Any]]:
        """Per eps, the per-point worst case over every attack at eps' <= eps (and over each first-m subset)."""
        n = len(clean)
        worst = []
        full = list(self.bits.items())
        subset_rows = [r for r in self.rows if "subset" in r]
        for eps in spec.eps:
            robust = worst_case(((e, b) for _, (e, b) in full), clean, eps)
            # A steps curve's bitsets are its long run read off at fewer steps: never stronger than the run.
            used = sorted(k for k, (e, _) in full if within_eps(e, eps) and not _is_steps_curve(k))
            key = worst_case_key(eps)
            worst.append({"norm": self.norm, "eps": eps, "robust_accuracy": accuracy(robust), "n": n, "attacks": used,
                          "key": key, "scope": "all points"})
            self.bits[key] = (eps, robust)
            # Where some attacks (AutoAttack in the audit) ran on the first m points only, also report
            # the worst case over those m points with every attack included.
            for m in sorted({r["n"] for r in subset_rows if within_eps(r["eps"], eps)}):
                rows = [r for r in subset_rows if r["n"] == m and within_eps(r["eps"], eps)]
                sub = worst_case([(r["eps"], self.subset_bits[r["key"]]) for r in rows], robust[:m], eps)
                key = worst_case_key(eps, first=m)
                worst.append({"norm": self.norm, "eps": eps, "robust_accuracy": accuracy(sub), "n": m,
                              "attacks": used + sorted(r["key"] for r in rows), "key": key,
                              "scope": f"first {m} points"})
                self.subset_bits[key] = sub
        return worst

    def results(self, spec: EvalSpec, clean: Bits, num_classes: int, timing: dict[str, Any]) -> dict[str, Any]:
        """The results JSON, without its diagnostics."""
        n = len(clean)
        worst = self.worst_cases(spec, clean)
        per_sample = {"encoding": BITS_ENCODING, "n": n, "clean": encode_bits(clean),
                      "bits": {k: encode_bits(b) for k, (_, b) in self.bits.items()},
                      "subset_bits": {k: {"n": int(len(b)), "bits": encode_bits(b)}
                                      for k, b in self.subset_bits.items()}}
        return {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "dataset": spec.dataset,
            "norm": spec.norm,
            "n": n,
            "num_classes": num_classes,
            "test_points": f"the first {n} points of the {spec.dataset} test split",
            "clean_accuracy": accuracy(clean),
            "summary": self.rows,
            "worst_case": worst,
            "curves": {kind: [{"norm": self.norm, **entry} for entry in entries]
                       for kind, entries in self.curves.items()},
            "per_sample": per_sample,
            "probes": {**self.probes, "autoattack_warnings": self.attack_warnings},
            "notes": self.notes,
            "config": spec.to_dict(),
            "timing": timing,
        }


def _is_steps_curve(key: str) -> bool:
    parsed = parse_bit_key(key)
    return parsed is not None and parsed.attack.endswith(STEPS_CURVE)


def fooled_by(first: PerPoint, k: int) -> Bits:
    """Points whose first fooling iterate (``-1``: never attacked) is at most k."""
    fooled: Bits = (first >= 0) & (first <= k)
    return fooled
