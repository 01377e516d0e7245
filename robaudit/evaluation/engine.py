"""Run an EvalSpec batch by batch: the attack ladder, the curves, the per-sample store, the probes.

Every unit of work is a *job* (one attack configuration) over one *batch* of test points (points
[start, end) of the first n_examples). A job's result for a batch is stored under
``<fingerprint>/<job key>/<start>-<end>``; the fingerprint hashes the model's weights, the test
points and the surrogate, so a store can be reused across presets (a quick run's PGD-20 batches
serve a later audit) but never across models. Random starts come from a generator seeded by
(seed, job, batch), so a resumed run draws exactly what an uninterrupted one would.

No point is attacked when its outcome is already known:
* every attack sees only clean-correct points;
* PGD freezes points once fooled (robaudit.attacks.pgd), and one long run gives every step count;
* the eps curve is nested: eps_i only attacks points robust at eps_{i-1}, and reuses the ladder's
  PGD run at the primary eps;
* restarts only attack points every earlier restart left robust;
* AutoAttack's stages only see points earlier stages left robust (AutoAttack's own rule).
"""
from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robaudit.attacks import autoattack as aa
from robaudit.attacks.common import default_alpha, eval_mode, make_generator
from robaudit.attacks.noise import random_noise
from robaudit.attacks.pgd import pgd
from robaudit.attacks.transfer import transfer
from robaudit.errors import Cancelled, RobauditError
from robaudit.evaluation import probes
from robaudit.evaluation.diagnostics import run_diagnostics
from robaudit.evaluation.presets import AUTOATTACK_SINGLE, STEPS_CURVE_GRID, EvalSpec
from robaudit.evaluation.results import RESULTS_SCHEMA_VERSION, accuracy, bit_key, decode_bits, encode_bits, worst_case
from robaudit.evaluation.store import MemoryStore

RECORD_VERSION = 1           # bump when a stored batch record changes meaning
# For the progress bar and ETA only: work units (~ one forward+backward of one image) per point
# entering each AutoAttack stage, and per image in one forward call during that stage.
AA_STAGE_UNITS = {"apgd-ce": 100.0, "apgd-t": 900.0, "fab-t": 1350.0, "square": 2000.0}
AA_FORWARD_UNITS = {"apgd-ce": 1.0, "apgd-t": 1.0, "fab-t": 0.7, "square": 0.4}
ROBUST_GUESS = 0.5           # share of points expected to reach each AutoAttack stage, before we know
AA_POLL_SECONDS = 1.0        # should_stop is polled this often from inside AutoAttack (it may query a database)


@dataclass
class EvalProgress:
    done: float          # work units finished (about one forward+backward of one image each)
    total: float         # estimated work units in the whole evaluation
    stage: str
    eta_seconds: float | None


def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    parts = [type(model).__name__.encode()]
    for name, tensor in model.state_dict().items():
        parts += [name.encode(), tensor.detach().cpu().contiguous().numpy().tobytes()]
    return _sha(*parts)[:20]


class _StateMirror:
    """Copies AutoAttack's state files into a store that is not a directory (e.g. the service's SQL one)."""

    def __init__(self, store, prefix: str, state_dir: Path):
        self.store, self.prefix, self.state_dir = store, prefix, state_dir
        self.seen: dict[str, float] = {}

    def restore(self, tag: str) -> None:
        index = self.store.get(f"{self.prefix}/aa-state-index/{tag}") or {}
        for name in index.get("files", []):
            record = self.store.get(f"{self.prefix}/aa-state/{name}")
            if record is not None and not (self.state_dir / name).exists():
                (self.state_dir / name).write_text(record["text"])

    def sync(self, tag: str) -> None:
        names = []
        for path in sorted(self.state_dir.glob(f"{tag}-*.json")):
            names.append(path.name)
            mtime = path.stat().st_mtime
            if self.seen.get(path.name) != mtime:
                self.store.put(f"{self.prefix}/aa-state/{path.name}", {"text": path.read_text()})
                self.seen[path.name] = mtime
        if names:
            self.store.put(f"{self.prefix}/aa-state-index/{tag}", {"files": names})


