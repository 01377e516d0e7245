"""Opt-in speed levers for the attack passes: channels_last, bf16 autocast and torch.compile.

``prepare_model(model, spec, device)`` returns the model itself when no lever is set, so an fp32
evaluation without options runs exactly the code it always did. Otherwise it returns an
``Accelerated`` wrapper that

* converts the model and every input to channels_last (faster convolutions on GPUs with tensor
  cores, and on CPUs with oneDNN);
* runs forward under ``torch.autocast(bfloat16)`` and returns float32 logits, so losses, the
  softmax and the attack's arithmetic stay in fp32; autograd runs the backward of the autocast
  operations in bf16 too;
* compiles that forward with ``torch.compile`` and checks the compilation at once on a sample, so a
  missing toolchain is a one-line RobauditError, not a silent fallback to eager mode.

bf16 keeps 8 significant bits: it can round a small difference of large weights or activations to
exactly zero and so hide input gradients that fp32 computes. That is gradient masking caused by the
evaluation itself; the engine therefore also counts zero gradients with the unwrapped fp32 model
(probes ``gradients_fp32``) and check C10 fails when bf16 loses gradients that fp32 has.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from robaudit.attacks.common import eval_mode
from robaudit.errors import RobauditError
from robaudit.evaluation.presets import EvalSpec

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The backend torch.compile uses; a module attribute so a test can substitute one that fails.
COMPILE_BACKEND: str | Callable[..., Any] = "inductor"


class Accelerated(nn.Module):
    """The model with its inputs in channels_last and/or its forward under bf16 autocast and/or compiled."""

    def __init__(self, model: nn.Module, *, precision: str, channels_last: bool, compile: bool,
                 device_type: str) -> None:
        super().__init__()
        self.model = model
        self.precision, self.channels_last, self.compiled = precision, channels_last, compile
        self.device_type = device_type
        # Part of the state_dict, hence of the store's model fingerprint: a resumed bf16 evaluation never
        # reuses batches computed in fp32, nor the other way round.
        self.register_buffer("accel_options", torch.tensor([precision == "bf16", channels_last, compile]))
        self._forward: Callable[[torch.Tensor], torch.Tensor] = partial(self._run, model)
        if compile:
            # Compiled: a frozen copy whose weights need no gradient. The compiled backward computes a
            # gradient for every input that requires one (eager autograd.grad prunes the weights' away),
            # which made compiled PGD half as fast as eager on a SmallCNN. The copy is held outside the
            # module tree (a tuple) so the state_dict and eval_mode see the user's model only; attacks
            # run in eval mode, so the copy is put there for good.
            frozen = copy.deepcopy(model).requires_grad_(False).eval()
            self._frozen = (frozen,)
            self._forward = torch.compile(partial(self._run, frozen), backend=COMPILE_BACKEND)

    def _run(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "fp32":
            return net(x)  # type: ignore[no-any-return]
        with torch.autocast(self.device_type, dtype=PRECISIONS[self.precision]):
            logits = net(x)
        return logits.float()  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside an Accelerated wrapper (the model itself otherwise)."""
    return model.model if isinstance(model, Accelerated) else model


def options(model: nn.Module) -> dict[str, Any]:
    """What a (possibly wrapped) model runs with: the part of the autobatch cache key that is not the weights."""
    if isinstance(model, Accelerated):
        return {"precision": model.precision, "channels_last": model.channels_last, "compile": model.compiled}
    return {"precision": "fp32", "channels_last": False, "compile": False}


def _check_compiles(model: Accelerated, sample: torch.Tensor) -> None:
    """One forward and input-gradient pass, as the attacks make them: compilation happens (and fails) here."""
    x = sample[:2].detach().clone().requires_grad_(True)
    try:  # in eval mode, as the attacks run it (a mode change would trigger a recompilation)
        with eval_mode(model), torch.enable_grad():
            torch.autograd.grad(model(x).float().sum(), x)
        with eval_mode(model), torch.no_grad():
            model(sample[:2])
    except Exception as exc:  # the compiler's errors have many types and long multi-line texts
        root: BaseException = exc
        # dynamo wraps the backend's own error (inner_exception, or the cause); that one says what is missing
        while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
            root = inner
        first = next((line.strip() for line in str(root).splitlines() if line.strip()), "")
        raise RobauditError(f"torch.compile failed ({type(root).__name__}: {first[:200]}); "
                            "run without --compile or install a working C++ compiler (CPU) / Triton (GPU)") from exc


def prepare_model(model: nn.Module, spec: EvalSpec, device: torch.device | str,
                  sample: torch.Tensor | None = None) -> nn.Module:
    """The model to attack with under ``spec``'s levers; the model itself when none is set.

    ``sample`` (a few inputs) is needed with ``spec.compile``: the compilation is tried on it at once.
    channels_last converts ``model``'s parameters in place (values unchanged; a memory-layout change only).
    """
    if spec.precision not in PRECISIONS:
        raise RobauditError(f"unknown precision {spec.precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if spec.precision == "fp32" and not spec.channels_last and not spec.compile:
        return model
    device_type = torch.device(device).type
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    wrapped = Accelerated(model, precision=spec.precision, channels_last=spec.channels_last,
                          compile=spec.compile, device_type=device_type).to(device)
    if spec.compile:
        if sample is None:
            raise RobauditError("compile needs a sample input to check the compilation on")
        _check_compiles(wrapped, sample.to(device))
    return wrapped


__all__ = ["PRECISIONS", "Accelerated", "options", "prepare_model", "unwrap"]
