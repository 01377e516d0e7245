"""FGSM and RS-FGSM: one signed step of size eps, from the clean image or from a random start.

Under L2 the step is along the normalised gradient, of L2 length eps (FGM), from the clean image or
from a uniform start in the L2 ball."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from robaudit.attacks.pgd import pgd
from robaudit.evaluation.aggregate import fooled_by
from robaudit.evaluation.gallery import Source
from robaudit.evaluation.store import Record

if TYPE_CHECKING:
    from robaudit.evaluation.registry import AttackInfo
    from robaudit.evaluation.run import Run


def run_one_step(run: Run, attack: AttackInfo, eps: float, *, random_start: bool) -> None:
    job = run.job(f"fgsm/eps={eps:.6g}/rs={int(random_start)}")

    def one_step(index: torch.Tensor, start: int, end: int) -> Record:
        result = pgd(run.model, run.x[index], run.y[index], eps=eps, steps=1, alpha=eps, random_start=random_start,
                     norm=run.norm, generator=run.streams(f"fgsm-start/eps={eps:.6g}", index))
        first = result.first_fooled[0]
        return {"first": first.tolist(), **run.adversarial(index, eps, result.x_adv, first <= 1, first)}

    records = run.attack(job, attack.cost.per_point(run.spec), one_step, {"first": []},
                         source=Source(attack.name, eps, attack.order))
    first = run.per_point(records, "first", -1)
    fgm: dict[str, Any] = {} if run.norm == "linf" else {
        "note": "FGM: one normalised-gradient step of L2 length eps"
                + (", from a random start in the L2 ball" if random_start else "")}
    run.out.add_row(attack.name, eps, run.clean & ~fooled_by(first, 1), steps=1, alpha=eps, loss="ce",
                    random_start=random_start, **fgm)
