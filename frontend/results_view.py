"""Results payloads read as plain data for the charts, the tables and the exports.

In: a results JSON (written by robaudit.evaluation), a checkpoint record and its training history.
Out: attack rungs, the attack ladder, ε and steps curves, worst-case rows, the headline ε and model
metadata, named and ordered as the attack registry (robaudit.evaluation.registry) says. Nothing here
draws (figures.py does) and everything tolerates missing sections: an evaluation still running has
no results, an uploaded checkpoint has no training history, a quick preset has no AutoAttack row.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from robaudit.evaluation.registry import AA_STAGE, ATTACKS, CLEAN, PSEUDO_FAMILIES, WORST, AttackInfo, family_of
from robaudit.evaluation.results import LARGE_EPS, same_eps
from robaudit.norms import DEFAULT_NORM, NORMS
from robaudit.norms import label as _norm_label

# A steps curve whose last segment still drops by more than this many
# percentage points (and by more than one test point) is flagged as not converged.
STILL_FALLING_PP = 0.5

# Families left out of the ladder and the ε chart (listed in the tables only).
DETAIL_FAMILIES = {AA_STAGE}

# The step counts the ladder shows per attack family (PGD-20, PGD-100, CW-100, ...); an attack run
# at other step counts only (a quick preset's PGD-10, say) shows its largest step count instead.
LADDER_STEPS = {"pgd": (20, 100), "cw": (100,), "apgd-ce": (100,), "apgd-dlr": (100,)}


# --------------------------------------------------------------------------- attack families

# Looked up in the registry on each use, not copied at import: attacks may be registered later.
def _family_entry(family: str) -> AttackInfo | None:
    """The registry entry that speaks for a chart family (its attacks share label, order and steps)."""
    return next((a for a in ATTACKS.values() if a.family == family), None)


def family_label(family: str) -> str | None:
    if family in PSEUDO_FAMILIES:
        return PSEUDO_FAMILIES[family][0]
    entry = _family_entry(family)
    return entry.label if entry else None


def family_order(family: str) -> int:
    """The family's position in the attack ladder (unknown families after the attacks, before the worst case)."""
    if family in PSEUDO_FAMILIES:
        return PSEUDO_FAMILIES[family][1]
    entry = _family_entry(family)
    return entry.order if entry else 50


def is_stepped(family: str) -> bool:
    entry = _family_entry(family)
    return entry is not None and entry.stepped


# --------------------------------------------------------------------------- data model

@dataclass(frozen=True)
class Model:
    """One evaluated model: a display label plus its results JSON and checkpoint record."""

    label: str
    results: Mapping[str, Any] | None = None
    checkpoint: Mapping[str, Any] | None = None
    key: str = ""

    @property
    def summary(self) -> list[Mapping[str, Any]]:
        rows = (self.results or {}).get("summary") or []
        return [r for r in rows if isinstance(r, Mapping)]


@dataclass(frozen=True)
class Rung:
    """An attack configuration, e.g. PGD-20 with 1 restart."""

    family: str
    steps: int | None = None
    restarts: int | None = None
    raw: str = ""

    @property
    def label(self) -> str:
        if self.family == AA_STAGE:
            stage = self.raw.split(":", 1)[-1]
            info = ATTACKS.get(stage)
            return f"{ATTACKS['autoattack'].label} after {info.label if info else stage.upper()}"
        base = family_label(self.family) or self.raw or self.family
        if is_stepped(self.family) and self.steps:
            base = f"{base}-{self.steps}"
        if self.restarts and self.restarts > 1:
            base = f"{base}×{self.restarts}"
        return base

    @property
    def order(self) -> tuple[int, str, int, int]:
        return (family_order(self.family), self.raw, self.steps or 0, self.restarts or 0)


