"""Plotly figures for robustness results, built as plain figure dicts.

Every builder takes already-loaded data (results JSON, checkpoint metadata) and
returns ``{"data": [...], "layout": {...}}`` ready for ``Plotly.newPlot``, or
``None`` when the inputs hold nothing to draw. No builder touches the network,
the database or the file system, so the same figures serve the live pages, the
share page and the self-contained HTML export.

Encoding conventions, the same in every chart:
- colour = attack (Okabe-Ito, colour-blind safe), so "AutoAttack" is always vermillion;
- marker symbol and line dash = model, so overlaid models stay distinguishable in greyscale;
- accuracies are shown in percent; ε in the [0, 1] pixel scale (hover also gives x/255).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#999999",
}

SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "triangle-down", "cross", "pentagon", "hexagon"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]

EPS_AXIS = "ε (L∞, pixel scale [0, 1])"
ACC_AXIS = "robust accuracy (%)"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

# A steps curve whose last segment still drops by more than this many
# percentage points (and by more than one test point) is flagged as not converged.
STILL_FALLING_PP = 0.5


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
        if self.family == "aa-stage":
            stage = self.raw.split(":", 1)[-1]
            return f"AutoAttack after {FAMILY_LABELS.get(attack_family(stage), stage.upper())}"
        base = FAMILY_LABELS.get(self.family, self.raw or self.family)
        if self.family in STEPPED_FAMILIES and self.steps:
            base = f"{base}-{self.steps}"
        if self.restarts and self.restarts > 1:
            base = f"{base}×{self.restarts}"
        return base

    @property
    def order(self) -> tuple:
        return (FAMILY_ORDER.get(self.family, 50), self.raw, self.steps or 0, self.restarts or 0)

    @property
    def color(self) -> str:
        if self.family == "pgd" and self.steps and self.steps >= 50:
            return OKABE_ITO["blue"]
        if self.family == "cw" and self.steps and self.steps < 50:
            return OKABE_ITO["bluish_green"]
        return FAMILY_COLORS.get(self.family, OKABE_ITO["reddish_purple"])


FAMILY_LABELS = {
    "clean": "clean", "fgsm": "FGSM", "rs-fgsm": "RS-FGSM", "pgd": "PGD", "cw": "CW", "apgd-ce": "APGD-CE",
    "apgd-dlr": "APGD-T", "fab": "FAB-T", "square": "Square", "autoattack": "AutoAttack", "transfer": "transfer",
    "noise": "random noise", "worst": "worst case", "aa-stage": "AutoAttack stage",
}
FAMILY_ORDER = {
    "clean": 0, "noise": 1, "transfer": 2, "fgsm": 3, "rs-fgsm": 4, "pgd": 5, "cw": 6, "apgd-ce": 7,
    "apgd-dlr": 8, "fab": 9, "square": 10, "aa-stage": 11, "autoattack": 12, "worst": 99,
}
FAMILY_COLORS = {
    "clean": OKABE_ITO["grey"], "fgsm": OKABE_ITO["orange"], "rs-fgsm": "#B07A00", "pgd": OKABE_ITO["sky_blue"],
    "cw": "#00735A", "apgd-ce": OKABE_ITO["blue"], "apgd-dlr": OKABE_ITO["blue"], "fab": OKABE_ITO["reddish_purple"],
    "square": OKABE_ITO["yellow"], "autoattack": OKABE_ITO["vermillion"], "aa-stage": "#E8956B",
    "transfer": OKABE_ITO["reddish_purple"], "noise": OKABE_ITO["yellow"], "worst": OKABE_ITO["black"],
}
# Bar fill patterns, so the ladder reads without colour too.
FAMILY_PATTERNS = {
    "clean": "", "fgsm": "/", "rs-fgsm": "/", "pgd": "", "cw": "x", "autoattack": ".", "worst": "",
    "transfer": "-", "noise": "+", "square": "|", "apgd-ce": "\\", "apgd-dlr": "\\", "fab": "-",
}
# Families left out of the ladder and the ε chart (listed in the tables only).
DETAIL_FAMILIES = {"aa-stage"}
STEPPED_FAMILIES = {"pgd", "cw", "apgd-ce", "apgd-dlr"}
STEP_ATTACKS = {"pgd", "cw", "apgd-ce", "apgd-dlr"}


def attack_family(name: Any) -> str:
    """Map an attack name from the results JSON to a family key (lower-case, tolerant of spelling).

    The engine's names (robaudit.evaluation.ATTACKS): fgsm, rs-fgsm, pgd, cw, apgd-ce, apgd-t, fab-t,
    square, autoattack, transfer, noise; cumulative AutoAttack stages come as ``autoattack:<stage>``.
    """
    n = re.sub(r"[\s_]+", "-", str(name or "").strip().lower())
    if not n:
        return "unknown"
    if n in ("clean", "none", "natural"):
        return "clean"
    if n.startswith(("autoattack:", "aa:")):
        return "aa-stage"
    if n.startswith(("rs-fgsm", "rfgsm", "r-fgsm")):
        return "rs-fgsm"
    if n.startswith("fgsm") or n == "fgm":
        return "fgsm"
    if n in ("aa", "autoattack", "auto-attack", "aa-standard") or n.startswith("autoattack"):
        return "autoattack"
    if n.startswith("apgd-t") or "dlr" in n:
        return "apgd-dlr"
    if n.startswith("apgd"):
        return "apgd-ce"
    if n.startswith("fab"):
        return "fab"
    if n.startswith("square"):
        return "square"
    if n.startswith(("cw", "pgd-cw", "pgd-margin", "margin")) or "cw" in n.split("-"):
        return "cw"
    if n.startswith("pgd") or n.startswith("bim"):
        return "pgd"
    if n.startswith("transfer"):
        return "transfer"
    if n.startswith(("noise", "random", "uniform", "gaussian")):
        return "noise"
    if n in ("worst", "worst-case", "worst-case-per-sample"):
        return "worst"
    return n


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def rung_of(row: Mapping[str, Any]) -> Rung:
    family = attack_family(row.get("attack"))
    steps = _int_or_none(row.get("steps")) if family in STEPPED_FAMILIES else None
    restarts = _int_or_none(row.get("restarts"))
    return Rung(family, steps, restarts if (restarts or 0) > 1 else None, str(row.get("attack") or ""))


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


def eps_text(eps: Any) -> str:
    """0.0313725 -> '8/255 (0.03137)'; 0.3 -> '0.3'."""
    e = to_float(eps)
    if e is None:
        return "–"
    k = _as_255(e)
    return f"{k}/255 ({e:.4g})" if k else f"{e:.4g}"


def eps_short(eps: Any) -> str:
    e = to_float(eps)
    if e is None:
        return "–"
    k = _as_255(e)
    return f"{k}/255" if k else f"{e:.4g}"


def _same_eps(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def model_styles(models: Sequence[Model]) -> dict[str, dict[str, str]]:
    return {m.label: {"symbol": SYMBOLS[i % len(SYMBOLS)], "dash": DASHES[i % len(DASHES)]}
            for i, m in enumerate(models)}


# --------------------------------------------------------------------------- results accessors

def clean_accuracy(results: Mapping[str, Any] | None) -> float | None:
    return to_float((results or {}).get("clean_accuracy"))


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
    rows = [r for r in rows if to_float(r.get("eps")) is not None]
    return sorted(rows, key=lambda r: to_float(r["eps"]))


def eps_values(results: Mapping[str, Any] | None) -> list[float]:
    out: list[float] = []
    for r in (results or {}).get("summary") or []:
        e = to_float(r.get("eps")) if isinstance(r, Mapping) else None
        if e is not None and not any(_same_eps(e, o) for o in out):
            out.append(e)
    return sorted(out)


def headline_eps(results: Mapping[str, Any] | None) -> float | None:
    """The ε at which the ladder is read: the evaluation's primary ε (the first of ``config.eps``) if it
    was run, else the ε with the most distinct attacks (ties: the larger ε)."""
    results = results or {}
    grid = eps_values(results)
    if not grid:
        return None
    config = results.get("config") if isinstance(results.get("config"), Mapping) else {}
    wanted = [config.get(k) for k in ("headline_eps", "primary_eps", "default_eps")]
    if isinstance(config.get("eps"), list) and config["eps"]:
        wanted.append(config["eps"][0])   # the engine's primary ε: the first one asked for
    for want in wanted:
        for e in grid:
            if _same_eps(e, to_float(want)):
                return e
    counts = {}
    for e in grid:
        counts[e] = len({rung_of(r) for r in results.get("summary") or []
                         if isinstance(r, Mapping) and _same_eps(to_float(r.get("eps")), e)})
    return max(grid, key=lambda e: (counts[e], e))


# The step counts the ladder shows per attack family (PGD-20, PGD-100, CW-100, ...); an attack run
# at other step counts only (a quick preset's PGD-10, say) shows its largest step count instead.
LADDER_STEPS = {"pgd": (20, 100), "cw": (100,), "apgd-ce": (100,), "apgd-dlr": (100,)}


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
        out.append((Rung("clean"), {"robust_accuracy": clean, "eps": 0.0,
                                     "n": (results.get("config") or {}).get("n_examples")
                                     if isinstance(results.get("config"), Mapping) else None}))
    if eps is None:
        return out
    rows: dict[Rung, dict[str, Any]] = {}
    for r in results.get("summary") or []:
        if not isinstance(r, Mapping) or not _same_eps(to_float(r.get("eps")), eps):
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
        if _same_eps(to_float(r.get("eps")), eps) and to_float(r.get("robust_accuracy")) is not None:
            out.append((Rung("worst"), r))
    return out


# --------------------------------------------------------------------------- layout helpers

def _base_layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        "font": {"family": FONT, "size": 13, "color": "#1f2933"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "margin": {"l": 64, "r": 24, "t": 56, "b": 64},
        "hovermode": "closest",
        "hoverlabel": {"namelength": -1, "font": {"family": FONT}},
        "legend": {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "font": {"size": 12}},
        "xaxis": {"title": {"text": x_title}, "showgrid": True, "gridcolor": "#e4e7eb",
                  "zeroline": False, "linecolor": "#9aa5b1", "ticks": "outside"},
        "yaxis": {"title": {"text": y_title}, "showgrid": True, "gridcolor": "#e4e7eb",
                  "zeroline": False, "linecolor": "#9aa5b1", "ticks": "outside"},
    }
    layout.update(extra)
    return layout


def _acc_axis_range(values: Iterable[float | None]) -> list[float]:
    """From just below 0 (so points at 0 % stay visible above the axis line) to a little above the
    highest value, at least 25 % so that small differences are not blown up."""
    vals = [v for v in values if v is not None]
    top = max(vals) if vals else 100.0
    return [-2.0, 102.0 if top >= 95 else max(25.0, top + 5.0)]


def _eps_ticks(grid: Sequence[float]) -> dict[str, Any]:
    if not grid or len(grid) > 12:
        return {}
    return {"tickvals": list(grid), "ticktext": [eps_short(e) for e in grid]}


# --------------------------------------------------------------------------- figures

def eps_curves(m: Model) -> list[dict[str, Any]]:
    """``curves["eps"]``: accuracy-vs-ε curves measured as such (the audit preset's nested PGD-k runs),
    as [{attack, family, steps, points: [(eps, acc, row)]}]."""
    curves = (m.results or {}).get("curves")
    raw = curves.get("eps") if isinstance(curves, Mapping) else None
    out = []
    for c in _iter_curve_entries(raw):
        pts = c.get("points") if isinstance(c.get("points"), list) else []
        if not pts and isinstance(c.get("eps"), list):
            acc = c.get("robust_accuracy") or []
            pts = [{"eps": e, "robust_accuracy": a} for e, a in zip(c["eps"], acc)]
        rows = [(to_float(p.get("eps")), to_float(p.get("robust_accuracy")), p) for p in pts if isinstance(p, Mapping)]
        rows = sorted((e, a, p) for e, a, p in rows if e is not None and a is not None)
        if rows:
            out.append({"attack": str(c.get("attack") or "pgd"), "family": attack_family(c.get("attack") or "pgd"),
                        "steps": _int_or_none(c.get("steps")), "points": rows, "nested": bool(c.get("nested"))})
    return out


def accuracy_vs_eps(models: Sequence[Model]) -> dict[str, Any] | None:
    """Robust accuracy vs ε: one line per attack configuration (and the worst case), per model.

    A configuration run at several ε is a line starting at the clean accuracy (ε = 0); one run at a
    single ε is a marker only (nothing was measured between). Measured ε-curves (``curves["eps"]``)
    are drawn as lines too.
    """
    styles = model_styles(models)
    multi = len(models) > 1
    traces: list[dict[str, Any]] = []
    grid: list[float] = []
    all_y: list[float | None] = []
    for m in models:
        series: list[tuple[Rung, str, list[tuple[float, dict[str, Any]]]]] = []
        by_rung: dict[Rung, list[tuple[float, dict[str, Any]]]] = {}
        for r in m.summary:
            e, acc = to_float(r.get("eps")), to_float(r.get("robust_accuracy"))
            if e is None or acc is None:
                continue
            rung = rung_of(r)
            if rung.family not in DETAIL_FAMILIES:
                by_rung.setdefault(rung, []).append((e, dict(r)))
        for rung in sorted(by_rung, key=lambda g: g.order):
            series.append((rung, rung.label, by_rung[rung]))
        for c in eps_curves(m):
            rung = Rung(c["family"], c["steps"], None, c["attack"])
            series.append((rung, f"{rung.label} ε-curve", [(e, {**p, "robust_accuracy": a}) for e, a, p in c["points"]]))
        wc = [(to_float(r["eps"]), r) for r in worst_case_rows(m.results) if to_float(r.get("robust_accuracy")) is not None]
        if wc:
            series.append((Rung("worst"), "worst case", wc))
        clean = clean_accuracy(m.results)
        style = styles[m.label]
        for rung, label, pts in series:
            pts = sorted(pts, key=lambda p: p[0])
            line = len(pts) > 1
            if line and clean is not None:  # a curve starts at ε = 0 with the clean accuracy
                pts = [(0.0, {"robust_accuracy": clean, "_clean": True})] + [p for p in pts if p[0] > 0]
            xs = [p[0] for p in pts]
            ys = [percent(p[1].get("robust_accuracy")) for p in pts]
            grid.extend(x for x in xs if not any(_same_eps(x, g) for g in grid))
            all_y.extend(ys)
            hover = []
            for x, (_, row) in zip(xs, pts):
                if row.get("_clean"):
                    hover.append(f"<b>{_esc(m.label)}</b><br>clean (ε = 0)")
                    continue
                extra = f"<br>n = {row['n']}" if row.get("n") not in (None, "") else ""
                if row.get("alpha") not in (None, ""):
                    extra += f"<br>step α = {eps_text(row.get('alpha'))}"
                if row.get("note"):
                    extra += f"<br><i>{_esc(row['note'])}</i>"
                hover.append(f"<b>{_esc(m.label)}</b><br>{_esc(label)}, ε = {eps_text(x)}{extra}")
            traces.append({
                "type": "scatter", "mode": "lines+markers" if line else "markers",
                "name": f"{label} · {m.label}" if multi else label,
                "legendgroup": m.label if multi else label,
                "x": xs, "y": ys, "text": hover,
                "hovertemplate": "%{text}<br>robust accuracy = %{y:.2f}%<extra></extra>",
                "line": {"color": rung.color, "dash": style["dash"] if multi else _rung_dash(rung),
                         "width": 3 if rung.family == "worst" else 2},
                "marker": {"color": rung.color, "symbol": style["symbol"] if multi else _rung_symbol(rung),
                           "size": 8 if line else 11, "line": {"width": 1, "color": "#ffffff"}},
            })
    if not traces:
        return None
    grid.sort()
    layout = _base_layout("Robust accuracy vs ε", EPS_AXIS, ACC_AXIS)
    layout["xaxis"].update(_eps_ticks(grid))
    layout["xaxis"]["rangemode"] = "tozero"
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    return {"data": traces, "layout": layout}


def _rung_symbol(rung: Rung) -> str:
    return {"clean": "circle", "fgsm": "triangle-up", "rs-fgsm": "triangle-down", "pgd": "circle", "cw": "square",
            "autoattack": "diamond", "worst": "x", "noise": "cross", "transfer": "star"}.get(rung.family, "pentagon")


def _rung_dash(rung: Rung) -> str:
    return {"worst": "solid", "autoattack": "dash", "cw": "dot", "fgsm": "dashdot"}.get(rung.family, "solid")


def steps_curves(m: Model) -> list[dict[str, Any]]:
    """Robust accuracy against the number of attack steps, as curves
    [{attack, family, eps, restarts, steps: [...], acc: [... fractions], n}].

    Read from ``curves["steps"]`` when present, else derived from summary rows that differ only
    in their step count.
    """
    out: list[dict[str, Any]] = []
    curves = (m.results or {}).get("curves")
    raw = curves.get("steps") if isinstance(curves, Mapping) else None
    for c in _iter_curve_entries(raw):
        steps = c.get("steps") or c.get("x")
        acc = c.get("robust_accuracy") or c.get("accuracy") or c.get("y")
        if isinstance(c.get("points"), list):
            pts = [p for p in c["points"] if isinstance(p, Mapping)]
            steps = [p.get("steps") for p in pts]
            acc = [p.get("robust_accuracy", p.get("accuracy")) for p in pts]
        if not isinstance(steps, list) or not isinstance(acc, list) or len(steps) != len(acc):
            continue
        pairs = sorted((int(s), a) for s, a in zip(steps, acc)
                       if _int_or_none(s) and _int_or_none(s) > 0 and to_float(a) is not None)
        if len(pairs) >= 2:
            out.append({"attack": str(c.get("attack") or "pgd"), "family": attack_family(c.get("attack") or "pgd"),
                        "eps": to_float(c.get("eps")), "restarts": _int_or_none(c.get("restarts")) or 1,
                        "steps": [p[0] for p in pairs], "acc": [to_float(p[1]) for p in pairs],
                        "n": c.get("n")})
    if out:
        return out
    groups: dict[tuple, list[tuple[int, float, Any]]] = {}
    for r in m.summary:
        fam = attack_family(r.get("attack"))
        s, e, a = _int_or_none(r.get("steps")), to_float(r.get("eps")), to_float(r.get("robust_accuracy"))
        if fam not in STEP_ATTACKS or not s or e is None or a is None:
            continue
        key = (str(r.get("attack")), round(e, 9), _int_or_none(r.get("restarts")) or 1)
        groups.setdefault(key, []).append((s, a, r.get("n")))
    for (attack, e, restarts), pts in groups.items():
        pts.sort()
        if len({p[0] for p in pts}) >= 2:
            out.append({"attack": attack, "family": attack_family(attack), "eps": e, "restarts": restarts,
                        "steps": [p[0] for p in pts], "acc": [p[1] for p in pts], "n": pts[-1][2]})
    return out


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


def still_falling(steps: Sequence[int], acc: Sequence[float], n: Any = None) -> float | None:
    """The drop (percentage points) over the last segment of a steps curve when the curve is still
    falling there, else None. A drop must exceed STILL_FALLING_PP and two test points to count."""
    if len(steps) < 2 or len(acc) < 2:
        return None
    drop = (acc[-2] - acc[-1]) * 100.0
    n_int = _int_or_none(n)
    threshold = max(STILL_FALLING_PP, 200.0 / n_int if n_int else 0.0)
    return drop if drop > threshold + 1e-9 else None


def _curves_at_one_eps(m: Model) -> list[dict[str, Any]]:
    """A model's steps curves at its ladder ε (or, failing that, at the ε with the longest curve)."""
    curves = steps_curves(m)
    if not curves:
        return []
    eps = headline_eps(m.results)
    at = [c for c in curves if _same_eps(c["eps"], eps)]
    if not at:
        best = max(curves, key=lambda c: len(c["steps"]))
        at = [c for c in curves if _same_eps(c["eps"], best["eps"]) or c["eps"] is best["eps"]]
    return sorted(at, key=lambda c: (FAMILY_ORDER.get(c["family"], 50), c["restarts"]))


def accuracy_vs_steps(models: Sequence[Model]) -> dict[str, Any] | None:
    """Robust accuracy vs attack steps (log axis) at each model's ladder ε. A curve still falling at
    its largest step count is annotated: the attack had not converged (the PGD-overfitting probe)."""
    styles = model_styles(models)
    traces: list[dict[str, Any]] = []
    falling: list[tuple[float, Model, dict[str, Any], list[float | None]]] = []
    all_y: list[float | None] = []
    all_steps: set[int] = set()
    for m in models:
        for c in _curves_at_one_eps(m):
            rung = Rung(c["family"], None, c["restarts"] if c["restarts"] > 1 else None, c["attack"])
            name = f"{rung.label} @ ε = {eps_short(c['eps'])}"
            if len(models) > 1:
                name = f"{name} · {m.label}"
            ys = [percent(a) for a in c["acc"]]
            all_y.extend(ys)
            all_steps.update(c["steps"])
            style = styles[m.label]
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": name, "legendgroup": m.label,
                "x": c["steps"], "y": ys,
                "text": [f"<b>{_esc(m.label)}</b><br>{rung.label}, ε = {eps_text(c['eps'])}"
                         + (f", {c['restarts']} restarts" if c["restarts"] > 1 else "")
                         + (f"<br>n = {c['n']}" if c.get("n") else "") for _ in ys],
                "hovertemplate": "%{text}<br>steps = %{x}<br>robust accuracy = %{y:.2f}%<extra></extra>",
                "line": {"color": rung.color, "dash": style["dash"], "width": 2},
                "marker": {"color": rung.color, "symbol": style["symbol"], "size": 8,
                           "line": {"width": 1, "color": "#ffffff"}},
            })
            drop = still_falling(c["steps"], c["acc"], c["n"])
            if drop is not None:
                falling.append((drop, m, c, ys))
    if not traces:
        return None
    # One annotation per model (its steepest still-falling curve), so the chart stays readable.
    annotations: list[dict[str, Any]] = []
    seen: set[str] = set()
    for drop, m, c, ys in sorted(falling, key=lambda t: -t[0]):
        if m.label in seen:
            continue
        seen.add(m.label)
        label = Rung(c["family"], None, None, c["attack"]).label
        annotations.append({
            "x": math.log10(c["steps"][-1]), "y": ys[-1], "xref": "x", "yref": "y",
            "text": f"⚠ {label} still falling: −{drop:.1f} pp from {c['steps'][-2]} to {c['steps'][-1]} steps"
                    + (f"<br>({_esc(m.label)})" if len(models) > 1 else "")
                    + "<br>the attack has not converged",
            "showarrow": True, "arrowhead": 2, "arrowwidth": 1.5, "arrowcolor": OKABE_ITO["vermillion"],
            "ax": -24, "ay": -(46 + 48 * len(annotations)) if ys[-1] is not None and ys[-1] < 50 else 46 + 48 * len(annotations),
            "xanchor": "right", "align": "right",
            "font": {"color": "#7a2e00", "size": 12},
            "bgcolor": "#fff4ec", "bordercolor": OKABE_ITO["vermillion"], "borderpad": 4,
        })
    layout = _base_layout("Robust accuracy vs attack steps (at the ladder ε)", "attack steps (log scale)", ACC_AXIS)
    ticks = sorted(all_steps)
    layout["xaxis"].update({"type": "log"})
    if len(ticks) <= 12:
        layout["xaxis"].update({"tickvals": ticks, "ticktext": [str(t) for t in ticks]})
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    if annotations:
        layout["annotations"] = annotations
    return {"data": traces, "layout": layout, "warnings": len(falling)}


