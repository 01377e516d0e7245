"""Transfer: PGD crafted on the surrogate model, scored once on the audited one."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from robaudit.attacks.common import default_alpha
from robaudit.attacks.transfer import transfer_examples
from robaudit.evaluation.gallery import Source
from robaudit.evaluation.store import Record

if TYPE_CHECKING:
    from robaudit.evaluation.registry import AttackInfo
    from robaudit.evaluation.run import Run


def run_transfer(run: Run, attack: AttackInfo, eps: float) -> None:
    k = run.spec.transfer_steps
    alpha = default_alpha(eps, k)

    def craft(index: torch.Tensor, start: int, end: int) -> Record:
        crafted, fooled = transfer_examples(run.model, run.surrogate, run.x[index], run.y[index], eps=eps, steps=k,
                                            alpha=alpha, norm=run.norm,
                                            generator=run.streams(f"transfer-start/eps={eps:.6g}", index))
        step = torch.full_like(index, k)   # the surrogate's last iterate is what the target sees
        return {"fooled": fooled.int().tolist(), **run.adversarial(index, eps, crafted, fooled, step)}

    job = run.job(f"transfer/eps={eps:.6g}/steps={k}/alpha={alpha:.6g}")
    records = run.attack(job, attack.cost.per_point(run.spec), craft, {"fooled": []},
                         source=Source(attack.name, eps, attack.order))
    fooled = run.per_point(records, "fooled", 0).astype(bool)
    run.out.add_row(attack.name, eps, run.clean & ~fooled, steps=k, alpha=alpha, loss="ce", random_start=True,
                    note="PGD crafted on the surrogate, scored on the target")
