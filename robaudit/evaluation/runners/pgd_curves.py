"""PGD's follow-up curves at the primary eps: restarts, accuracy vs eps, and the large-eps check (C2).

They are not attacks of their own but PGD runs built on the long run (``runners.pgd``), so they run in
fixed slots of the schedule (``run_order``, among the registry's) and only on points whose outcome is
not yet known: restarts only attack points the long run left robust, and the eps curve and the large
eps values are nested (eps_i only attacks points robust at eps_{i-1}).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.attacks.common import default_alpha
from robaudit.attacks.pgd import pgd
from robaudit.evaluation import gallery
from robaudit.evaluation.aggregate import fooled_by
from robaudit.evaluation.cost import every_point
from robaudit.evaluation.results import EPS_CURVE, LARGE_EPS, Bits, bit_key, same_eps
from robaudit.evaluation.store import Record

if TYPE_CHECKING:
    from robaudit.evaluation.presets import EvalSpec
    from robaudit.evaluation.run import Run

# Share of the points a follow-up is expected to attack: restarts and the eps curve see the points
# still robust (about half), the large-eps runs fewer (most fall at the first large eps).
RESTART_SHARE = EPS_CURVE_SHARE = 0.5
LARGE_EPS_SHARE = 0.3


@dataclass(frozen=True)
class FollowUp:
    name: str
    run_order: float                                 # its slot in the schedule (see the registry's run_order)
    wanted: Callable[[EvalSpec], bool]
    units: Callable[[EvalSpec, int, int], float]     # work units for the points [start, end) (progress and ETA)
    runner: Callable[[Run, float], None]

    def label(self, eps: float) -> str:
        return f"{self.name} eps={eps:g}"


def _pgd_order() -> int:
    from robaudit.evaluation.registry import ATTACKS  # the registry imports the runners

    return ATTACKS["pgd"].order


def nested_pgd(run: Run, job: str, eps: float, steps: int, alpha: float, robust_before: Bits,
               limit: int | None = None, share: float = EPS_CURVE_SHARE) -> Bits:
    """PGD on the points robust before (and clean-correct); returns the points robust after it too."""

    def attack(index: torch.Tensor, start: int, end: int) -> Record:
        result = pgd(run.model, run.x[index], run.y[index], eps=eps, steps=steps, alpha=alpha, random_start=True,
                     norm=run.norm, generator=run.streams(f"pgd-start/eps={eps:.6g}", index))
        first = result.first_fooled[0]
        return {"first": first.tolist(), **run.adversarial(index, eps, result.x_adv, first <= steps, first)}

    # Inside the primary eps's ball (the eps curve below it) these examples count towards its worst case.
    source = gallery.Source("pgd", eps, _pgd_order(), sub=2, detail=f"eps curve, PGD-{steps}")
    records = run.attack(run.job(job), (steps + 1.0) * share, attack, {"first": []}, mask=robust_before, limit=limit,
                         source=source)
    first = run.per_point(records, "first", -1)
    robust: Bits = robust_before & run.clean & ~fooled_by(first, steps)
    return robust


def run_restarts(run: Run, eps: float) -> None:
    spec = run.spec
    base = run.pgd_runs[(eps, "ce")]
    k, alpha, extra = spec.restart_steps, base.alpha, spec.restarts - 1
    base_fooled = fooled_by(base.first, k)
    job = f"restarts/eps={eps:.6g}/steps={k}/alpha={alpha:.6g}/extra={extra}/after=pgd-run-{base.steps}"

    def restart(index: torch.Tensor, start: int, end: int) -> Record:
        result = pgd(run.model, run.x[index], run.y[index], eps=eps, steps=k, alpha=alpha, restarts=extra,
                     random_start=True, norm=run.norm, generator=run.streams(f"pgd-restarts/eps={eps:.6g}", index))
        rows = result.first_fooled
        broken = ((rows >= 0) & (rows <= k)).any(0)
        which = ((rows >= 0) & (rows <= k)).int().argmax(0)          # the restart that broke it
        step = rows.gather(0, which[None]).squeeze(0)
        return {"first": rows.T.tolist(),
                **run.adversarial(index, eps, result.x_adv, broken, step, restart=which + 2)}

    records = run.attack(run.job(job), (k + 1.0) * extra * RESTART_SHARE, restart, {"first": []}, mask=~base_fooled,
                         source=gallery.Source("pgd", eps, _pgd_order(), sub=1))
    first = np.full((run.n, extra), -1, dtype=np.int64)
    for _, _, record in records:
        if record["index"]:
            first[np.asarray(record["index"])] = np.asarray(record["first"], dtype=np.int64)
    robust = run.clean & ~base_fooled
    # One restart is the long run read off at k steps (the same bitset as its PGD-k row, if it has one).
    points = [{"restarts": 1, **run.out.add_point("pgd", eps, robust, steps=k)}]
    for r in range(extra):
        robust = robust & ~fooled_by(first[:, r], k)
        points.append({"restarts": r + 2, **run.out.add_point("pgd", eps, robust, steps=k, restarts=r + 2)})
    run.out.add_row("pgd", eps, robust, steps=k, restarts=spec.restarts, alpha=alpha, loss="ce", random_start=True,
                    bits_key=bit_key("pgd", eps, k, spec.restarts),
                    note="worst case per point over restarts; restarts after the first only attack points still "
                         "robust")
    run.out.curves["restarts"].append({"attack": "pgd", "eps": eps, "steps": k, "alpha": alpha, "points": points})


def run_eps_curve(run: Run, eps: float) -> None:
    """Accuracy vs eps, nested; the point at the primary eps is read off the long run when it is long enough."""
    spec = run.spec
    primary = spec.primary_eps
    base = run.pgd_runs.get((primary, "ce"))
    k = spec.eps_curve_steps
    unit_alpha = (base.alpha if base else default_alpha(primary, k)) / primary
    robust = run.clean.copy()
    chain: list[str] = []
    points = []
    for curve_eps in sorted(spec.eps_curve):
        alpha = unit_alpha * curve_eps
        if base is not None and same_eps(curve_eps, primary) and base.steps >= k:
            robust = robust & ~fooled_by(base.first, k)
            chain.append(f"{curve_eps:.6g}*")
            source = f"the {base.steps}-step PGD run at this eps (first {k} steps)"
        else:
            job = f"eps-curve/eps={curve_eps:.6g}/steps={k}/alpha={alpha:.6g}/after={','.join(chain) or '-'}"
            robust = nested_pgd(run, job, curve_eps, k, alpha, robust)
            chain.append(f"{curve_eps:.6g}")
            source = "nested run on the points robust at the previous eps"
        point = run.out.add_point(f"pgd{EPS_CURVE}", curve_eps, robust, steps=k)
        points.append({"eps": curve_eps, "alpha": alpha, **point, "source": source})
    run.out.curves["eps"].append({"attack": "pgd", "loss": "ce", "steps": k, "nested": True, "points": points})


def run_large_eps(run: Run, eps: float) -> None:
    """Check C2: PGD at eps values that can erase the image, on the first ``large_eps_examples`` points, nested."""
    spec = run.spec
    m = min(run.n, spec.large_eps_examples)
    k = spec.large_eps_steps
    robust = np.zeros(run.n, dtype=bool)
    robust[:m] = run.clean[:m]
    chain: list[str] = []
    for large in sorted(spec.large_eps):
        alpha = default_alpha(large, k)
        job = f"large-eps/m={m}/eps={large:.6g}/steps={k}/alpha={alpha:.6g}/after={','.join(chain) or '-'}"
        robust = nested_pgd(run, job, large, k, alpha, robust, limit=m, share=LARGE_EPS_SHARE)
        chain.append(f"{large:.6g}")
        run.out.add_row("pgd", large, robust[:m].copy(), steps=k, alpha=alpha, loss="ce", random_start=True,
                        subset=m, bits_key=bit_key(f"pgd{LARGE_EPS}", large, k),
                        note=f"check C2 on the first {m} test points; nested over the large eps values")


def _units(share: float, runs: Callable[[EvalSpec], int], steps: Callable[[EvalSpec], int],
           points: Callable[[EvalSpec, int, int], int] = every_point) -> Callable[[EvalSpec, int, int], float]:
    return lambda spec, start, end: runs(spec) * (steps(spec) + 1) * points(spec, start, end) * share


FOLLOW_UPS = (
    FollowUp("restarts", run_order=45, wanted=lambda spec: spec.restarts > 1 and "pgd" in spec.attacks,
             units=_units(RESTART_SHARE, lambda spec: spec.restarts - 1, lambda spec: spec.restart_steps),
             runner=run_restarts),
    FollowUp("eps curve", run_order=46, wanted=lambda spec: bool(spec.eps_curve),
             units=_units(EPS_CURVE_SHARE, lambda spec: len(spec.eps_curve), lambda spec: spec.eps_curve_steps),
             runner=run_eps_curve),
    FollowUp("large eps", run_order=47, wanted=lambda spec: bool(spec.large_eps),
             units=_units(LARGE_EPS_SHARE, lambda spec: len(spec.large_eps), lambda spec: spec.large_eps_steps,
                          lambda spec, start, end: max(0, min(end, spec.large_eps_examples) - start)),
             runner=run_large_eps),
)