def attack_ladder(models: Sequence[Model]) -> dict[str, Any] | None:
    """Grouped bars: per model, clean / FGSM / PGD-k / CW-k / AutoAttack / worst case at its headline ε."""
    per_model: list[tuple[Model, float | None, list[tuple[Rung, dict[str, Any]]]]] = []
    rungs: dict[Rung, None] = {}
    for m in models:
        eps = headline_eps(m.results)
        lad = ladder(m.results, eps)
        if len(lad) <= 1 and eps is None and not lad:
            continue
        per_model.append((m, eps, lad))
        for rung, _ in lad:
            rungs.setdefault(rung)
    if not per_model or not rungs:
        return None
    categories = [f"{m.label}<br>(ε = {eps_short(eps)})" if eps is not None else m.label for m, eps, _ in per_model]
    traces = []
    all_y: list[float | None] = []
    for rung in sorted(rungs, key=lambda g: g.order):
        ys, hover, texts = [], [], []
        for m, eps, lad in per_model:
            row = next((r for g, r in lad if g == rung), None)
            y = percent(row.get("robust_accuracy")) if row else None
            ys.append(y)
            all_y.append(y)
            texts.append(f"{y:.1f}" if y is not None else "")
            if row is None:
                hover.append(f"<b>{_esc(m.label)}</b><br>{rung.label}: not run")
            else:
                n = row.get("n")
                where = "clean, no attack" if rung.family == "clean" else f"ε = {eps_text(eps)}"
                hover.append(f"<b>{_esc(m.label)}</b><br>{rung.label}, {where}"
                             + (f"<br>n = {n}" if n not in (None, "") else "")
                             + f"<br>accuracy = {y:.2f}%")
        pattern = FAMILY_PATTERNS.get(rung.family, "")
        marker: dict[str, Any] = {"color": rung.color, "line": {"color": "#1f2933", "width": 0.5}}
        if pattern:
            marker["pattern"] = {"shape": pattern, "fillmode": "overlay", "fgcolor": "#ffffff", "fgopacity": 0.6, "size": 7}
        traces.append({
            "type": "bar", "name": rung.label, "x": categories, "y": ys,
            "text": texts, "textposition": "outside", "cliponaxis": False,
            "textfont": {"size": 11},
            "hovertext": hover, "hovertemplate": "%{hovertext}<extra></extra>",
            "marker": marker,
        })
    layout = _base_layout("Attack ladder (weakest to strongest; worst case per test point last)",
                          "model (ε of the ladder)", "accuracy under attack (%)",
                          barmode="group", bargap=0.18, bargroupgap=0.04)
    layout["yaxis"]["range"] = [0, 108]
    layout["xaxis"]["ticks"] = ""
    return {"data": traces, "layout": layout}


