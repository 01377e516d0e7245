"""Random-noise baseline: uniform draws from the L-inf ball; a point is fooled if any draw fools it.

Carlini et al. (2019, sec. 4.11): random noise must succeed less often than a white-box attack;
if it succeeds more, the gradients are not telling the attack where to go.
"""
from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.common import RandomSource, eval_mode, rows_of, uniform_in_ball


@torch.no_grad()  # not inference_mode: see robaudit.attacks.common.predict
def _wrong(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    wrong: torch.Tensor = model(x).argmax(1) != y
    return wrong


def random_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, draws: int = 100,
                 generator: RandomSource = None, fooling: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) int64: index of the first draw that fooled each point, or ``draws`` if none did.

    ``fooling`` (shaped like x): receives each fooled point's fooling draw (other rows are left as they are).

    A point stops being sampled once fooled, so the cost falls as points fall. With per-point
    streams (robaudit.attacks.common.PointStreams) draw d of a point is the same whichever other
    points are sampled beside it; with one generator it depends on the whole batch.
    """
    if draws < 1:
        raise ValueError("draws must be at least 1")
    x, y = x.detach(), y.detach()
    first = torch.full((len(x),), draws, dtype=torch.long, device=x.device)
    active = torch.arange(len(x), device=x.device)
    with eval_mode(model):
        for d in range(draws):
            if active.numel() == 0:
                break
            drawn = uniform_in_ball(x[active], eps, rows_of(generator, active))
            hit = _wrong(model, drawn, y[active])
            first[active[hit]] = d
            if fooling is not None:
                fooling[active[hit]] = drawn[hit]
            active = active[~hit]
    return first
