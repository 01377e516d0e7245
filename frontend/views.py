"""From API payloads to what the templates show: labels, tables, charts, diagnostics.

The pages, the share page and the exported HTML all go through ``report_view`` /
``evaluation_view``, so a number shown anywhere is computed in one place.
Everything here tolerates missing sections: an evaluation that is still running
has no results, an uploaded checkpoint has no training history, a quick preset
has no AutoAttack row.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from robaudit.frontend import figures as F
from robaudit.frontend import gaps as G
from robaudit.frontend import results_view as R
from robaudit.frontend.differences import differences_of
from robaudit.norms import NORMS

STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2, "skipped": 3}
STATUS_ICON = {"pass": "✔", "warn": "⚠", "fail": "✖", "skipped": "–"}


@dataclass
class Chart:
    id: str
    title: str
    figure: dict[str, Any] | None
    caption: str = ""
    empty: str = ""          # why there is no figure, shown instead of the chart
    traces: int = 0
    model: str = ""          # the model a per-model chart (training curves) belongs to


@dataclass
class Check:
    id: str
    name: str
    status: str
    evidence: Any
    message: str

    @property
    def icon(self) -> str:
        return STATUS_ICON.get(self.status, "?")

    @property
    def evidence_items(self) -> list[tuple[str, str]]:
        """Evidence as (label, text) lines; nested dicts (e.g. one per ε) become one line each.
        A bare {"reason": ...} is left out: the message already says it."""
        ev = self.evidence
        if not isinstance(ev, Mapping) or set(ev) <= {"reason"}:
            return []
        return [(_pretty_key(k), _fmt_value(v)) for k, v in ev.items()]

    @property
    def evidence_nested(self) -> bool:
        return isinstance(self.evidence, Mapping) and any(isinstance(v, Mapping) for v in self.evidence.values())

    @property
    def evidence_text(self) -> str:
        ev = self.evidence
        if ev is None or ev == "" or isinstance(ev, Mapping):
            return ""
        if isinstance(ev, (list, tuple)):
            return "; ".join(_fmt_value(v) for v in ev)
        return _fmt_value(ev)


@dataclass
class Diagnostics:
    checks: list[Check]
    verdict: str | None
    verdict_status: str
    reasons: list[str]

    @property
    def ran(self) -> list[Check]:
        """Checks that ran, failures first."""
        return sorted((c for c in self.checks if c.status != "skipped"), key=lambda c: STATUS_ORDER[c.status])

    @property
    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.status == "skipped"]

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUS_ORDER, 0)
        for c in self.checks:
            out[c.status] = out.get(c.status, 0) + 1
        return out


SHARD_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _to_int(v: Any) -> int | None:
    f = R.to_float(v)
    return None if f is None else int(f)


def _text(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def points_text(start: int | None, end: int | None) -> str:
    """A shard's points as people count them: ``start``..``end`` is half-open, so (0, 500) is 0–499."""
    if start is None or end is None:
        return "–"
    return f"{start}–{end - 1}" if end > start else f"{start} (empty)"


def fmt_duration(seconds: Any) -> str:
    """Seconds as the live pages write them (api.js fmtDuration): 42 s, 3 min 05 s, 2 h 10 min."""
    f = R.to_float(seconds)
    if f is None:
        return "–"
    s = max(0, math.floor(f + 0.5))          # Math.round, as in api.js
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    return f"{m // 60} h {m % 60} min"


@dataclass
class ShardRow:
    """One shard of a running or finished evaluation (an entry of the job's ``shards``), as the status
    card's table shows it. jobs.js (``shardRow``) draws the same row from each poll."""
    index: int
    start: int | None
    end: int | None
    status: str
    worker: str | None
    attempt: int | None
    max_attempts: int | None
    done: float | None
    total: float | None
    stage: str | None
    eta_seconds: float | None
    error: str | None

    @property
    def points(self) -> str:
        return points_text(self.start, self.end)

    @property
    def size(self) -> int | None:
        return None if self.start is None or self.end is None else max(0, self.end - self.start)

    @property
    def status_class(self) -> str:
        return self.status if self.status in SHARD_STATUSES else "unknown"

    @property
    def percent(self) -> int:
        """0–100 for the progress bar: 100 once succeeded, done/total while it runs, 0 before."""
        if self.status == "succeeded":
            return 100
        if self.total and self.done is not None and self.total > 0:
            return max(0, min(100, math.floor(100 * self.done / self.total + 0.5)))
        return 0

    @property
    def attempt_text(self) -> str:
        if self.attempt is None:
            return "–"
        return f"{self.attempt}/{self.max_attempts}" if self.max_attempts else str(self.attempt)

    @property
    def eta_text(self) -> str:
        if self.status == "queued":
            return "waiting"
        if self.status != "running":
            return "–"
        return "estimating…" if self.eta_seconds is None else f"≈ {fmt_duration(self.eta_seconds)}"


