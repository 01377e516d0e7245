"""Plotly figures for robustness results, built as plain figure dicts.

Every builder draws models as results_view reads them (rungs, ladders, curves, histories) and
returns ``{"data": [...], "layout": {...}}`` ready for ``Plotly.newPlot``, or ``None`` when there is
nothing to draw. No builder touches the network, the database or the file system, so the same
figures serve the live pages, the share page and the self-contained HTML export.

Encoding conventions, the same in every chart of a report:
- colour = model (Okabe-Ito, colour-blind safe, ``model_colors``), the same in every chart and in the
  summary table's swatch; every trace of a model carries ``legendgroup`` = its label, so one click on
  the model's group title hides or shows it;
- marker symbol and line dash = attack (``attack_style``), so the attacks of one model stay apart
  and the charts still read in greyscale; the ladder's bars carry the attack as a hatch pattern;
- accuracies are shown in percent; ε in the [0, 1] pixel scale (hover also gives x/255).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from robaudit.frontend import results_view as R
from robaudit.frontend.gaps import Gap
from robaudit.frontend.results_view import Model, Rung

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


EPS_AXIS = "ε (L∞, pixel scale [0, 1])"
# L2 and L1 budgets are distances between images whose pixels are in [0, 1].
NORM_EPS_AXIS = {"l2": "ε (L2 distance, pixels in [0, 1])", "l1": "ε (L1 distance, pixels in [0, 1])"}
ACC_AXIS = "robust accuracy (%)"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

# Model colours, in the order models appear in a report: Okabe-Ito without its yellow (too light on
# white for lines); a ninth model starts the cycle again. app.css repeats them for the table swatches
# (.swatch.m0 ... .m7).
MODEL_COLORS = [OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "reddish_purple", "orange",
                                         "sky_blue", "black", "grey")]
# Reference lines that belong to no model (learning-rate changes, published numbers).
NEUTRAL = "#52606d"

# Per attack family (robaudit.evaluation.registry): bar pattern, marker and line dash.
FAMILY_PATTERNS = {
    "clean": "", "fgsm": "/", "rs-fgsm": "/", "pgd": "", "cw": "x", "autoattack": ".", "worst": "",
    "transfer": "-", "noise": "+", "square": "|", "apgd-ce": "\\", "apgd-dlr": "\\", "fab": "-",
    "eot-pgd": "", "autoattack-rand": ".",
}
FAMILY_SYMBOLS = {"clean": "circle-open", "fgsm": "triangle-up", "rs-fgsm": "triangle-down", "pgd": "circle",
                  "cw": "square", "autoattack": "diamond", "worst": "x", "noise": "cross", "transfer": "star",
                  "square": "square-open", "apgd-ce": "hexagon", "apgd-dlr": "hexagon-open", "fab": "pentagon",
                  "eot-pgd": "circle-cross", "autoattack-rand": "diamond-cross"}
FAMILY_DASHES = {"worst": "solid", "pgd": "dash", "autoattack": "dot", "cw": "dashdot", "fgsm": "longdashdot",
                 "rs-fgsm": "longdashdot", "noise": "dot", "transfer": "longdash"}
SANITY_SYMBOL = "star-diamond"


def attack_style(rung: Rung) -> dict[str, str]:
    """Marker symbol and line dash of an attack configuration; long PGD/CW runs get open markers and
    a long dash, so PGD-20 and PGD-100 of one model stay apart."""
    symbol = FAMILY_SYMBOLS.get(rung.family, "pentagon")
    dash = FAMILY_DASHES.get(rung.family, "dot")
    if rung.family in ("pgd", "cw") and rung.steps and rung.steps >= 50:
        symbol = symbol if symbol.endswith("-open") else f"{symbol}-open"
        dash = "longdash"
    if rung.restarts:
        symbol = f"{symbol.removesuffix('-open')}-dot"
    return {"symbol": symbol, "dash": dash}


def model_colors(models: Sequence[Model]) -> dict[str, str]:
    """Each model's colour, by its position in the report."""
    return {m.label: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(models)}


