"""PGD on cross-entropy (``pgd``) and on the CW margin (``cw``): one long run per eps gives every step count.

The run of ``max(spec.steps)`` steps is read off at each requested step count and on the steps-curve
grid (robaudit.attacks.pgd: a k-step run is the prefix of a longer one), and records the attack
loss along the way for the convergence and loss-direction checks (C4, C9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from robaudit.attacks.common import default_alpha
from robaudit.attacks.pgd import LossTrace, pgd
from robaudit.evaluation.aggregate import PerPoint, fooled_by
from robaudit.evaluation.gallery import Source
from robaudit.evaluation.results import STEPS_CURVE, decode_bits, encode_bits
from robaudit.evaluation.store import Record

if TYPE_CHECKING:
    from robaudit.evaluation.batches import Batch
    from robaudit.evaluation.presets import EvalSpec
    from robaudit.evaluation.registry import AttackInfo
    from robaudit.evaluation.run import Run

# Step counts at which the steps curve is read off the long run.
STEPS_CURVE_GRID = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def long_run_alpha(spec: EvalSpec, eps: float) -> float:
    return spec.alpha if spec.alpha is not None else default_alpha(eps, max(spec.steps))


def _trace_record(t: LossTrace) -> Record:
    return {"loss_sum": t.loss_sum.tolist(), "robust_loss_sum": t.robust_loss_sum.tolist(),
            "n_points": t.n_points, "n_robust": t.n_robust, "rising": t.rising, "moves": t.moves,
            "late_progress": [None if v != v else round(float(v), 5) for v in t.late_progress.tolist()]}


@dataclass
class PGDRun:
    """The long PGD run at one eps and loss, which the restarts and the eps curve build on."""

    first: PerPoint      # first fooling iterate per point, -1 where not attacked
    steps: int
    alpha: float


def run_pgd(run: Run, attack: AttackInfo, eps: float, *, loss: str) -> None:
    spec = run.spec
    steps, alpha = max(spec.steps), long_run_alpha(spec, eps)
    kappa = spec.kappa if loss == "cw" else None
    job = run.job(f"pgd-run/eps={eps:.6g}/loss={loss}/steps={steps}/alpha={alpha:.6g}/kappa={spec.kappa:g}/rs=1")

    def long_run(index: torch.Tensor, start: int, end: int) -> Record:
        result = pgd(run.model, run.x[index], run.y[index], eps=eps, steps=steps, alpha=alpha, loss=loss,
                     kappa=spec.kappa, random_start=True, norm=spec.norm,
                     generator=run.streams(f"pgd-start/eps={eps:.6g}", index), trace=True)
        assert result.trace is not None  # asked for with trace=True
        first = result.first_fooled[0]
        return {"first": first.tolist(),
                "rescored": encode_bits(result.final_correct.cpu().numpy()), "trace": _trace_record(result.trace),
                **run.adversarial(index, eps, result.x_adv, first <= steps, first)}

    records = run.attack(job, attack.cost.per_point(spec), long_run, {"first": [], "rescored": "", "trace": None},
                         source=Source(attack.name, eps, attack.order))
    first = run.per_point(records, "first", -1)
    run.pgd_runs[(eps, loss)] = PGDRun(first=first, steps=steps, alpha=alpha)

    for k in spec.steps:
        note: dict[str, Any] = {"note": f"read off the {steps}-step run"} if k < steps else {}
        run.out.add_row(attack.name, eps, run.clean & ~fooled_by(first, k), steps=k, alpha=alpha, loss=loss,
                        random_start=True, kappa=kappa, **note)
    points = [{"steps": k, **run.out.add_point(f"{attack.name}{STEPS_CURVE}", eps, run.clean & ~fooled_by(first, k),
                                               steps=k)}
              for k in sorted({*(g for g in STEPS_CURVE_GRID if g <= steps), steps})]
    run.out.curves["steps"].append({"attack": attack.name, "loss": loss, "eps": eps, "alpha": alpha,
                                    "max_steps": steps, "steps_to_cross_ball": math.ceil(eps / alpha - 1e-9),
                                    "points": points})
    if steps >= 20 and 20 * alpha < eps:
        run.note(f"{attack.name} at {spec.norm} eps={eps:g}: alpha={alpha:g} cannot cross the eps-ball within 20 steps "
                 "(20*alpha < eps); its steps curve measures the step size, not the defense")
    run.out.curves["loss"].append(_loss_curve(attack.name, loss, eps, steps, alpha, records, first))


def _loss_curve(attack: str, loss: str, eps: float, steps: int, alpha: float, records: list[Batch],
                first: PerPoint) -> dict[str, Any]:
    """The batches' loss traces summed into one curve, plus the silent successes (C9)."""
    loss_sum = np.zeros(steps + 1)
    robust_sum = np.zeros(steps + 1)
    rising = np.zeros(steps, dtype=np.int64)
    moves = np.zeros(steps, dtype=np.int64)
    n_points = n_robust = silent = 0
    late: list[float] = []
    for _, _, record in records:
        trace = record["trace"]
        if not trace:
            continue
        loss_sum += np.asarray(trace["loss_sum"])
        robust_sum += np.asarray(trace["robust_loss_sum"])
        n_points += trace["n_points"]
        n_robust += trace["n_robust"]
        rising += np.asarray(trace["rising"], dtype=np.int64)
        moves += np.asarray(trace["moves"], dtype=np.int64)
        late += [v for v in trace["late_progress"] if v is not None]
        index = np.asarray(record["index"])
        rescored = decode_bits(record["rescored"], len(index))
        silent += int(((first[index] <= steps) & rescored).sum())
    return {
        "attack": attack, "loss": loss, "eps": eps, "steps": steps, "alpha": alpha,
        "mean": [round(v / n_points, 6) for v in loss_sum] if n_points else [],
        "mean_robust": [round(v / n_robust, 6) for v in robust_sum] if n_robust else [],
        "n": n_points, "n_robust": n_robust, "rising_steps": rising.tolist(), "moving_steps": moves.tolist(),
        "late_progress": late, "fooled": int(fooled_by(first, steps).sum()), "silent_success": silent}