def shard_rows(job: Mapping[str, Any]) -> list[ShardRow]:
    """The job's ``shards`` (empty for trainings and for evaluations not planned yet), by index."""
    shards = job.get("shards")
    if not isinstance(shards, list):
        return []
    rows = []
    for i, s in enumerate(shards):
        if not isinstance(s, Mapping):
            continue
        index = _to_int(s.get("index"))
        rows.append(ShardRow(
            index=i if index is None else index, start=_to_int(s.get("start")), end=_to_int(s.get("end")),
            status=str(s.get("status") or "unknown"), worker=_text(s.get("worker")),
            attempt=_to_int(s.get("attempt")), max_attempts=_to_int(s.get("max_attempts")),
            done=R.to_float(s.get("done")), total=R.to_float(s.get("total")), stage=_text(s.get("stage")),
            eta_seconds=R.to_float(s.get("eta_seconds")), error=_text(s.get("error"))))
    return sorted(rows, key=lambda r: r.index)


def shard_summary(rows: Sequence[ShardRow]) -> str:
    """"4 shards: 2 running, 1 queued, 1 succeeded": the count of each status, running first."""
    if not rows:
        return ""
    counts = {s: sum(r.status == s for r in rows) for s in SHARD_STATUSES}
    counts["unknown"] = len(rows) - sum(counts.values())
    order = ("running", "queued", "succeeded", "failed", "cancelled", "unknown")
    parts = [f"{counts[s]} {s}" for s in order if counts[s]]
    return f"{len(rows)} shard{'' if len(rows) == 1 else 's'}: " + ", ".join(parts)


@dataclass
class ShardTiming:
    """One entry of the results' ``timing.shards``."""
    start: int | None
    end: int | None
    seconds: float | None
    worker: str | None

    @property
    def points(self) -> str:
        return points_text(self.start, self.end)

    @property
    def seconds_text(self) -> str:
        return _fmt_seconds(self.seconds) if self.seconds is not None else "–"


