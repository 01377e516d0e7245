"""Run an EvalSpec: the clean pass, the probes, then the schedule of attacks, into the results JSON.

The parts live in their own modules: ``schedule`` (what runs when, the cost estimate, progress),
``batches`` (batch-by-batch work, resume, the store), ``runners`` (one per attack family, listed in
robaudit.evaluation.registry) and ``aggregate`` (rows, bitsets, curves, worst case).

No point is attacked when its outcome is already known:
* every attack sees only clean-correct points;
* PGD freezes points once fooled (robaudit.attacks.pgd), and one long run gives every step count;
* the eps curve is nested: eps_i only attacks points robust at eps_{i-1}, and reuses the ladder's
  PGD run at the primary eps;
* restarts only attack points every earlier restart left robust;
* AutoAttack's stages only see points earlier stages left robust (AutoAttack's own rule).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from robaudit.attacks.common import eval_mode
from robaudit.errors import RobauditError
from robaudit.evaluation import probes
from robaudit.evaluation.accel import prepare_model, unwrap  # accel:
from robaudit.evaluation.aggregate import Aggregate
from robaudit.evaluation.autobatch import default_cache_path, resolve_batch_size  # accel:
from robaudit.evaluation.batches import Batches, data_fingerprint
from robaudit.evaluation.diagnostics import run_diagnostics
from robaudit.evaluation.presets import EvalSpec
from robaudit.evaluation.progress import EvalProgress, Progress
from robaudit.evaluation.results import decode_bits, encode_bits
from robaudit.evaluation.run import Run
from robaudit.evaluation.schedule import CLEAN_UNITS, PROBE_UNITS, estimate_units, plan
from robaudit.evaluation.store import MemoryStore, Record, Store

__all__ = ["EvalProgress", "evaluate"]


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _clean(run: Run) -> None:
    def compute(start: int, end: int) -> Record:
        with torch.no_grad():
            logits = run.model(run.x[start:end])
        correct = (logits.argmax(1) == run.y[start:end]).cpu().numpy()
        return {"correct": encode_bits(correct), "num_classes": int(logits.shape[1])}

    records = run.batches.run("clean", compute, CLEAN_UNITS)
    run.clean = np.concatenate([decode_bits(r["correct"], e - s) for s, e, r in records])
    run.num_classes = records[0][2]["num_classes"]


def _probes(run: Run) -> None:
    eps = run.spec.primary_eps

    def gradients(start: int, end: int) -> Record:
        # Every batch gets a record (no per-point index): the counts of zero and non-finite gradients.
        index = torch.as_tensor(run.points(start, end), device=run.device)
        return probes.gradient_stats(run.model, run.x[index], run.y[index], eps=eps,
                                     generator=run.batches.generator(f"pgd-start/eps={eps:.6g}", start, end))

    totals: dict[str, int] = {}
    for _, _, record in run.batches.run(f"probe-gradients/eps={eps:.6g}", gradients, PROBE_UNITS):
        for key, value in record.items():
            totals[key] = totals.get(key, 0) + int(value)
    start, end = run.batches.bounds[0]
    key = run.batches.key("probe-model", start, end)
    model_probes = run.batches.store.get(key)   # one small record, not a batch: not counted as computed or reused
    if model_probes is None:
        xb, yb = run.x[start:end], run.y[start:end]
        model_probes = {"repeat": probes.repeated_forward(run.model, xb, yb),
                        "output_range": probes.output_range(run.model, xb),
                        "dynamic": probes.dynamic_forward(run.model, xb[:32])}
        run.batches.store.put(key, model_probes)
    run.out.probes = {"gradients": totals, **model_probes}
    if run.spec.precision != "fp32":  # accel: the fp32 reference of the gradient counts, for check C10
        run.out.probes["gradients_fp32"] = _fp32_gradient_counts(run, eps)  # accel:


# accel: the gradient probe again with the unwrapped model in fp32, on the same points and random starts,
# accel: so that check C10 can tell zero gradients caused by reduced precision from the model's own.
def _fp32_gradient_counts(run: Run, eps: float) -> dict[str, int]:  # accel:
    fp32_model = unwrap(run.model)  # accel:

    def gradients(start: int, end: int) -> Record:  # accel:
        index = torch.as_tensor(run.points(start, end), device=run.device)  # accel:
        return probes.gradient_stats(fp32_model, run.x[index], run.y[index], eps=eps,  # accel:
                                     generator=run.batches.generator(f"pgd-start/eps={eps:.6g}",  # accel:
                                                                     start, end))  # accel:

    run.progress.replan(0.0, PROBE_UNITS * run.n)  # accel: work the schedule's estimate does not know of
    totals: dict[str, int] = {}  # accel:
    for _, _, record in run.batches.run(f"probe-gradients-fp32/eps={eps:.6g}", gradients, PROBE_UNITS):  # accel:
        for key, value in record.items():  # accel:
            totals[key] = totals.get(key, 0) + int(value)  # accel:
    return totals  # accel:


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec, *, surrogate: nn.Module | None = None,
             store: Store | None = None, progress: Callable[[EvalProgress], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run ``spec`` on the first ``spec.n_examples`` of (x, y); returns the results JSON (docs/results-schema.md).

    Raises robaudit.errors.Cancelled when ``should_stop()`` turns true (polled between batches and,
    inside AutoAttack, about once a second); everything finished so far is in ``store``.
    """
    if "transfer" in spec.attacks and surrogate is None:
        raise RobauditError("the spec includes a transfer attack but no surrogate model was given")
    if len(x) != len(y) or len(x) == 0:
        raise RobauditError("x and y must be non-empty and of the same length")
    device = _device(model)
    n = min(spec.n_examples, len(x))
    x, y = x[:n].to(device, torch.float32), y[:n].to(device, torch.long)
    model = prepare_model(model, spec, device, sample=x[:2])  # accel: the model itself without levers
    spec = resolve_batch_size(spec, model, x, device, default_cache_path())  # accel: unchanged unless auto
    with eval_mode(model):
        if surrogate is None:
            return _evaluate(model, None, x, y, spec, store, progress, should_stop, device)
        with eval_mode(surrogate):
            return _evaluate(model, surrogate, x, y, spec, store, progress, should_stop, device)


def _evaluate(model: nn.Module, surrogate: nn.Module | None, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec,
              store: Store | None, report: Callable[[EvalProgress], None] | None,
              should_stop: Callable[[], bool] | None, device: torch.device) -> dict[str, Any]:
    progress = Progress(report, should_stop)
    batches = Batches(store if store is not None else MemoryStore(), data_fingerprint(model, x, y, surrogate),
                      len(x), spec.batch_size, spec.seed, device, progress)
    run = Run(model, surrogate, spec, x, y, device, batches, progress, Aggregate())
    progress.total = estimate_units(spec, run.n)

    with progress.stage_of("clean"):
        _clean(run)
    if spec.diagnostics:
        with progress.stage_of("probes"):
            _probes(run)
    for eps, stage in plan(spec):
        with progress.stage_of(stage.name):
            stage.run(run, eps)
    progress.finish()
    timing = {"total_seconds": round(progress.elapsed(), 3),
              "stages": {k: round(v, 3) for k, v in progress.timing.items()},
              "computed_batches": batches.computed, "reused_batches": batches.reused}
    results = run.out.results(spec, run.clean, run.num_classes, timing)
    results["diagnostics"] = run_diagnostics(results, spec.thresholds)
    return results
