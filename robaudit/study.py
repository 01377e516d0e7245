"""The label-smoothing study: the seed paper's claims next to our measurements, and what they mean.

Feature Scattering (Zhang & Wang, NeurIPS 2019) was presented with three claims:

(a) robust accuracy rises steeply with the label-smoothing factor delta;
(b) no robust overfitting: robust test accuracy does not fall after the lr decays;
(c) the open question: PGD-100 gives 68.6 % but CW-100 only 60.6 % on CIFAR-10, and AutoAttack
    later measured 36.64 %. Does the method overfit PGD?

This module is pure analysis: it takes the per-model training histories and evaluation results
(the results JSON of ``robaudit.evaluation``) and returns the tables and a short conclusion whose
every sentence is computed from those numbers. Nothing here is canned; a different outcome gives
different words. The service (``robaudit study``) runs the jobs and calls :func:`analyze`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from robaudit.evaluation.results import Bits, decode_bits, find_rows, same_eps

# Published numbers: the Feature Scattering paper, its NeurIPS 2019 reviews and RobustBench, with their
# sources in docs/references.md (section 2).
SEED_LABEL_SMOOTHING = {
    "source": "Zhang & Wang 2019, label-smoothing ablation: robust test accuracy at epoch 200, "
              "CIFAR-10, WRN-28-10, eps = 8/255",
    "rows": [{"delta": 0.0, "robust_accuracy": 43.03}, {"delta": 0.1, "robust_accuracy": 63.67},
             {"delta": 0.3, "robust_accuracy": 67.14}, {"delta": 0.5, "robust_accuracy": 72.03}],
}
SEED_ATTACKS = {
    "source": "CIFAR-10 WRN-28-10 Feature Scattering (delta = 0.5): PGD-100 and CW-100 as reported in the "
              "paper (NeurIPS 2019 reviews); clean and AutoAttack of the released model (AutoAttack README, "
              "RobustBench ZhangWang2019Defense)",
    "rows": {"clean": 89.98, "pgd100": 68.6, "cw100": 60.6, "autoattack": 36.64},
    "cifar100": {"pgd100": 46.3, "cw100": 30.6},
}
# The literature's "reported minus AutoAttack" gaps: median 2.96 pp over 42 CIFAR-10 models, with an
# outlier cluster from 8.75 pp up (docs/references.md, section 3; the same figures as Thresholds.c14_*).
GAP_OUTLIER_PP = 8.75


@dataclass
class StudyModel:
    """One trained model of the study and everything measured on it."""
    name: str
    method: str
    delta: float | None                      # label smoothing; None for methods without it
    history: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)   # results JSONs (paper, audit, ...)
    lr_milestones: list[int] = field(default_factory=list)


Row = dict[str, Any]        # a summary or worst-case row of a results JSON
Results = dict[str, Any]    # a results JSON


def _rows(results: list[Results], attack: str, steps: int | None, eps: float) -> list[tuple[Row, Results]]:
    """(summary row, the results JSON it belongs to) for every single-restart run of one attack setting."""
    return [(row, res) for res in results for row in find_rows(res, attack, eps, steps)]


def _lowest(results: list[Results], attack: str, eps: float, steps: int | None) -> tuple[Row, Results] | None:
    rows = _rows(results, attack, steps, eps)
    return min(rows, key=lambda pair: pair[0]["robust_accuracy"]) if rows else None


def accuracy_of(results: list[Results], attack: str, eps: float, steps: int | None = None) -> tuple[float, int] | None:
    """(robust accuracy, n) of one attack; the lowest if several runs measured it."""
    found = _lowest(results, attack, eps, steps)
    return None if found is None else (float(found[0]["robust_accuracy"]), int(found[0]["n"]))


def _first_bits(row: Row, res: Results, m: int) -> Bits | None:
    """A row's "stayed correct" bits on the first m test points (summary or worst-case row).

    Every evaluation scores the first n points of the same test split in order, so the first m bits
    of two runs cover the same m points. None when the bitset is missing or covers fewer points.
    """
    per_sample = res.get("per_sample") or {}
    key, n = row.get("key"), int(row.get("n") or 0)
    text = (per_sample.get("bits") or {}).get(key)
    if text is None:
        sub = (per_sample.get("subset_bits") or {}).get(key) or {}
        text, n = sub.get("bits"), int(sub.get("n") or 0)
    if not isinstance(text, str) or n < m or m <= 0:
        return None
    return decode_bits(text, m)


def _worst_row(results: list[Results], eps: float) -> tuple[Row, Results] | None:
    best = None
    for res in results:
        for row in res.get("worst_case", []):
            if same_eps(float(row["eps"]), eps):
                cover = len(res.get("summary", []))
                if best is None or cover > best[0]:
                    best = (cover, row, res)
    return None if best is None else (best[1], best[2])


def worst_case_of(results: list[Results], eps: float) -> tuple[float, int] | None:
    """The per-point worst case at eps from the run that covered the most attacks."""
    found = _worst_row(results, eps)
    return None if found is None else (float(found[0]["robust_accuracy"]), int(found[0]["n"]))


def clean_of(results: list[Results]) -> tuple[float, int] | None:
    for res in results:
        if res.get("clean_accuracy") is not None:
            return float(res["clean_accuracy"]), int(res.get("n") or res.get("n_examples") or 0)
    return None


def verdict_of(results: list[Results]) -> str | None:
    verdicts = [str(v) for res in results if (v := (res.get("diagnostics") or {}).get("verdict"))]
    if not verdicts:
        return None
    suspected = [v for v in verdicts if "suspected" in v]
    return suspected[0] if suspected else verdicts[0]


def noise_pp(p1: float, n1: int, p2: float, n2: int) -> float:
    """Two standard errors of the difference of two accuracies, in percentage points."""
    var = sum(p * (1 - p) / max(n, 1) for p, n in ((p1, n1), (p2, n2)))
    return 200.0 * math.sqrt(max(var, 1e-12))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _gap(results: list[Results], row: Row, eps: float) -> dict[str, Any]:
    """PGD-20 minus the strongest measurement (AutoAttack, else the worst case), on the same points.

    AutoAttack often runs on a prefix of the points PGD-20 covers; comparing PGD-20 on all points with
    AutoAttack on the prefix would mix sampling noise into the gap, so both are read from their bitsets
    on that prefix. The gap is then the mean of a per-point difference, and its standard error is that
    of a paired difference. Without bitsets (older results) the two headline numbers are compared as
    independent samples; ``gap_points`` says which.
    """
    against = "autoattack" if row["autoattack"] is not None else "worst_case"
    strongest, m = row[against], row[f"{against}_n"]
    out: dict[str, Any] = {"gap_pgd20_strongest_pp": None, "gap_se_pp": None, "pgd20_on_gap_points": None,
                           "gap_n": None, "gap_points": None, "gap_against": against}
    pgd = _lowest(results, "pgd", eps, 20)
    if pgd is None or strongest is None:
        return out
    strong = _lowest(results, "autoattack", eps, None) if against == "autoattack" else _worst_row(results, eps)
    pgd_bits = _first_bits(*pgd, m)
    strong_bits = _first_bits(*strong, m) if strong is not None else None
    if pgd_bits is not None and strong_bits is not None:
        diff = pgd_bits.astype(float) - strong_bits
        se = float(diff.std(ddof=1)) / math.sqrt(m) if m > 1 else float("nan")
        out.update(pgd20_on_gap_points=float(pgd_bits.mean()), gap_n=m, gap_points="same",
                   gap_pgd20_strongest_pp=100 * float(diff.mean()), gap_se_pp=100 * se)
    else:
        p1, n1 = row["pgd20"], row["pgd20_n"]
        out.update(pgd20_on_gap_points=p1, gap_n=min(m, n1), gap_points="headline",
                   gap_pgd20_strongest_pp=100 * (p1 - strongest), gap_se_pp=noise_pp(p1, n1, strongest, m) / 2)
    return out


def table(models: list[StudyModel], eps: float) -> list[dict[str, Any]]:
    """Our side of the table: one row per model at its last epoch."""
    rows = []
    for m in models:
        res = m.results
        entries = {"clean": clean_of(res), "pgd20": accuracy_of(res, "pgd", eps, 20),
                   "pgd100": accuracy_of(res, "pgd", eps, 100), "cw100": accuracy_of(res, "cw", eps, 100),
                   "autoattack": accuracy_of(res, "autoattack", eps), "worst_case": worst_case_of(res, eps)}
        row = {"name": m.name, "method": m.method, "delta": m.delta,
               "epoch": m.history[-1]["epoch"] if m.history else None, "verdict": verdict_of(m.results)}
        for key, value in entries.items():
            row[key] = None if value is None else value[0]
            row[f"{key}_n"] = None if value is None else value[1]
        row.update(_gap(m.results, row, eps))
        rows.append(row)
    return rows


def _trend(points: list[tuple[float, float, int]]) -> tuple[str, float, float]:
    """'rises' / 'falls' / 'flat' from the smallest to the largest delta, judged against sampling noise."""
    (_, a0, n0), (_, a1, n1) = points[0], points[-1]
    change = 100 * (a1 - a0)
    margin = noise_pp(a0, n0, a1, n1)
    if change > margin:
        return "rises", change, margin
    if change < -margin:
        return "falls", change, margin
    return "flat", change, margin


def _series(rows: list[Row], key: str) -> list[tuple[float, float, int]]:
    pts = [(r["delta"], r[key], r[f"{key}_n"]) for r in rows
           if r["method"] == "feature-scatter" and r["delta"] is not None and r[key] is not None]
    return sorted(pts)


def _describe(points: list[tuple[float, float, int]], label: str) -> str:
    return ", ".join(f"{100 * a:.1f} % at delta = {d:g}" for d, a, _ in points) + f" under {label}"


_LABELS = {"autoattack": "AutoAttack", "worst_case": "the per-point worst case"}


Conclusion = dict[str, str]   # {"question", "answer", "text"}


@dataclass(frozen=True)
class _Series:
    """The per-delta Feature Scattering accuracies the questions compare: PGD-20 and the strongest measure."""
    pgd: list[tuple[float, float, int]]
    worst: list[tuple[float, float, int]]
    worst_label: str


def _pgd_rises(series: _Series) -> Conclusion | None:
    """(a) Does PGD robustness rise with label smoothing?"""
    pgd = series.pgd
    if len(pgd) < 2:
        return None
    trend, change, margin = _trend(pgd)
    answer = {"rises": "Yes", "falls": "No", "flat": "No"}[trend]
    words = {"rises": "rises", "falls": "falls", "flat": "does not change beyond sampling noise"}[trend]
    return {"question": "Does PGD robustness rise with label smoothing?", "answer": answer,
            "text": f"{answer}: PGD-20 accuracy {words} with delta ({_describe(pgd, 'PGD-20')}; "
                    f"{change:+.1f} pp from the smallest to the largest delta, noise +/- {margin:.1f} pp)."}


def _worst_case_follows(series: _Series) -> Conclusion | None:
    """(a') Does the worst case (AutoAttack when it ran) rise with it too?"""
    worst, worst_label = series.worst, series.worst_label
    if len(worst) < 2:
        return None
    trend, change, margin = _trend(worst)
    pgd_change = _trend(series.pgd)[1] if len(series.pgd) >= 2 else None
    if trend == "rises" and pgd_change and change < 0.5 * pgd_change:
        answer, words = "Partly", (f"rises, but by {change:+.1f} pp against {pgd_change:+.1f} pp under PGD-20: "
                                   "most of the PGD gain is not real robustness")
    elif trend == "rises":
        answer, words = "Yes", "rises in step with PGD"
    else:
        answer, words = "No", "falls" if trend == "falls" else "does not rise beyond sampling noise"
    return {"question": f"Does the worst-case robustness ({worst_label}) rise with it too?",
            "answer": answer,
            "text": f"{answer}: accuracy under {worst_label} {words} ({_describe(worst, worst_label)}; "
                    f"{change:+.1f} pp from the smallest to the largest delta, noise +/- {margin:.1f} pp)."}


def _overfits_pgd(rows: list[Row]) -> Conclusion | None:
    """(c) PGD overfitting: the PGD-to-strongest gap of FS against the PGD-AT baseline."""
    fs = [r for r in rows if r["method"] == "feature-scatter" and r["gap_pgd20_strongest_pp"] is not None]
    base = [r for r in rows if r["method"] == "pgd-at" and r["gap_pgd20_strongest_pp"] is not None]
    if not fs:
        return None
    top = max(fs, key=lambda r: r["delta"] or 0)
    gap = top["gap_pgd20_strongest_pp"]
    label = _LABELS[top["gap_against"]]
    where = (f" on the {top['gap_n']} points {label} ran on" if top["gap_points"] == "same"
             and top["gap_n"] != top["pgd20_n"] else "")
    parts = [f"at delta = {top['delta']:g} PGD-20 reads {_pct(top['pgd20_on_gap_points'])}{where} but "
             f"{label} {_pct(top[top['gap_against']])}, a gap of {gap:.1f} pp"]
    overfit = gap > GAP_OUTLIER_PP
    margin = 0.0
    if base:
        b = base[0]
        margin = 2 * math.hypot(top["gap_se_pp"], b["gap_se_pp"])   # two standard errors of the difference
        parts.append(f"against {b['gap_pgd20_strongest_pp']:.1f} pp for PGD-AT")
        overfit = overfit or gap - b["gap_pgd20_strongest_pp"] > margin
        overfit = overfit and gap > b["gap_pgd20_strongest_pp"]
    if top["cw100"] is not None and top["pgd100"] is not None:
        parts.append(f"CW-100 {_pct(top['cw100'])} vs PGD-100 {_pct(top['pgd100'])}")
    if len(fs) > 1:   # is the gap label smoothing's doing, or the method's at every delta?
        parts.append("across deltas the gap is " + ", ".join(f"{r['gap_pgd20_strongest_pp']:.1f} pp at {r['delta']:g}"
                                                            for r in sorted(fs, key=lambda r: r["delta"] or 0)))
    answer = "Yes" if overfit else "No"
    reasons = []
    if gap > GAP_OUTLIER_PP:
        reasons.append(f"the gap is above the literature's outlier threshold of {GAP_OUTLIER_PP} pp")
    if base:
        excess = gap - base[0]["gap_pgd20_strongest_pp"]
        reasons.append(f"it is {abs(excess):.1f} pp {'wider' if excess >= 0 else 'narrower'} than PGD-AT's "
                       f"({'beyond' if abs(excess) > margin else 'within'} the noise of +/- {margin:.1f} pp)")
    if not reasons:
        reasons.append(f"the gap is below the literature's outlier threshold of {GAP_OUTLIER_PP} pp")
    return {"question": "Does the method overfit PGD?", "answer": answer,
            "text": f"{answer}: " + "; ".join(parts) + "; " + " and ".join(reasons) + "."}


def _falls_after_lr_decay(models: list[StudyModel]) -> Conclusion | None:
    """(b) No robust overfitting after the lr drops: every Feature Scattering model, largest delta first."""
    judged = []
    for m in sorted(models, key=lambda m: -(m.delta or 0.0)):
        if m.method != "feature-scatter" or not m.history or not m.lr_milestones:
            continue
        first_drop = min(m.lr_milestones)
        after = [h for h in m.history if h["epoch"] > first_drop and h.get("pgd20_acc") is not None]
        if len(after) < 2:
            continue
        best = max(after, key=lambda h: h["pgd20_acc"])
        last = after[-1]
        n = int(last.get("eval_examples") or 0)
        margin = noise_pp(best["pgd20_acc"], n, last["pgd20_acc"], n)
        drop = 100 * (best["pgd20_acc"] - last["pgd20_acc"])
        judged.append((drop > margin, f"delta = {m.delta:g}: peak {_pct(best['pgd20_acc'])} at epoch {best['epoch']}, "
                                      f"{_pct(last['pgd20_acc'])} at epoch {last['epoch']} ({drop:.1f} pp lower, "
                                      f"noise +/- {margin:.1f} pp)", first_drop))
    if not judged:
        return None
    falls = [text for fell, text, _ in judged if fell]
    answer = "Yes" if falls else "No"
    drops = sorted({d + 1 for _, _, d in judged})   # milestones are 0-based; history epochs 1-based
    verdict = (f"PGD-20 falls beyond sampling noise after the peak for {len(falls)} of {len(judged)} Feature "
               "Scattering models" if falls else
               "no Feature Scattering model's PGD-20 falls beyond sampling noise after the peak")
    return {"question": "Does robust accuracy fall after the lr decays?", "answer": answer,
            "text": f"{answer}: once the lr first drops (from epoch {', '.join(map(str, drops))}), {verdict} ("
                    + "; ".join(text for _, text, _ in judged) + ")."}


def conclude(rows: list[Row], models: list[StudyModel], eps: float) -> list[Conclusion]:
    """Plain-words answers to the study's questions, each computed from the table (a question without
    the numbers it needs is left out)."""
    worst_key = "autoattack" if any(r["autoattack"] is not None for r in rows) else "worst_case"
    series = _Series(pgd=_series(rows, "pgd20"), worst=_series(rows, worst_key), worst_label=_LABELS[worst_key])
    answers = [_pgd_rises(series), _worst_case_follows(series), _overfits_pgd(rows), _falls_after_lr_decay(models)]
    return [answer for answer in answers if answer is not None]


def analyze(models: list[StudyModel], eps: float) -> dict[str, Any]:
    """Everything the study report shows, as JSON-safe data."""
    rows = table(models, eps)
    return {"eps": eps, "seed": {"label_smoothing": SEED_LABEL_SMOOTHING, "attacks": SEED_ATTACKS},
            "ours": rows, "conclusions": conclude(rows, models, eps)}