@dataclass
class EvaluationView:
    id: Any
    label: str
    status: str
    checkpoint: Mapping[str, Any]
    results: Mapping[str, Any] | None
    model: R.Model
    error: str | None = None
    imported: str | None = None     # where results pushed from elsewhere were made (robaudit push)
    color_index: int = 0            # its colour in every chart of the report (figures.MODEL_COLORS)
    examples: list[Mapping[str, Any]] = field(default_factory=list)   # a report's few adversarial examples

    @property
    def color(self) -> str:
        return F.MODEL_COLORS[self.color_index % len(F.MODEL_COLORS)]

    @property
    def swatch_class(self) -> str:
        """The CSS class of its colour swatch (app.css .swatch.m0 ... .m7; style attributes are blocked)."""
        return f"m{self.color_index % len(F.MODEL_COLORS)}"

    @property
    def gap(self) -> G.Gap | None:
        return G.pgd_gap(self.results)

    @property
    def gallery(self) -> dict[str, Any] | None:
        """What the gallery's filters offer, from the results' gallery index (the images load from the API)."""
        return gallery_summary(self.results)

    @property
    def arch(self) -> str | None:
        return R.checkpoint_field(self.checkpoint, "arch")

    @property
    def dataset(self) -> str | None:
        if self.test_set:   # an uploaded test set (or `--data FILE`): the evaluation ran on it, not on the split
            return self.test_set["name"]
        return R.checkpoint_field(self.checkpoint, "dataset") or R.section(self.results, "config").get("dataset")

    @property
    def test_set(self) -> dict[str, Any] | None:
        """The user's own test set the results were measured on: name, sha256 and number of points (None for
        a dataset's test split). From the results' provenance, so imported `--data` results have it too."""
        data = R.section(self.provenance, "dataset")
        sha = data.get("file_sha256")
        if not isinstance(sha, str):
            return None
        return {"name": str(data.get("name") or "?"), "sha256": sha, "short_sha256": sha[:12],
                "n": data.get("file_points") if data.get("file_points") is not None else data.get("n"),
                "dataset_id": data.get("dataset_id")}

    @property
    def method(self) -> str | None:
        return R.method_of(self.checkpoint)

    @property
    def label_smoothing(self) -> float | None:
        return R.label_smoothing_of(self.checkpoint)

    @property
    def checkpoint_name(self) -> str | None:
        return R.checkpoint_field(self.checkpoint, "name")

    @property
    def clean_accuracy(self) -> float | None:
        return R.clean_accuracy(self.results)

    @property
    def clean_accuracy_ci95(self) -> Any:
        return (self.results or {}).get("clean_accuracy_ci95")

    @property
    def provenance(self) -> Mapping[str, Any]:
        return R.section(self.results, "provenance")

    @property
    def provenance_items(self) -> list[tuple[str, str]]:
        """What produced these numbers, one line each (empty for results older than provenance)."""
        prov = self.provenance
        if not prov:
            return []
        items: list[tuple[str, str]] = []
        software = prov.get("software")
        for entry in software if isinstance(software, list) else [software]:
            if isinstance(entry, Mapping):
                versions = ", ".join(f"{k} {v}" for k, v in entry.items() if k != "git_commit" and v)
                items.append(("software", versions))
                if entry.get("git_commit"):
                    items.append(("git commit", str(entry["git_commit"])))
        machine = prov.get("machine")
        for entry in machine if isinstance(machine, list) else [machine]:
            if isinstance(entry, Mapping):
                items.append(("machine", f"{entry.get('device_name') or entry.get('device')}, "
                                         f"{entry.get('precision')}, {entry.get('threads')} CPU threads"))
        if prov.get("mixed"):
            items.append(("note", f"shards ran on different {' and '.join(prov['mixed'])}: each is listed"))
        items.append(("seed", _fmt_value(prov.get("seed"))))
        dataset = R.section(prov, "dataset")
        if dataset:
            items.append(("test points", f"{dataset.get('name')}, points {dataset.get('points')} "
                                         f"({dataset.get('n')}), sha256 {dataset.get('points_sha256') or '–'}"))
        if self.test_set:
            own = self.test_set
            items.append(("test set", f"{own['name']}, {own['n']} points, sha256 {own['sha256']}"))
        items.append(("checkpoint sha256", str(prov.get("checkpoint_sha256") or "–")))
        items.append(("ran", f"{prov.get('started_at') or '–'} to {prov.get('finished_at') or '–'}"))
        return items

    @property
    def versions(self) -> tuple[str | None, str | None] | None:
        """(robaudit, pyautoattack) versions of the run, None when unknown or mixed within it."""
        software = self.provenance.get("software")
        if not isinstance(software, Mapping):
            return None
        return software.get("robaudit"), software.get("pyautoattack")

    @property
    def headline_eps(self) -> float | None:
        return R.headline_eps(self.results)

    @property
    def norm(self) -> str:
        return R.norm_of(self.results)

    @property
    def ladder(self) -> list[tuple[R.Rung, dict[str, Any]]]:
        return R.ladder(self.results)

    @property
    def headline(self) -> dict[str, Any]:
        """Strongest single attack and worst case at the headline ε (for the comparison table)."""
        lad = self.ladder
        attacks = [(g, r) for g, r in lad if g.family not in ("clean", "worst")]
        worst = next((r for g, r in lad if g.family == "worst"), None)
        strongest = min(attacks, key=lambda gr: R.to_float(gr[1].get("robust_accuracy")) or 0.0) if attacks else None
        aa = next((r for g, r in attacks if g.family == "autoattack"), None)
        pgd = [(g, r) for g, r in attacks if g.family == "pgd" and not g.restarts]
        pgd20 = next((r for g, r in pgd if g.steps == 20), None) or (pgd[0][1] if pgd else None)
        return {
            "eps": self.headline_eps,
            "pgd": pgd20, "pgd_label": next((g.label for g, r in pgd if r is pgd20), None),
            "autoattack": aa,
            "strongest": strongest[1] if strongest else None,
            "strongest_label": strongest[0].label if strongest else None,
            "worst": worst,
        }

    @property
    def summary_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in (self.results or {}).get("summary") or []:
            if not isinstance(r, Mapping):
                continue
            rung = R.rung_of(r)
            rows.append({**r, "_label": rung.label, "_order": (R.to_float(r.get("eps")) or 0, rung.order)})
        return sorted(rows, key=lambda r: r["_order"])

    @property
    def worst_case(self) -> list[dict[str, Any]]:
        return R.worst_case_rows(self.results)

    @property
    def diagnostics(self) -> Diagnostics | None:
        return diagnostics_of(self.results)

    @property
    def config_items(self) -> list[tuple[str, str]]:
        out = []
        for k, v in R.section(self.results, "config").items():
            if isinstance(v, Mapping) or v in ([], (), None, ""):
                continue   # thresholds and unused options: too long or empty for this list
            if k in ("attacks", "eps", "eps_curve", "large_eps") and isinstance(v, list):
                v = ", ".join(_fmt_value(x) if k == "attacks" else R.eps_short(x) for x in v)
            out.append((str(k), _fmt_value(v)))
        return out

    @property
    def timing_items(self) -> list[tuple[str, str]]:
        t = (self.results or {}).get("timing")
        if not isinstance(t, Mapping):
            return []
        # The merge's cost is shown with the per-shard table (timing_shards) when there is one.
        skip = {"merge_seconds"} if self.timing_shards else set()
        return [(str(k), _fmt_seconds(v) if "second" in str(k) or str(k).endswith("_s") else _fmt_value(v))
                for k, v in t.items() if not isinstance(v, (Mapping, list)) and k not in skip]

    @property
    def timing_shards(self) -> list[ShardTiming]:
        """The results' ``timing.shards``: how long each shard took, on which worker, by start point."""
        t = (self.results or {}).get("timing")
        shards = t.get("shards") if isinstance(t, Mapping) else None
        if not isinstance(shards, list):
            return []
        rows = [ShardTiming(start=_to_int(s.get("start")), end=_to_int(s.get("end")),
                            seconds=R.to_float(s.get("seconds")), worker=_text(s.get("worker")))
                for s in shards if isinstance(s, Mapping)]
        return sorted(rows, key=lambda r: -1 if r.start is None else r.start)

    @property
    def merge_seconds(self) -> str | None:
        """The merge step's cost (``timing.merge_seconds``), formatted, or None when not recorded."""
        t = (self.results or {}).get("timing")
        value = R.to_float(t.get("merge_seconds")) if isinstance(t, Mapping) else None
        return None if value is None else _fmt_seconds(value)


