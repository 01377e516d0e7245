"""AutoAttack (robaudit.attacks.autoattack), whole or one attack alone, resumable stage by stage.

AutoAttack runs once on all points of its subset (the first ``autoattack_examples``), not batch by
batch: its stages only see the points earlier stages left robust. Each finished stage is stored
(``.../<stages so far>/0-m``), and an interrupted stage resumes from AutoAttack's own state file,
which lives in the store's folder or is mirrored into a store that has none.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.attacks import autoattack as aa
from robaudit.evaluation.batches import digest
from robaudit.evaluation.cost import Cost, fixed
from robaudit.evaluation.results import decode_bits, encode_bits

if TYPE_CHECKING:
    from robaudit.evaluation.presets import EvalSpec
    from robaudit.evaluation.registry import AttackInfo
    from robaudit.evaluation.run import Run

# Before a stage runs, the share of the points expected to still be robust when it starts.
ROBUST_GUESS = 0.5
AA_POLL_SECONDS = 1.0   # should_stop is polled this often from inside AutoAttack (it may query a database)


def autoattack_points(n: int, autoattack_examples: int | None) -> int:
    return n if autoattack_examples is None else min(n, autoattack_examples)


def run_single_stage(run: Run, attack: AttackInfo, eps: float) -> None:
    """One of AutoAttack's attacks alone, standard settings (``--attacks apgd-t``)."""
    _run(run, eps, (attack.name,), single=True)


def run_standard(run: Run, attack: AttackInfo, eps: float) -> None:
    """AutoAttack standard: a row per cumulative stage, the last one named ``autoattack``."""
    _run(run, eps, aa.STANDARD, single=False)


def autoattack_subset(spec: EvalSpec, n: int) -> int:
    return autoattack_points(n, spec.autoattack_examples)


# The cost of each stage, per point that enters it (about ROBUST_GUESS of the subset): APGD-CE 100
# iterations, APGD-T 9 targets x 100, FAB-T 9 targets (forwards cost 0.7 of a forward+backward),
# Square 5000 queries without gradients (0.4 each).
# (units per image in one forward call, forward calls per point entering the stage)
STAGE_STEPS = {"apgd-ce": (1.0, 100.0), "apgd-t": (1.0, 900.0), "fab-t": (0.7, 1350 / 0.7), "square": (0.4, 5000.0)}
STAGE_COSTS = {stage: Cost(per_step, fixed(steps), ROBUST_GUESS, autoattack_subset)
               for stage, (per_step, steps) in STAGE_STEPS.items()}
STANDARD_COST = Cost(1.0, fixed(sum(per_step * steps for per_step, steps in STAGE_STEPS.values())), ROBUST_GUESS,
                     autoattack_subset)


def _stage_units(stage: str) -> tuple[float, float]:
    """(units per point entering the stage, units per image in one forward call)."""
    per_step, steps = STAGE_STEPS[stage]
    return per_step * steps, per_step


def _run(run: Run, eps: float, stages: tuple[str, ...], single: bool) -> None:
    spec, batches, progress = run.spec, run.batches, run.progress
    m = autoattack_points(run.n, spec.autoattack_examples)
    base = f"autoattack/eps={eps:.6g}/seed={spec.seed}/bs={spec.batch_size}/m={m}"
    index = np.nonzero(run.clean[:m])[0]
    chain_keys = {stage: batches.key(f"{base}/{'+'.join(stages[:i + 1])}", 0, m) for i, stage in enumerate(stages)}
    done: dict[str, torch.Tensor] = {}
    for stage in stages:
        record = batches.stored(chain_keys[stage])
        if record is None:
            break
        done[stage] = torch.as_tensor(decode_bits(record["robust"], len(index)), device=run.device)
        run.out.warn(record.get("warnings", []))
    tag = digest(f"{batches.fingerprint}/{base}/{'+'.join(stages)}".encode())[:16]
    state_dir, mirror = batches.autoattack_state(tag)

    def poll() -> None:
        progress.report()
        if mirror is not None:
            mirror.sync_now_and_then(tag)
        progress.poll()

    throttled_poll = aa.Throttle(poll, AA_POLL_SECONDS)
    units = {stage: _stage_units(stage) for stage in stages}
    # Re-plan the progress total as stages finish: each stage only sees the points still robust.
    planned = ROBUST_GUESS * len(index) * sum(units[s][0] for s in stages)
    used = 0.0

    def replan(robust_count: int, next_stage: int) -> None:
        nonlocal planned
        new_plan = used + robust_count * sum(units[s][0] for s in stages[next_stage:])
        progress.replan(planned, new_plan)
        planned = new_plan

    replan(len(index) if not done else int(list(done.values())[-1].sum()), len(done))

    def on_forward(stage: str, batch: int) -> None:
        nonlocal used
        step = min(units[stage][1] * batch, max(planned - used, 0.0))
        used += step
        progress.credit(step)
        throttled_poll()

    def on_stage(stage: str, flags: torch.Tensor, warnings: list[str]) -> None:
        batches.put(chain_keys[stage], {"robust": encode_bits(flags.cpu().numpy()), "warnings": warnings})
        replan(int(flags.sum()), stages.index(stage) + 1)
        progress.report()

    if len(done) < len(stages):
        progress.poll()
    i = torch.as_tensor(index, device=run.device)
    try:
        results, messages = aa.run_autoattack(run.model, run.x[i], run.y[i], eps=eps, stages=stages, seed=spec.seed,
                                              batch_size=spec.batch_size, state_dir=state_dir, tag=tag,
                                              on_forward=on_forward, on_stage=on_stage, done=done)
    except BaseException:
        if mirror is not None:
            mirror.sync(tag)
        raise
    run.out.warn(messages)
    batches.reused += len(done)
    progress.credit(planned - used)
    subset = m if m < run.n else None
    for stage in stages:
        robust = np.zeros(m, dtype=bool)
        robust[index] = results[stage].cpu().numpy()
        if single:
            run.out.add_row(stage, eps, robust, subset=subset, note="AutoAttack's attack alone, standard settings")
        elif stage == stages[-1]:
            run.out.add_row("autoattack", eps, robust, subset=subset, version="standard",
                            note="AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square")
        else:
            run.out.add_row(f"autoattack:{stage}", eps, robust, subset=subset, cumulative=True,
                            note=f"AutoAttack after {stage} (cumulative over its earlier stages)")