class Evaluation:
    def __init__(self, model, x, y, spec: EvalSpec, *, surrogate=None, store=None, progress=None,
                 should_stop=None):
        if any(a == "transfer" for a in spec.attacks) and surrogate is None:
            raise RobauditError("the spec includes a transfer attack but no surrogate model was given")
        if len(x) != len(y) or len(x) == 0:
            raise RobauditError("x and y must be non-empty and of the same length")
        self.model, self.surrogate, self.spec = model, surrogate, spec
        try:
            self.device = next(model.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")
        n = min(spec.n_examples, len(x))
        self.x = x[:n].to(self.device, torch.float32)
        self.y = y[:n].to(self.device, torch.long)
        self.n = n
        self.store = store if store is not None else MemoryStore()
        self.progress_fn, self.should_stop = progress, should_stop
        self.batches = [(s, min(s + spec.batch_size, n)) for s in range(0, n, spec.batch_size)]
        self.notes: list[str] = []
        self.rows: list[dict] = []
        self.bits: dict[str, tuple[float, np.ndarray]] = {}   # full-n "stayed correct" bitsets
        self.subset_bits: dict[str, np.ndarray] = {}
        self.curves = {"eps": [], "steps": [], "restarts": [], "loss": []}
        self.attack_warnings: list[str] = []
        self.probe_results: dict = {}
        self.pgd_runs: dict[tuple[float, str], dict] = {}
        self.timing: dict[str, float] = {}
        self.computed = self.reused = 0
        self.done_units = 0.0
        self.total_units = 1.0
        self.started = time.monotonic()
        self.stage = "starting"

    # ------------------------------------------------------------------ plumbing
    def _poll(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"evaluation stopped during {self.stage}; finished batches are stored")

    def _report(self) -> None:
        if self.progress_fn is None:
            return
        elapsed = time.monotonic() - self.started
        done = min(self.done_units, self.total_units)
        eta = elapsed / done * (self.total_units - done) if done > 0 and self.computed else None
        self.progress_fn(EvalProgress(done=done, total=self.total_units, stage=self.stage, eta_seconds=eta))

    def _advance(self, units: float) -> None:
        self.done_units += units
        self._report()

    def _key(self, job: str, start: int, end: int) -> str:
        return f"{self.fingerprint}/{job}/{start}-{end}"

    def _generator(self, stream: str, start: int, end: int) -> torch.Generator:
        """Random draws per (seed, stream, batch). Streams name what is drawn, not the job: PGD runs of
        different lengths or step sizes at one eps share their random starts, which is what makes a
        k-step run equal the first k steps of a longer one."""
        return make_generator(self.spec.seed, stream, start, end, device=self.device)

    def _batched(self, job: str, compute: Callable[[int, int], dict], units_per_point: float,
                 limit: int | None = None) -> list[tuple[int, int, dict]]:
        """Run ``compute`` per batch unless the store already has that batch; poll should_stop between."""
        out = []
        for start, end in self.batches:
            end = end if limit is None else min(end, limit)
            if start >= end:
                break
            self._poll()
            key = self._key(job, start, end)
            record = self.store.get(key)
            if record is None:
                record = compute(start, end)
                self.store.put(key, record)
                self.computed += 1
            else:
                self.reused += 1
            out.append((start, end, record))
            self._advance(units_per_point * (end - start))
        return out

    def _stage(self, name: str):
        evaluation = self

        class _Timer:
            def __enter__(self):
                evaluation.stage = name
                self.t0 = time.monotonic()
                evaluation._report()

            def __exit__(self, *exc):
                evaluation.timing[name] = evaluation.timing.get(name, 0.0) + time.monotonic() - self.t0
                return False
        return _Timer()

    # ------------------------------------------------------------------ running
    def run(self) -> dict:
        with eval_mode(self.model):
            if self.surrogate is not None:
                with eval_mode(self.surrogate):
                    return self._run_all()
            return self._run_all()

    def _run_all(self) -> dict:
        spec = self.spec
        parts = [RECORD_VERSION.to_bytes(2, "little"), model_fingerprint(self.model).encode(),
                 self.x.cpu().numpy().tobytes(), self.y.cpu().numpy().tobytes()]
        if self.surrogate is not None:
            parts.append(model_fingerprint(self.surrogate).encode())
        self.fingerprint = _sha(*parts)[:24]
        self.total_units = self._estimate_units()

        with self._stage("clean"):
            self._clean()
        if spec.diagnostics:
            with self._stage("probes"):
                self._probes()
        for eps in spec.eps:
            primary = eps == spec.primary_eps
            for attack in ("fgsm", "rs-fgsm"):
                if attack in spec.attacks:
                    with self._stage(f"{attack} eps={eps:g}"):
                        self._fgsm(eps, attack)
            for loss, attack in (("ce", "pgd"), ("cw", "cw")):
                if attack in spec.attacks:
                    with self._stage(f"{attack}-{max(spec.steps)} eps={eps:g}"):
                        self._long_run(eps, attack, loss)
            if primary and spec.restarts > 1 and "pgd" in spec.attacks:
                with self._stage(f"restarts eps={eps:g}"):
                    self._restarts(eps)
            if primary and spec.eps_curve:
                with self._stage("eps curve"):
                    self._eps_curve()
            if primary and spec.large_eps:
                with self._stage("large eps"):
                    self._large_eps()
            if "noise" in spec.attacks:
                with self._stage(f"noise eps={eps:g}"):
                    self._noise(eps)
            if "transfer" in spec.attacks:
                with self._stage(f"transfer eps={eps:g}"):
                    self._transfer(eps)
            for attack in AUTOATTACK_SINGLE:
                if attack in spec.attacks:
                    with self._stage(f"{attack} eps={eps:g}"):
                        self._autoattack(eps, (attack,), single=True)
            if "autoattack" in spec.attacks:
                with self._stage(f"autoattack eps={eps:g}"):
                    self._autoattack(eps, aa.STANDARD, single=False)
        self.stage = "done"
        self.done_units = self.total_units
        self._report()
        return self._results()

    def _estimate_units(self) -> float:
        spec, n = self.spec, self.n
        units = 0.3 * n + (4.0 * n if spec.diagnostics else 0.0)
        per_eps = 0.0
        per_eps += 2.0 * n * sum(a in spec.attacks for a in ("fgsm", "rs-fgsm"))
        per_eps += (max(spec.steps) + 1) * n * sum(a in spec.attacks for a in ("pgd", "cw"))
        per_eps += 0.4 * spec.noise_draws * n * 0.5 if "noise" in spec.attacks else 0.0
        per_eps += (spec.transfer_steps + 1) * n if "transfer" in spec.attacks else 0.0
        m = n if spec.autoattack_examples is None else min(n, spec.autoattack_examples)
        per_eps += ROBUST_GUESS * m * sum(AA_STAGE_UNITS.values()) * ("autoattack" in spec.attacks)
        per_eps += ROBUST_GUESS * m * sum(AA_STAGE_UNITS[a] for a in AUTOATTACK_SINGLE if a in spec.attacks)
        units += per_eps * len(spec.eps)
        units += (spec.restarts - 1) * (spec.restart_steps + 1) * n * 0.5
        units += len(spec.eps_curve) * (spec.eps_curve_steps + 1) * n * 0.5
        units += len(spec.large_eps) * (spec.large_eps_steps + 1) * min(n, spec.large_eps_examples) * 0.3
        return max(units, 1.0)

    # ------------------------------------------------------------------ jobs
    def _clean(self) -> None:
        def compute(start, end):
            with torch.no_grad():
                logits = self.model(self.x[start:end])
            correct = (logits.argmax(1) == self.y[start:end]).cpu().numpy()
            return {"correct": encode_bits(correct), "num_classes": int(logits.shape[1])}

        records = self._batched("clean", compute, 0.3)
        self.clean = np.concatenate([decode_bits(r["correct"], e - s) for s, e, r in records])
        self.num_classes = records[0][2]["num_classes"]

    def _attack_points(self, start: int, end: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Indices (absolute) in [start, end) that are clean-correct and, if given, in ``mask``."""
        keep = self.clean[start:end].copy()
        if mask is not None:
            keep &= mask[start:end]
        return start + np.nonzero(keep)[0]

    def _probes(self) -> None:
        eps = self.spec.primary_eps

        def compute(start, end):
            index = torch.as_tensor(self._attack_points(start, end), device=self.device)
            return probes.gradient_stats(self.model, self.x[index], self.y[index], eps=eps,
                                         generator=self._generator(f"pgd-start/eps={eps:.6g}", start, end))

        records = self._batched(f"probe-gradients/eps={eps:.6g}", compute, 4.0)
        totals: dict[str, int] = {}
        for _, _, record in records:
            for key, value in record.items():
                totals[key] = totals.get(key, 0) + int(value)
        first = self.batches[0]
        key = self._key("probe-model", *first)
        record = self.store.get(key)
        if record is None:
            xb, yb = self.x[first[0]:first[1]], self.y[first[0]:first[1]]
            record = {"repeat": probes.repeated_forward(self.model, xb, yb),
                      "output_range": probes.output_range(self.model, xb),
                      "dynamic": probes.dynamic_forward(self.model, xb[:32])}
            self.store.put(key, record)
        self.probe_results = {"gradients": totals, **record}

    def _add_row(self, attack: str, eps: float, robust: np.ndarray, *, steps=None, restarts=1, alpha=None,
                 bits_key: str | None = None, subset: int | None = None, **extra) -> dict:
        key = bits_key or bit_key(attack, eps, steps, restarts)
        row = {"attack": attack, "eps": eps, "steps": steps, "restarts": restarts, "alpha": alpha,
               "robust_accuracy": accuracy(robust), "n": int(len(robust)), "key": key, **extra}
        if subset is not None:
            row["subset"] = f"first {subset} test points"
        self.rows.append(row)
        if subset is None:
            self.bits[key] = (eps, robust)
        else:
            self.subset_bits[key] = robust
        return row

    def _per_point(self, records, field: str, fill: int, index_field: str = "index") -> np.ndarray:
        values = np.full(self.n, fill, dtype=np.int64)
        for _, _, record in records:
            if record[index_field]:
                values[np.asarray(record[index_field])] = np.asarray(record[field], dtype=np.int64)
        return values

    def _fgsm(self, eps: float, attack: str) -> None:
        random_start = attack == "rs-fgsm"
        job = f"fgsm/eps={eps:.6g}/rs={int(random_start)}"

        def compute(start, end):
            index = self._attack_points(start, end)
            if len(index) == 0:
                return {"index": [], "first": []}
            i = torch.as_tensor(index, device=self.device)
            result = pgd(self.model, self.x[i], self.y[i], eps=eps, steps=1, alpha=eps,
                         random_start=random_start, generator=self._generator(f"fgsm-start/eps={eps:.6g}", start, end))
            return {"index": index.tolist(), "first": result.first_fooled[0].tolist()}

        first = self._per_point(self._batched(job, compute, 2.0), "first", -1)
        fooled = (first >= 0) & (first <= 1)
        self._add_row(attack, eps, self.clean & ~fooled, steps=1, alpha=eps, loss="ce", random_start=random_start)

    def run_alpha(self, eps: float) -> float:
        steps = max(self.spec.steps)
        return self.spec.alpha if self.spec.alpha is not None else default_alpha(eps, steps)

    def _long_run(self, eps: float, attack: str, loss: str) -> None:
        spec = self.spec
        steps, alpha = max(spec.steps), self.run_alpha(eps)
        kappa = spec.kappa if loss == "cw" else None
        job = f"pgd-run/eps={eps:.6g}/loss={loss}/steps={steps}/alpha={alpha:.6g}/kappa={spec.kappa:g}/rs=1"

        def compute(start, end):
            index = self._attack_points(start, end)
            if len(index) == 0:
                return {"index": [], "first": [], "rescored": "", "trace": None}
            i = torch.as_tensor(index, device=self.device)
            result = pgd(self.model, self.x[i], self.y[i], eps=eps, steps=steps, alpha=alpha, loss=loss,
                         kappa=spec.kappa, random_start=True,
                         generator=self._generator(f"pgd-start/eps={eps:.6g}", start, end),
                         trace=True)
            t = result.trace
            return {"index": index.tolist(), "first": result.first_fooled[0].tolist(),
                    "rescored": encode_bits(result.final_correct.cpu().numpy()),
                    "trace": {"loss_sum": t.loss_sum.tolist(), "robust_loss_sum": t.robust_loss_sum.tolist(),
                              "n_points": t.n_points, "n_robust": t.n_robust, "rising": t.rising,
                              "moves": t.moves,
                              "late_progress": [None if v != v else round(float(v), 5)
                                                for v in t.late_progress.tolist()]}}

        records = self._batched(job, compute, steps + 1.0)
        first = self._per_point(records, "first", -1)
        self.pgd_runs[(eps, loss)] = {"first": first, "steps": steps, "alpha": alpha}

        def robust_at(k):
            return self.clean & ~((first >= 0) & (first <= k))

        for k in spec.steps:
            self._add_row(attack, eps, robust_at(k), steps=k, alpha=alpha, loss=loss, random_start=True,
                          kappa=kappa, **({"note": f"read off the {steps}-step run"} if k < steps else {}))
        points = []
        for k in sorted({*(g for g in STEPS_CURVE_GRID if g <= steps), steps}):
            key = bit_key(f"{attack}-steps-curve", eps, k)
            robust = robust_at(k)
            self.bits[key] = (eps, robust)
            points.append({"steps": k, "robust_accuracy": accuracy(robust), "key": key})
        self.curves["steps"].append({"attack": attack, "loss": loss, "eps": eps, "alpha": alpha,
                                     "max_steps": steps, "steps_to_cross_ball": math.ceil(eps / alpha - 1e-9),
                                     "points": points})
        if steps >= 20 and 20 * alpha < eps:
            self.notes.append(f"{attack} at eps={eps:g}: alpha={alpha:g} cannot cross the eps-ball within 20 "
                              "steps (20*alpha < eps); its steps curve measures the step size, not the defense")
        self._collect_trace(attack, loss, eps, steps, alpha, records, first)

    def _collect_trace(self, attack, loss, eps, steps, alpha, records, first) -> None:
        loss_sum = np.zeros(steps + 1)
        robust_sum = np.zeros(steps + 1)
        rising = np.zeros(steps, dtype=np.int64)
        moves = np.zeros(steps, dtype=np.int64)
        n_points = n_robust = silent = 0
        late: list[float] = []
        for start, end, record in records:
            trace = record["trace"]
            if not trace:
                continue
            loss_sum += np.asarray(trace["loss_sum"])
            robust_sum += np.asarray(trace["robust_loss_sum"])
            n_points += trace["n_points"]
            n_robust += trace["n_robust"]
            rising += np.asarray(trace["rising"], dtype=np.int64)
            moves += np.asarray(trace["moves"], dtype=np.int64)
            late += [v for v in trace["late_progress"] if v is not None]
            index = np.asarray(record["index"])
            rescored = decode_bits(record["rescored"], len(index))
            batch_first = first[index]
            silent += int(((batch_first <= steps) & rescored).sum())
        fooled = int(((first >= 0) & (first <= steps)).sum())
        self.curves["loss"].append({
            "attack": attack, "loss": loss, "eps": eps, "steps": steps, "alpha": alpha,
            "mean": [round(v / n_points, 6) for v in loss_sum] if n_points else [],
            "mean_robust": [round(v / n_robust, 6) for v in robust_sum] if n_robust else [],
            "n": n_points, "n_robust": n_robust, "rising_steps": rising.tolist(), "moving_steps": moves.tolist(),
            "late_progress": late, "fooled": fooled, "silent_success": silent})

    def _restarts(self, eps: float) -> None:
        spec = self.spec
        base = self.pgd_runs[(eps, "ce")]
        k, alpha, extra = spec.restart_steps, base["alpha"], spec.restarts - 1
        base_fooled = (base["first"] >= 0) & (base["first"] <= k)
        job = (f"restarts/eps={eps:.6g}/steps={k}/alpha={alpha:.6g}/extra={extra}"
               f"/after=pgd-run-{base['steps']}")

        def compute(start, end):
            index = self._attack_points(start, end, ~base_fooled)
            if len(index) == 0:
                return {"index": [], "first": []}
            i = torch.as_tensor(index, device=self.device)
            result = pgd(self.model, self.x[i], self.y[i], eps=eps, steps=k, alpha=alpha, restarts=extra,
                         random_start=True, generator=self._generator(f"pgd-restarts/eps={eps:.6g}", start, end))
            return {"index": index.tolist(), "first": result.first_fooled.T.tolist()}

        records = self._batched(job, compute, (k + 1.0) * extra * 0.5)
        first = np.full((self.n, extra), -1, dtype=np.int64)
        for _, _, record in records:
            if record["index"]:
                first[np.asarray(record["index"])] = np.asarray(record["first"], dtype=np.int64)
        robust = self.clean & ~base_fooled
        points = [{"restarts": 1, "robust_accuracy": accuracy(robust), "key": bit_key("pgd", eps, k, 1)}]
        if bit_key("pgd", eps, k, 1) not in self.bits:
            self.bits[bit_key("pgd", eps, k, 1)] = (eps, robust)
        for r in range(extra):
            robust = robust & ~((first[:, r] >= 0) & (first[:, r] <= k))
            key = bit_key("pgd", eps, k, r + 2)
            self.bits[key] = (eps, robust)
            points.append({"restarts": r + 2, "robust_accuracy": accuracy(robust), "key": key})
        self._add_row("pgd", eps, robust, steps=k, restarts=spec.restarts, alpha=alpha, loss="ce",
                      random_start=True, bits_key=bit_key("pgd", eps, k, spec.restarts),
                      note="worst case per point over restarts; restarts after the first only attack "
                           "points still robust")
        self.curves["restarts"].append({"attack": "pgd", "eps": eps, "steps": k, "alpha": alpha, "points": points})

    def _nested_pgd(self, job: str, eps: float, steps: int, alpha: float, robust_before: np.ndarray,
                    limit: int | None = None, units: float = 0.5) -> np.ndarray:
        def compute(start, end):
            index = self._attack_points(start, end, robust_before)
            if len(index) == 0:
                return {"index": [], "first": []}
            i = torch.as_tensor(index, device=self.device)
            result = pgd(self.model, self.x[i], self.y[i], eps=eps, steps=steps, alpha=alpha,
                         random_start=True, generator=self._generator(f"pgd-start/eps={eps:.6g}", start, end))
            return {"index": index.tolist(), "first": result.first_fooled[0].tolist()}

        records = self._batched(job, compute, (steps + 1.0) * units, limit=limit)
        first = self._per_point(records, "first", -1)
        return robust_before & self.clean & ~((first >= 0) & (first <= steps))

    def _eps_curve(self) -> None:
        spec = self.spec
        primary = spec.primary_eps
        base = self.pgd_runs.get((primary, "ce"))
        k = spec.eps_curve_steps
        unit_alpha = (base["alpha"] if base else default_alpha(primary, k)) / primary
        robust = self.clean.copy()
        chain: list[str] = []
        points = []
        for eps in sorted(spec.eps_curve):
            alpha = unit_alpha * eps
            if base is not None and abs(eps - primary) < 1e-9 and base["steps"] >= k:
                fooled = (base["first"] >= 0) & (base["first"] <= k)
                robust = robust & ~fooled
                chain.append(f"{eps:.6g}*")
                source = f"the {base['steps']}-step PGD run at this eps (first {k} steps)"
            else:
                job = f"eps-curve/eps={eps:.6g}/steps={k}/alpha={alpha:.6g}/after={','.join(chain) or '-'}"
                robust = self._nested_pgd(job, eps, k, alpha, robust)
                chain.append(f"{eps:.6g}")
                source = "nested run on the points robust at the previous eps"
            key = bit_key("pgd-eps-curve", eps, k)
            self.bits[key] = (eps, robust)
            points.append({"eps": eps, "alpha": alpha, "robust_accuracy": accuracy(robust), "key": key,
                           "source": source})
        self.curves["eps"].append({"attack": "pgd", "loss": "ce", "steps": k, "nested": True, "points": points})

    def _large_eps(self) -> None:
        spec = self.spec
        m = min(self.n, spec.large_eps_examples)
        k = spec.large_eps_steps
        robust = np.zeros(self.n, dtype=bool)
        robust[:m] = self.clean[:m]
        chain: list[str] = []
        for eps in sorted(spec.large_eps):
            alpha = default_alpha(eps, k)
            job = f"large-eps/m={m}/eps={eps:.6g}/steps={k}/alpha={alpha:.6g}/after={','.join(chain) or '-'}"
            robust = self._nested_pgd(job, eps, k, alpha, robust, limit=m, units=0.3)
            chain.append(f"{eps:.6g}")
            self._add_row("pgd", eps, robust[:m].copy(), steps=k, alpha=alpha, loss="ce", random_start=True,
                          subset=m, bits_key=bit_key("pgd-large-eps", eps, k),
                          note=f"check C2 on the first {m} test points; nested over the large eps values")

    def _noise(self, eps: float) -> None:
        draws = self.spec.noise_draws
        job = f"noise/eps={eps:.6g}/draws={draws}"

        def compute(start, end):
            index = self._attack_points(start, end)
            if len(index) == 0:
                return {"index": [], "first": []}
            i = torch.as_tensor(index, device=self.device)
            first = random_noise(self.model, self.x[i], self.y[i], eps=eps, draws=draws,
                                 generator=self._generator(f"noise/eps={eps:.6g}", start, end))
            return {"index": index.tolist(), "first": first.tolist()}

        first = self._per_point(self._batched(job, compute, 0.4 * draws * 0.5), "first", draws)
        self._add_row("noise", eps, self.clean & (first >= draws), draws=draws,
                      bits_key=bit_key("noise", eps, None), note=f"{draws} uniform draws in the eps-ball")

    def _transfer(self, eps: float) -> None:
        k = self.spec.transfer_steps
        alpha = default_alpha(eps, k)
        job = f"transfer/eps={eps:.6g}/steps={k}/alpha={alpha:.6g}"

        def compute(start, end):
            index = self._attack_points(start, end)
            if len(index) == 0:
                return {"index": [], "fooled": []}
            i = torch.as_tensor(index, device=self.device)
            fooled = transfer(self.model, self.surrogate, self.x[i], self.y[i], eps=eps, steps=k, alpha=alpha,
                              generator=self._generator(f"transfer-start/eps={eps:.6g}", start, end))
            return {"index": index.tolist(), "fooled": fooled.int().tolist()}

        fooled = self._per_point(self._batched(job, compute, k + 1.0), "fooled", 0).astype(bool)
        self._add_row("transfer", eps, self.clean & ~fooled, steps=k, alpha=alpha, loss="ce", random_start=True,
                      note="PGD crafted on the surrogate, scored on the target")

    def _autoattack(self, eps: float, stages: tuple[str, ...], single: bool) -> None:
        spec = self.spec
        m = self.n if spec.autoattack_examples is None else min(self.n, spec.autoattack_examples)
        base = f"autoattack/eps={eps:.6g}/seed={spec.seed}/bs={spec.batch_size}/m={m}"
        index = np.nonzero(self.clean[:m])[0]
        chain_keys = {stage: self._key(f"{base}/{'+'.join(stages[:i + 1])}", 0, m)
                      for i, stage in enumerate(stages)}
        done: dict[str, torch.Tensor] = {}
        for stage in stages:
            record = self.store.get(chain_keys[stage])
            if record is None:
                break
            done[stage] = torch.as_tensor(decode_bits(record["robust"], len(index)), device=self.device)
            self._warn(record.get("warnings", []))
        tag = _sha(f"{self.fingerprint}/{base}/{'+'.join(stages)}".encode())[:16]
        state_dir, mirror = self._aa_state_dir(tag)
        poll = aa.Throttle(lambda: self._aa_poll(mirror, tag), AA_POLL_SECONDS)
        # Re-plan the progress total as stages finish: each stage only sees the points still robust.
        plan = {"units": ROBUST_GUESS * len(index) * sum(AA_STAGE_UNITS[s] for s in stages), "used": 0.0}

        def replan(robust_count: int, next_stage: int) -> None:
            remaining = robust_count * sum(AA_STAGE_UNITS[s] for s in stages[next_stage:])
            new_units = plan["used"] + remaining
            self.total_units += new_units - plan["units"]
            plan["units"] = new_units

        replan(len(index) if not done else int(list(done.values())[-1].sum()), len(done))

        def on_forward(stage: str, batch: int) -> None:
            step = min(AA_FORWARD_UNITS.get(stage, 1.0) * batch, max(plan["units"] - plan["used"], 0.0))
            plan["used"] += step
            self.done_units += step
            poll()

        def on_stage(stage: str, flags: torch.Tensor, warnings: list[str]) -> None:
            self.store.put(chain_keys[stage], {"robust": encode_bits(flags.cpu().numpy()), "warnings": warnings})
            self.computed += 1
            replan(int(flags.sum()), stages.index(stage) + 1)
            self._report()

        if len(done) < len(stages):
            self._poll()
        i = torch.as_tensor(index, device=self.device)
        try:
            results, messages = aa.run_autoattack(self.model, self.x[i], self.y[i], eps=eps, stages=stages,
                                                  seed=spec.seed, batch_size=spec.batch_size, state_dir=state_dir,
                                                  tag=tag, on_forward=on_forward, on_stage=on_stage, done=done)
        except BaseException:
            if mirror is not None:
                mirror.sync(tag)
            raise
        self._warn(messages)
        self.reused += len(done)
        self.done_units += plan["units"] - plan["used"]
        subset = m if m < self.n else None
        for stage in stages:
            robust = np.zeros(m, dtype=bool)
            robust[index] = results[stage].cpu().numpy()
            if single:
                self._add_row(stage, eps, robust, subset=subset, note="AutoAttack's attack alone, standard settings")
            elif stage == stages[-1]:
                self._add_row("autoattack", eps, robust, subset=subset, version="standard",
                              note="AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square")
            else:
                self._add_row(f"autoattack:{stage}", eps, robust, subset=subset, cumulative=True,
                              note=f"AutoAttack after {stage} (cumulative over its earlier stages)")

    def _warn(self, messages) -> None:
        self.attack_warnings += [m for m in messages if m not in self.attack_warnings]

    def _aa_state_dir(self, tag: str):
        path = getattr(self.store, "path", None)
        if path is not None:
            return Path(path) / "autoattack", None
        if not hasattr(self, "_tmp_state"):
            self._tmp_state = Path(tempfile.mkdtemp(prefix="robaudit-aa-"))
        mirror = _StateMirror(self.store, self.fingerprint, self._tmp_state)
        mirror.restore(tag)
        return self._tmp_state, mirror

    def _aa_poll(self, mirror, tag) -> None:
        self._report()
        if mirror is not None and time.monotonic() - getattr(self, "_last_sync", 0.0) > 30:
            self._last_sync = time.monotonic()
            mirror.sync(tag)
        self._poll()

    # ------------------------------------------------------------------ results
    def _results(self) -> dict:
        spec = self.spec
        worst = []
        full = list(self.bits.items())
        subset_rows = [r for r in self.rows if "subset" in r]
        for eps in spec.eps:
            robust = worst_case(((e, b) for _, (e, b) in full), self.clean, eps)
            used = sorted(k for k, (e, _) in full if e <= eps * (1 + 1e-9) and "-steps-curve@" not in k)
            key = f"worst-case@eps={eps:.6g}"
            worst.append({"eps": eps, "robust_accuracy": accuracy(robust), "n": self.n, "attacks": used,
                          "key": key, "scope": "all points"})
            self.bits[key] = (eps, robust)
            # Where some attacks (AutoAttack in the audit) ran on the first m points only, also report
            # the worst case over those m points with every attack included.
            for m in sorted({r["n"] for r in subset_rows if r["eps"] <= eps * (1 + 1e-9)}):
                rows = [r for r in subset_rows if r["n"] == m and r["eps"] <= eps * (1 + 1e-9)]
                sub = worst_case([(r["eps"], self.subset_bits[r["key"]]) for r in rows], robust[:m], eps)
                key = f"worst-case@eps={eps:.6g}/first={m}"
                worst.append({"eps": eps, "robust_accuracy": accuracy(sub), "n": m,
                              "attacks": used + sorted(r["key"] for r in rows), "key": key,
                              "scope": f"first {m} points"})
                self.subset_bits[key] = sub
        per_sample = {"encoding": "base64 of np.packbits(stayed_correct, bitorder='little'); bit i = test point i",
                      "n": self.n, "clean": encode_bits(self.clean),
                      "bits": {k: encode_bits(b) for k, (_, b) in self.bits.items()},
                      "subset_bits": {k: {"n": int(len(b)), "bits": encode_bits(b)}
                                      for k, b in self.subset_bits.items()}}
        results = {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "dataset": spec.dataset,
            "n": self.n,
            "num_classes": self.num_classes,
            "test_points": f"the first {self.n} points of the {spec.dataset} test split",
            "clean_accuracy": accuracy(self.clean),
            "summary": self.rows,
            "worst_case": worst,
            "curves": self.curves,
            "per_sample": per_sample,
            "probes": {**self.probe_results, "autoattack_warnings": self.attack_warnings},
            "notes": self.notes,
            "config": spec.to_dict(),
            "timing": {"total_seconds": round(time.monotonic() - self.started, 3),
                       "stages": {k: round(v, 3) for k, v in self.timing.items()},
                       "computed_batches": self.computed, "reused_batches": self.reused},
        }
        results["diagnostics"] = run_diagnostics(results, spec.thresholds)
        return results


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: EvalSpec, *, surrogate: nn.Module | None = None,
             store=None, progress: Callable[[EvalProgress], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict:
    """Run ``spec`` on the first ``spec.n_examples`` of (x, y); returns the results JSON (docs/results-schema.md).

    Raises robaudit.errors.Cancelled when ``should_stop()`` turns true (polled between batches and,
    inside AutoAttack, about once a second); everything finished so far is in ``store``.
    """
    return Evaluation(model, x, y, spec, surrogate=surrogate, store=store, progress=progress,
                      should_stop=should_stop).run()
