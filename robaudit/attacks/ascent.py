"""Signed-gradient ascent that returns its last iterate: the PGD step shared by every caller that wants
the final point rather than a verdict.

``x' <- proj(x' + alpha * sign(grad objective(model(x'))))``, projected onto the L-inf eps-ball
around x intersected with [0, 1]. Transfer attacks craft on the surrogate with it, and training's
inner maximisations (robaudit.training.perturb) run it on their own objectives. It differs from
``robaudit.attacks.pgd`` in what it returns: that one scores every iterate and reports the first
that fooled the model (a point is robust only if no iterate fooled it); this one runs every step
and returns the last iterate, whatever the earlier ones did.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robaudit.attacks.common import ball_bounds, input_gradient, l2_step_, project_


def signed_ascent(model: nn.Module, x: torch.Tensor, start: torch.Tensor,
                  objective: Callable[[torch.Tensor], torch.Tensor], *, eps: float, alpha: float,
                  steps: int) -> torch.Tensor:
    """``steps`` ascent steps on the scalar ``objective(model(x'))`` from ``start``; the last iterate.

    Runs the model in whatever mode the caller put it in (attacks use eval mode; training may not).
    """
    x = x.detach()
    lower, upper = ball_bounds(x, eps)
    x_adv = start.detach()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = objective(model(x_adv))
        grad = input_gradient(loss, x_adv)
        x_adv = project_(x_adv.detach().add_(grad.sign_(), alpha=alpha), lower, upper)
    return x_adv.detach()


def l2_ascent(model: nn.Module, x: torch.Tensor, start: torch.Tensor,
              objective: Callable[[torch.Tensor], torch.Tensor], *, eps: float, alpha: float,
              steps: int) -> torch.Tensor:
    """``signed_ascent`` under L2: steps of L2 length alpha along the normalised gradient, projected
    back into the L2 eps-ball around x and into [0, 1] (robaudit.attacks.common.l2_step_)."""
    x = x.detach()
    x_adv = start.detach().clone()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = objective(model(x_adv))
        grad = input_gradient(loss, x_adv)
        x_adv = l2_step_(x_adv.detach(), grad, alpha, x, eps)
    return x_adv.detach()
