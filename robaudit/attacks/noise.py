"""Random-noise baseline: a point is fooled if any of its random draws fools it.

L-inf: uniform draws from the ball (every pixel uniform in [-eps, eps]). L2 and L1: uniform draws on
the sphere of radius eps (the whole budget spent; in hundreds of dimensions almost all of the ball's
volume is at its shell anyway), clamped to the image box [0, 1].

Carlini et al. (2019, sec. 4.11): random noise must succeed less often than a white-box attack;
if it succeeds more, the gradients are not telling the attack where to go.
"""
from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.common import RandomSource, eval_mode, on_sphere, rows_of, uniform_in_ball


@torch.no_grad()  # not inference_mode: see robaudit.attacks.common.predict
def _wrong(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    wrong: torch.Tensor = model(x).argmax(1) != y
    return wrong


def random_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, draws: int = 100,
                 generator: RandomSource = None, fooling: torch.Tensor | None = None,
                 norm: str = "linf") -> torch.Tensor:
    """(n,) int64: index of the first draw that fooled each point, or ``draws`` if none did.

    ``fooling`` (shaped like x): receives each fooled point's fooling draw (other rows are left as they are).

    A point stops being sampled once fooled, so the cost falls as points fall. With per-point
    streams (robaudit.attacks.common.PointStreams) draw d of a point is the same whichever other
    points are sampled beside it; with one generator it depends on the whole batch.
    """
    if draws < 1:
        raise ValueError("draws must be at least 1")
    if norm not in ("linf", "l2", "l1"):
        raise ValueError(f"unknown norm {norm!r}; choose one of: linf, l2, l1")
    x, y = x.detach(), y.detach()
    first = torch.full((len(x),), draws, dtype=torch.long, device=x.device)
    active = torch.arange(len(x), device=x.device)
    with eval_mode(model):
        for d in range(draws):
            if active.numel() == 0:
                break
            source = rows_of(generator, active)
            drawn = uniform_in_ball(x[active], eps, source) if norm == "linf" else \
                on_sphere(x[active], eps, norm, source)
            hit = _wrong(model, drawn, y[active])
            first[active[hit]] = d
            if fooling is not None:
                fooling[active[hit]] = drawn[hit]
            active = active[~hit]
    return first