def training_history(checkpoint: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per-epoch training records, wherever the checkpoint record keeps them."""
    if not isinstance(checkpoint, Mapping):
        return []
    candidates: list[Any] = []
    for holder in (checkpoint, checkpoint.get("metadata"), checkpoint.get("metrics"),
                   (checkpoint.get("metadata") or {}).get("metrics") if isinstance(checkpoint.get("metadata"), Mapping) else None,
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


def _first_key(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str | None:
    for k in keys:
        if any(to_float(r.get(k)) is not None for r in rows):
            return k
    return None


def training_curves(m: Model) -> dict[str, Any] | None:
    """Clean and PGD-20 test accuracy per epoch, with vertical lines where the learning rate changes."""
    hist = training_history(m.checkpoint)
    if not hist:
        return None
    epochs = [_int_or_none(r.get("epoch")) for r in hist]
    if any(e is None for e in epochs):
        epochs = list(range(1, len(hist) + 1))
    series = [
        (_first_key(hist, ("clean_acc", "test_clean_acc", "clean_accuracy", "test_acc")), "clean test accuracy",
         OKABE_ITO["black"], "circle", "solid"),
        (_first_key(hist, ("pgd20_acc", "test_pgd20_acc", "pgd_acc", "robust_acc", "pgd20_accuracy")),
         "PGD-20 test accuracy", OKABE_ITO["sky_blue"], "square", "dash"),
        (_first_key(hist, ("train_acc", "train_accuracy")), "train accuracy (on training batches)",
         OKABE_ITO["grey"], "triangle-up", "dot"),
    ]
    traces = []
    all_y: list[float | None] = []
    for key, name, color, symbol, dash in series:
        if key is None:
            continue
        ys = percent_series([r.get(key) for r in hist])
        all_y.extend(ys)
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": name, "x": epochs, "y": ys,
            "hovertemplate": f"epoch %{{x}}<br>{name} = %{{y:.2f}}%<extra>{_esc(m.label)}</extra>",
            "line": {"color": color, "dash": dash, "width": 2},
            "marker": {"color": color, "symbol": symbol, "size": 7},
            "connectgaps": False,
        })
    if not traces:
        return None
    shapes, annotations = [], []
    lrs = [to_float(r.get("lr")) for r in hist]
    for i in range(1, len(hist)):
        if lrs[i] is None or lrs[i - 1] is None or math.isclose(lrs[i], lrs[i - 1], rel_tol=1e-9):
            continue
        x = epochs[i - 1] + 0.5 if len(epochs) > 1 else epochs[i]
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": OKABE_ITO["vermillion"], "width": 1.5, "dash": "dot"}})
        annotations.append({"x": x, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom",
                            "text": f"lr {lrs[i - 1]:g} → {lrs[i]:g}", "showarrow": False,
                            "font": {"size": 11, "color": "#8a3300"}})
    # An invisible trace so the lr-drop markers have a legend entry and hover.
    if shapes:
        traces.append({"type": "scatter", "mode": "lines", "name": "learning-rate change",
                       "x": [None], "y": [None], "hoverinfo": "skip",
                       "line": {"color": OKABE_ITO["vermillion"], "dash": "dot", "width": 1.5}})
    method = _method(m.checkpoint)
    title = f"Training curves: {m.label}" + (f" ({method})" if method else "")
    layout = _base_layout(title, "epoch", "test accuracy (%)", shapes=shapes, annotations=annotations)
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    layout["margin"]["t"] = 72
    layout["xaxis"]["dtick"] = 1 if len(epochs) <= 20 else None
    if layout["xaxis"]["dtick"] is None:
        del layout["xaxis"]["dtick"]
    return {"data": traces, "layout": layout}


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


def _method(checkpoint: Mapping[str, Any] | None) -> str | None:
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


def label_smoothing_view(models: Sequence[Model], reference: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """δ (label smoothing) against robust accuracy under PGD and under AutoAttack, one point per model
    that has a δ; models of the same training method are joined in order of δ.

    A checkpoint evaluated more than once (say with the paper and the audit presets) counts once per
    attack, from the evaluation that ran more of the ladder. ``reference`` (a study's published
    table, ``{"source", "rows": [{"delta", "robust_accuracy"}]}`` in percent) is drawn as a grey line.
    """
    best: dict[tuple[str, str], tuple[int, tuple[float, float, str, str, str], str]] = {}
    for m in models:
        delta = label_smoothing_of(m.checkpoint)
        if delta is None:
            continue
        method = _method(m.checkpoint) or "unknown method"
        eps = headline_eps(m.results)
        lad = dict((g, r) for g, r in ladder(m.results, eps))
        pgd = [g for g in lad if g.family == "pgd" and not g.restarts]
        pgd_pick = next((g for g in pgd if g.steps == 20), None) or (max(pgd, key=lambda g: g.steps or 0) if pgd else None)
        aa = next((g for g in lad if g.family == "autoattack"), None)
        ck = (m.checkpoint or {}).get("id") if isinstance(m.checkpoint, Mapping) else None
        model_key = str(ck) if ck is not None else m.label
        for kind, g in (("PGD", pgd_pick), ("AutoAttack", aa)):
            acc = percent(lad[g].get("robust_accuracy")) if g is not None else None
            if acc is None:
                continue
            point = (delta, acc, m.label, f"{g.label} @ ε = {eps_text(eps)}", g.label)
            key = (kind, model_key)
            if key not in best or len(lad) > best[key][0]:
                best[key] = (len(lad), point, method)
    points: dict[tuple[str, str], list[tuple[float, float, str, str, str]]] = {}
    for (kind, _), (_, point, method) in best.items():
        points.setdefault((kind, method), []).append(point)
    if not points:
        return None
    methods = sorted({k[1] for k in points})
    traces = []
    for (kind, method), pts in sorted(points.items(), key=lambda kv: (kv[0][0] != "PGD", kv[0][1])):
        pts.sort()
        color = OKABE_ITO["sky_blue"] if kind == "PGD" else OKABE_ITO["vermillion"]
        symbol = SYMBOLS[methods.index(method) % len(SYMBOLS)]
        labels = sorted({p[4] for p in pts})
        attack = labels[0] if len(labels) == 1 else kind
        traces.append({
            "type": "scatter", "mode": "lines+markers" if len(pts) > 1 else "markers",
            "name": f"{attack} · {method}" if len(methods) > 1 else f"under {attack}",
            "x": [p[0] for p in pts], "y": [p[1] for p in pts],
            "text": [f"<b>{_esc(p[2])}</b><br>{p[3]}<br>method: {_esc(method)}" for p in pts],
            "hovertemplate": "%{text}<br>δ = %{x:.3g}<br>robust accuracy = %{y:.2f}%<extra></extra>",
            "line": {"color": color, "dash": "solid" if kind == "PGD" else "dash", "width": 2},
            "marker": {"color": color, "symbol": symbol, "size": 11, "line": {"width": 1, "color": "#ffffff"}},
        })
    ref_rows = [r for r in (reference or {}).get("rows") or [] if isinstance(r, Mapping)]
    ref = sorted((to_float(r.get("delta")), to_float(r.get("robust_accuracy"))) for r in ref_rows
                 if to_float(r.get("delta")) is not None and to_float(r.get("robust_accuracy")) is not None)
    if ref:
        source = str((reference or {}).get("source") or "published")
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": "published (seed paper)",
            "x": [d for d, _ in ref], "y": [a for _, a in ref],
            "text": [_esc(source)] * len(ref),
            "hovertemplate": "published: %{y:.2f}% at δ = %{x:.3g}<br><i>%{text}</i><extra></extra>",
            "line": {"color": OKABE_ITO["grey"], "dash": "dot", "width": 2},
            "marker": {"color": OKABE_ITO["grey"], "symbol": "circle-open", "size": 10},
        })
    all_y = [p[1] for pts in points.values() for p in pts] + [a for _, a in ref]
    layout = _base_layout("Label smoothing δ vs robust accuracy (PGD against AutoAttack)",
                          "label smoothing δ (training hyper-parameter, 0 = none)", ACC_AXIS)
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    xs = [p[0] for pts in points.values() for p in pts] + [d for d, _ in ref]
    span = max(max(xs), 0.1)
    layout["xaxis"]["range"] = [min(0.0, min(xs)) - 0.05 * span, max(xs) + 0.08 * span]
    return {"data": traces, "layout": layout}


def _esc(s: Any) -> str:
    """Plotly renders a subset of HTML in hover/legend text; escape user-controlled strings."""
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
