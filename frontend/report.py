"""Report exports: one self-contained HTML file, a CSV of the numbers, and a JSON copy.

Exports contain aggregated numbers only (accuracies, attack settings, diagnostics,
training curves); per-sample bitsets, file names and storage paths are left out.
The HTML file inlines plotly.js, the stylesheet and the chart script, and makes
no network request when opened (from file:// or anywhere else).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from markupsafe import Markup

from robaudit.frontend import gaps
from robaudit.frontend import results_view as R
from robaudit.frontend.differences import DIFFERENCES_KEY, model_differences
from robaudit.frontend.templating import STATIC_DIR, environment, plotly_js_path
from robaudit.frontend.views import EvaluationView, StudyView, evaluation_views, report_view

# The HTTP policy of the HTML export (an attachment): its content is inline scripts and styles, and it
# fetches nothing. Should a browser render it from this server, the sandbox gives it an opaque origin,
# so its scripts cannot read this origin's storage (the dashboard keeps the API token there). Saved to
# disk it keeps the same rules through its <meta> policy (export.html), which cannot carry sandbox.
EXPORT_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
              "font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
              "sandbox allow-scripts allow-downloads")

# Keys dropped from every exported evaluation: per-test-point data and server-side locations.
PRIVATE_RESULT_KEYS = ("per_sample",)
PRIVATE_CHECKPOINT_KEYS = ("path", "file_path", "storage_path", "stored_path", "sha256_path")

CSV_COLUMNS = [
    "report_id", "report_title", "evaluation_id", "model", "checkpoint_id", "arch", "dataset", "dataset_sha256",
    "dataset_points", "method",
    "label_smoothing", "status", "measure", "attack", "eps", "eps_x255", "steps", "restarts", "alpha",
    "accuracy", "accuracy_pct", "n", "verdict", "norm",
]


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    return plotly_js_path().read_text(encoding="utf-8")


def _static_text(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _inline_script(source: str) -> Markup:
    # A literal "</script" inside the inlined source would end the element early.
    return Markup(source.replace("</script", "<\\/script"))


def export_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The report payload without per-sample data or server paths (what the JSON export should return).

    Where per-sample data is dropped, the PGD gap computed from it (frontend.gaps: aggregated numbers
    only) is kept under ``results["pgd_gap"]``, so shared and exported reports show the same interval."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key != "evaluations":
            out[key] = value
    evaluations = []
    for ev in payload.get("evaluations") or []:
        if not isinstance(ev, Mapping):
            continue
        ev = dict(ev)
        if isinstance(ev.get("results"), Mapping):
            results = ev["results"]
            kept = {k: v for k, v in results.items() if k not in PRIVATE_RESULT_KEYS}
            # The PGD gap's paired interval needs the per-point records; its numbers travel instead.
            if any(k in results for k in PRIVATE_RESULT_KEYS) and (summary := gaps.export_summary(results)):
                kept[gaps.SUMMARY_KEY] = summary
            ev["results"] = kept
        if isinstance(ev.get("checkpoint"), Mapping):
            ev["checkpoint"] = {k: v for k, v in ev["checkpoint"].items() if k not in PRIVATE_CHECKPOINT_KEYS}
        evaluations.append(ev)
    out["evaluations"] = evaluations
    # Model-vs-model differences need the per-point records too: the table travels instead.
    if DIFFERENCES_KEY not in out:
        labelled = [(v.label, v.results) for v in evaluation_views(payload.get("evaluations") or []) if v.results]
        out[DIFFERENCES_KEY] = model_differences(labelled)
    return out


def render_report_html(payload: Mapping[str, Any], *, generated_at: datetime | None = None) -> str:
    """The report as one HTML document that works offline: plotly.js, CSS and chart script inlined."""
    view = report_view(export_payload(payload))
    generated = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    return environment().get_template("export.html").render(
        view=view,
        generated_at=generated,
        inline_css=Markup(_static_text("css/app.css")),
        plotly_js=_inline_script(_plotly_js()),
        charts_js=_inline_script(_static_text("js/charts.js")),
    )


def _csv_safe(v: Any) -> Any:
    # Spreadsheet formula injection: text cells starting with = + - @ are prefixed with a quote.
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _num(v: Any) -> Any:
    f = R.to_float(v)
    if f is None:
        return ""
    return int(f) if f == int(f) and abs(f) < 1e12 and not isinstance(v, float) else round(f, 8)


def _accuracy(v: Any) -> dict[str, Any]:
    """An accuracy's two columns: the fraction and the percentage."""
    return {"accuracy": _num(v), "accuracy_pct": _num(R.percent(v))}


