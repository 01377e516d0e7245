"""Gradient-masking and attack-failure checks C1-C14, computed from a results JSON alone.

Each check returns ``{"id", "name", "status", "evidence", "message"}`` with status ``pass``,
``warn``, ``fail`` or ``skipped`` (the evidence then says which results were missing). Sources and
thresholds: docs/references.md, section 4 (Carlini et al. 2019; Athalye et al. 2018;
AutoAttack's checks.py; ART; Pintor et al.'s indicators). Where the literature gives no number the
default is ours and says so in its comment. The verdict is "gradient masking suspected" when any
check fails; warnings are listed as reasons but do not flip it. A run whose clean accuracy is below
twice chance is "invalid" whatever the checks say: it is not an audit of the model.

Because this works on the JSON, ``run_diagnostics(results, Thresholds(...))`` can re-judge a stored
evaluation with other thresholds without running an attack.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from robaudit.errors import RobauditError
from robaudit.evaluation.clean_check import VERDICT_INVALID, judge
from robaudit.evaluation.intervals import paired_difference
from robaudit.evaluation.registry import ATTACKS, is_white_box
from robaudit.evaluation.results import (
    LARGE_EPS,
    STEPS_CURVE,
    bit_key,
    decode_bits,
    parse_bit_key,
    same_eps,
    within_eps,
)
from robaudit.norms import diameter, label

VERDICT_MASKING = "gradient masking suspected"
VERDICT_CLEAN = "no sign of gradient masking"


# Fewer points than this losing their gradient to reduced precision is a warning whatever the rate.
PRECISION_LOSS_MIN_POINTS = 3


@dataclass(frozen=True)
class Thresholds:
    """Percentages are in percentage points (pp) of the evaluated points; rates are fractions."""

    # C1: ours. Going from 0.25x to 1.25x eps quintuples the budget; a working attack then lowers
    # accuracy by far more than 10 pp unless it already reached chance (PGD-AT MNIST: 96 -> 26 %).
    # Per sample: share of points fooled at a smaller eps that the independent run at the primary
    # eps missed.
    c1_min_curve_drop_pp: float = 10.0
    c1_max_violation_rate: float = 0.05
    # C2: ART SecurityCurve fails above chance (1/K) at eps = full range; Pintor: any point above 0.
    c2_max_unbounded_accuracy: float = 0.01
    # C3: Carlini gives no tolerance; ours: PGD may trail FGSM by at most this much, and FGSM may be
    # the only attack fooling at most this share of points.
    c3_margin_pp: float = 0.0
    c3_max_fgsm_only_rate: float = 0.01
    # C4: Carlini: doubling the steps must not raise success; Pintor: the normalised running-best loss
    # must move by <= 0.05 over the last 10 iterations. The pp bounds and the share are ours.
    c4_warn_doubling_gain_pp: float = 1.0
    c4_fail_doubling_gain_pp: float = 3.0
    c4_late_progress: float = 0.05
    c4_max_incomplete_fraction: float = 0.25
    # The loss-trace rules judge the points no attack step broke; below this many, the trace is one
    # or two points' path, and more steps could gain at most those few points (ours).
    c4_min_unbroken_points: int = 10
    # C5: 10 restarts of PGD-20 gained 1.83 pp on Madry's (healthy) CIFAR model.
    c5_warn_restart_gain_pp: float = 1.83
    c5_fail_restart_gain_pp: float = 5.0
    # C6: AutoAttack's check_square_sr: Square may add at most 0.2 pp over the white-box attacks.
    c6_max_square_gain_pp: float = 0.2
    # C7, C8: Carlini: transfer and random noise must succeed less often than white-box; the pp
    # allowance for points only they fool mirrors AutoAttack's 0.2 pp for Square (ours).
    c7_max_transfer_only_pp: float = 0.2
    c8_max_noise_only_pp: float = 0.2
    # C9: APGD halves its step when fewer than rho = 75 % of steps raised the loss; below half the
    # steps the loss goes the wrong way more often than not (ours).
    c9_warn_rising_fraction: float = 0.75
    c9_fail_rising_fraction: float = 0.5
    c9_max_silent_success: int = 0
    # C10: AutoAttack flags any point with an all-zero (DLR) gradient; CE share is ours.
    c10_max_zero_gradient_rate: float = 0.0
    c10_max_ce_zero_rate: float = 0.5
    # C10 under --precision bf16: share of points whose gradient bf16 zeroes (or makes non-finite) but
    # fp32 does not. Ours: a healthy SmallCNN lost 1 of 475 clean DLR gradients to bf16 (two logits
    # rounded to the same value, 8 significant bits); random starts move such points off the tie, so a
    # few earn a warning. Above 1 % the loss is systematic and the bf16 accuracies cannot be trusted.
    c10_max_precision_loss_rate: float = 0.01
    # C11: AutoAttack's check_randomized tolerance on L2-normalised logits.
    c11_logit_tolerance: float = 1e-4
    # C12: AutoAttack's check_range_output tolerance.
    c12_probability_tolerance: float = 1e-5
    # C13: no published number; the Feature Scattering paper's PGD-100 vs CW-100 gap was 8 pp,
    # Madry's model has CE 0.7 pp *stronger* than CW (ours).
    c13_warn_gap_pp: float = 2.0
    c13_fail_gap_pp: float = 5.0
    # C14: over 42 AutoAttack-evaluated CIFAR-10 models the reported-vs-AA gap has median 2.96 pp;
    # above ~6 pp is an outlier and the outlier cluster starts at 8.75 pp.
    c14_warn_gap_pp: float = 6.0
    c14_fail_gap_pp: float = 8.75

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any]) -> Thresholds:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in known:
                raise RobauditError(f"unknown threshold {name!r}; known: {', '.join(known)}")
            try:
                values[name] = int(value) if known[name].type in (int, "int") else float(value)
            except (TypeError, ValueError):
                raise RobauditError(f"threshold {name} needs a number, got {value!r}") from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- reading results
class _View:
    """The parts of a results JSON the checks read, with bitsets decoded.

    Full bitsets cover all n points; subset bitsets (AutoAttack in the audit, the large-eps runs)
    cover the first m. Comparisons between the two restrict the full ones to their first m bits.
    """

    def __init__(self, results: dict[str, Any]):
        self.results = results
        self.n = results["n"]
        per_sample = results["per_sample"]
        self.clean = decode_bits(per_sample["clean"], self.n)
        self.bits = {k: decode_bits(v, self.n) for k, v in per_sample["bits"].items()}
        self.subset = {k: decode_bits(v["bits"], v["n"]) for k, v in per_sample.get("subset_bits", {}).items()}
        self.rows = results["summary"]
        self.num_classes = results.get("num_classes") or 10
        self.chance = 1.0 / self.num_classes
        self.primary = results["config"]["eps"][0]
        self.main_eps = results["config"]["eps"]
        # Results stored before norms existed are L-inf; dims only matter for L2 and L1 (check C2).
        self.norm = results.get("norm") or results["config"].get("norm") or "linf"
        self.input_dims = results["config"].get("input_dims")

    def rows_at(self, eps: float, *attacks: str, n: int | None = None) -> list[dict[str, Any]]:
        """Rows at eps for these attacks that cover ``n`` points (default: all points)."""
        n = self.n if n is None else n
        return [r for r in self.rows if same_eps(r["eps"], eps) and r["attack"] in attacks and r["n"] == n]

    def key_bits(self, key: str | None) -> np.ndarray | None:
        """A bitset by key, full or subset; None when the results do not have it."""
        if key is None:
            return None
        return self.bits.get(key, self.subset.get(key))

    def gap_interval(self, first_key: str | None, second_key: str | None, gap_pp: float) -> tuple[float, float]:
        """The paired 95% interval (pp) of first minus second; the point value itself without bitsets."""
        first, second = self.key_bits(first_key), self.key_bits(second_key)
        if first is None or second is None or len(first) != len(second):
            return gap_pp, gap_pp
        return _paired_gap(first, second)

    def row_bits(self, row: dict[str, Any]) -> np.ndarray:
        return self.bits[row["key"]] if row["n"] == self.n else self.subset[row["key"]]

    def white_box(self, eps: float, m: int | None = None) -> np.ndarray:
        """On the first m points: robust under every white-box attack run there at any eps' <= eps."""
        m = self.n if m is None else m
        robust = self.clean[:m].copy()
        for key, bits in [*self.bits.items(), *self.subset.items()]:
            parsed = parse_bit_key(key)
            if parsed and is_white_box(parsed.attack) and within_eps(parsed.eps, eps) and len(bits) >= m:
                robust &= bits[:m]
        return robust


