"""AutoAttack (robaudit.attacks.autoattack), whole or one attack alone, batch by batch, stage by stage.

Each stage runs on every batch before the next stage starts, and on each batch only sees the points
earlier stages left robust (AutoAttack's own rule, kept per point). Each (stage, batch) result is a
stored record like any other attack's, so an interrupted AutoAttack resumes at the batch it had
reached, a shard runs it on its own batches, and the merge reads the per-point outcomes back. Only
the first ``autoattack_examples`` points are attacked when the spec limits it.

AutoAttack draws its random starts from torch's global generator, reseeded with the spec's seed
at every call: a point's outcome depends on the points of its batch, which are the same whatever
the shard count (shards are whole batches of one fixed size).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.attacks import autoattack as aa
from robaudit.evaluation.cost import Cost, fixed
from robaudit.evaluation.gallery import Source
from robaudit.evaluation.store import Record

if TYPE_CHECKING:
    from robaudit.evaluation.presets import EvalSpec
    from robaudit.evaluation.registry import AttackInfo
    from robaudit.evaluation.run import Run

# Before a stage runs, the share of the points expected to still be robust when it starts.
ROBUST_GUESS = 0.5
AA_POLL_SECONDS = 1.0   # should_stop is polled this often from inside AutoAttack (it may query a database)


def autoattack_limit(spec: EvalSpec, n: int) -> int:
    """AutoAttack attacks the first this-many of the n points."""
    return n if spec.autoattack_examples is None else min(n, spec.autoattack_examples)


def autoattack_subset(spec: EvalSpec, start: int, end: int) -> int:
    """How many of the points [start, end) AutoAttack attacks."""
    return max(0, min(end, autoattack_limit(spec, end)) - start)


def run_single_stage(run: Run, attack: AttackInfo, eps: float) -> None:
    """One of AutoAttack's attacks alone, standard settings (``--attacks apgd-t``)."""
    _run(run, eps, (attack.name,), single=True)


def run_standard(run: Run, attack: AttackInfo, eps: float) -> None:
    """AutoAttack standard: a row per cumulative stage, the last one named ``autoattack``."""
    _run(run, eps, aa.STANDARD, single=False)   # the same four stages under every norm (pyautoattack 0.2.0)


# The cost of each stage, per point that enters it (about ROBUST_GUESS of the subset): APGD-CE 100
# iterations, APGD-T 9 targets x 100, FAB-T 9 targets (forwards cost 0.7 of a forward+backward),
# Square 5000 queries without gradients (0.4 each).
# (units per image in one forward call, forward calls per point entering the stage)
STAGE_STEPS = {"apgd-ce": (1.0, 100.0), "apgd-t": (1.0, 900.0), "fab-t": (0.7, 1350 / 0.7), "square": (0.4, 5000.0)}
STAGE_COSTS = {stage: Cost(per_step, fixed(steps), ROBUST_GUESS, autoattack_subset)
               for stage, (per_step, steps) in STAGE_STEPS.items()}
STANDARD_COST = Cost(1.0, fixed(sum(per_step * steps for per_step, steps in STAGE_STEPS.values())), ROBUST_GUESS,
                     autoattack_subset)


def _run(run: Run, eps: float, stages: tuple[str, ...], single: bool) -> None:
    from robaudit.evaluation.registry import ATTACKS  # the registry imports this module

    spec, progress = run.spec, run.progress
    m = autoattack_limit(spec, run.n)
    units = {stage: STAGE_STEPS[stage][0] * STAGE_STEPS[stage][1] for stage in stages}
    first, last = run.batches.first, run.batches.last
    in_shard = autoattack_subset(spec, first, last)   # the points of this shard that AutoAttack attacks

    def on_forward(stage: str, batch: int) -> None:
        progress.throttled_poll(AA_POLL_SECONDS)

    robust = np.zeros(run.n, dtype=bool)
    robust[:m] = run.clean[:m]
    for i, stage in enumerate(stages):
        def attack(index: torch.Tensor, start: int, end: int, stage: str = stage) -> Record:
            keep = index < run.gallery_limit(eps)
            examples = torch.empty_like(run.x[index]) if bool(keep.any()) else None
            flags, warnings = aa.run_autoattack(run.model, run.x[index], run.y[index], eps=eps, stages=(stage,),
                                                seed=spec.seed, batch_size=spec.batch_size, on_forward=on_forward,
                                                adversarial=examples, norm=spec.norm)
            found = {} if examples is None else run.adversarial(index, eps, examples, ~flags[stage])
            return {"robust": flags[stage].int().tolist(), "warnings": warnings, **found}

        # The estimate planned ROBUST_GUESS of the points for each stage; re-plan from those that enter it.
        entering = int(robust[first:last].sum())
        progress.replan(ROBUST_GUESS * units[stage] * in_shard, units[stage] * entering)
        per_point = units[stage] * entering / in_shard if in_shard else 0.0
        job = run.job(f"autoattack/eps={eps:.6g}/seed={spec.seed}/{'+'.join(stages[:i + 1])}")
        name = stage if single else f"autoattack:{stage}"
        source = Source(name, eps, ATTACKS[stage].order, detail="" if single else "AutoAttack standard")
        records = run.attack(job, per_point, attack, {"robust": [], "warnings": []}, mask=robust, limit=m,
                             source=source)
        robust = robust & (run.per_point(records, "robust", 0) == 1)
        for _, _, record in records:
            run.out.warn(record["warnings"])
        subset = m if m < run.n else None
        if single:
            run.out.add_row(stage, eps, robust[:m].copy(), subset=subset,
                            note="AutoAttack's attack alone, standard settings")
        elif stage == stages[-1]:
            run.out.add_row("autoattack", eps, robust[:m].copy(), subset=subset, version="standard",
                            note="AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square" +
                                 ("" if spec.norm == "linf" else f" ({aa.AUTOATTACK_NORMS[spec.norm]} versions)"))
        else:
            run.out.add_row(f"autoattack:{stage}", eps, robust[:m].copy(), subset=subset, cumulative=True,
                            note=f"AutoAttack after {stage} (cumulative over its earlier stages)")
