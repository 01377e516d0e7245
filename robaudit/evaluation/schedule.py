"""What runs in which order and what it costs: the stages at each eps and the estimate of the work.

The schedule at each eps is the registry's attacks that the spec asks for, in their ``run_order``,
with PGD's follow-up curves (restarts, eps curve, large eps) in their own slots among them. Work is
counted in units of about one forward+backward of one image; every cost comes from one table, the
registry entries' ``cost`` (and the follow-ups' own ``units``), so the estimate before the run and
the progress during it cannot drift apart.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from robaudit.errors import RobauditError
from robaudit.evaluation.registry import ATTACKS, RANDOMIZED_ATTACKS, AttackInfo
from robaudit.evaluation.runners.pgd_curves import FOLLOW_UPS, FollowUp

if TYPE_CHECKING:
    from robaudit.evaluation.presets import EvalSpec
    from robaudit.evaluation.run import Run

# Units per point of the two passes every evaluation makes before any attack.
CLEAN_UNITS = 0.3      # one forward without gradients
PROBE_UNITS = 4.0      # gradient probes: CE and DLR gradients at the clean point and at a random start


@dataclass(frozen=True)
class Stage:
    """One step of the schedule at one eps: an attack from the registry or a PGD follow-up curve."""

    name: str
    run: Callable[[Run, float], None]


def _attack_stage(info: AttackInfo, eps: float) -> Stage:
    return Stage(f"{info.name} eps={eps:g}", lambda run, e: info.runner(run, info, e))


def _follow_up_stage(follow_up: FollowUp, eps: float) -> Stage:
    return Stage(follow_up.label(eps), follow_up.runner)


def added_for_randomness(spec: EvalSpec) -> tuple[str, ...]:
    """The attacks an evaluation adds at its primary eps once the forward pass is found random."""
    if not spec.auto_eot:
        return ()
    return tuple(a for a in RANDOMIZED_ATTACKS if a not in spec.attacks and spec.norm in ATTACKS[a].norms)


def plan(spec: EvalSpec, randomized: bool = False) -> list[tuple[float, Stage]]:
    """(eps, stage) in the order they run; ``randomized``: with the attacks a random forward pass calls for."""
    unknown = [name for name in spec.attacks if name not in ATTACKS]
    if unknown:   # a spec saved before an attack was unregistered, say: do not skip it silently
        raise RobauditError(f"unknown attack {unknown[0]!r}; registered: {', '.join(ATTACKS)}")
    steps: list[tuple[float, Stage]] = []
    for eps in spec.eps:
        wanted = set(spec.attacks)
        if eps == spec.primary_eps and randomized:
            wanted.update(added_for_randomness(spec))
        slots: list[tuple[float, Stage]] = [
            (info.run_order, _attack_stage(info, eps)) for info in ATTACKS.values() if info.name in wanted]
        if eps == spec.primary_eps:
            slots += [(f.run_order, _follow_up_stage(f, eps)) for f in FOLLOW_UPS if f.wanted(spec)]
        steps += [(eps, stage) for _, stage in sorted(slots, key=lambda slot: slot[0])]
    return steps


def estimate_units(spec: EvalSpec, start: int, end: int) -> float:
    """Work units for the test points [start, end) before they start (AutoAttack's share is re-planned as it runs)."""
    n = end - start
    units = CLEAN_UNITS * n + (PROBE_UNITS * n if spec.diagnostics else 0.0)
    per_eps = sum(info.cost.units(spec, start, end) for info in ATTACKS.values() if info.name in spec.attacks)
    units += per_eps * len(spec.eps)
    units += sum(f.units(spec, start, end) for f in FOLLOW_UPS if f.wanted(spec))
    return max(units, 1.0)


def randomness_units(spec: EvalSpec, start: int, end: int) -> float:
    """The work a random forward pass adds to the points [start, end) (not in estimate_units until found)."""
    return sum(ATTACKS[name].cost.units(spec, start, end) for name in added_for_randomness(spec))
