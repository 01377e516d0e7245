"""The CI gate: pass or fail an evaluation from its results JSON alone.

Two conditions, each optional:

* ``fail_under``: the worst case over all evaluated points at the primary eps (the first eps of the
  run, the preset's) must be at least this accuracy, a fraction in [0, 1]. Equal passes.
* ``fail_on``: ``"suspected"`` fails when the gradient-masking verdict is "suspected" (a check
  failed); ``"warn"`` is stricter and fails on any check at warn or fail.

The gate is not part of the results JSON: it is computed next to it (the CLI's exit code, JUnit and
Markdown reports; the service's ``gate`` field), so the same results can be gated differently.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from robaudit.errors import RobauditError
from robaudit.evaluation.clean_check import VERDICT_INVALID
from robaudit.evaluation.results import same_eps

FailOn = Literal["suspected", "warn"]
FAIL_ON: tuple[FailOn, ...] = ("suspected", "warn")
# The statuses each --fail-on level counts against the gate.
_FAILING_STATUSES: dict[str, tuple[str, ...]] = {"suspected": ("fail",), "warn": ("warn", "fail")}
# Worst-case accuracies are k/n; this only absorbs float error from a percentage like "40%".
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class GateSettings:
    fail_under: float | None = None
    fail_on: FailOn | None = None

    def __post_init__(self) -> None:
        if self.fail_under is not None and not (0.0 <= self.fail_under <= 1.0):
            raise RobauditError(f"fail_under must be an accuracy in [0, 1], got {self.fail_under:g}")
        if self.fail_on is not None and self.fail_on not in FAIL_ON:
            raise RobauditError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {self.fail_on!r}")

    @property
    def active(self) -> bool:
        return self.fail_under is not None or self.fail_on is not None

    def to_dict(self) -> dict[str, Any]:
        return {"fail_under": self.fail_under, "fail_on": self.fail_on}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateSettings:
        return cls(fail_under=data.get("fail_under"), fail_on=data.get("fail_on"))


def parse_fail_under(text: str) -> float:
    """``0.4`` (a fraction) or ``40%`` (a percentage); a bare number above 1 is refused, not guessed."""
    value = text.strip()
    percent = value.endswith("%")
    try:
        number = float(value[:-1] if percent else value)
    except ValueError:
        raise RobauditError(f"--fail-under takes an accuracy such as 0.4 or 40%, got {text!r}") from None
    if percent:
        number /= 100.0
    elif number > 1.0:
        raise RobauditError(f"--fail-under takes a fraction in [0, 1] (0.4) or a percentage with % (40%), "
                            f"got {text!r}; did you mean {text.strip()}%?")
    if not (0.0 <= number <= 1.0) or math.isnan(number):
        raise RobauditError(f"--fail-under must be between 0 and 1 (0 % and 100 %), got {text!r}")
    return number


@dataclass(frozen=True)
class Condition:
    """One gate condition's outcome: ``name`` is stable (JUnit test names), ``message`` says why."""
    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class GateResult:
    settings: GateSettings
    conditions: tuple[Condition, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.conditions)

    @property
    def reasons(self) -> list[str]:
        """Why the gate failed, one line per failed condition (empty when it passed)."""
        return [c.message for c in self.conditions if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, **self.settings.to_dict(),
                "conditions": [{"name": c.name, "passed": c.passed, "message": c.message}
                               for c in self.conditions]}


def primary_eps(results: Mapping[str, Any]) -> float | None:
    """The run's first eps (the preset's; what curves and probes are built around), if recorded."""
    eps = (results.get("config") or {}).get("eps")
    if isinstance(eps, (list, tuple)) and eps:
        return float(eps[0])
    return None


def primary_worst_case(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The worst-case row over all evaluated points at the primary eps (not a first-m subset row)."""
    eps = primary_eps(results)
    if eps is None:
        return None
    for row in results.get("worst_case") or []:
        if same_eps(float(row.get("eps", -1.0)), eps) and row.get("n") == results.get("n") \
                and "/first=" not in str(row.get("key", "")):
            return dict(row)
    return None


def _worst_case_condition(results: Mapping[str, Any], threshold: float) -> Condition:
    name = "fail-under"
    row = primary_worst_case(results)
    if row is None:
        eps = primary_eps(results)
        where = f"at eps={eps:.6g}" if eps is not None else "(the results record no eps)"
        return Condition(name, False, f"no worst case over all points {where} in the results, so "
                                      f"--fail-under {threshold:g} cannot be checked")
    acc = float(row["robust_accuracy"])
    text = f"worst case {100 * acc:.2f} % at eps={row['eps']:.6g} on {row['n']} points"
    if math.isnan(acc) or acc < threshold - _TOLERANCE:
        return Condition(name, False, f"{text} is below the threshold {100 * threshold:.2f} %")
    return Condition(name, True, f"{text} is at or above the threshold {100 * threshold:.2f} %")


def _diagnostics_condition(results: Mapping[str, Any], fail_on: str) -> Condition:
    name = f"fail-on-{fail_on}"
    diagnostics = results.get("diagnostics")
    if not isinstance(diagnostics, Mapping) or not diagnostics.get("checks"):
        return Condition(name, False, f"the results have no diagnostics, so --fail-on {fail_on} cannot be checked")
    counted = _FAILING_STATUSES[fail_on]
    if diagnostics.get("verdict") == VERDICT_INVALID:   # near-chance clean accuracy: nothing was audited
        return Condition(name, False, f"verdict: {VERDICT_INVALID}; the run is not an audit of the model")
    # The verdict is "suspected" exactly when a check failed (diagnostics.py), so the checks decide both.
    bad = [c for c in diagnostics["checks"] if c.get("status") in counted]
    if not bad:
        level = "no check failed" if fail_on == "suspected" else "no check at warn or fail"
        return Condition(name, True, f"verdict: {diagnostics.get('verdict')}; {level}")
    listed = "; ".join(f"{c.get('id')} {c.get('name')} [{c.get('status')}]" for c in bad)
    return Condition(name, False, f"verdict: {diagnostics.get('verdict')}; --fail-on {fail_on}: {listed}")


def check_gate(results: Mapping[str, Any], settings: GateSettings) -> GateResult:
    """Judge ``results`` (a results JSON) against ``settings``; no condition set means it passes."""
    conditions = []
    if settings.fail_under is not None:
        conditions.append(_worst_case_condition(results, settings.fail_under))
    if settings.fail_on is not None:
        conditions.append(_diagnostics_condition(results, settings.fail_on))
    return GateResult(settings, tuple(conditions))


def failing_checks(results: Mapping[str, Any], fail_on: str | None) -> set[str]:
    """The ids of the checks the gate counts against the run (none without ``fail_on``)."""
    if fail_on is None:
        return set()
    checks = (results.get("diagnostics") or {}).get("checks") or []
    return {c["id"] for c in checks if c.get("status") in _FAILING_STATUSES[fail_on]}