@dataclass
class StudyView:
    """A study report's own section (``payload["study"]``, from robaudit.study.analyze): the published
    numbers next to ours, and the conclusions computed from them."""
    eps: float | None
    conclusions: list[Mapping[str, Any]]
    ours: list[Mapping[str, Any]]
    published_deltas: Mapping[str, Any] | None
    published_attacks: Mapping[str, Any] | None

    @property
    def published_attack_rows(self) -> list[tuple[str, Any]]:
        rows = (self.published_attacks or {}).get("rows") or {}
        names = {"clean": "clean", "pgd20": "PGD-20", "pgd100": "PGD-100", "cw100": "CW-100",
                 "autoattack": "AutoAttack"}
        return [(names.get(str(k), str(k)), v) for k, v in rows.items()] if isinstance(rows, Mapping) else []


def study_of(payload: Mapping[str, Any]) -> StudyView | None:
    study = payload.get("study")
    if not isinstance(study, Mapping):
        return None
    seed = R.section(study, "seed")
    conclusions = [c for c in study.get("conclusions") or [] if isinstance(c, Mapping)]
    ours = [r for r in study.get("ours") or [] if isinstance(r, Mapping)]
    ls = seed.get("label_smoothing") if isinstance(seed.get("label_smoothing"), Mapping) else None
    attacks = seed.get("attacks") if isinstance(seed.get("attacks"), Mapping) else None
    return StudyView(eps=R.to_float(study.get("eps")), conclusions=conclusions, ours=ours,
                     published_deltas=ls, published_attacks=attacks)


