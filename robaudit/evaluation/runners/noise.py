"""Random noise: uniform draws in the L-inf eps-ball, or on the L2/L1 eps-sphere (a black-box baseline the
white-box attacks must beat)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from robaudit.attacks.noise import random_noise
from robaudit.evaluation.gallery import Source
from robaudit.evaluation.results import bit_key
from robaudit.evaluation.store import Record
from robaudit.norms import label

if TYPE_CHECKING:
    from robaudit.evaluation.registry import AttackInfo
    from robaudit.evaluation.run import Run


def run_noise(run: Run, attack: AttackInfo, eps: float) -> None:
    draws = run.spec.noise_draws

    def draw(index: torch.Tensor, start: int, end: int) -> Record:
        fooling = torch.empty_like(run.x[index])
        first = random_noise(run.model, run.x[index], run.y[index], eps=eps, draws=draws, norm=run.norm,
                             generator=run.streams(f"noise/eps={eps:.6g}", index), fooling=fooling)
        return {"first": first.tolist(), **run.adversarial(index, eps, fooling, first < draws, first)}

    records = run.attack(run.job(f"noise/eps={eps:.6g}/draws={draws}"), attack.cost.per_point(run.spec), draw,
                         {"first": []}, source=Source(attack.name, eps, attack.order))
    first = run.per_point(records, "first", draws)
    run.out.add_row(attack.name, eps, run.clean & (first >= draws), draws=draws,
                    bits_key=bit_key(attack.name, eps, None),
                    note=f"{draws} uniform draws in the eps-ball" if run.norm == "linf" else
                    f"{draws} uniform draws on the {label(run.norm)} sphere of radius eps, clamped to [0, 1]")
