"""Run an EvalSpec: the clean pass, the probes, then the schedule of attacks, into the results JSON.

An evaluation is one or more shards (ranges of whole batches, robaudit.evaluation.shards) and one
merge. ``evaluate_shard`` computes its batches into the store; ``merge`` runs the very same passes
over every batch with computing switched off, reading each batch back, and builds the results:
summary rows, bitsets, curves, the worst case and the diagnostics. ``evaluate`` is one shard over
all points followed by the merge, so the one-process run and a sharded run share one code path.

The parts live in their own modules: ``schedule`` (what runs when, the cost estimate), ``progress``,
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

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from robaudit.attacks.common import eval_mode
from robaudit.errors import RobauditError
from robaudit.evaluation import gallery, probes, provenance
from robaudit.evaluation.accel import prepare_model, unwrap  # accel:
from robaudit.evaluation.aggregate import Aggregate
from robaudit.evaluation.autobatch import default_cache_path, resolve_batch_size  # accel:
from robaudit.evaluation.batches import Batches, data_fingerprint
from robaudit.evaluation.diagnostics import clean_check_of, forward_is_random, run_diagnostics
from robaudit.evaluation.intervals import add_intervals
from robaudit.evaluation.presets import EvalSpec
from robaudit.evaluation.progress import EvalProgress, Progress
from robaudit.evaluation.registry import RANDOMIZED_ATTACKS
from robaudit.evaluation.results import decode_bits, encode_bits
from robaudit.evaluation.run import Inputs, Run
from robaudit.evaluation.runners.randomized import CLEAN_EOT
from robaudit.evaluation.schedule import CLEAN_UNITS, PROBE_UNITS, estimate_units, plan, randomness_units
from robaudit.evaluation.shards import Range, ShardOutcome, merged_timing
from robaudit.evaluation.store import MemoryStore, Record, Store

__all__ = ["EvalProgress", "Prepared", "evaluate", "evaluate_shard", "merge", "prepare"]


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _clean(run: Run) -> None:
    keep = run.spec.gallery_examples

    def compute(start: int, end: int) -> Record:
        with torch.no_grad():
            logits = run.model(run.x[start:end])
        correct = (logits.argmax(1) == run.y[start:end]).cpu().numpy()
        record = {"correct": encode_bits(correct), "num_classes": int(logits.shape[1])}
        if start < keep:   # the gallery's clean images and labels
            index = torch.arange(start, min(end, keep), device=run.device)
            record["gallery"] = gallery.clean_record(index, run.x[index], run.y[index])
        return record

    records = run.batches.run("clean", compute, CLEAN_UNITS, gallery=keep)
    run.clean = np.zeros(run.n, dtype=bool)   # points outside this shard stay out of every attack
    for start, end, record in records:
        run.clean[start:end] = decode_bits(record["correct"], end - start)
        if "gallery" in record:
            run.out.gallery_clean.append(record["gallery"])
    run.num_classes = records[0][2]["num_classes"]


def _gradient_counts(run: Run, job: str, model: Callable[[], nn.Module]) -> dict[str, int]:
    """Zero and non-finite input-gradient counts over every batch: each batch stores its counts (no per-point
    index), and the totals are their sum. ``model`` is called only when a batch is computed (never in the merge)."""
    eps = run.spec.primary_eps

    def gradients(start: int, end: int) -> Record:
        index = torch.as_tensor(run.points(start, end), device=run.device)
        return probes.gradient_stats(model(), run.x[index], run.y[index], eps=eps, norm=run.norm,
                                     generator=run.streams(f"pgd-start/eps={eps:.6g}", index))

    totals: dict[str, int] = {}
    for _, _, record in run.batches.run(run.job(f"{job}/eps={eps:.6g}"), gradients, PROBE_UNITS):
        for key, value in record.items():
            totals[key] = totals.get(key, 0) + int(value)
    return totals


def _probes(run: Run) -> None:
    totals = _gradient_counts(run, "probe-gradients", lambda: run.model)
    fp32_totals = None
    if run.spec.precision != "fp32":
        # The same probe with the unwrapped model in fp32, on the same points and random starts, so that
        # check C10 can tell zero gradients caused by reduced precision from the model's own. Work the
        # schedule's estimate does not know of.
        run.progress.replan(0.0, PROBE_UNITS * (run.batches.last - run.batches.first))
        fp32_totals = _gradient_counts(run, "probe-gradients-fp32", lambda: unwrap(run.model))
    repeat = _repeat_probe(run)
    run.randomized = forward_is_random(repeat, run.spec.thresholds.c11_logit_tolerance)
    # The other model probes run once, on the evaluation's first batch: by the shard that holds it.
    start, end = run.batches.bounds[0]
    if start != 0:
        return

    def model_probes() -> Record:
        xb = run.x[start:end]
        return {"output_range": probes.output_range(run.model, xb),
                "dynamic": probes.dynamic_forward(run.model, xb[:32])}

    found = run.batches.get_or_compute(run.batches.key("probe-model", start, end), model_probes)
    run.out.probes = {"gradients": totals, "repeat": repeat, **found}
    if fp32_totals is not None:
        run.out.probes["gradients_fp32"] = fp32_totals


def _repeat_probe(run: Run) -> Record:
    """The repeated-forward probe on the evaluation's first batch (check C11). Every shard reads it, since
    a random forward pass adds attacks to every shard; the first to need it computes it for all."""
    end = min(run.spec.batch_size, run.n)

    def repeat() -> Record:
        return probes.repeated_forward(run.model, run.x[:end], run.y[:end])

    return run.batches.get_or_compute(run.batches.key("probe-repeat", 0, end), repeat)


@dataclass(frozen=True)
class Prepared:
    """The evaluation's points on the model's device, how many, and the fingerprint its stored batches carry."""

    inputs: Inputs
    spec: EvalSpec       # with the batch size resolved when it was "auto"
    n: int
    fingerprint: str
    device: torch.device
    points_sha256: str = ""


def prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec,
            surrogate: nn.Module | None = None, *, resolve_batch_size_here: bool = True) -> Prepared:
    """The first ``spec.n_examples`` of (x, y) on the model's device, the model with the spec's speed levers
    (robaudit.evaluation.accel), the batch size, and the fingerprint of model, data and surrogate."""
    if "transfer" in spec.attacks and surrogate is None:
        raise RobauditError("the spec includes a transfer attack but no surrogate model was given")
    if len(x) != len(y) or len(x) == 0:
        raise RobauditError("x and y must be non-empty and of the same length")
    device = _device(model)
    n = min(spec.n_examples, len(x))
    x, y = x[:n].to(device, torch.float32), y[:n].to(device, torch.long)
    model = prepare_model(model, spec, device, sample=x[:2])   # the model itself when no lever is asked for
    if resolve_batch_size_here:   # a shard of a planned evaluation keeps the planned size instead
        spec = resolve_batch_size(spec, model, x, device, default_cache_path())   # unchanged unless auto
    return Prepared(Inputs(model, x, y, surrogate), spec, n, data_fingerprint(model, x, y, surrogate), device,
                    provenance.points_sha256(x, y))


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec, *, surrogate: nn.Module | None = None,
             store: Store | None = None, progress: Callable[[EvalProgress], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             on_gallery: Callable[[gallery.Gallery], None] | None = None) -> dict[str, Any]:
    """Run ``spec`` on the first ``spec.n_examples`` of (x, y); returns the results JSON (docs/results-schema.md).

    One shard over every point, then the merge. Raises robaudit.errors.Cancelled when
    ``should_stop()`` turns true (polled between batches and, inside AutoAttack, about once a
    second); everything finished so far is in ``store``. ``on_gallery``: see ``merge``.
    """
    store = store if store is not None else MemoryStore()
    prepared = prepare(model, x, y, spec, surrogate)
    shard = evaluate_shard(prepared, store=store, progress=progress, should_stop=should_stop)
    return merge(prepared.spec, prepared.n, prepared.fingerprint, store, [shard], on_gallery=on_gallery)


def evaluate_shard(prepared: Prepared, *, shard: Range | None = None, store: Store,
                   progress: Callable[[EvalProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> ShardOutcome:
    """Compute every batch of ``shard`` (default: all points) into ``store``; the merge builds the results."""
    inputs, spec = prepared.inputs, prepared.spec
    with eval_mode(inputs.model):
        if inputs.surrogate is None:
            return _shard(prepared, spec, shard, store, progress, should_stop)
        with eval_mode(inputs.surrogate):
            return _shard(prepared, spec, shard, store, progress, should_stop)


def _shard(prepared: Prepared, spec: EvalSpec, shard: Range | None, store: Store,
           report: Callable[[EvalProgress], None] | None, should_stop: Callable[[], bool] | None) -> ShardOutcome:
    started_at = provenance.now()
    progress = Progress(report, should_stop)
    batches = Batches(store, prepared.fingerprint, prepared.n, spec.batch_size, spec.seed, progress, shard=shard)
    run = Run(prepared.inputs, spec, prepared.n, prepared.device, batches, progress, Aggregate(norm=spec.norm))
    progress.total = estimate_units(spec, batches.first, batches.last)
    _passes(run)
    progress.finish()
    record = {"software": provenance.software(), "machine": provenance.machine(prepared.device, spec.precision),
              "points_sha256": prepared.points_sha256, "started_at": started_at, "finished_at": provenance.now()}
    return ShardOutcome(batches.first, batches.last, prepared.fingerprint, round(progress.elapsed(), 3),
                        {k: round(v, 3) for k, v in progress.timing.items()}, batches.computed, batches.reused,
                        provenance=record)


def merge(spec: EvalSpec, n: int, fingerprint: str, store: Store, shards: list[ShardOutcome], *,
          on_gallery: Callable[[gallery.Gallery], None] | None = None) -> dict[str, Any]:
    """The results JSON of an evaluation whose shards have all stored their batches.

    With ``spec.gallery_examples`` > 0 the results get the gallery's index (``gallery``), and
    ``on_gallery`` (if given) receives the gallery itself, images and all (robaudit.evaluation.gallery).

    Runs every pass again over all batches with computing switched off (no model, no data): rows,
    bitsets, curves (loss traces become point-weighted means over all batches), the worst case and
    the diagnostics all come from the stored per-point records, so they are the same whatever the
    shard count. A batch no shard stored raises robaudit.evaluation.batches.MissingRecord.
    """
    covered = sorted((s.start, s.end) for s in shards)
    if not covered or covered[0][0] != 0 or covered[-1][1] != n or \
            any(a[1] != b[0] for a, b in zip(covered, covered[1:], strict=False)):
        raise RobauditError(f"the shards {covered} do not cover the {n} points exactly once")
    if any(s.fingerprint != fingerprint for s in shards):
        raise RobauditError("a shard evaluated a different model or different test points than the others")
    started = time.monotonic()
    progress = Progress()
    batches = Batches(store, fingerprint, n, spec.batch_size, spec.seed, progress, compute=False)
    run = Run(None, spec, n, torch.device("cpu"), batches, progress, Aggregate(norm=spec.norm))
    _passes(run)
    results = run.out.results(spec, run.clean, run.num_classes, {})
    add_intervals(results)
    check = clean_check_of(results)
    results["clean_check"] = check
    results["warnings"] = [check["message"]] if check is not None and check["suspect"] else []
    randomized = _randomized_summary(run)
    if randomized is not None:
        results["randomized"] = randomized
    if run.randomized:
        # Each of these scored its iterates by one forward pass: one noisy draw of a randomized model.
        for row in results["summary"]:
            if row["attack"] not in RANDOMIZED_ATTACKS:
                row["single_pass"] = True
    results["diagnostics"] = run_diagnostics(results, spec.thresholds)
    results["timing"] = merged_timing(shards, time.monotonic() - started)
    results["provenance"] = provenance.merge_provenance(dataset=spec.dataset, n=n, seed=spec.seed,
                                                        shards=[s.provenance or {} for s in shards])
    if spec.gallery_examples > 0:
        found = gallery.build(spec.dataset, min(spec.gallery_examples, n), spec.primary_eps, run.num_classes,
                              run.out.gallery_clean, run.out.captures)
        if found is not None:
            gallery.mark_missed(found, results)
            if on_gallery is not None:
                on_gallery(found)
        results["gallery"] = gallery.index_of(found, min(spec.gallery_examples, n))
    return results


def _randomized_summary(run: Run) -> dict[str, Any] | None:
    """How a randomized model was measured: its clean accuracy over passes and the EOT attacks' rows."""
    clean = run.out.probes.get(CLEAN_EOT)
    if not run.randomized and clean is None:
        return None
    rows = [r for r in run.out.rows if r["attack"] in RANDOMIZED_ATTACKS]
    return {"detected": run.randomized, "passes": run.spec.eot_draws,
            "clean_accuracy": clean["correct"] / clean["n"] if clean else None,
            "attacks": [{"attack": r["attack"], "eps": r["eps"], "robust_accuracy": r["robust_accuracy"],
                         "n": r["n"]} for r in rows],
            "auto_eot": run.spec.auto_eot}


def _passes(run: Run) -> None:
    """The clean pass, the probes, then the schedule of attacks: what a shard computes and the merge reads."""
    with run.progress.stage_of("clean"):
        _clean(run)
    if run.spec.diagnostics:
        with run.progress.stage_of("probes"):
            _probes(run)
    if run.randomized:
        run.progress.replan(0.0, randomness_units(run.spec, run.batches.first, run.batches.last))
    for eps, stage in plan(run.spec, randomized=run.randomized):
        with run.progress.stage_of(stage.name):
            stage.run(run, eps)
