"""FGSM (Goodfellow et al.) and the Feature Scattering repo's "FGSM": one step of size eps.

Both are one-step PGD: textbook FGSM starts at the clean image; RS-FGSM starts from a uniform draw
in the eps-ball (Feature Scattering's ``fs_eval.py`` and Wong et al.'s FGSM-RS start). A point counts
as fooled if either iterate (start or after the step) is misclassified, as for every PGD run here.
"""
from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.common import RandomSource
from robaudit.attacks.pgd import PGDResult, pgd


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, random_start: bool = False,
         loss: str = "ce", kappa: float = 50.0, generator: RandomSource = None) -> PGDResult:
    return pgd(model, x, y, eps=eps, steps=1, alpha=eps, loss=loss, kappa=kappa,
               random_start=random_start, generator=generator)