def _key_attack(key: str) -> str | None:
    parsed = parse_bit_key(key)
    return None if parsed is None else parsed.attack


def _pp(value: float) -> float:
    return round(100.0 * value, 3)


def _check(cid: str, name: str, status: str, evidence: dict[str, Any], message: str) -> dict[str, Any]:
    return {"id": cid, "name": name, "status": status, "evidence": evidence, "message": message}


def _skip(cid: str, name: str, reason: str) -> dict[str, Any]:
    return _check(cid, name, "skipped", {"reason": reason}, f"Not run: {reason}.")


def _worst(*statuses: str) -> str:
    order = {"pass": 0, "warn": 1, "fail": 2}
    return max(statuses, key=lambda s: order[s]) if statuses else "pass"


def _paired_gap(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """The paired 95% interval (Newcombe) of mean(first) - mean(second), in pp."""
    low, high = paired_difference(first, second)["ci95"]
    return _pp(low), _pp(high)


def _beyond_noise(level: str, low_pp: float) -> str:
    """A gap over a threshold whose paired interval still reaches 0 could be sampling noise on these
    points: the check is one level milder (fail -> warn, warn -> pass) and says so."""
    if level == "pass" or low_pp > 0:
        return level
    return "warn" if level == "fail" else "pass"


NOISE_NOTE = "gap_ci95_pp: paired Newcombe 95% interval over the same points; a gap whose interval reaches 0 " \
             "counts one level milder"


# ---------------------------------------------------------------------------- the checks
def c1_eps_monotone(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "Accuracy falls as eps grows"
    curves = v.results["curves"].get("eps") or []
    if not curves:
        return _skip("C1", name, "no accuracy-vs-eps curve in this evaluation (audit preset)")
    points = sorted(curves[0]["points"], key=lambda p: p["eps"])
    accs = [p["robust_accuracy"] for p in points]
    rises = [(points[i]["eps"], points[i + 1]["eps"]) for i in range(len(points) - 1) if accs[i + 1] > accs[i]]
    drop = accs[0] - accs[-1]
    flat = _pp(drop) < t.c1_min_curve_drop_pp and accs[-1] > v.chance
    evidence = {"eps": [p["eps"] for p in points], "robust_accuracy": accs, "drop_pp": _pp(drop)}
    # Per sample: points the curve fooled below the primary eps that the independent PGD run at the
    # primary eps (same steps) did not fool; only this comparison has both runs on every point.
    steps = curves[0]["steps"]
    independent = v.bits.get(bit_key(f"pgd{STEPS_CURVE}", v.primary, steps))
    below = [p for p in points if p["eps"] < v.primary - 1e-12]
    violations = rate = None
    if independent is not None and below:
        fooled_below = v.clean & ~v.bits[below[-1]["key"]]
        violations = int((fooled_below & independent).sum())
        rate = violations / max(int(fooled_below.sum()), 1)
        evidence.update(fooled_below_primary=int(fooled_below.sum()), violations=violations,
                        violation_rate=round(rate, 4))
    if rises or flat:
        why = (f"accuracy rose between eps {rises[0][0]:g} and {rises[0][1]:g}" if rises else
               f"accuracy only fell {_pp(drop):.1f} pp from eps {points[0]['eps']:g} to {points[-1]['eps']:g} "
               "while still above chance")
        return _check("C1", name, "fail", evidence,
                      f"A larger perturbation budget did not make the attack succeed more ({why}): "
                      "the attack is not finding the adversarial examples that must exist.")
    if rate is not None and rate > t.c1_max_violation_rate:
        return _check("C1", name, "warn", evidence,
                      f"{violations} points fooled at a smaller eps survived PGD at eps {v.primary:g} "
                      f"({100 * rate:.1f} % of them): the attack's success is not monotone in eps.")
    return _check("C1", name, "pass", evidence,
                  f"Accuracy falls steadily with eps ({100 * accs[0]:.1f} % to {100 * accs[-1]:.1f} %).")


def c2_large_eps(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "Large eps drives accuracy to zero"
    rows = sorted((r for r in v.rows if _key_attack(r["key"]) == f"pgd{LARGE_EPS}"), key=lambda r: r["eps"])
    if not rows:
        return _skip("C2", name, "no large-eps run in this evaluation (audit preset)")
    # The budget that reaches every image of the box: L-inf 1, L2 sqrt(d), L1 d (robaudit.norms.diameter).
    unbounded = 1.0 if v.norm == "linf" or not v.input_dims else diameter(v.norm, int(v.input_dims))
    evidence = {"eps": [r["eps"] for r in rows], "robust_accuracy": [r["robust_accuracy"] for r in rows],
                "n": rows[0]["n"], "chance": round(v.chance, 4), "unbounded_eps": round(unbounded, 6)}
    status, reasons = "pass", []
    for row in rows:
        acc = row["robust_accuracy"]
        if acc > v.chance:
            status = "fail"
            reasons.append(f"{100 * acc:.1f} % still correct at eps {row['eps']:g}")
        elif within_eps(unbounded, row["eps"]) and acc > t.c2_max_unbounded_accuracy:   # reaches every image
            status = _worst(status, "warn")
            reasons.append(f"{100 * acc:.1f} % still correct with an unbounded budget")
    if status == "pass":
        return _check("C2", name, "pass", evidence,
                      "With a budget that can erase the image, accuracy drops to "
                      f"{100 * rows[-1]['robust_accuracy']:.1f} %.")
    return _check("C2", name, status, evidence,
                  f"Even huge perturbations do not fool the model ({'; '.join(reasons)}): "
                  "gradients are not leading the attack anywhere.")


def c3_iterative_vs_single(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "Iterative attacks beat one-step attacks"
    evidence, status, message = {}, "pass", ""
    ran = False
    for eps in v.main_eps:
        single = v.rows_at(eps, "fgsm", "rs-fgsm")
        multi = v.rows_at(eps, "pgd")
        if not single or not multi:
            continue
        ran = True
        acc_single = min(r["robust_accuracy"] for r in single)
        acc_multi = min(r["robust_accuracy"] for r in multi)
        robust_multi = v.clean.copy()
        for row in multi:
            robust_multi &= v.row_bits(row)
        fooled_single = np.zeros(v.n, dtype=bool)
        for row in single:
            fooled_single |= v.clean & ~v.row_bits(row)
        only_single = int((fooled_single & robust_multi).sum())
        rate = only_single / v.n
        evidence[f"eps={eps:g}"] = {"fgsm_accuracy": acc_single, "pgd_accuracy": acc_multi,
                                    "fgsm_only_points": only_single, "fgsm_only_rate": round(rate, 4)}
        if _pp(acc_multi - acc_single) > t.c3_margin_pp:
            status = "fail"
            message = (f"At eps {eps:g} PGD leaves {100 * acc_multi:.1f} % correct but one FGSM step only "
                       f"{100 * acc_single:.1f} %: the iterative attack is being misled, a sign of masked gradients.")
        elif rate > t.c3_max_fgsm_only_rate and status == "pass":
            status = "warn"
            message = (f"At eps {eps:g}, {only_single} points fall to FGSM but not to PGD: the iterative "
                       "attack misses examples a single large step finds.")
    if not ran:
        return _skip("C3", name, "needs FGSM and PGD at the same eps")
    return _check("C3", name, status, evidence,
                  message or "PGD is at least as strong as FGSM, point by point.")


def c4_convergence(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "More steps do not help (attack converged)"
    curves = [c for c in v.results["curves"].get("steps", []) if same_eps(c["eps"], v.primary)]
    losses = [c for c in v.results["curves"].get("loss", []) if same_eps(c["eps"], v.primary)]
    usable = [c for c in curves if c["max_steps"] >= 2]
    if not usable:
        return _skip("C4", name, "needs a PGD or CW run of at least 2 steps")
    evidence: dict[str, Any] = {}
    status, reasons = "pass", []
    for curve in usable:
        pts = {p["steps"]: p["robust_accuracy"] for p in curve["points"]}
        keys = {p["steps"]: p.get("key") for p in curve["points"]}
        k = curve["max_steps"]
        half = max(s for s in pts if s <= k // 2)
        gain = _pp(pts[half] - pts[k])
        low, high = v.gap_interval(keys[half], keys[k], gain)
        entry = {"steps": [half, k], "robust_accuracy": [pts[half], pts[k]], "doubling_gain_pp": gain,
                 "gain_ci95_pp": [low, high]}
        by_size = "fail" if gain > t.c4_fail_doubling_gain_pp else "warn" if gain > t.c4_warn_doubling_gain_pp \
            else "pass"
        level = _beyond_noise(by_size, low)
        if pts[k] == 0.0:
            pass  # the attack broke every point: nothing left for more steps to find
        elif level != "pass":
            status = _worst(status, level)
            noise = "" if level == by_size else f", within noise on these points (interval reaches {low:.1f} pp)"
            reasons.append(f"{curve['attack']} gained {gain:.1f} pp from {half} to {k} steps "
                           f"(95% interval {low:.1f} to {high:.1f} pp{noise})")
        trace: dict[str, Any] = next((c for c in losses if c["attack"] == curve["attack"]), {})
        traced = bool(trace and trace["mean_robust"]) and k >= 10
        if traced and trace["n_robust"] < t.c4_min_unbroken_points:
            entry.update(robust_points=trace["n_robust"], loss_trace="not judged: too few unbroken points")
        elif traced:
            mean = np.asarray(trace["mean_robust"])
            spread = mean.max() - mean.min()
            best = np.maximum.accumulate((mean - mean.min()) / spread) if spread > 0 else np.zeros_like(mean)
            moved = float(best[-1] - best[-1 - min(10, k)])
            late = np.asarray(trace["late_progress"], dtype=np.float64)
            incomplete = float((late > t.c4_late_progress).mean()) if late.size else 0.0
            entry.update(mean_loss_late_progress=round(moved, 4), incomplete_fraction=round(incomplete, 4),
                         robust_points=trace["n_robust"])
            if moved > t.c4_late_progress:
                status = _worst(status, "warn")
                reasons.append(f"the mean {curve['attack']} loss on unbroken points was still rising "
                               f"({moved:.2f} of its range in the last 10 steps)")
            elif incomplete > t.c4_max_incomplete_fraction:
                status = _worst(status, "warn")
                reasons.append(f"{100 * incomplete:.0f} % of unbroken points were still improving their loss")
        evidence[curve["attack"]] = entry
    evidence["noise"] = NOISE_NOTE.replace("gap_ci95_pp", "gain_ci95_pp")
    if status == "pass":
        return _check("C4", name, "pass", evidence, "Doubling the number of steps no longer changes the result.")
    return _check("C4", name, status, evidence,
                  f"The attack had not converged ({'; '.join(reasons)}): more steps would find more "
                  "adversarial examples, so the reported accuracy is too high.")


def c5_restarts(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "More restarts do not help"
    curves = v.results["curves"].get("restarts") or []
    if not curves:
        return _skip("C5", name, "no restarts were run (audit preset or --restarts)")
    pts = curves[0]["points"]
    gain = _pp(pts[0]["robust_accuracy"] - pts[-1]["robust_accuracy"])
    low, high = v.gap_interval(pts[0].get("key"), pts[-1].get("key"), gain)
    evidence = {"restarts": [p["restarts"] for p in pts], "robust_accuracy": [p["robust_accuracy"] for p in pts],
                "gain_pp": gain, "gain_ci95_pp": [low, high], "reference_gain_pp": 1.83,
                "noise": NOISE_NOTE.replace("gap_ci95_pp", "gain_ci95_pp")}
    by_size = "fail" if gain > t.c5_fail_restart_gain_pp else "warn" if gain > t.c5_warn_restart_gain_pp else "pass"
    status = _beyond_noise(by_size, low)
    if status != by_size:
        evidence["within_noise"] = f"a {by_size} by size; its 95% interval reaches {low:.1f} pp on these points"
    noise = "" if status == by_size else (f" On {pts[-1].get('n', v.n)} points that is within noise (its 95% "
                                          f"interval reaches {low:.1f} pp): rerun on more points to tell.")
    if status == "pass":
        return _check("C5", name, "pass", evidence,
                      f"{pts[-1]['restarts']} random restarts lowered accuracy by only {gain:.2f} pp.{noise}")
    return _check("C5", name, status, evidence,
                  f"Random restarts lowered accuracy by {gain:.2f} pp (95% interval {low:.1f} to {high:.1f} pp), "
                  "where 10 restarts cost an unmasked model (Madry's CIFAR-10 PGD-AT) only 1.83 pp: single runs "
                  f"get stuck, typical of a rugged, masked loss surface.{noise}")


def _only_fooled_by(v: _View, eps: float, attacks: tuple[str, ...],
                    n: int | None = None) -> tuple[int, float | None, float]:
    """(points fooled only by these attacks, their best accuracy, white-box accuracy), on the first n points."""
    rows = v.rows_at(eps, *attacks, n=n)
    if not rows:
        return 0, None, 0.0
    m = rows[0]["n"]
    fooled = np.zeros(m, dtype=bool)
    for row in rows:
        fooled |= v.clean[:m] & ~v.row_bits(row)
    white = v.white_box(eps, m)
    return int((fooled & white).sum()), min(r["robust_accuracy"] for r in rows), float(white.mean())


def c6_square(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "White-box beats black-box (Square)"
    evidence, status, message, ran = {}, "pass", "", False
    for eps in v.main_eps:
        sizes = sorted({r["n"] for r in v.rows if same_eps(r["eps"], eps) and r["attack"] in ("square", "autoattack")})
        for m in sizes:
            ran = True
            only, _, acc_white = _only_fooled_by(v, eps, ("square", "autoattack"), n=m)
            entry = {"points": m, "square_only_points": only, "square_only_pp": _pp(only / m),
                     "white_box_accuracy": acc_white}
            before, after = v.rows_at(eps, "autoattack:fab-t", n=m), v.rows_at(eps, "autoattack", n=m)
            if before and after:  # AutoAttack's own check_square_sr
                entry["autoattack_square_gain_pp"] = _pp(before[0]["robust_accuracy"] - after[0]["robust_accuracy"])
            evidence[f"eps={eps:g}" + ("" if m == v.n else f"/first={m}")] = entry
            if entry["square_only_pp"] > t.c6_max_square_gain_pp:
                status = "fail"
                message = (f"At eps {eps:g} the black-box Square attack fooled {only} of {m} points that every "
                           "gradient attack missed: the gradients are hiding adversarial examples.")
    if not ran:
        return _skip("C6", name, "Square did not run (AutoAttack or --attacks square)")
    return _check("C6", name, status, evidence,
                  message or "Square found nothing the gradient-based attacks had missed.")


def _beats_white_box(v: _View, t: Thresholds, cid: str, name: str, attack: str, limit_pp: float,
                     what: str) -> dict[str, Any]:
    evidence, status, message, ran = {}, "pass", "", False
    for eps in v.main_eps:
        only, acc, acc_white = _only_fooled_by(v, eps, (attack,))
        if acc is None:   # the attack did not run at this eps
            continue
        ran = True
        entry = {f"{attack}_accuracy": acc, "white_box_accuracy": acc_white, f"{attack}_only_points": only,
                 f"{attack}_only_pp": _pp(only / v.n)}
        evidence[f"eps={eps:g}"] = entry
        if acc < acc_white:
            status = "fail"
            message = (f"At eps {eps:g} {what} leaves {100 * acc:.1f} % correct, below the {100 * acc_white:.1f} % "
                       "of all white-box attacks together: gradient attacks are being blocked.")
        elif entry[f"{attack}_only_pp"] > limit_pp and status == "pass":
            status = "warn"
            message = (f"At eps {eps:g} {what} fooled {only} points that no white-box attack fooled: "
                       "the gradients hide some adversarial examples.")
    if not ran:
        return _skip(cid, name, f"the {attack} attack did not run")
    return _check(cid, name, status, evidence, message or f"{what.capitalize()} is weaker than the white-box attacks.")


def c7_transfer(v: _View, t: Thresholds) -> dict[str, Any]:
    return _beats_white_box(v, t, "C7", "White-box beats transfer", "transfer", t.c7_max_transfer_only_pp,
                            "the transfer attack from the surrogate")


def c8_noise(v: _View, t: Thresholds) -> dict[str, Any]:
    return _beats_white_box(v, t, "C8", "White-box beats random noise", "noise", t.c8_max_noise_only_pp,
                            "random noise")


def c9_loss_direction(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "The attack loss rises; no silent success"
    traces = [c for c in v.results["curves"].get("loss", []) if same_eps(c["eps"], v.primary)]
    if not traces:
        return _skip("C9", name, "no per-iteration loss was recorded (needs a PGD or CW run)")
    evidence, status, reasons = {}, "pass", []
    for trace in traces:
        rising, moves = np.asarray(trace["rising_steps"]), np.asarray(trace["moving_steps"])
        # Judge the steps taken before the iterate can first reach the ball's boundary
        # (ceil(eps/alpha) of them): there every step of a working attack should climb. Later, a
        # fixed-size signed step bounces around the corner it reached and ~half the steps go down
        # even on healthy models, so the whole-run fraction is evidence, not the criterion.
        window = max(1, min(len(moves), int(np.ceil(trace["eps"] / trace["alpha"] - 1e-9))))
        early = rising[:window].sum() / moves[:window].sum() if moves[:window].sum() else None
        overall = rising.sum() / moves.sum() if moves.sum() else None
        evidence[trace["attack"]] = {
            "early_steps": window, "early_rising_fraction": None if early is None else round(float(early), 4),
            "rising_fraction": None if overall is None else round(float(overall), 4),
            "moving_steps": int(moves.sum()), "silent_success": trace["silent_success"], "fooled": trace["fooled"]}
        if early is not None and early < t.c9_fail_rising_fraction:
            status = "fail"
            reasons.append(f"only {100 * early:.0f} % of the first {window} {trace['attack']} steps raised the loss")
        elif early is not None and early < t.c9_warn_rising_fraction:
            status = _worst(status, "warn")
            reasons.append(f"only {100 * early:.0f} % of the first {window} {trace['attack']} steps raised the loss")
        if trace["silent_success"] > t.c9_max_silent_success:
            status = "fail"
            reasons.append(f"{trace['silent_success']} of {trace['attack']}'s adversarial examples were "
                           "classified correctly when scored again")
    if status == "pass":
        return _check("C9", name, "pass", evidence,
                      "Attack steps raise the loss, and every adversarial example found still fools the model.")
    return _check("C9", name, status, evidence,
                  f"The attack is not climbing the loss reliably ({'; '.join(reasons)}): gradients are "
                  "noisy or misleading, or the model's answer changes between calls.")


def c10_gradients(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "No zero or NaN gradients"
    probes = v.results.get("probes") or {}
    grads = probes.get("gradients")
    if not grads or not grads.get("n"):
        return _skip("C10", name, "no gradient probe (diagnostics off or no clean-correct points)")
    n = grads["n"]
    precision = v.results["config"].get("precision", "fp32")
    reference = probes.get("gradients_fp32") if precision != "fp32" else None
    lost: dict[str, int] = {}
    if reference:
        # Counts that reduced precision raised above the fp32 reference (same points, same starts): the
        # evaluation, not the model, lost those gradients. The model's own are the ones fp32 has too.
        lost = {k: grads[k] - reference[k] for k in grads
                if k.endswith(("_zero", "_nonfinite")) and grads[k] > reference.get(k, grads[k])}
        grads = {k: min(grads[k], reference.get(k, grads[k])) for k in grads}
    zero_dlr = max(grads["clean_dlr_zero"], grads["start_dlr_zero"])
    zero_ce = max(grads["clean_ce_zero"], grads["start_ce_zero"])
    nonfinite = max(grads[f"{at}_{loss}_nonfinite"] for at in ("clean", "start") for loss in ("ce", "dlr"))
    evidence: dict[str, Any] = {"points": n, "zero_dlr_gradient": zero_dlr, "zero_ce_gradient": zero_ce,
                                "nonfinite_gradient": nonfinite,
                                "autoattack_warnings": [w for w in probes.get("autoattack_warnings", [])
                                                        if "zero gradient" in w]}
    if precision != "fp32":
        evidence.update(precision=precision, fp32_reference=reference, lost_to_precision=lost)
    if lost:
        worst = max(lost, key=lambda k: lost[k])
        rate = lost[worst] / n
        # A stray logit tie (two logits rounded to one bf16 value) is chance; a few points and a rate above
        # the threshold are the evaluation masking gradients.
        status = "fail" if rate > t.c10_max_precision_loss_rate and lost[worst] >= PRECISION_LOSS_MIN_POINTS else "warn"
        if status == "fail" or not (nonfinite or zero_dlr / n > t.c10_max_zero_gradient_rate):
            return _check("C10", name, status, evidence,
                          f"Under {precision}, {lost[worst]} of {n} points have a zero or non-finite input gradient "
                          f"({worst.replace('_', ' ')}) that fp32 computes: reduced precision masks gradients in this "
                          "evaluation itself; rerun it with --precision fp32.")
    if nonfinite or zero_dlr / n > t.c10_max_zero_gradient_rate:
        return _check("C10", name, "fail", evidence,
                      f"{max(zero_dlr, nonfinite)} of {n} points have a zero or non-finite input gradient even "
                      "for the margin loss: gradient attacks are blind there.")
    if zero_ce / n > t.c10_max_ce_zero_rate:
        return _check("C10", name, "warn", evidence,
                      f"The cross-entropy gradient is exactly zero for {zero_ce} of {n} points (saturated "
                      "softmax): cross-entropy attacks cannot move them; margin-loss attacks can.")
    return _check("C10", name, "pass", evidence, "Input gradients are finite and non-zero.")


def forward_is_random(repeat: dict[str, Any], logit_tolerance: float) -> bool:
    """Whether the repeated-forward probe's measurements show a random forward pass (check C11's rule)."""
    return bool(repeat["prediction_changes"]) or repeat["max_logit_difference"] > logit_tolerance


def c11_randomness(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "Deterministic forward pass"
    repeat = (v.results.get("probes") or {}).get("repeat")
    if not repeat:
        return _skip("C11", name, "no repeated-forward probe (diagnostics off)")
    evidence = dict(repeat)
    if not forward_is_random(repeat, t.c11_logit_tolerance):
        return _check("C11", name, "pass", evidence, "Repeated forward passes give identical outputs.")
    found = (f"The same images give different outputs on repeated passes (max difference "
             f"{repeat['max_logit_difference']:.2g}): the model is randomized, so one forward pass is one noisy "
             "draw of it and single-pass attacks follow noisy gradients.")
    summary = v.results.get("randomized") or {}
    attacked = summary.get("attacks") or []
    if not attacked:
        return _check("C11", name, "fail", evidence,
                      f"{found} It needs EOT attacks: rerun with --attacks eot-pgd,autoattack-rand.")
    evidence["randomized"] = summary
    passes = summary["passes"]
    labels = {name: info.label for name, info in ATTACKS.items()}
    done = "; ".join(f"{labels.get(a['attack'], a['attack'])} {100 * a['robust_accuracy']:.1f}%" for a in attacked)
    clean = summary.get("clean_accuracy")
    clean_text = f"clean {100 * clean:.1f}%, " if clean is not None else ""
    return _check("C11", name, "fail", evidence,
                  f"{found} It was also attacked with EOT (the loss averaged over {passes} passes per step: "
                  f"EOT-PGD-20, AutoAttack rand) and judged by the logits averaged over {passes} passes: "
                  f"{clean_text}{done}. The other attacks judged each iterate by one noisy pass, so they "
                  "count a point as broken as soon as one draw misclassifies it.")


def c12_outputs(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "Logits out, no optimisation inside forward"
    probes = v.results.get("probes") or {}
    rng, dyn = probes.get("output_range"), probes.get("dynamic")
    if not rng or not dyn:
        return _skip("C12", name, "no output probe (diagnostics off)")
    tol = t.c12_probability_tolerance
    softmax = rng["min"] > -tol and rng["max"] < 1 + tol and rng["max_row_sum_error"] < tol
    calls = sum(dyn["gradient_calls"].values())
    evidence = {**rng, "gradient_calls_in_forward": dyn["gradient_calls"]}
    if softmax:
        return _check("C12", name, "fail", evidence,
                      "The model outputs probabilities, not logits: cross-entropy on them flattens the "
                      "gradients; evaluate the logits instead.")
    if calls:
        return _check("C12", name, "fail", evidence,
                      f"The forward pass computes gradients itself ({calls} calls): a test-time "
                      "optimisation defense that standard attacks do not differentiate through.")
    return _check("C12", name, "pass", evidence, "The model returns logits and runs no optimisation in forward.")


def c13_ce_vs_margin(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "Cross-entropy PGD as strong as margin PGD"
    evidence: dict[str, Any] = {}
    status, message, ran = "pass", "", False
    for eps in v.main_eps:
        ce = {r["steps"]: r for r in v.rows_at(eps, "pgd") if r["restarts"] == 1}
        cw = {r["steps"]: r for r in v.rows_at(eps, "cw")}
        common = sorted(set(ce) & set(cw))
        if not common:
            continue
        ran = True
        k = common[-1]
        gap = _pp(ce[k]["robust_accuracy"] - cw[k]["robust_accuracy"])
        low, high = _paired_gap(v.row_bits(ce[k]), v.row_bits(cw[k]))
        evidence[f"eps={eps:g}"] = {"steps": k, "pgd_ce": ce[k]["robust_accuracy"],
                                    "pgd_cw": cw[k]["robust_accuracy"], "gap_pp": gap,
                                    "gap_ci95_pp": [low, high], "points": v.n}
        evidence["noise"] = NOISE_NOTE
        by_size = "fail" if gap > t.c13_fail_gap_pp else "warn" if gap > t.c13_warn_gap_pp else "pass"
        level = _beyond_noise(by_size, low)
        if level != "pass" and _worst(status, level) != status:
            status = level
            noise = ("" if level == by_size else
                     f"; on {v.n} points that gap is within noise (its 95% interval reaches {low:.1f} pp), so "
                     "rerun on more points to tell")
            message = (f"At eps {eps:g} PGD on the margin loss leaves {gap:.1f} pp fewer points correct than "
                       f"PGD on cross-entropy ({k} steps each; 95% interval {low:.1f} to {high:.1f} pp): "
                       "cross-entropy gradients are misleading, the signature of a defense tuned to the attack "
                       f"it was trained against{noise}.")
    if not ran:
        return _skip("C13", name, "needs PGD and CW with the same number of steps")
    return _check("C13", name, status, evidence,
                  message or "Cross-entropy and margin-loss PGD agree.")


def c14_reported_vs_strongest(v: _View, t: Thresholds) -> dict[str, Any]:
    name = "PGD close to the strongest attacks"
    evidence: dict[str, Any] = {}
    status, message, ran, largest = "pass", "", False, -float("inf")
    for eps in v.main_eps:
        pgd_rows = [r for r in v.rows_at(eps, "pgd") if r["restarts"] == 1]
        others = [r for r in v.rows if same_eps(r["eps"], eps) and r["attack"] != "pgd"]
        worst_rows = [w for w in v.results.get("worst_case", []) if same_eps(w["eps"], eps)]
        if not pgd_rows or not others or not worst_rows:
            continue
        ran = True
        cheapest = min(pgd_rows, key=lambda r: r["steps"])
        pgd_bits = v.row_bits(cheapest)
        for worst in worst_rows:  # all points, and the AutoAttack subset when there is one
            m = worst["n"]
            pgd_acc = float(pgd_bits[:m].mean())
            gap = _pp(pgd_acc - worst["robust_accuracy"])
            worst_bits = v.bits.get(worst["key"]) if m == v.n else v.subset.get(worst["key"])
            low, high = _paired_gap(pgd_bits[:m], worst_bits) if worst_bits is not None else (gap, gap)
            aa = v.rows_at(eps, "autoattack", n=m)
            evidence[f"eps={eps:g}" + ("" if m == v.n else f"/first={m}")] = {
                "pgd_steps": cheapest["steps"], "pgd": pgd_acc, "worst_case": worst["robust_accuracy"],
                "gap_pp": gap, "gap_ci95_pp": [low, high],
                "autoattack": aa[0]["robust_accuracy"] if aa else None, "points": m}
            evidence["noise"] = NOISE_NOTE
            by_size = "fail" if gap > t.c14_fail_gap_pp else "warn" if gap > t.c14_warn_gap_pp else "pass"
            level = _beyond_noise(by_size, low)
            status = _worst(status, level)
            if level != "pass" and gap > largest:  # quote the largest gap
                largest = gap
                scope = "" if m == v.n else f" (first {m} points)"
                noise = ("" if level == by_size else
                         f"; on {m} points that gap is within noise (its 95% interval reaches {low:.1f} pp)")
                message = (f"At eps {eps:g}{scope}, PGD-{cheapest['steps']} reports {100 * pgd_acc:.1f} % but the "
                           f"strongest attacks leave {100 * worst['robust_accuracy']:.1f} % ({gap:.1f} pp less, "
                           f"95% interval {low:.1f} to {high:.1f} pp; the usual gap is about 3 pp): the PGD number "
                           f"overstates robustness{noise}.")
    if not ran:
        return _skip("C14", name, "needs PGD and at least one other attack at the same eps")
    return _check("C14", name, status, evidence,
                  message or "PGD is within the usual few points of the worst case over all attacks.")


CHECKS = (c1_eps_monotone, c2_large_eps, c3_iterative_vs_single, c4_convergence, c5_restarts, c6_square,
          c7_transfer, c8_noise, c9_loss_direction, c10_gradients, c11_randomness, c12_outputs,
          c13_ce_vs_margin, c14_reported_vs_strongest)


def clean_check_of(results: dict[str, Any]) -> dict[str, Any] | None:
    """The clean check of an evaluation's own clean accuracy (None if the results lack it)."""
    accuracy, n, num_classes = results.get("clean_accuracy"), results.get("n"), results.get("num_classes")
    if not isinstance(accuracy, (int, float)) or not n or not num_classes:
        return None
    return judge(float(accuracy), int(n), int(num_classes))


def _under_norm(check: dict[str, Any], norm: str) -> dict[str, Any]:
    """Every check's evidence names the threat model its budgets are in; outside L-inf the message says it too."""
    check["evidence"] = {"norm": norm, **check["evidence"]}
    if norm != "linf":
        check["message"] = f"Under {label(norm)}: {check['message']}"
    return check


def run_diagnostics(results: dict[str, Any], thresholds: Thresholds | None = None) -> dict[str, Any]:
    thresholds = thresholds or Thresholds()
    view = _View(results)
    checks = [_under_norm(check(view, thresholds), view.norm) for check in CHECKS]
    failed = [c for c in checks if c["status"] == "fail"]
    warned = [c for c in checks if c["status"] == "warn"]
    ran = [c for c in checks if c["status"] != "skipped"]
    verdict = VERDICT_MASKING if failed else VERDICT_CLEAN
    reasons = [f"{c['id']} {c['name']}: {c['message']}" for c in failed]
    reasons += [f"{c['id']} (warning) {c['name']}: {c['message']}" for c in warned]
    if not failed:
        reasons.insert(0, f"{len(ran) - len(warned)} of {len(ran)} checks that could run passed"
                          + (f"; {len(checks) - len(ran)} skipped for lack of results."
                             if len(ran) < len(checks) else "."))
    near_chance = clean_check_of(results)
    if near_chance is not None and near_chance["suspect"]:
        verdict = VERDICT_INVALID
        reasons.insert(0, near_chance["message"])
    return {"verdict": verdict, "reasons": reasons, "checks": checks, "thresholds": thresholds.to_dict()}