def _color(colors: Mapping[str, str] | None, m: Model) -> str:
    return (colors or {}).get(m.label) or MODEL_COLORS[0]


def _group(m: Model) -> dict[str, Any]:
    """Legend grouping of a model's traces: one group, titled by the model."""
    return {"legendgroup": _esc(m.label), "legendgrouptitle": {"text": _esc(m.label)}}


def _esc(s: Any) -> str:
    """Plotly renders a subset of HTML in hover/legend text; escape user-controlled strings."""
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


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


def _error_bars(rows: Sequence[Mapping[str, Any] | None], ys: Sequence[float | None],
                color: str) -> dict[str, Any] | None:
    """Plotly ``error_y`` for the rows' 95% intervals (``ci95``, in %); None when no row has one
    (results from before intervals existed). A row without one gets no bar."""
    plus, minus, any_ci = [], [], False
    for row, y in zip(rows, ys, strict=True):
        ci = row.get("ci95") if row else None
        if y is None or not isinstance(ci, list | tuple) or len(ci) != 2:
            plus.append(0.0)
            minus.append(0.0)
            continue
        low, high = R.percent(ci[0]), R.percent(ci[1])
        if low is None or high is None:
            plus.append(0.0)
            minus.append(0.0)
            continue
        any_ci = True
        plus.append(max(high - y, 0.0))
        minus.append(max(y - low, 0.0))
    if not any_ci:
        return None
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "color": color,
            "thickness": 1.2, "width": 3}


def _ci_hover(row: Mapping[str, Any] | None) -> str:
    ci = row.get("ci95") if row else None
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return ""
    low, high = R.percent(ci[0]), R.percent(ci[1])
    return "" if low is None or high is None else f"<br>95% CI {low:.1f}–{high:.1f}% (Wilson)"


def _acc_axis_range(values: Iterable[float | None]) -> list[float]:
    """From just below 0 (so points at 0 % stay visible above the axis line) to a little above the
    highest value, at least 25 % so that small differences are not blown up."""
    vals = [v for v in values if v is not None]
    top = max(vals) if vals else 100.0
    return [-2.0, 102.0 if top >= 95 else max(25.0, top + 5.0)]


def _eps_ticks(grid: Sequence[float], norm: str = "linf") -> dict[str, Any]:
    if not grid or len(grid) > 12:
        return {}
    return {"tickvals": list(grid), "ticktext": [R.eps_short(e, norm) for e in grid]}


def norm_of_models(models: Sequence[Model]) -> str:
    """The one norm of the models a chart draws; a chart never mixes norms (views groups them apart)."""
    norms = {R.norm_of(m.results) for m in models}
    if len(norms) > 1:
        raise ValueError(f"one chart cannot mix norms ({', '.join(sorted(norms))}): draw one chart per norm")
    return norms.pop() if norms else "linf"


def _norm_tag(norm: str) -> str:
    """What titles and legend names add outside L-inf (L-inf charts read as they always did)."""
    return "" if norm == "linf" else f" ({R.norm_label(norm)})"


# --------------------------------------------------------------------------- figures

# Shown when the chart opens; every other attack is in the legend, one click away.
DEFAULT_VISIBLE = ("PGD-20", "PGD-20 ε-curve", "worst case")


def _default_visible(m: Model, series: Sequence[R.EpsSeries]) -> set[str]:
    """PGD-20 and the worst case; a model with neither (a quick preset's PGD-10) shows its first series."""
    labels = {s.label for s in series}
    shown = {lab for lab in DEFAULT_VISIBLE if lab in labels}
    if not shown and series:
        pgd = [s.label for s in series if s.rung.family == "pgd" and not s.sanity]
        shown = {pgd[0] if pgd else series[0].label}
    return shown