def rung_of(row: Mapping[str, Any]) -> Rung:
    """The rung of a summary row; a row without an attack name is an "unknown" family of its own."""
    name = str(row.get("attack") or "")
    family = family_of(name) if name else "unknown"
    steps = int_or_none(row.get("steps")) if is_stepped(family) else None
    restarts = int_or_none(row.get("restarts"))
    return Rung(family, steps, restarts if (restarts or 0) > 1 else None, name)


# --------------------------------------------------------------------------- numbers and units

def int_or_none(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def to_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def percent(v: Any) -> float | None:
    """Accuracies are fractions in [0, 1] in the results JSON; charts show percent."""
    f = to_float(v)
    return None if f is None else round(f * 100.0, 4)


def percent_series(values: Sequence[Any]) -> list[float | None]:
    """For training histories whose unit is not fixed: fractions if every value is <= 1."""
    floats = [to_float(v) for v in values]
    present = [f for f in floats if f is not None]
    scale = 100.0 if present and max(present) <= 1.0 else 1.0
    return [None if f is None else round(f * scale, 4) for f in floats]


def _as_255(e: float) -> int | None:
    """k when e is k/255 and not also a short decimal (0.2 stays 0.2; 8/255 becomes 8/255)."""
    if e <= 0 or abs(round(e, 3) - e) < 1e-9:
        return None
    k = e * 255
    return round(k) if abs(k - round(k)) < 1e-3 and round(k) < 255 else None


def norm_of(results: Mapping[str, Any] | None) -> str:
    """The evaluation's norm (robaudit.norms); results stored before norms existed are L-inf."""
    results = results or {}
    norm = results.get("norm") or section(results, "config").get("norm")
    return norm if norm in NORMS else DEFAULT_NORM


def eps_text(eps: Any, norm: str | None = None) -> str:
    """0.0313725 -> '8/255 (0.03137)'; 0.3 -> '0.3'. Only L-inf budgets are pixel steps (k/255):
    L2 and L1 budgets are distances, written as decimals."""
    e = to_float(eps)
    if e is None:
        return "–"
    k = _as_255(e) if (norm or DEFAULT_NORM) == "linf" else None
    return f"{k}/255 ({e:.4g})" if k else f"{e:.4g}"


def eps_short(eps: Any, norm: str | None = None) -> str:
    e = to_float(eps)
    if e is None:
        return "–"
    k = _as_255(e) if (norm or DEFAULT_NORM) == "linf" else None
    return f"{k}/255" if k else f"{e:.4g}"


def norm_label(norm: str | None) -> str:
    """L∞, L2, L1."""
    return _norm_label(norm)


def eps_equal(a: float | None, b: float | None) -> bool:
    """The results format's ε tolerance, with a missing ε equal to nothing."""
    return a is not None and b is not None and same_eps(a, b)


# --------------------------------------------------------------------------- results accessors

def clean_accuracy(results: Mapping[str, Any] | None) -> float | None:
    return to_float((results or {}).get("clean_accuracy"))


def section(payload: Mapping[str, Any] | None, key: str) -> Mapping[str, Any]:
    """``payload[key]`` when it is a mapping, else an empty one (sections may be missing or null)."""
    value = (payload or {}).get(key)
    return value if isinstance(value, Mapping) else {}


def worst_case_rows(results: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``worst_case`` as rows {eps, robust_accuracy, n, ...}, whatever shape it was stored in."""
    wc = (results or {}).get("worst_case")
    rows: list[dict[str, Any]] = []
    if isinstance(wc, Mapping):  # {"0.0314": 0.41} or {"0.0314": {...}}
        for k, v in wc.items():
            row = dict(v) if isinstance(v, Mapping) else {"robust_accuracy": v}
            row.setdefault("eps", to_float(k))
            rows.append(row)
    elif isinstance(wc, list):
        rows = [dict(r) for r in wc if isinstance(r, Mapping)]
    with_eps = [(e, r) for r in rows if (e := to_float(r.get("eps"))) is not None]
    return [r for _, r in sorted(with_eps, key=lambda er: er[0])]


def eps_values(results: Mapping[str, Any] | None) -> list[float]:
    out: list[float] = []
    for r in (results or {}).get("summary") or []:
        e = to_float(r.get("eps")) if isinstance(r, Mapping) else None
        if e is not None and not any(eps_equal(e, o) for o in out):
            out.append(e)
    return sorted(out)


def headline_eps(results: Mapping[str, Any] | None) -> float | None:
    """The ε at which the ladder is read: the evaluation's primary ε (the first of ``config.eps``) if it
    was run, else the ε with the most distinct attacks (ties: the larger ε)."""
    results = results or {}
    grid = eps_values(results)
    if not grid:
        return None
    config = section(results, "config")
    wanted = [config.get(k) for k in ("headline_eps", "primary_eps", "default_eps")]
    if isinstance(config.get("eps"), list) and config["eps"]:
        wanted.append(config["eps"][0])   # the engine's primary ε: the first one asked for
    for want in wanted:
        for e in grid:
            if eps_equal(e, to_float(want)):
                return e
    counts = {}
    for e in grid:
        counts[e] = len({rung_of(r) for r in results.get("summary") or []
                         if isinstance(r, Mapping) and eps_equal(to_float(r.get("eps")), e)})
    return max(grid, key=lambda e: (counts[e], e))


def _ladder_rungs(rows: Mapping[Rung, Any]) -> set[Rung]:
    keep: set[Rung] = set()
    families: dict[str, list[Rung]] = {}
    for g in rows:
        families.setdefault(g.family, []).append(g)
    for fam, rungs in families.items():
        if fam not in LADDER_STEPS:
            keep.update(rungs)
            continue
        canon = [g for g in rungs if g.steps in LADDER_STEPS[fam]]
        if canon:
            keep.update(canon)
        else:
            top = max(g.steps or 0 for g in rungs)
            keep.update(g for g in rungs if (g.steps or 0) == top)
    return keep


def ladder(results: Mapping[str, Any] | None, eps: float | None = None, *,
           full: bool = False) -> list[tuple[Rung, dict[str, Any]]]:
    """The attack ladder at one ε: clean, each attack (weakest configuration first), worst case.

    Each entry is (rung, row) where row has ``robust_accuracy`` (fraction) and optionally ``n``.
    ``full=False`` keeps the ladder's step counts only (see LADDER_STEPS); ``full=True`` keeps every
    configuration that was run at that ε.
    """
    results = results or {}
    eps = headline_eps(results) if eps is None else eps
    out: list[tuple[Rung, dict[str, Any]]] = []
    clean = clean_accuracy(results)
    if clean is not None:
        n = section(results, "config").get("n_examples")
        out.append((Rung(CLEAN), {"robust_accuracy": clean, "eps": 0.0, "n": n,
                                  "ci95": results.get("clean_accuracy_ci95")}))
    if eps is None:
        return out
    rows: dict[Rung, dict[str, Any]] = {}
    for r in results.get("summary") or []:
        if not isinstance(r, Mapping) or not eps_equal(to_float(r.get("eps")), eps):
            continue
        if to_float(r.get("robust_accuracy")) is None:
            continue
        rows[rung_of(r)] = dict(r)
    if not full:
        rows = {g: r for g, r in rows.items() if g.family not in DETAIL_FAMILIES}
        rows = {g: r for g, r in rows.items() if g in _ladder_rungs(rows)}
    for rung in sorted(rows, key=lambda g: g.order):
        out.append((rung, rows[rung]))
    for r in worst_case_rows(results):
        if eps_equal(to_float(r.get("eps")), eps) and to_float(r.get("robust_accuracy")) is not None:
            out.append((Rung(WORST), r))
    return out


# --------------------------------------------------------------------------- curves

@dataclass(frozen=True)
class EpsSeries:
    """One line (or lone marker) of the accuracy-vs-ε chart: (ε, row) points, ε ascending.

    ``curve``: measured at more than one ε, so drawn as a line; its first point is then the clean
    accuracy at ε = 0 (a row marked ``_clean``)."""

    rung: Rung
    label: str
    points: list[tuple[float, dict[str, Any]]]
    curve: bool
    sanity: bool = False     # the large-ε check (C2): lone markers, never joined to anything


def _iter_curve_entries(raw: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(raw, list):
        yield from (c for c in raw if isinstance(c, Mapping))
    elif isinstance(raw, Mapping):
        if "steps" in raw and isinstance(raw.get("steps"), list):
            yield raw
        else:  # keyed by something, e.g. {"pgd@0.0314": {...}}
            for v in raw.values():
                if isinstance(v, Mapping):
                    yield v


def _curves(m: Model, kind: str) -> Iterable[Mapping[str, Any]]:
    curves = (m.results or {}).get("curves")
    return _iter_curve_entries(curves.get(kind) if isinstance(curves, Mapping) else None)


def eps_curves(m: Model) -> list[dict[str, Any]]:
    """``curves["eps"]``: accuracy-vs-ε curves measured as such (the audit preset's nested PGD-k runs),
    as [{attack, family, steps, points: [(eps, acc, row)]}]."""
    out = []
    for c in _curves(m, "eps"):
        pts = c.get("points") if isinstance(c.get("points"), list) else []
        if not pts and isinstance(c.get("eps"), list):
            acc = c.get("robust_accuracy") or []
            pts = [{"eps": e, "robust_accuracy": a} for e, a in zip(c["eps"], acc)]
        read = [(to_float(p.get("eps")), to_float(p.get("robust_accuracy")), p)
                for p in pts or [] if isinstance(p, Mapping)]
        rows = sorted((e, a, p) for e, a, p in read if e is not None and a is not None)
        if rows:
            attack = str(c.get("attack") or "pgd")
            out.append({"attack": attack, "family": family_of(attack), "steps": int_or_none(c.get("steps")),
                        "points": rows, "nested": bool(c.get("nested"))})
    return out


def eps_series(m: Model) -> list[EpsSeries]:
    """What the accuracy-vs-ε chart draws for one model: each attack configuration (ladder order),
    each measured ε-curve, then the worst case."""
    raw: list[tuple[Rung, str, list[tuple[float, dict[str, Any]]]]] = []
    by_rung: dict[Rung, list[tuple[float, dict[str, Any]]]] = {}
    sanity: dict[Rung, list[tuple[float, dict[str, Any]]]] = {}
    for r in m.summary:
        e, acc = to_float(r.get("eps")), to_float(r.get("robust_accuracy"))
        if e is None or acc is None:
            continue
        rung = rung_of(r)
        if rung.family not in DETAIL_FAMILIES:
            (sanity if is_sanity_run(r, m.results) else by_rung).setdefault(rung, []).append((e, dict(r)))
    for rung in sorted(by_rung, key=lambda g: g.order):
        raw.append((rung, rung.label, by_rung[rung]))
    for c in eps_curves(m):
        rung = Rung(c["family"], c["steps"], None, c["attack"])
        raw.append((rung, f"{rung.label} ε-curve", [(e, {**p, "robust_accuracy": a}) for e, a, p in c["points"]]))
    wc = [(e, r) for r in worst_case_rows(m.results)
          if (e := to_float(r.get("eps"))) is not None and to_float(r.get("robust_accuracy")) is not None]
    if wc:
        raw.append((Rung(WORST), family_label(WORST) or WORST, wc))
    clean = clean_accuracy(m.results)
    out = []
    for rung, label, pts in raw:
        pts = _one_per_eps(pts)
        curve = len(pts) > 1
        if curve and clean is not None:  # a curve starts at ε = 0 with the clean accuracy
            clean_row = {"robust_accuracy": clean, "_clean": True,
                         "ci95": (m.results or {}).get("clean_accuracy_ci95")}
            pts = [(0.0, clean_row)] + [p for p in pts if p[0] > 0]
        out.append(EpsSeries(rung, label, pts, curve))
    # The large-ε check measures something else (can the attack erase the image at all?) on a subset
    # of the points: its markers stand alone, so no line suggests accuracies between ε = 0 and 0.5.
    for rung in sorted(sanity, key=lambda g: g.order):
        pts = sorted(sanity[rung], key=lambda p: p[0])
        out.append(EpsSeries(rung, f"{rung.label} large-ε check", pts, curve=False, sanity=True))
    return out


def _one_per_eps(pts: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    """ε ascending, one point per ε: of two rows at one ε (the worst case over all points and over
    AutoAttack's prefix, say) the one over more points, so no line runs straight up at one ε."""
    best: list[tuple[float, dict[str, Any]]] = []
    for e, row in sorted(pts, key=lambda p: p[0]):
        if best and eps_equal(best[-1][0], e):
            if (int_or_none(row.get("n")) or 0) > (int_or_none(best[-1][1].get("n")) or 0):
                best[-1] = (e, row)
        else:
            best.append((e, row))
    return best


def is_sanity_run(row: Mapping[str, Any], results: Mapping[str, Any] | None = None) -> bool:
    """A summary row of the large-ε check (C2): its bitset name carries the engine's marker, or (results
    without one) its ε is one of the configured ``large_eps`` values."""
    key = str(row.get("key") or row.get("bits_key") or "")
    if key:
        return key.split("@", 1)[0].endswith(LARGE_EPS)
    large = section(results, "config").get("large_eps")
    e = to_float(row.get("eps"))
    return isinstance(large, list) and any(eps_equal(e, to_float(x)) for x in large)


def steps_curves(m: Model) -> list[dict[str, Any]]:
    """Robust accuracy against the number of attack steps, as curves
    [{attack, family, eps, restarts, steps: [...], acc: [... fractions], n}].

    Read from ``curves["steps"]`` when present, else derived from summary rows that differ only
    in their step count.
    """
    out: list[dict[str, Any]] = []
    for c in _curves(m, "steps"):
        steps = c.get("steps") or c.get("x")
        acc = c.get("robust_accuracy") or c.get("accuracy") or c.get("y")
        if isinstance(c.get("points"), list):
            points = [p for p in c["points"] if isinstance(p, Mapping)]
            steps = [p.get("steps") for p in points]
            acc = [p.get("robust_accuracy", p.get("accuracy")) for p in points]
        if not isinstance(steps, list) or not isinstance(acc, list) or len(steps) != len(acc):
            continue
        pairs = sorted((k, a) for s, a in zip(steps, acc)
                       if (k := int_or_none(s)) and k > 0 and to_float(a) is not None)
        if len(pairs) >= 2:
            attack = str(c.get("attack") or "pgd")
            out.append({"attack": attack, "family": family_of(attack),
                        "eps": to_float(c.get("eps")), "restarts": int_or_none(c.get("restarts")) or 1,
                        "steps": [p[0] for p in pairs], "acc": [to_float(p[1]) for p in pairs],
                        "n": c.get("n")})
    if out:
        return out
    groups: dict[tuple[str, float, int], list[tuple[int, float, Any]]] = {}
    for r in m.summary:
        fam = family_of(str(r.get("attack") or ""))
        s, e, a = int_or_none(r.get("steps")), to_float(r.get("eps")), to_float(r.get("robust_accuracy"))
        if not is_stepped(fam) or not s or e is None or a is None:
            continue
        key = (str(r.get("attack")), round(e, 9), int_or_none(r.get("restarts")) or 1)
        groups.setdefault(key, []).append((s, a, r.get("n")))
    for (attack, e, restarts), pts in groups.items():
        pts.sort()
        if len({p[0] for p in pts}) >= 2:
            out.append({"attack": attack, "family": family_of(attack), "eps": e, "restarts": restarts,
                        "steps": [p[0] for p in pts], "acc": [p[1] for p in pts], "n": pts[-1][2]})
    return out


def still_falling(steps: Sequence[int], acc: Sequence[float], n: Any = None) -> float | None:
    """The drop (percentage points) over the last segment of a steps curve when the curve is still
    falling there, else None. A drop must exceed STILL_FALLING_PP and two test points to count."""
    if len(steps) < 2 or len(acc) < 2:
        return None
    drop = (acc[-2] - acc[-1]) * 100.0
    n_int = int_or_none(n)
    threshold = max(STILL_FALLING_PP, 200.0 / n_int if n_int else 0.0)
    return drop if drop > threshold + 1e-9 else None


def curves_at_one_eps(m: Model) -> list[dict[str, Any]]:
    """A model's steps curves at its ladder ε (or, failing that, at the ε with the longest curve)."""
    curves = steps_curves(m)
    if not curves:
        return []
    eps = headline_eps(m.results)
    at = [c for c in curves if eps_equal(c["eps"], eps)]
    if not at:
        best = max(curves, key=lambda c: len(c["steps"]))
        at = [c for c in curves if eps_equal(c["eps"], best["eps"]) or c["eps"] is best["eps"]]
    return sorted(at, key=lambda c: (family_order(c["family"]), c["restarts"]))


# --------------------------------------------------------------------------- training history

# Where histories keep each measure, in order of preference.
HISTORY_KEYS = {
    "clean": ("clean_acc", "test_clean_acc", "clean_accuracy", "test_acc"),
    "pgd20": ("pgd20_acc", "test_pgd20_acc", "pgd_acc", "robust_acc", "pgd20_accuracy"),
    "train": ("train_acc", "train_accuracy"),
}


def training_history(checkpoint: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per-epoch training records, wherever the checkpoint record keeps them."""
    if not isinstance(checkpoint, Mapping):
        return []
    candidates: list[Any] = []
    meta = _meta(checkpoint)
    for holder in (checkpoint, checkpoint.get("metadata"), checkpoint.get("metrics"), meta.get("metrics"),
                   checkpoint.get("training")):
        if isinstance(holder, Mapping):
            for key in ("history", "training_history", "epochs", "per_epoch"):
                candidates.append(holder.get(key))
    for c in candidates:
        if isinstance(c, list) and c and all(isinstance(r, Mapping) for r in c):
            return [dict(r) for r in c]
        if isinstance(c, Mapping) and c:  # column form {"epoch": [...], "clean_acc": [...]}
            cols = {k: v for k, v in c.items() if isinstance(v, list)}
            if cols:
                n = max(len(v) for v in cols.values())
                return [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(n)]
    return []


def history_epochs(history: Sequence[Mapping[str, Any]]) -> list[int]:
    """The epoch numbers of a history's records (1, 2, ... when any record lacks one)."""
    epochs = [int_or_none(r.get("epoch")) for r in history]
    present = [e for e in epochs if e is not None]
    return present if len(present) == len(epochs) else list(range(1, len(history) + 1))


def history_percent(history: Sequence[Mapping[str, Any]], measure: str) -> list[float | None] | None:
    """One measure of HISTORY_KEYS per epoch in percent, or None when no record has it."""
    for key in HISTORY_KEYS[measure]:
        if any(to_float(r.get(key)) is not None for r in history):
            return percent_series([r.get(key) for r in history])
    return None


def lr_changes(history: Sequence[Mapping[str, Any]]) -> list[tuple[int, float, float]]:
    """(i, lr before, lr after) for each record i whose learning rate differs from record i - 1's."""
    lrs = [to_float(r.get("lr")) for r in history]
    return [(i, before, after) for i, (before, after) in enumerate(zip(lrs, lrs[1:]), start=1)
            if before is not None and after is not None and not math.isclose(after, before, rel_tol=1e-9)]


# --------------------------------------------------------------------------- checkpoint metadata

def _meta(checkpoint: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not isinstance(checkpoint, Mapping):
        return {}
    meta = checkpoint.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def checkpoint_field(checkpoint: Mapping[str, Any] | None, key: str) -> Any:
    """A field from the checkpoint record itself or from its robaudit metadata."""
    if not isinstance(checkpoint, Mapping):
        return None
    v = checkpoint.get(key)
    return v if v not in (None, "") else _meta(checkpoint).get(key)


def method_of(checkpoint: Mapping[str, Any] | None) -> str | None:
    """The training method, from the record, its metadata or its hyper-parameters."""
    v = checkpoint_field(checkpoint, "method")
    if v:
        return str(v)
    hp = hyperparameters(checkpoint)
    return str(hp["method"]) if hp.get("method") else None


def hyperparameters(checkpoint: Mapping[str, Any] | None) -> Mapping[str, Any]:
    for holder in (checkpoint, _meta(checkpoint)):
        if isinstance(holder, Mapping):
            for key in ("hyperparameters", "config", "train_config"):
                hp = holder.get(key)
                if isinstance(hp, Mapping) and hp:
                    return hp
    return {}


def label_smoothing_of(checkpoint: Mapping[str, Any] | None) -> float | None:
    hp = hyperparameters(checkpoint)
    for key in ("label_smoothing", "label_smoothing_delta", "delta", "ls"):
        v = to_float(hp.get(key))
        if v is not None:
            return v
    return to_float(checkpoint_field(checkpoint, "label_smoothing"))


@dataclass(frozen=True, order=True)
class SmoothingPoint:
    """One model's robust accuracy (percent) under one attack, at its label-smoothing δ."""

    delta: float
    accuracy: float
    model: str
    reading: str     # what was measured, e.g. "PGD-20 @ ε = 0.3"
    attack: str      # the rung's label, e.g. "PGD-20"


def label_smoothing_points(models: Sequence[Model]) -> dict[tuple[str, str], list[SmoothingPoint]]:
    """Points of the δ chart by (kind, method), kind "PGD" (PGD-20, else the most steps, no restarts)
    or "AutoAttack", for each model with a δ.

    A checkpoint evaluated more than once (say with the paper and the audit presets) counts once per
    kind, from the evaluation that ran more of the ladder.
    """
    best: dict[tuple[str, str], tuple[int, SmoothingPoint, str]] = {}
    for m in models:
        delta = label_smoothing_of(m.checkpoint)
        if delta is None:
            continue
        method = method_of(m.checkpoint) or "unknown method"
        eps = headline_eps(m.results)
        lad = dict(ladder(m.results, eps))
        pgd = [g for g in lad if g.family == "pgd" and not g.restarts]
        pgd_pick = next((g for g in pgd if g.steps == 20), None) or (max(pgd, key=lambda g: g.steps or 0)
                                                                     if pgd else None)
        aa = next((g for g in lad if g.family == "autoattack"), None)
        ck = (m.checkpoint or {}).get("id") if isinstance(m.checkpoint, Mapping) else None
        model_key = str(ck) if ck is not None else m.label
        for kind, g in (("PGD", pgd_pick), ("AutoAttack", aa)):
            if g is None:
                continue
            acc = percent(lad[g].get("robust_accuracy"))
            if acc is None:
                continue
            point = SmoothingPoint(delta, acc, m.label, f"{g.label} @ ε = {eps_text(eps)}", g.label)
            key = (kind, model_key)
            if key not in best or len(lad) > best[key][0]:
                best[key] = (len(lad), point, method)
    points: dict[tuple[str, str], list[SmoothingPoint]] = {}
    for (kind, _), (_, point, method) in best.items():
        points.setdefault((kind, method), []).append(point)
    return points
