"""What every attack shares: the model-mode guard, input gradients, the L-inf projection, seeding.

Attacks never touch the model's parameters or their ``.grad``: gradients are taken with
``torch.autograd.grad`` with respect to the input only (which also skips weight-gradient
kernels), and the model runs in eval mode for the duration of the attack, after which every
module's ``training`` flag is put back exactly as it was.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; afterwards each module's own ``training`` flag is restored.

    Restoring per module (not ``model.train(previous)``) matters for models whose submodules were
    deliberately left in different modes, e.g. a frozen BatchNorm inside a training model.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, was_training in flags:
            module.training = was_training


def input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d loss / d x for an ``x`` that requires grad; never accumulates into parameters.

    A model whose output does not depend differentiably on its input (it detaches it, e.g. a
    purification step) has a zero gradient, not an error: that is exactly what the masking checks
    must be able to measure.
    """
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def ball_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel lower and upper bounds of the eps-ball intersected with the image range [0, 1].

    Computed once per attack, so each step's projection is two elementwise ops.
    """
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def project_(x_adv: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """In-place projection onto [lower, upper] (the eps-ball inside [0, 1])."""
    return torch.minimum(torch.maximum(x_adv, lower, out=x_adv), upper, out=x_adv)


class PointStreams:
    """Random draws seeded per test point: point i draws from its own generator, seeded from (seed, stream, i).

    What a point draws then depends on nothing but itself: not on the other points of its batch, the
    batch size, the shard or the worker that attacks it, nor the device (draws are made on the CPU).
    That is what makes a sharded evaluation merge into exactly the one-worker results.
    """

    def __init__(self, generators: list[torch.Generator]) -> None:
        self.generators = generators

    @classmethod
    def seeded(cls, *parts: object, points: Iterable[int]) -> PointStreams:
        return cls([make_generator(*parts, int(i)) for i in points])

    def __len__(self) -> int:
        return len(self.generators)

    def rows(self, rows: torch.Tensor) -> PointStreams:
        """The streams of some rows (positions in this batch); they share state with this object's."""
        return PointStreams([self.generators[int(r)] for r in rows.tolist()])

    def rand(self, shape: torch.Size, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Uniform draws in [0, 1): row i from point i's stream."""
        return self._draw(torch.rand, shape, device, dtype)

    def randn(self, shape: torch.Size, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Standard normal draws: row i from point i's stream."""
        return self._draw(torch.randn, shape, device, dtype)

    def _draw(self, sample: Callable[..., torch.Tensor], shape: torch.Size, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"{len(self.generators)} point streams for a batch of {shape[0]}")
        if not self.generators:
            return torch.empty(shape, device=device, dtype=dtype)
        return torch.stack([sample(shape[1:], generator=g, dtype=dtype) for g in self.generators]).to(device)


# Where random starts and noise come from: one generator for the batch, one stream per point, or torch's global one.
RandomSource = torch.Generator | PointStreams | None


def rows_of(source: RandomSource, rows: torch.Tensor) -> RandomSource:
    """The source for a subset of the batch's rows: per-point streams follow their points; a generator is shared."""
    return source.rows(rows) if isinstance(source, PointStreams) else source


def uniform_in_ball(x: torch.Tensor, eps: float, source: RandomSource) -> torch.Tensor:
    """A point drawn uniformly from the L-inf ball of radius eps around x, clamped to [0, 1]."""
    if isinstance(source, PointStreams):
        noise = source.rand(x.shape, device=x.device, dtype=x.dtype)
    else:
        noise = torch.rand(x.shape, generator=source, device=x.device, dtype=x.dtype)
    return (x + noise.mul_(2.0).sub_(1.0).mul_(eps)).clamp_(0.0, 1.0)


NORMS = ("linf", "l2")   # PGD's norms; AutoAttack and the noise baseline also have L1


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return norm


def _rows_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-row L2 norm, shaped to broadcast against ``t``."""
    norms: torch.Tensor = torch.linalg.vector_norm(t.flatten(1), dim=1)
    return norms.view(-1, *([1] * (t.dim() - 1)))


def uniform_in_l2_ball(x: torch.Tensor, eps: float, source: RandomSource) -> torch.Tensor:
    """A point drawn uniformly from the L2 ball of radius eps around x (a Gaussian direction, radius
    eps * u^(1/d)), clamped to [0, 1]; clamping towards x only shortens the step, so it stays inside."""
    if isinstance(source, PointStreams):
        direction = source.randn(x.shape, device=x.device, dtype=x.dtype)
        u = source.rand(torch.Size([len(x)]), device=x.device, dtype=x.dtype)
    else:
        direction = torch.randn(x.shape, generator=source, device=x.device, dtype=x.dtype)
        u = torch.rand(len(x), generator=source, device=x.device, dtype=x.dtype)
    dims = x[0].numel()
    radius = (eps * u.pow(1.0 / dims)).view(-1, *([1] * (x.dim() - 1)))
    return (x + direction / _rows_norm(direction).clamp_min(1e-12) * radius).clamp_(0.0, 1.0)


def _uniform(shape: torch.Size, like: torch.Tensor, source: RandomSource) -> torch.Tensor:
    if isinstance(source, PointStreams):
        return source.rand(shape, device=like.device, dtype=like.dtype)
    return torch.rand(shape, generator=source, device=like.device, dtype=like.dtype)


def _gaussian(shape: torch.Size, like: torch.Tensor, source: RandomSource) -> torch.Tensor:
    if isinstance(source, PointStreams):
        return source.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=source, device=like.device, dtype=like.dtype)


def sphere_direction(x: torch.Tensor, norm: str, source: RandomSource) -> torch.Tensor:
    """Per row, a direction drawn uniformly from the unit sphere of ``norm`` (L2 or L1).

    L2: a normalised Gaussian. L1: independent exponential magnitudes with random signs, divided by
    their sum, which is uniform on the L1 sphere (the normalised exponentials are uniform on the simplex).
    """
    if norm == "l2":
        direction = _gaussian(x.shape, x, source)
        return direction / _rows_norm(direction).clamp_min(1e-12)
    if norm == "l1":
        u = _uniform(torch.Size([len(x), 2, *x.shape[1:]]), x, source).transpose(0, 1)   # row i: point i's draws
        magnitude = -torch.log1p(-u[0])                 # Exp(1) from U in [0, 1)
        direction = torch.where(u[1] < 0.5, -magnitude, magnitude)
        total = direction.abs().flatten(1).sum(1).clamp_min(1e-12)
        return direction / total.view(-1, *([1] * (x.dim() - 1)))
    raise ValueError(f"no sphere draws for norm {norm!r} (l2 or l1)")


def on_sphere(x: torch.Tensor, eps: float, norm: str, source: RandomSource) -> torch.Tensor:
    """x plus a perturbation drawn uniformly from the ``norm`` sphere of radius eps (L2 or L1), clamped to
    [0, 1]: clamping moves pixels towards x, so the point stays inside the ball (possibly off its shell)."""
    return (x + sphere_direction(x, norm, source).mul_(eps)).clamp_(0.0, 1.0)


def uniform_in_l1_ball(x: torch.Tensor, eps: float, source: RandomSource) -> torch.Tensor:
    """A point drawn uniformly from the L1 ball of radius eps around x (a direction uniform on the L1
    sphere, radius eps * u^(1/d)), clamped to [0, 1]."""
    direction = sphere_direction(x, "l1", source)
    u = _uniform(torch.Size([len(x)]), x, source)
    radius = (eps * u.pow(1.0 / x[0].numel())).view(-1, *([1] * (x.dim() - 1)))
    return (x + direction * radius).clamp_(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float, norm: str, source: RandomSource) -> torch.Tensor:
    """A point drawn uniformly from the ``norm`` ball of radius eps around x, clamped to [0, 1]."""
    if norm == "l2":
        return uniform_in_l2_ball(x, eps, source)
    if norm == "l1":
        return uniform_in_l1_ball(x, eps, source)
    return uniform_in_ball(x, eps, source)


def l2_step_(x_adv: torch.Tensor, grad: torch.Tensor, alpha: float, centre: torch.Tensor,
             eps: float) -> torch.Tensor:
    """In place: a step of L2 length alpha along the gradient, then back into the L2 ball around
    ``centre`` (rescaling the perturbation) and into [0, 1]. A zero gradient takes no step."""
    x_adv.add_(grad / _rows_norm(grad).clamp_min(1e-12), alpha=alpha)
    delta = x_adv - centre
    delta.mul_((eps / _rows_norm(delta).clamp_min(1e-12)).clamp_(max=1.0))
    x_adv.copy_(centre + delta).clamp_(0.0, 1.0)
    return x_adv


def make_generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from a stable hash of ``parts`` (never from Python's salted ``hash``).

    Each point, attack and stream gets its own generator, so a resumed or partial evaluation draws
    exactly the same random starts as an uninterrupted one.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def default_alpha(eps: float, steps: int) -> float:
    """Step size when the user gives none: ``max(eps / 4, 2.5 * eps / steps)``.

    eps/4 is the Feature Scattering protocol's PGD-20 step (2/255 at 8/255). The 2.5*eps/steps term
    (Madry et al.) keeps short attacks able to reach the boundary of the ball: k steps travel
    k * alpha >= 2.5 * eps. For k >= 10 the rule gives eps/4, so 20 steps cover 5 eps.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    return max(eps / 4.0, 2.5 * eps / steps)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels, in chunks, without building any autograd graph.

    ``no_grad`` rather than ``inference_mode``: a model that optimises its input inside forward (a
    "dynamic" defense, check C12) can still re-enable gradients under no_grad, not under inference mode.
    """
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) \
        if len(x) else torch.empty(0, dtype=torch.long, device=x.device)


@torch.no_grad()
def mean_logits(model: nn.Module, x: torch.Tensor, passes: int, batch_size: int = 1000) -> torch.Tensor:
    """Logits averaged over ``passes`` forward passes: a randomized model's expected output, by which
    its accuracy is reported (one pass of a randomized model is one noisy sample of it)."""
    out = [torch.stack([model(x[i:i + batch_size]) for _ in range(passes)]).mean(0)
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)