def _rows_for(report: Mapping[str, Any], ev: EvaluationView) -> list[dict[str, Any]]:
    diag = ev.diagnostics
    common = {
        "report_id": report.get("id", ""), "report_title": report.get("title", ""),
        "evaluation_id": ev.id, "model": ev.label, "checkpoint_id": ev.checkpoint.get("id", ""),
        "arch": ev.arch or "", "dataset": ev.dataset or "", "method": ev.method or "",
        # An uploaded test set's sha256 and size; empty for a dataset's test split.
        "dataset_sha256": (ev.test_set or {}).get("sha256", ""), "dataset_points": (ev.test_set or {}).get("n", ""),
        "label_smoothing": _num(ev.label_smoothing), "status": ev.status,
        "verdict": (diag.verdict or "") if diag else "", "norm": ev.norm,
    }
    # eps_x255 is the L-inf budget in pixel steps; an L2 or L1 budget is a distance and has none.
    x255 = ev.norm == "linf"
    blank = {"attack": "", "eps": "", "eps_x255": "", "steps": "", "restarts": "", "alpha": "", "n": ""}
    rows = []
    clean = ev.clean_accuracy
    if clean is not None:
        n = (ev.results or {}).get("n") or R.section(ev.results, "config").get("n_examples")
        rows.append({**common, **blank, "measure": "clean", **_accuracy(clean), "n": _num(R.int_or_none(n))})
    for r in ev.summary_rows:
        eps = R.to_float(r.get("eps"))
        rows.append({**common, "measure": "attack", "attack": r.get("attack", ""), "eps": _num(eps),
                     "eps_x255": round(eps * 255, 4) if eps is not None and x255 else "",
                     "steps": _num(r.get("steps")), "restarts": _num(r.get("restarts")), "alpha": _num(r.get("alpha")),
                     **_accuracy(r.get("robust_accuracy")), "n": _num(r.get("n"))})
    for r in ev.worst_case:
        eps = R.to_float(r.get("eps"))
        rows.append({**common, **blank, "measure": "worst_case", "attack": "worst case (all attacks, per point)",
                     "eps": _num(eps), "eps_x255": round(eps * 255, 4) if eps is not None and x255 else "",
                     **_accuracy(r.get("robust_accuracy")), "n": _num(r.get("n"))})
    if not rows:
        rows.append({**common, **blank, "measure": "none", "accuracy": "", "accuracy_pct": ""})
    return rows


STUDY_MEASURES = (("clean", "clean"), ("pgd20", "PGD-20"), ("pgd100", "PGD-100"), ("cw100", "CW-100"),
                  ("autoattack", "AutoAttack"), ("worst_case", "worst case (all attacks, per point)"))


def _study_rows(report: Mapping[str, Any], study: StudyView) -> list[dict[str, Any]]:
    """A study report's own table: measure "study" per model and column, and "study_gap" (PGD-20 minus
    the strongest, in accuracy and in pp, on the gap's points)."""
    rows = []
    eps = study.eps
    at = {"eps": _num(eps), "eps_x255": round(eps * 255, 4) if eps is not None else ""}
    for r in study.ours:
        common = {"report_id": report.get("id", ""), "report_title": report.get("title", ""),
                  "model": r.get("name", ""), "method": r.get("method") or "",
                  "label_smoothing": _num(r.get("delta")), "verdict": r.get("verdict") or ""}
        for key, label in STUDY_MEASURES:
            value = R.to_float(r.get(key))
            if value is not None:
                rows.append({**common, **({} if key == "clean" else at), "measure": "study", "attack": label,
                             **_accuracy(value), "n": _num(r.get(f"{key}_n"))})
        gap = R.to_float(r.get("gap_pgd20_strongest_pp"))
        if gap is not None:
            against = "AutoAttack" if r.get("gap_against") == "autoattack" else "worst case"
            where = "same points" if r.get("gap_points") == "same" else "headline numbers"
            rows.append({**common, **at, "measure": "study_gap", "attack": f"PGD-20 minus {against} ({where})",
                         "accuracy": _num(round(gap / 100, 8)), "accuracy_pct": _num(round(gap, 6)),
                         "n": _num(r.get("gap_n"))})
    return rows


def report_csv(payload: Mapping[str, Any]) -> str:
    """Every number of the report as one long table: one row per (evaluation, measurement), then a
    study report's own table (measures "study" and "study_gap")."""
    report = R.section(payload, "report")
    view = report_view(export_payload(payload))
    rows = [row for ev in view.evaluations for row in _rows_for(report, ev)]
    if view.study:
        rows += _study_rows(report, view.study)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_safe(v) for k, v in row.items()})
    return buf.getvalue()