@dataclass
class ReportView:
    id: Any
    title: str
    created_at: Any
    evaluations: list[EvaluationView]
    charts: list[Chart] = field(default_factory=list)
    training_charts: list[Chart] = field(default_factory=list)
    study: StudyView | None = None
    differences: list[dict[str, Any]] = field(default_factory=list)   # frontend.differences

    @property
    def with_results(self) -> list[EvaluationView]:
        return [e for e in self.evaluations if e.results]

    @property
    def all_charts(self) -> list[Chart]:
        return [*self.charts, *self.training_charts]

    @property
    def mixed_versions(self) -> str | None:
        """A warning when the compared results come from different robaudit or pyautoattack versions."""
        seen = {v for e in self.with_results if (v := e.versions) is not None}
        if len(seen) < 2:
            return None
        runs = "; ".join(f"robaudit {a or '?'} with pyautoattack {b or '?'}" for a, b in sorted(seen, key=str))
        return (f"These results were measured by different software versions ({runs}): a difference between "
                "models may partly be a difference between versions.")

    def training_chart_of(self, ev: EvaluationView) -> Chart | None:
        """The training-curves chart shown in this evaluation's details, if any."""
        return next((c for c in self.training_charts if c.model == ev.label), None)


def _pretty_key(k: Any) -> str:
    return str(k).replace("_", " ")


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return " · ".join(f"{_pretty_key(k)} {_fmt_value(x)}" for k, x in v.items()) if v else "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v) if v else "none"
    return "–" if v is None or v == "" else str(v)


def _fmt_seconds(v: Any) -> str:
    f = R.to_float(v)
    if f is None:
        return _fmt_value(v)
    if f < 90:
        return f"{f:.1f} s"
    if f < 5400:
        return f"{f / 60:.1f} min"
    return f"{f / 3600:.1f} h"


def verdict_status(verdict: Any, checks: Sequence[Check] = ()) -> str:
    """pass / warn / fail for colouring the verdict. From the checks when there are any (the engine's
    rule: any failed check means masking is suspected; warnings are shown but do not flip it),
    else from the verdict's wording."""
    if str(verdict or "").lower().startswith("invalid"):   # clean accuracy near chance: not an audit at all
        return "fail"
    if checks:
        if any(c.status == "fail" for c in checks):
            return "fail"
        if any(c.status == "warn" for c in checks):
            return "warn"
        return "pass" if any(c.status == "pass" for c in checks) else "skipped"
    v = str(verdict or "").lower()
    if not v:
        return "skipped"
    if v.startswith("no ") or "no sign" in v or "no evidence" in v:
        return "pass"
    if any(w in v for w in ("fail", "unreliable", "suspect", "mask", "broken", "invalid")):
        return "fail"
    if any(w in v for w in ("warn", "caution", "inconclusive", "doubt")):
        return "warn"
    return "pass"


