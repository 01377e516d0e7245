"""Attacks for a randomized forward pass: EOT-PGD and AutoAttack's ``rand`` version.

One forward pass of a randomized model is one noisy draw of it, so a plain attack follows a noisy
gradient and is judged by a noisy prediction. These runners follow the gradient of the loss
averaged over ``spec.eot_draws`` passes (expectation over transformation, Athalye et al. 2018), and
count a point as robust when the logits averaged over ``spec.eot_draws`` passes still classify it
correctly: the accuracy a randomized model is reported by. The clean accuracy is measured the same
way (kept in ``results["randomized"]``).

The engine adds both to an evaluation when check C11's repeated-forward probe finds the forward
pass is not deterministic (``EvalSpec.auto_eot``); ``--attacks eot-pgd,autoattack-rand`` asks for
them on any model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from robaudit.attacks import autoattack as aa
from robaudit.attacks.common import default_alpha, mean_logits
from robaudit.attacks.pgd import pgd
from robaudit.evaluation.aggregate import fooled_by
from robaudit.evaluation.cost import Cost
from robaudit.evaluation.gallery import Source
from robaudit.evaluation.results import decode_bits, encode_bits
from robaudit.evaluation.runners.autoattack import AA_POLL_SECONDS, ROBUST_GUESS, autoattack_limit, autoattack_subset
from robaudit.evaluation.store import Record

if TYPE_CHECKING:
    from robaudit.evaluation.registry import AttackInfo
    from robaudit.evaluation.run import Run

EOT_PGD_STEPS = 20
# AutoAttack rand: APGD-CE then APGD-DLR, 100 iterations of eot_draws passes each, on the points still robust.
RAND_COST = Cost(1.0, lambda spec: 2 * 100 * spec.eot_draws, ROBUST_GUESS, autoattack_subset)
CLEAN_EOT = "clean_eot"   # the key of the averaged clean accuracy among the aggregate's probes


def run_clean_eot(run: Run) -> None:
    """The clean accuracy by the logits averaged over ``eot_draws`` passes, once per evaluation."""
    draws = run.spec.eot_draws
    if CLEAN_EOT in run.out.probes:
        return

    def compute(start: int, end: int) -> Record:
        with torch.no_grad():
            correct = mean_logits(run.model, run.x[start:end], draws).argmax(1) == run.y[start:end]
        return {"correct": encode_bits(correct.cpu().numpy())}

    correct = 0
    for start, end, record in run.batches.run(run.job(f"clean-eot/draws={draws}"), compute, 0.3 * draws):
        correct += int(decode_bits(record["correct"], end - start).sum())
    run.out.probes[CLEAN_EOT] = {"n": run.n, "correct": correct, "passes": draws}


def run_eot_pgd(run: Run, attack: AttackInfo, eps: float) -> None:
    """PGD-CE whose every step follows the loss averaged over ``eot_draws`` passes; judged the same way."""
    spec = run.spec
    run_clean_eot(run)
    steps, draws = EOT_PGD_STEPS, spec.eot_draws
    alpha = spec.alpha if spec.alpha is not None else default_alpha(eps, steps)
    job = run.job(f"eot-pgd/eps={eps:.6g}/steps={steps}/alpha={alpha:.6g}/draws={draws}")

    def attack_batch(index: torch.Tensor, start: int, end: int) -> Record:
        result = pgd(run.model, run.x[index], run.y[index], eps=eps, steps=steps, alpha=alpha, random_start=True,
                     norm=run.norm, generator=run.streams(f"pgd-start/eps={eps:.6g}", index), eot=draws)
        first = result.first_fooled[0]
        return {"first": first.tolist(),
                **run.adversarial(index, eps, result.x_adv, first <= steps, first, passes=draws)}

    records = run.attack(job, attack.cost.per_point(spec), attack_batch, {"first": []},
                         source=Source(attack.name, eps, attack.order))
    first = run.per_point(records, "first", -1)
    run.out.add_row(attack.name, eps, run.clean & ~fooled_by(first, steps), steps=steps, alpha=alpha, loss="ce",
                    random_start=True, passes=draws,
                    note=f"each step follows the loss averaged over {draws} passes; judged by the logits "
                         f"averaged over {draws} passes")


def run_autoattack_rand(run: Run, attack: AttackInfo, eps: float) -> None:
    """AutoAttack ``rand`` (APGD-CE, APGD-DLR, EOT over ``eot_draws`` draws: 20 by default, as AutoAttack's),
    re-scored over ``eot_draws`` passes."""
    spec, progress = run.spec, run.progress
    run_clean_eot(run)
    m = autoattack_limit(spec, run.n)

    def on_forward(stage: str, batch: int) -> None:
        progress.throttled_poll(AA_POLL_SECONDS)

    def attack_batch(index: torch.Tensor, start: int, end: int) -> Record:
        examples = torch.empty_like(run.x[index]) if bool((index < run.gallery_limit(eps)).any()) else None
        still, warnings = aa.run_autoattack_rand(run.model, run.x[index], run.y[index], eps=eps, seed=spec.seed,
                                                 batch_size=spec.batch_size, passes=spec.eot_draws,
                                                 on_forward=on_forward, norm=run.norm, adversarial=examples)
        found = {} if examples is None else run.adversarial(index, eps, examples, ~still, passes=spec.eot_draws)
        return {"robust": still.int().tolist(), "warnings": warnings, **found}

    job = run.job(f"autoattack-rand/eps={eps:.6g}/seed={spec.seed}/draws={spec.eot_draws}")
    records = run.attack(job, attack.cost.per_point(spec), attack_batch, {"robust": [], "warnings": []}, limit=m,
                         source=Source(attack.name, eps, attack.order, detail="AutoAttack rand"))
    for _, _, record in records:
        run.out.warn(record["warnings"])
    robust = run.clean.copy()
    robust[:m] &= run.per_point(records, "robust", 0)[:m] == 1
    run.out.add_row(attack.name, eps, robust[:m].copy(), subset=m if m < run.n else None, version="rand",
                    passes=spec.eot_draws,
                    note=f"AutoAttack rand: APGD-CE and APGD-DLR with EOT over {spec.eot_draws} draws; judged by "
                         f"the logits averaged over {spec.eot_draws} passes")
