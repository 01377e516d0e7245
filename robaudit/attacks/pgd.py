"""PGD (Madry et al.) in the L-inf or L2 ball, on cross-entropy or on the Carlini-Wagner margin, with restarts.

L-inf steps move by alpha * sign(gradient) and clip to the box around x; L2 steps move by alpha along
the L2-normalised gradient and rescale the perturbation back onto the ball (then clip to [0, 1],
which only shortens it). The default alpha is the same rule for both: the step length in the norm.

Iterates and steps, defined once for every curve built on top of this module:

* iterate 0 is the start: the clean image, or a uniform draw from the eps-ball (clamped to [0, 1]);
* iterate t (1 <= t <= steps) is ``clip_ball(iterate_{t-1} + alpha * sign(grad loss))``;
* a point is *fooled by step k* if any iterate 0..k is misclassified; ``first_fooled`` records the
  smallest such index, and the attack returns that first adversarial iterate (Madry's "best so
  far" for the 0-1 loss). Points never fooled return iterate ``steps``.

Because nothing depends on the total number of steps (no schedule, no early stop that changes an
iterate), a k-step run with the same random start reproduces the first k iterates of a longer
run exactly, so "robust at k steps" can be read off one long run for every k <= steps.

Points are frozen as soon as they are fooled (``freeze=True``): their result can no longer change,
so dropping them from the batch saves work without changing any other point's iterates (each
point's gradient depends on that point alone when the model is in eval mode).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robaudit.attacks.common import (
    RandomSource,
    ball_bounds,
    check_norm,
    default_alpha,
    eval_mode,
    input_gradient,
    l2_step_,
    mean_logits,
    predict,
    project_,
    rows_of,
    uniform_in_ball,
    uniform_in_l2_ball,
)
from robaudit.attacks.losses import attack_loss

NOT_RUN = -1  # first_fooled value for a restart that skipped a point already fooled by an earlier restart
# Pintor et al.'s "incomplete optimisation" looks at the last 10 iterations of the loss trace.
LATE_WINDOW = 10


@dataclass
class LossTrace:
    """The attack loss along one run (restart 0), aggregated over the points of one batch.

    ``loss_sum[t]``: sum over all attacked points of the loss at the point the attack would return
    after t steps (a fooled point keeps the loss of its first adversarial iterate).
    ``robust_loss_sum[t]``: sum over the points never fooled, of the loss at iterate t.
    ``rising[t]`` / ``moves[t]``: among the points that took step t+1 from a not-yet-fooled iterate,
    how many it raised the loss of (APGD halves its step when fewer than 75 % of steps do).
    ``late_progress``: per never-fooled point, how much its loss trace (scaled to [0, 1], running
    best) still rose over the last 10 iterations (Pintor's incomplete-optimisation indicator);
    NaN for fooled points.
    """

    loss_sum: torch.Tensor
    robust_loss_sum: torch.Tensor
    n_points: int
    n_robust: int
    rising: list[int]
    moves: list[int]
    late_progress: torch.Tensor


@dataclass
class PGDResult:
    x_adv: torch.Tensor          # (n, ...) returned points
    # (restarts, n) int64: first misclassified iterate, steps + 1 if none, NOT_RUN if skipped
    first_fooled: torch.Tensor
    final_correct: torch.Tensor  # (n,) bool: the returned points re-scored without gradients
    steps: int
    alpha: float
    trace: LossTrace | None = None

    def fooled_by(self, k: int | None = None, restarts: int | None = None) -> torch.Tensor:
        """(n,) bool: fooled by some iterate <= k in one of the first ``restarts`` restarts."""
        k = self.steps if k is None else k
        rows = self.first_fooled[: restarts or self.first_fooled.shape[0]]
        return ((rows >= 0) & (rows <= k)).any(0)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
        alpha: float | None = None, loss: str = "ce", kappa: float = 50.0, random_start: bool = True,
        restarts: int = 1, generator: RandomSource = None, freeze: bool = True,
        trace: bool = False, norm: str = "linf", eot: int = 1) -> PGDResult:
    """Run PGD on (x, y); restart r > 0 only attacks points every earlier restart failed on.

    ``eot > 1`` (expectation over transformation, for a randomized forward pass): each step follows
    the gradient of the loss averaged over ``eot`` forward passes, and an iterate counts as fooling
    when the logits averaged over those passes misclassify it; the returned points are re-scored the
    same way. ``eot = 1`` is plain PGD.
    """
    if steps < 1 or restarts < 1 or eot < 1:
        raise ValueError("steps, restarts and eot must be at least 1")
    check_norm(norm)
    draw = uniform_in_l2_ball if norm == "l2" else uniform_in_ball
    alpha = default_alpha(eps, steps) if alpha is None else float(alpha)
    x, y = x.detach(), y.detach()
    n = len(x)
    first = torch.full((restarts, n), NOT_RUN, dtype=torch.long, device=x.device)
    x_out = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    loss_trace = None
    with eval_mode(model):
        for r in range(restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            xs, ys = x[todo], y[todo]
            start = draw(xs, eps, rows_of(generator, todo)) if random_start else xs.clone()
            run_first, run_adv, run_trace = _single_run(
                model, xs, ys, start, eps=eps, alpha=alpha, steps=steps, loss=loss, kappa=kappa,
                freeze=freeze, trace=trace and r == 0, norm=norm, eot=eot)
            first[r, todo] = run_first
            x_out[todo] = run_adv
            fooled[todo[run_first <= steps]] = True
            if run_trace is not None:
                loss_trace = run_trace
        one_pass = eot == 1 or len(x_out) == 0
        final_correct = (predict(model, x_out) if one_pass else mean_logits(model, x_out, eot).argmax(1)) == y
    return PGDResult(x_out, first, final_correct, steps, alpha, loss_trace)


def _single_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *, eps: float,
                alpha: float, steps: int, loss: str, kappa: float, freeze: bool,
                trace: bool, norm: str = "linf",
                eot: int = 1) -> tuple[torch.Tensor, torch.Tensor, LossTrace | None]:
    """One run from ``x_adv``: (first fooling iterate per point, the returned points, the loss trace if asked)."""
    n = len(x)
    lower, upper = ball_bounds(x, eps)
    centre = x      # the clean points of the rows still attacked (the L2 projection's centres)
    first = torch.full((n,), steps + 1, dtype=torch.long, device=x.device)
    returned = x_adv.clone()
    active = torch.arange(n, device=x.device)   # rows of x still being attacked
    ys = y
    losses = torch.full((steps + 1, n), float("nan"), device=x.device) if trace else None
    for t in range(steps + 1):
        # Every iterate, the last one included, is scored by the same grad-enabled forward, so a
        # short run and the prefix of a long run compute bit-identical predictions.
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            if eot == 1:
                logits = model(x_adv)
                point_loss = attack_loss(loss, logits, ys, kappa)
            else:
                draws = [model(x_adv) for _ in range(eot)]
                point_loss = torch.stack([attack_loss(loss, d, ys, kappa) for d in draws]).mean(0)
                logits = torch.stack(draws).mean(0)
        wrong = logits.detach().argmax(1) != ys
        if losses is not None:
            losses[t, active] = point_loss.detach()
        new = wrong & (first[active] > steps)
        if new.any():
            first[active[new]] = t
            returned[active[new]] = x_adv.detach()[new]
        if t == steps:
            still = first[active] > steps
            returned[active[still]] = x_adv.detach()[still]
            break
        grad = input_gradient(point_loss.sum(), x_adv)
        x_next = x_adv.detach()
        if freeze and wrong.any():
            keep = ~wrong
            active, ys, grad, x_next = active[keep], ys[keep], grad[keep], x_next[keep]
            lower, upper, centre = lower[keep], upper[keep], centre[keep]
            if active.numel() == 0:
                break
        if norm == "l2":
            x_adv = l2_step_(x_next, grad, alpha, centre, eps)
        else:
            x_adv = project_(x_next.add_(grad.sign_(), alpha=alpha), lower, upper)
    return first, returned, (_summarise_trace(losses, first, steps) if losses is not None else None)


def _summarise_trace(losses: torch.Tensor, first: torch.Tensor, steps: int) -> LossTrace:
    n = losses.shape[1]
    t_index = torch.arange(steps + 1, device=losses.device)[:, None]
    # The loss at the point the attack would return after t steps: frozen at the first fooling.
    held = losses.gather(0, torch.minimum(t_index, first[None, :]).expand(steps + 1, n))
    never = first > steps
    robust = losses[:, never]
    prev, curr = losses[:-1], losses[1:]
    moved = (first[None, :] >= t_index[1:]) & torch.isfinite(prev) & torch.isfinite(curr)
    late = torch.full((n,), float("nan"), device=losses.device)
    if robust.shape[1]:
        low, high = robust.min(0).values, robust.max(0).values
        scaled = (robust - low) / (high - low).clamp(min=1e-12)
        best = scaled.cummax(0).values
        window = min(LATE_WINDOW, steps)
        late[never] = best[-1] - best[-1 - window]
    return LossTrace(
        loss_sum=held.double().sum(1).cpu(),
        robust_loss_sum=robust.double().sum(1).cpu(),
        n_points=n,
        n_robust=int(never.sum()),
        rising=((curr > prev) & moved).sum(1).tolist(),
        moves=moved.sum(1).tolist(),
        late_progress=late.cpu(),
    )
