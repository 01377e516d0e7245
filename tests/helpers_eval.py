"""Shared fixtures for the attack/evaluation tests: small MNIST models, trained once per session,
and models built to mask gradients in the ways the diagnostics must catch."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import robaudit
from robaudit import models


def without_timings(results: dict) -> dict:
    """A results JSON minus ``timing`` and ``provenance`` (when, where and with which versions it ran):
    what must be equal between runs (resumed, sharded, refactored)."""
    return {k: v for k, v in results.items() if k not in ("timing", "provenance")}


@functools.cache
def mnist(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    return robaudit.load_dataset("mnist10k", split)


def first_test_points(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mnist("test")
    return x[:n], y[:n]


def _smallcnn() -> nn.Module:
    return models.build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0])


@functools.cache
def standard_model(seed: int = 0, n_train: int = 8000) -> nn.Module:
    """A SmallCNN trained with plain cross-entropy for one epoch on mnist10k (~97 % clean, not robust)."""
    torch.manual_seed(seed)
    x, y = mnist("train")
    x, y = x[:n_train], y[:n_train]
    model = _smallcnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), 100):
        idx = perm[i:i + 100]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def surrogate_model() -> nn.Module:
    """A second, independently trained standard model (transfer attacks), on fewer digits to save time."""
    return standard_model(seed=1, n_train=3000)


class ScaledLogits(nn.Module):
    """Logits times a huge constant: softmax saturates, cross-entropy gradients underflow to 0."""

    def __init__(self, model: nn.Module, scale: float = 1e4):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x) * self.scale


class Quantized(nn.Module):
    """Rounds the input to a few grey levels first: the gradient through round() is zero everywhere."""

    def __init__(self, model: nn.Module, levels: int = 2):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


class Recorder(nn.Module):
    """Records every input an attack or evaluation feeds the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


class NoisyInput(nn.Module):
    """A randomised defense: Gaussian noise on every forward pass."""

    def __init__(self, model: nn.Module, sigma: float = 0.3):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


class SoftmaxOutput(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(1)


class Purifier(nn.Module):
    """A "dynamic" defense: one gradient step on the input's entropy inside forward, then classify."""

    def __init__(self, model: nn.Module, step: float = 0.05):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, x):
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            probs = self.model(probe).softmax(1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
            (grad,) = torch.autograd.grad(entropy, probe)
        return self.model((x - self.step * grad.sign()).clamp(0, 1).detach())


class _GradientNoise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        noise = torch.randn_like(grad) * grad.abs().mean(dim=tuple(range(1, grad.dim())), keepdim=True)
        return grad + ctx.scale * noise, None


class NoisyGradient(nn.Module):
    """Same outputs as the model, but input gradients drowned in noise (stochastic gradients)."""

    def __init__(self, model: nn.Module, scale: float = 30.0):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(_GradientNoise.apply(x, self.scale))


class TrainModeNet(nn.Module):
    """Conv + BatchNorm + Dropout, for checking that attacks leave modes and weights alone."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Flatten(), nn.Linear(8 * 26 * 26, 10))

    def forward(self, x):
        return self.body(x)


class CountingModel(nn.Module):
    """Counts images forwarded, to prove a resumed evaluation does not recompute stored batches."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return self.model(x)


# ---------------------------------------------------------------------------- the golden test's fixture
GOLDEN = Path(__file__).parent / "golden"


class TinyCNN(nn.Module):
    """About 6,000 weights, float64 inside; takes and returns float32 like any robaudit model."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 5, stride=2), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.double()).float()


def _train(seed: int, n: int) -> TinyCNN:
    """How the fixture weights were made (once; the test loads the saved ones)."""
    torch.manual_seed(seed)
    x, y = robaudit.load_dataset("mnist10k", "train")
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(2):
        perm = torch.randperm(n)
        for i in range(0, n, 100):
            idx = perm[i:i + 100]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _load(name: str, seed: int, n: int) -> TinyCNN:
    path = GOLDEN / f"{name}.safetensors"
    if not path.exists():
        save_file(_train(seed, n).state_dict(), str(path))
    model = TinyCNN()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@functools.cache
def golden_models() -> tuple[TinyCNN, TinyCNN]:
    """The golden test's model and surrogate: fixed weights, float64 inside, so results are exact on any CPU."""
    return _load("tiny", 0, 4000), _load("tiny_surrogate", 1, 2000)