def diagnostics_of(results: Mapping[str, Any] | None) -> Diagnostics | None:
    diag = (results or {}).get("diagnostics")
    if not isinstance(diag, Mapping):
        return None
    checks = []
    for c in diag.get("checks") or []:
        if not isinstance(c, Mapping):
            continue
        status = str(c.get("status") or "skipped").lower()
        checks.append(Check(id=str(c.get("id") or ""), name=str(c.get("name") or c.get("id") or "check"),
                            status=status if status in STATUS_ORDER else "skipped",
                            evidence=c.get("evidence"), message=str(c.get("message") or "")))
    reasons = diag.get("reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    verdict = diag.get("verdict")
    return Diagnostics(checks=checks, verdict=str(verdict) if verdict is not None else None,
                       verdict_status=verdict_status(verdict, checks), reasons=[str(r) for r in reasons])


# --------------------------------------------------------------------------- building views

def imported_source(evaluation: Mapping[str, Any]) -> str | None:
    """Where an imported evaluation's results were made; None for evaluations this service ran."""
    imported = R.section(evaluation, "config").get("imported")
    if not imported:
        return None
    source = imported.get("source") if isinstance(imported, Mapping) else None
    return str(source or "elsewhere")


def _labels(evaluations: Sequence[Mapping[str, Any]]) -> list[str]:
    """Checkpoint names, made unique with the evaluation id when two evaluations share one.

    Imported results have no checkpoint here: they go by their evaluation's name, marked "(imported)"
    wherever the label appears (tables, legends, exports)."""
    base = []
    for ev in evaluations:
        ck = R.section(ev, "checkpoint")
        name = R.checkpoint_field(ck, "name")
        if imported_source(ev):
            name = f"{ev.get('name') or 'evaluation ' + str(ev.get('id'))} (imported)"
        if not name:
            parts = [R.method_of(ck), R.checkpoint_field(ck, "arch")]
            name = " ".join(str(p) for p in parts if p) or f"evaluation {ev.get('id')}"
        base.append(str(name))
    out = []
    for name, ev in zip(base, evaluations):
        out.append(f"{name} (#{ev.get('id')})" if base.count(name) > 1 else name)
    return out


def gallery_summary(results: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The results' gallery index (robaudit.evaluation.gallery.index_of) as the page's filters need it."""
    from robaudit.evaluation.gallery import class_names

    index = R.section(results, "gallery")
    points = index.get("points") if isinstance(index.get("points"), Mapping) else None
    if not index or points is None or not isinstance(index.get("limit"), int) or index["limit"] < 1:
        return None
    names = class_names(str(R.section(results, "config").get("dataset") or ""), int(results.get("num_classes") or 0)
                        if results else 0)
    true = [t for t in points.get("true") or [] if isinstance(t, int)]
    return {"limit": index["limit"], "count": int(index.get("count") or 0), "eps": index.get("eps"),
            "attacks": sorted({str(a) for a in points.get("attack") or []}),
            "classes": [(k, names[k] if 0 <= k < len(names) else f"class {k}") for k in sorted(set(true))],
            "missed": len(index.get("missed_by_pgd20") or [])}


def evaluation_views(evaluations: Sequence[Mapping[str, Any]]) -> list[EvaluationView]:
    evs = [e for e in evaluations if isinstance(e, Mapping)]
    views = []
    for i, (ev, label) in enumerate(zip(evs, _labels(evs))):
        ck = R.section(ev, "checkpoint")
        results = ev.get("results") if isinstance(ev.get("results"), Mapping) else None
        views.append(EvaluationView(
            id=ev.get("id"), label=label, status=str(ev.get("status") or ("succeeded" if results else "unknown")),
            checkpoint=ck, results=results, error=ev.get("error"), imported=imported_source(ev),
            model=R.Model(label=label, results=results, checkpoint=ck, key=str(ev.get("id"))), color_index=i,
            examples=[g for g in ev.get("gallery") or [] if isinstance(g, Mapping)
                      and isinstance(g.get("images"), Mapping)]))
    return views


def is_delta_study(models: Sequence[R.Model]) -> bool:
    """At least two values of δ for one training method: what the δ chart is for."""
    deltas: dict[str, set[float]] = {}
    for m in models:
        delta = R.label_smoothing_of(m.checkpoint)
        if delta is not None:
            deltas.setdefault(R.method_of(m.checkpoint) or "unknown method", set()).add(round(delta, 9))
    return any(len(v) >= 2 for v in deltas.values())


def comparison_charts(views: Sequence[EvaluationView], prefix: str = "chart",
                      reference: Mapping[str, Any] | None = None) -> list[Chart]:
    """The comparison charts. Evaluations under different norms are never drawn together: each norm gets
    its own set of charts (ids ``<prefix>-<chart>-<norm>``, titles naming the norm), in the order L∞, L2, L1."""
    with_results = [v for v in views if v.results]
    colors = {v.label: v.color for v in views}
    norms = sorted({v.norm for v in with_results}, key=NORMS.index)
    if len(norms) <= 1:
        return _norm_charts(with_results, colors, prefix, reference)
    charts: list[Chart] = []
    for norm in norms:
        group = [v for v in with_results if v.norm == norm]
        charts += _norm_charts(group, colors, prefix, reference, id_suffix=f"-{norm}",
                               title_suffix=f" ({R.norm_label(norm)})")
    return charts


def _norm_charts(with_results: Sequence[EvaluationView], colors: Mapping[str, str], prefix: str,
                 reference: Mapping[str, Any] | None, id_suffix: str = "", title_suffix: str = "") -> list[Chart]:
    """The comparison charts of evaluations that share one norm."""
    models = [v.model for v in with_results]
    charts = []

    def add(key: str, title: str, fig: dict | None, caption: str, empty: str) -> None:
        warnings = fig.pop("warnings", 0) if fig else 0
        if warnings:
            caption = caption + f" {warnings} curve(s) still falling at the largest step count: see the annotation."
        charts.append(Chart(id=f"{prefix}-{key}{id_suffix}", title=title + title_suffix, figure=fig, caption=caption,
                            empty=empty if fig is None else "", traces=len(fig["data"]) if fig else 0))

    gaps = {v.label: v.gap for v in with_results}
    gap_fig = F.pgd_overstatement(models, gaps, colors)
    if gap_fig is not None:
        paired = all(g.paired for g in gaps.values() if g is not None and g.gap is not None)
        add("gap", "How much PGD-20 overstates robustness", gap_fig,
            "PGD-20 (●), AutoAttack (◆) and the worst case per test point (✕: a point counts only if it survived "
            "every attack) at each model's headline ε. The bar is what PGD-20 overstates, in percentage points (pp); "
            + ("the 95 % interval is paired over the same test points (Newcombe's hybrid score interval)."
               if paired else "the 95 % interval is Newcombe's hybrid score interval, unpaired where the per-point "
                              "records are not in this report."),
            "")
    add("eps", "Robust accuracy vs ε", F.accuracy_vs_eps(models, colors),
        "One colour per model; marker and dash name the attack. PGD-20 and the worst case per test point are "
        "drawn; every other attack is in the legend, one click away (click a model's name to hide it). Lines "
        "join one attack's points at successive ε from the clean accuracy (ε = 0); the large-ε check (C2) "
        "is lone markers.",
        "No attack results yet.")
    add("steps", "Robust accuracy vs attack steps", F.accuracy_vs_steps(models, colors),
        "The PGD-overfitting probe: a curve that is still falling at the largest step count means the attack "
        "had not converged, and fewer steps overstate robustness.",
        "No attack was run at more than one step count, so there is no steps curve.")
    add("ladder", "Attack ladder", F.attack_ladder(models, colors),
        "Weakest to strongest attack at each model's headline ε, one colour per model; the hatching names the "
        "attack. A healthy model loses a few points per rung; a large gap between PGD and AutoAttack or the "
        "worst case is a gradient-masking sign.",
        "No attack results yet.")
    if is_delta_study(models):
        add("label-smoothing", "Label smoothing δ vs robust accuracy",
            F.label_smoothing_view(models, reference, colors),
            "One point per model trained with a known δ (its colour). If PGD accuracy grows with δ while "
            "AutoAttack accuracy does not, the gain is an artefact of the cross-entropy loss, not robustness.",
            "None of these models records a label-smoothing δ in its training hyper-parameters.")
    return charts


def training_charts(views: Sequence[EvaluationView], prefix: str = "chart") -> list[Chart]:
    out = []
    seen = set()
    for i, v in enumerate(views):
        ck_id = v.checkpoint.get("id") if v.checkpoint else None
        if ck_id is not None and ck_id in seen:
            continue
        seen.add(ck_id)
        fig = F.training_curves(v.model, v.color)
        if fig is None:
            continue
        out.append(Chart(id=f"{prefix}-train-{i}", title=f"Training curves: {v.label}", figure=fig,
                         caption="Test accuracy measured after each epoch (PGD-20 on a fixed subset); dotted "
                                 "vertical lines mark learning-rate changes.", traces=len(fig["data"]),
                         model=v.label))
    return out


def report_view(payload: Mapping[str, Any], prefix: str = "chart") -> ReportView:
    report = R.section(payload, "report")
    views = evaluation_views(payload.get("evaluations") or [])
    study = study_of(payload)
    reference = study.published_deltas if study else None
    return ReportView(id=report.get("id"), title=str(report.get("title") or "Robustness report"),
                      created_at=report.get("created_at"), evaluations=views,
                      charts=comparison_charts(views, prefix, reference),
                      training_charts=training_charts(views, prefix), study=study,
                      differences=differences_of(payload, [(v.label, v.results) for v in views if v.results]))


def evaluation_view(evaluation: Mapping[str, Any]) -> tuple[EvaluationView, list[Chart]]:
    """One evaluation's detail: its view and its charts (the comparison charts with one model)."""
    (view,) = evaluation_views([evaluation])
    charts = comparison_charts([view]) if view.results else []
    charts = [c for c in charts if not c.id.endswith(("label-smoothing", "-gap"))]   # comparisons across models
    return view, charts + training_charts([view])
