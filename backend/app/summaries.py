"""Headline numbers of an evaluation's results, kept on its job row so job lists need not load results."""
from __future__ import annotations

from typing import Any

from robaudit.evaluation.gate import GateSettings, check_gate


def results_summary(results: dict[str, Any], gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline numbers for job lists: clean accuracy, worst case per eps, PGD-20 and the verdict.

    With the job's gate settings, also the gate's outcome under "gate" (the API shows it as the job's
    `gate`), judged once here so job lists need not load every results JSON.
    """
    summary: dict[str, Any] = {"clean_accuracy": results.get("clean_accuracy"),
                               # the eps below are in this norm (results without one are L-inf)
                               "norm": results.get("norm") or (results.get("config") or {}).get("norm") or "linf"}
    rows = results.get("summary") or []
    pgd20 = [r for r in rows if str(r.get("attack", "")).startswith("pgd") and r.get("steps") == 20]
    if pgd20:
        summary["pgd20_accuracy"] = min(r["robust_accuracy"] for r in pgd20)
        summary["pgd20_eps"] = max(r["eps"] for r in pgd20)
    summary["worst_case"] = results.get("worst_case")
    diagnostics = results.get("diagnostics") or {}
    if isinstance(diagnostics, dict):
        summary["verdict"] = diagnostics.get("verdict")
    if gate:
        summary["gate"] = check_gate(results, GateSettings.from_dict(gate)).to_dict()
    return summary