def accuracy_vs_eps(models: Sequence[Model], colors: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Robust accuracy vs ε: per model (one colour) one line per attack configuration (marker and dash)
    and the worst case. PGD-20 and the worst case are drawn; the other attacks wait in the legend.

    Lines join only points of one attack configuration at successive ε, starting at the clean accuracy
    (ε = 0); a configuration run at a single ε is a lone marker. The large-ε check is lone markers too.
    """
    colors = colors or model_colors(models)
    norm = norm_of_models(models)
    traces: list[dict[str, Any]] = []
    grid: list[float] = []
    all_y: list[float | None] = []
    for m in models:
        color = _color(colors, m)
        series = R.eps_series(m)
        shown = _default_visible(m, series)
        for s in series:
            rung, label = s.rung, s.label
            xs = [p[0] for p in s.points]
            ys = [R.percent(p[1].get("robust_accuracy")) for p in s.points]
            if not s.sanity:
                grid.extend(x for x in xs if not any(R.eps_equal(x, g) for g in grid))
                all_y.extend(ys)
            hover = []
            for x, (_, row) in zip(xs, s.points):
                if row.get("_clean"):
                    hover.append(f"<b>{_esc(m.label)}</b><br>clean (ε = 0)")
                    continue
                extra = f"<br>n = {row['n']}" if row.get("n") not in (None, "") else ""
                if row.get("alpha") not in (None, ""):
                    extra += f"<br>step α = {R.eps_text(row.get('alpha'), norm)}"
                if row.get("note"):
                    extra += f"<br><i>{_esc(row['note'])}</i>"
                extra += _ci_hover(row)
                hover.append(f"<b>{_esc(m.label)}</b><br>{_esc(label)}, {R.norm_label(norm)} ε = "
                             f"{R.eps_text(x, norm)}{extra}")
            style = attack_style(rung)
            worst = rung.family == "worst"
            bars = _error_bars([row for _, row in s.points], ys, color)
            traces.append({
                "type": "scatter", "mode": "lines+markers" if s.curve else "markers",
                "name": label + _norm_tag(norm), **_group(m),
                "visible": True if label in shown else "legendonly",
                "x": xs, "y": ys, "text": hover,
                "hovertemplate": "%{text}<br>robust accuracy = %{y:.2f}%<extra></extra>",
                "line": {"color": color, "dash": style["dash"], "width": 3 if worst else 2},
                "marker": {"color": color, "symbol": SANITY_SYMBOL if s.sanity else style["symbol"],
                           "size": 12 if s.sanity else 9 if s.curve else 11,
                           "line": {"width": 1.5, "color": color}},
                **({"error_y": bars} if bars else {}),
            })
    if not traces:
        return None
    grid.sort()
    layout = _base_layout("Robust accuracy vs ε" + _norm_tag(norm), NORM_EPS_AXIS.get(norm, EPS_AXIS), ACC_AXIS,
                          height=440)
    layout["xaxis"].update(_eps_ticks(grid, norm))
    layout["xaxis"]["rangemode"] = "tozero"
    # No fixed x range: hidden (legend-only) traces do not stretch the axis, so it opens on the
    # evaluated grid and widens to ε = 1 when the large-ε check is clicked on.
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    layout["legend"]["groupclick"] = "toggleitem"
    return {"data": traces, "layout": layout}


def _falling_annotation(drop: float, m: Model, c: Mapping[str, Any], ys: Sequence[float | None], *,
                        multi: bool, stacked: int) -> dict[str, Any]:
    """The warning on a steps curve still falling at its largest step count; ``stacked`` earlier
    warnings sit above (or below) it."""
    label = Rung(c["family"], None, None, c["attack"]).label
    offset = 46 + 48 * stacked
    last = ys[-1]
    return {
        "x": math.log10(c["steps"][-1]), "y": last, "xref": "x", "yref": "y",
        "text": f"⚠ {label} still falling: −{drop:.1f} pp from {c['steps'][-2]} to {c['steps'][-1]} steps"
                + (f"<br>({_esc(m.label)})" if multi else "")
                + "<br>the attack has not converged",
        "showarrow": True, "arrowhead": 2, "arrowwidth": 1.5, "arrowcolor": OKABE_ITO["vermillion"],
        "ax": -24, "ay": -offset if last is not None and last < 50 else offset,
        "xanchor": "right", "align": "right",
        "font": {"color": "#7a2e00", "size": 12},
        "bgcolor": "#fff4ec", "bordercolor": OKABE_ITO["vermillion"], "borderpad": 4,
    }


def accuracy_vs_steps(models: Sequence[Model], colors: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Robust accuracy vs attack steps (log axis) at each model's ladder ε. A curve still falling at
    its largest step count is annotated: the attack had not converged (the PGD-overfitting probe)."""
    colors = colors or model_colors(models)
    norm = norm_of_models(models)
    traces: list[dict[str, Any]] = []
    falling: list[tuple[float, Model, dict[str, Any], list[float | None]]] = []
    all_y: list[float | None] = []
    all_steps: set[int] = set()
    for m in models:
        color = _color(colors, m)
        for c in R.curves_at_one_eps(m):
            rung = Rung(c["family"], None, c["restarts"] if c["restarts"] > 1 else None, c["attack"])
            name = (f"{rung.label} @ ε = {R.eps_short(c['eps'])}" if norm == "linf" else
                    f"{rung.label} ({R.norm_label(norm)}, ε = {R.eps_short(c['eps'], norm)})")
            ys = [R.percent(a) for a in c["acc"]]
            all_y.extend(ys)
            all_steps.update(c["steps"])
            style = attack_style(rung)
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": name, **_group(m),
                "x": c["steps"], "y": ys,
                "text": [f"<b>{_esc(m.label)}</b><br>{rung.label}, {R.norm_label(norm)} ε = "
                         f"{R.eps_text(c['eps'], norm)}"
                         + (f", {c['restarts']} restarts" if c["restarts"] > 1 else "")
                         + (f"<br>n = {c['n']}" if c.get("n") else "") for _ in ys],
                "hovertemplate": "%{text}<br>steps = %{x}<br>robust accuracy = %{y:.2f}%<extra></extra>",
                "line": {"color": color, "dash": style["dash"], "width": 2},
                "marker": {"color": color, "symbol": style["symbol"], "size": 8,
                           "line": {"width": 1.5, "color": color}},
            })
            drop = R.still_falling(c["steps"], c["acc"], c["n"])
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
        annotations.append(_falling_annotation(drop, m, c, ys, multi=len(models) > 1, stacked=len(annotations)))
    layout = _base_layout("Robust accuracy vs attack steps (at the ladder ε)" + _norm_tag(norm),
                          "attack steps (log scale)", ACC_AXIS, height=400)
    ticks = sorted(all_steps)
    layout["xaxis"].update({"type": "log"})
    if len(ticks) <= 12:
        layout["xaxis"].update({"tickvals": ticks, "ticktext": [str(t) for t in ticks]})
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    if annotations:
        layout["annotations"] = annotations
    layout["legend"]["groupclick"] = "toggleitem"
    return {"data": traces, "layout": layout, "warnings": len(falling)}


