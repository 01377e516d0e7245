"""Adapters around pyautoattack (Croce & Hein's reference AutoAttack); nothing here re-implements an attack.

``run_autoattack()`` runs AutoAttack's attacks one stage at a time, in AutoAttack's own order and with
its "standard" settings (APGD-CE 100 iterations; APGD-T on the DLR loss, 9 targets; FAB-T, 9
targets; Square, 5000 queries), each stage on the points every earlier stage failed on. Each stage
is one ``run_standard_evaluation`` call, so with the same seed, points and batch size the robust
accuracy equals one call with all four attacks; running them separately is what gives the
per-stage rows of the ladder.

The evaluation engine calls it once per batch and stage and stores each result, which is how an
interrupted AutoAttack resumes (pyautoattack 0.2.0 cannot resume from its own state file: it writes
the attack set with ``str()``, so reading it back always fails its "different set of attacks"
check).
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from robaudit.attacks.common import eval_mode, mean_logits

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
STANDARD = STAGES
# AutoAttack's version for randomized defenses (APGD-CE and APGD-DLR, one restart) averages each step's
# gradient over 20 forward passes (EOT): AutoAttack's own setting and robaudit's default.
RAND_EOT_ITER = 20
# robaudit's norm names and AutoAttack's. Under L1 the standard version runs its APGD-L1 (larger
# effective radius, 5 restarts, 5 target classes): AutoAttack's own settings, kept as they are.
AUTOATTACK_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
LOGGER_NAME = "auto-attack"


class InputGradientOnly(nn.Module):
    """The model with its parameters detached, as AutoAttack sees it.

    FAB calls ``.backward()``; with detached parameters that fills only the input's gradient, so
    no ``.grad`` appears on the audited model and no weight-gradient work is done. The forward
    values are bit-identical to the model's. ``on_forward(stage, batch_size)`` lets the caller count
    work and poll for cancellation.
    """

    def __init__(self, model: nn.Module, on_forward: Callable[[str, int], None] | None = None):
        super().__init__()
        self.wrapped = model
        self.stage = ""
        self._params = {name: p.detach() for name, p in model.named_parameters()}
        self._on_forward = on_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._on_forward is not None:
            self._on_forward(self.stage, len(x))
        if not torch.is_grad_enabled():  # Square's thousands of small queries: skip the parameter swap
            logits: torch.Tensor = self.wrapped(x)
        else:
            logits = functional_call(self.wrapped, self._params, (x,))
        return logits


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


def run_stage(model: nn.Module, x: torch.Tensor, y: torch.Tensor, stage: str, *, eps: float, seed: int,
              batch_size: int, norm: str = "linf", x_adv_out: torch.Tensor | None = None) -> torch.Tensor:
    """One AutoAttack attack, standard settings, on (x, y). Returns (n,) bool: still correct.

    ``x_adv_out`` (shaped like x) receives AutoAttack's adversarial images (the clean image where it failed).
    """
    from pyautoattack import AutoAttack

    if stage not in STAGES:
        raise ValueError(f"unknown AutoAttack stage {stage!r}; choose one of: {', '.join(STAGES)}")
    if norm not in AUTOATTACK_NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(AUTOATTACK_NORMS)}")
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.bool, device=y.device)
    adversary = AutoAttack(model, version="standard", norm=AUTOATTACK_NORMS[norm], eps=eps, seed=seed,
                           device=x.device)
    adversary.attacks_to_run = [stage]  # keep the standard parameters, run one attack
    with _global_rng_kept(x.device):
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    if x_adv_out is not None:
        x_adv_out.copy_(x_adv.to(x_adv_out.device))
    still_correct: torch.Tensor = y_adv.to(y.device) == y
    return still_correct


def run_autoattack_rand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int = 0,
                        batch_size: int = 250, passes: int = RAND_EOT_ITER,
                        on_forward: Callable[[str, int], None] | None = None,
                        norm: str = "linf",
                        adversarial: torch.Tensor | None = None) -> tuple[torch.Tensor, list[str]]:
    """AutoAttack's ``rand`` version on (x, y), with ``passes`` draws per EOT step instead of its 20; returns
    ((n,) bool still correct, AutoAttack's warnings). ``adversarial`` (shaped like x) receives the
    points AutoAttack returned.

    AutoAttack itself judges each adversarial point by one forward pass, which for a randomized model
    is one noisy draw. Its returned points are re-scored here by the logits averaged over ``passes``
    passes, the accuracy a randomized model is reported by (robaudit.attacks.common.mean_logits).
    """
    from pyautoattack import AutoAttack

    if norm not in AUTOATTACK_NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(AUTOATTACK_NORMS)}")
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.bool, device=y.device), []
    with _collected_warnings() as messages, eval_mode(model):
        wrapped = InputGradientOnly(model, on_forward)
        wrapped.stage = "rand"
        adversary = AutoAttack(wrapped, version="rand", norm=AUTOATTACK_NORMS[norm], eps=eps, seed=seed,
                               device=x.device)
        adversary.apgd.eot_iter = passes
        with _global_rng_kept(x.device):
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        x_adv = x_adv.to(x.device)
        still_correct: torch.Tensor = mean_logits(model, x_adv, passes).argmax(1) == y
        if adversarial is not None:
            adversarial.copy_(x_adv)
    return still_correct, messages


def _global_rng_kept(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """AutoAttack reseeds torch's global generator: run it on a fork, so the caller's stream is untouched."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


@contextmanager
def _collected_warnings() -> Iterator[list[str]]:
    """AutoAttack's warnings, collected instead of printed (they become diagnostics evidence)."""
    logger = logging.getLogger(LOGGER_NAME)
    collect, propagate = _Collect(), logger.propagate
    logger.addHandler(collect)
    logger.propagate = False
    try:
        yield collect.messages
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                   stages: tuple[str, ...] = STANDARD, seed: int = 0, batch_size: int = 250,
                   on_forward: Callable[[str, int], None] | None = None,
                   norm: str = "linf",
                   adversarial: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Run ``stages`` in order on (x, y); returns ({stage: (n,) bool robust after it}, AutoAttack's warnings).

    Flags are cumulative: robust after stage s means no stage up to s fooled the point. Each stage
    only sees the points every earlier stage left robust (AutoAttack's own rule). ``adversarial``
    (shaped like x) receives, for each fooled point, the example of the stage that fooled it.
    """
    robust = torch.ones(len(x), dtype=torch.bool, device=y.device)
    results: dict[str, torch.Tensor] = {}
    with _collected_warnings() as messages:
        with eval_mode(model):
            wrapped = InputGradientOnly(model, on_forward)
            for stage in stages:
                todo = robust.nonzero().squeeze(1)
                wrapped.stage = stage
                found = None if adversarial is None else torch.empty_like(x[todo])
                still = run_stage(wrapped, x[todo], y[todo], stage, eps=eps, seed=seed, batch_size=batch_size,
                                  norm=norm, x_adv_out=found)
                robust = robust.clone()
                robust[todo[~still]] = False
                if adversarial is not None and found is not None:
                    adversarial[todo[~still]] = found[~still]
                results[stage] = robust
    return results, messages


class Throttle:
    """Calls ``fn`` at most once every ``seconds`` (used to poll should_stop from inside AutoAttack)."""

    def __init__(self, fn: Callable[[], None], seconds: float = 1.0):
        self.fn, self.seconds, self.last = fn, seconds, 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            self.fn()