def attack_ladder(models: Sequence[Model], colors: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Grouped bars, weakest attack to strongest along x (clean, FGSM, PGD-k, CW-k, AutoAttack, worst
    case), one bar per model (its colour) at its headline ε; the hatch pattern names the attack."""
    colors = colors or model_colors(models)
    norm = norm_of_models(models)
    per_model: list[tuple[Model, float | None, list[tuple[Rung, dict[str, Any]]]]] = []
    rungs: dict[Rung, None] = {}
    for m in models:
        eps = R.headline_eps(m.results)
        lad = R.ladder(m.results, eps)
        if not lad:
            continue
        per_model.append((m, eps, lad))
        for rung, _ in lad:
            rungs.setdefault(rung)
    if not per_model or not rungs:
        return None
    order = sorted(rungs, key=lambda g: g.order)
    # Two configurations may share a label (PGD-20 from two rows); the category keeps them apart.
    categories = [g.label for g in order]
    patterns = [FAMILY_PATTERNS.get(g.family, "") for g in order]
    traces = []
    for m, eps, lad in per_model:
        ys, hover, texts = [], [], []
        rows: list[dict[str, Any] | None] = []
        for rung in order:
            row = next((r for g, r in lad if g == rung), None)
            rows.append(row)
            y = R.percent(row.get("robust_accuracy")) if row else None
            ys.append(y)
            texts.append(f"{y:.1f}" if y is not None else "")
            if row is None:
                hover.append(f"<b>{_esc(m.label)}</b><br>{rung.label}: not run")
            else:
                n = row.get("n")
                where = "clean, no attack" if rung.family == "clean" else \
                    f"{R.norm_label(norm)} ε = {R.eps_text(eps, norm)}"
                hover.append(f"<b>{_esc(m.label)}</b><br>{rung.label}, {where}"
                             + (f"<br>n = {n}" if n not in (None, "") else "")
                             + f"<br>accuracy = {y:.2f}%" + _ci_hover(row))
        tag = "" if norm == "linf" else f"{R.norm_label(norm)}, "
        name = f"{_esc(m.label)} ({tag}ε = {R.eps_short(eps, norm)})" if eps is not None else _esc(m.label)
        bars = _error_bars(rows, ys, "#1f2933")
        traces.append({
            "type": "bar", "name": name, "legendgroup": _esc(m.label), "x": categories, "y": ys,
            "text": texts, "textposition": "outside", "cliponaxis": False, "textfont": {"size": 11},
            "hovertext": hover, "hovertemplate": "%{hovertext}<extra></extra>",
            "marker": {"color": _color(colors, m), "line": {"color": "#1f2933", "width": 0.5},
                       "pattern": {"shape": patterns, "fillmode": "overlay", "fgcolor": "#ffffff",
                                   "fgopacity": 0.7, "size": 7}},
            **({"error_y": bars} if bars else {}),
        })
    layout = _base_layout("Attack ladder (weakest to strongest; worst case per test point last)" + _norm_tag(norm),
                          "attack (at each model's ladder ε)", "accuracy under attack (%)",
                          barmode="group", bargap=0.2, bargroupgap=0.04, height=400)
    layout["yaxis"]["range"] = [0, 108]
    layout["xaxis"]["ticks"] = ""
    return {"data": traces, "layout": layout}


# Training curves: (results_view.HISTORY_KEYS measure, name, colour, marker, dash), in drawing order.
# The model's colour for all three; the measure is the marker and dash.
TRAINING_SERIES = (
    ("clean", "clean test accuracy", "circle-open", "solid"),
    ("pgd20", "PGD-20 test accuracy", "circle", "dash"),
    ("train", "train accuracy (on training batches)", "triangle-up", "dot"),
)


def training_curves(m: Model, color: str | None = None) -> dict[str, Any] | None:
    """Clean and PGD-20 test accuracy per epoch, with vertical lines where the learning rate changes."""
    hist = R.training_history(m.checkpoint)
    if not hist:
        return None
    epochs = R.history_epochs(hist)
    traces = []
    all_y: list[float | None] = []
    color = color or MODEL_COLORS[0]
    for measure, name, symbol, dash in TRAINING_SERIES:
        ys = R.history_percent(hist, measure)
        if ys is None:
            continue
        all_y.extend(ys)
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": name, "legendgroup": _esc(m.label),
            "x": epochs, "y": ys,
            "hovertemplate": f"epoch %{{x}}<br>{name} = %{{y:.2f}}%<extra>{_esc(m.label)}</extra>",
            "line": {"color": color, "dash": dash, "width": 2},
            "marker": {"color": color, "symbol": symbol, "size": 7, "line": {"width": 1.5, "color": color}},
            "connectgaps": False,
        })
    if not traces:
        return None
    shapes, annotations = [], []
    for i, before, after in R.lr_changes(hist):
        x = epochs[i - 1] + 0.5 if len(epochs) > 1 else epochs[i]
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": NEUTRAL, "width": 1.5, "dash": "dot"}})
        annotations.append({"x": x, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom",
                            "text": f"lr {before:g} → {after:g}", "showarrow": False,
                            "font": {"size": 11, "color": NEUTRAL}})
    # An invisible trace so the lr-drop markers have a legend entry and hover.
    if shapes:
        traces.append({"type": "scatter", "mode": "lines", "name": "learning-rate change",
                       "x": [None], "y": [None], "hoverinfo": "skip",
                       "line": {"color": NEUTRAL, "dash": "dot", "width": 1.5}})
    method = R.method_of(m.checkpoint)
    title = f"Training curves: {m.label}" + (f" ({method})" if method else "")
    layout = _base_layout(title, "epoch", "test accuracy (%)", shapes=shapes, annotations=annotations)
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    layout["margin"]["t"] = 72
    if len(epochs) <= 20:
        layout["xaxis"]["dtick"] = 1
    return {"data": traces, "layout": layout}


def label_smoothing_view(models: Sequence[Model], reference: Mapping[str, Any] | None = None,
                         colors: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """δ (label smoothing) against robust accuracy under PGD and under AutoAttack, one point per model
    that has a δ (see results_view.label_smoothing_points); models of the same training method are
    joined in order of δ.

    ``reference`` (a study's published table, ``{"source", "rows": [{"delta", "robust_accuracy"}]}``
    in percent) is drawn as a grey line.
    """
    points = R.label_smoothing_points(models)
    if not points:
        return None
    colors = colors or model_colors(models)
    methods = sorted({k[1] for k in points})
    traces = []
    for (kind, method), pts in sorted(points.items(), key=lambda kv: (kv[0][0] != "PGD", kv[0][1])):
        pts.sort()
        # A point is a model (its colour); the line joins one method's models under one attack kind.
        color = "#1f2933" if kind == "PGD" else NEUTRAL
        symbol = "circle" if kind == "PGD" else "diamond"
        point_colors = [colors.get(p.model, MODEL_COLORS[0]) for p in pts]
        labels = sorted({p.attack for p in pts})
        attack = labels[0] if len(labels) == 1 else kind
        traces.append({
            "type": "scatter", "mode": "lines+markers" if len(pts) > 1 else "markers",
            "name": f"{attack} · {method}" if len(methods) > 1 else f"under {attack}",
            "x": [p.delta for p in pts], "y": [p.accuracy for p in pts],
            "text": [f"<b>{_esc(p.model)}</b><br>{p.reading}<br>method: {_esc(method)}" for p in pts],
            "hovertemplate": "%{text}<br>δ = %{x:.3g}<br>robust accuracy = %{y:.2f}%<extra></extra>",
            "line": {"color": color, "dash": "solid" if kind == "PGD" else "dash", "width": 1.5},
            "marker": {"color": point_colors, "symbol": symbol, "size": 12, "line": {"width": 1, "color": color}},
        })
    ref_rows = [r for r in (reference or {}).get("rows") or [] if isinstance(r, Mapping)]
    ref_pairs = [(R.to_float(r.get("delta")), R.to_float(r.get("robust_accuracy"))) for r in ref_rows]
    ref = sorted((d, a) for d, a in ref_pairs if d is not None and a is not None)
    if ref:
        source = str((reference or {}).get("source") or "published")
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": "published (seed paper)",
            "x": [d for d, _ in ref], "y": [a for _, a in ref],
            "text": [_esc(source)] * len(ref),
            "hovertemplate": "published: %{y:.2f}% at δ = %{x:.3g}<br><i>%{text}</i><extra></extra>",
            "line": {"color": NEUTRAL, "dash": "dot", "width": 2},
            "marker": {"color": NEUTRAL, "symbol": "circle-open", "size": 10},
        })
    all_y = [p.accuracy for pts in points.values() for p in pts] + [a for _, a in ref]
    layout = _base_layout("Label smoothing δ vs robust accuracy (PGD against AutoAttack)",
                          "label smoothing δ (training hyper-parameter, 0 = none)", ACC_AXIS)
    layout["yaxis"]["range"] = _acc_axis_range(all_y)
    xs = [p.delta for pts in points.values() for p in pts] + [d for d, _ in ref]
    span = max(max(xs), 0.1)
    layout["xaxis"]["range"] = [min(0.0, min(xs)) - 0.05 * span, max(xs) + 0.08 * span]
    return {"data": traces, "layout": layout}


def pgd_overstatement(models: Sequence[Model], gaps: Mapping[str, Gap | None],
                      colors: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The first chart of a comparison: per model (one row, its colour), PGD-20 (●), AutoAttack (◆)
    and the per-point worst case (✕) at its headline ε; the bar between PGD-20 and the worst case is
    the overstatement, labelled in percentage points with its 95 % interval (frontend.gaps)."""
    colors = colors or model_colors(models)
    norm = norm_of_models(models)
    rows = [(m, g) for m in models if (g := gaps.get(m.label)) is not None]
    if not rows or all(g.worst is None and g.autoattack is None for _, g in rows):
        return None
    traces: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    labels = [_esc(m.label) for m, _ in rows]
    for (m, g), y in zip(rows, labels):
        color = _color(colors, m)
        eps = ("" if norm == "linf" else f"{R.norm_label(norm)} ") + R.eps_short(g.eps, norm)
        pgd = R.percent(g.pgd)
        points = [(pgd, "circle", f"{g.pgd_label}", g.pgd_n)]
        if g.autoattack is not None:
            points.append((R.percent(g.autoattack), "diamond", "AutoAttack", g.autoattack_n))
        if g.worst is not None:
            points.append((R.percent(g.worst), "x", "worst case per point", g.worst_n))
        if g.worst is not None:
            traces.append({
                "type": "scatter", "mode": "lines", "x": [R.percent(g.worst), pgd], "y": [y, y],
                "legendgroup": _esc(m.label), "showlegend": False, "hoverinfo": "skip",
                "line": {"color": color, "width": 10}, "opacity": 0.3,
            })
        hover = [f"<b>{_esc(m.label)}</b><br>{what} at {R.norm_label(norm)} ε = {R.eps_text(g.eps, norm)}: {v:.1f}%"
                 + (f" (n = {n})" if n else "") for v, _, what, n in points]
        traces.append({
            "type": "scatter", "mode": "markers", "name": _esc(m.label), "legendgroup": _esc(m.label),
            "x": [p[0] for p in points], "y": [y] * len(points), "text": hover,
            "hovertemplate": "%{text}<extra></extra>",
            "marker": {"color": color, "symbol": [p[1] for p in points], "size": 15,
                       "line": {"width": 2, "color": color}},
        })
        if g.gap is not None and g.worst is not None:
            gap = 100 * g.gap
            interval = (f" (95% CI {100 * g.low:.1f} to {100 * g.high:.1f})"
                        if g.low is not None and g.high is not None else "")
            xs = [p[0] for p in points if p[0] is not None]
            right = max(xs) < 55      # the label goes where there is room: right of the marks, else left
            annotations.append({
                "x": max(xs) if right else min(xs), "y": y, "xref": "x", "yref": "y",
                "xanchor": "left" if right else "right", "xshift": 14 if right else -14,
                "text": f"<b>{g.pgd_label} overstates by {gap:.1f} pp</b>{interval} at ε = {eps}",
                "showarrow": False, "font": {"size": 12, "color": "#1f2933"}, "align": "left",
                "hovertext": _esc(g.method) + (f", n = {g.n}" if g.n else ""),
            })
    layout = _base_layout(f"How much {rows[0][1].pgd_label} overstates robustness" + _norm_tag(norm),
                          "robust accuracy (%): ● PGD-20   ◆ AutoAttack   ✕ worst case per point", "")
    layout["yaxis"].update({"type": "category", "autorange": "reversed", "showgrid": False, "ticks": "",
                            "automargin": True})
    layout["xaxis"]["range"] = [-2, 102]
    layout["height"] = 130 + 60 * len(rows)
    layout["margin"].update({"l": 24, "t": 56, "b": 56})
    layout["annotations"] = annotations
    layout["showlegend"] = False
    return {"data": traces, "layout": layout}
