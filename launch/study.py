"""`robaudit study label-smoothing`: the seed paper's label-smoothing ablation, then its audit.

Trains Feature Scattering at each delta plus PGD-AT and standard baselines (same architecture,
epochs and training images), evaluates every model with the `paper` and `audit` presets, and
saves one comparison report of kind "label-smoothing-study": the paper's table next to ours,
per-epoch curves with the lr drops, steps curves, diagnostics verdicts and a conclusion that the
server computes from the stored numbers (robaudit.study). Everything runs through the job queue
of an embedded service (or of a running one, with --api-url), exactly as a user would drive it.

With --out DIR the report is exported there as self-contained HTML, CSV and JSON, next to
`run.json` (the exact command, the machine, versions and wall time), all written by the tool.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import httpx
import torch

from robaudit.launch.client import FINISHED, Display, api_client, pct
from robaudit.launch.service import EmbeddedService, drive_embedded, until_interrupted
from robaudit.recipes import get_recipe

STUDY_KIND = "label-smoothing-study"


@dataclass
class Arm:
    """One model of the study: its training job and its evaluation jobs."""
    label: str
    method: str
    hyperparameters: dict
    training_id: int | None = None
    checkpoint_id: int | None = None
    evaluation_ids: dict[str, int] = field(default_factory=dict)   # preset -> job id
    error: str | None = None


def parse_deltas(text: str) -> list[float]:
    try:
        deltas = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"robaudit: error: --deltas must be comma-separated numbers, got {text!r}") from None
    if not deltas or any(not 0.0 <= d < 1.0 for d in deltas):
        raise SystemExit(f"robaudit: error: every delta must be in [0, 1), got {text!r}")
    return sorted(dict.fromkeys(deltas))


def build_arms(args) -> tuple[list[Arm], dict]:
    """The study's models and the shared budget. A recipe (--preset) fixes dataset, arch and schedule."""
    if args.preset:
        recipe = get_recipe(args.preset)
        base = {k: v for k, v in recipe.train.items() if k not in ("method", "label_smoothing", "sinkhorn")}
        evaluation = dict(recipe.evaluate)
    else:
        base = {"dataset": args.dataset, "arch": args.arch, "epochs": 5}
        evaluation = {"dataset": args.dataset}
    for key in ("epochs", "n_train", "eps", "batch_size"):
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    if args.data_dir:
        base["data_dir"] = args.data_dir
    base.setdefault("eval_examples", args.eval_examples)
    dataset, arch = base.pop("dataset"), base.pop("arch")
    arch_kwargs = base.pop("arch_kwargs", {})
    if args.n_examples is not None:
        evaluation["n_examples"] = args.n_examples
    evaluation.setdefault("n_examples", 500)
    if "eps" in base:
        evaluation["eps"] = [base["eps"]]
    common = {"dataset": dataset, "arch": arch, "arch_kwargs": arch_kwargs}
    arms = [Arm(f"Feature Scattering δ={d:g}", "feature-scatter", {**base, "label_smoothing": d})
            for d in parse_deltas(args.deltas)]
    arms.append(Arm("PGD-AT", "pgd-at", {**base, **({"steps": args.pgd_steps} if args.pgd_steps else {})}))
    arms.append(Arm("standard", "standard", dict(base)))
    return arms, {"train": common, "evaluate": evaluation}


def _machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_study(args: argparse.Namespace) -> int:
    arms, shared = build_arms(args)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in ("quick", "paper", "audit")]
    if not presets or unknown:
        raise SystemExit(f"robaudit: error: --presets takes quick, paper and/or audit, got {args.presets!r}")
    started = time.time()
    out = Display()
    if args.api_url:
        token = args.token or os.environ.get("ROBAUDIT_API_TOKEN")
        if not token:
            raise SystemExit("robaudit: error: --api-url needs --token or ROBAUDIT_API_TOKEN")
        base_url = args.api_url.rstrip("/")
        return until_interrupted(out, lambda: _study(args, arms, shared, presets, started, base_url, token, out))

    def against(service: EmbeddedService) -> int | None:
        return _study(args, arms, shared, presets, started, service.url, service.token, out)

    return drive_embedded(out, against, data_dir=args.data_dir_service, port=args.port,
                          worker_name="study@localhost")


def _study(args: argparse.Namespace, arms: list[Arm], shared: dict, presets: list[str], started: float,
           base_url: str, token: str, out: Display) -> int | None:
    """Train and evaluate every arm, save and print the report; an exit code with --exit or --api-url."""
    with api_client(base_url, token, timeout=120) as client:
        ev = shared["evaluate"]
        out.say(f"robaudit study: {len(arms)} models on {shared['train']['dataset']} ({shared['train']['arch']}), "
                f"each evaluated with the {' and '.join(presets)} preset(s) on {ev['n_examples']} test images; "
                f"service {base_url}")
        for arm in arms:
            resp = client.post("/trainings", json={"method": arm.method, **shared["train"],
                                                   "hyperparameters": arm.hyperparameters,
                                                   "name": f"study {arm.label}"})
            _check(resp, f"queueing the training of {arm.label}")
            arm.training_id = resp.json()["id"]
        _drive(client, arms, ev, presets, out)
        evaluation_ids = [i for arm in arms for i in arm.evaluation_ids.values()]
        title = args.title or (f"Label-smoothing study: Feature Scattering δ ∈ {{{args.deltas}}} vs PGD-AT vs "
                               f"standard ({shared['train']['dataset']})")
        resp = client.post("/reports", json={"title": title, "evaluation_ids": evaluation_ids, "kind": STUDY_KIND})
        _check(resp, "saving the study report")
        report = resp.json()
        payload = client.get(f"/reports/{report['id']}").json()
        _print_conclusions(payload.get("study") or {}, out)
        out.say(f"\nstudy report: {base_url}{report['url']}   (share: {urljoin(base_url, report['share_url'])})")
        if args.out:
            _export(client, report, args, shared, arms, started)
            out.say(f"exported to {args.out}/ (report.html, report.csv, report.json, run.json)")
    failed = any(arm.error for arm in arms)
    if args.exit or args.api_url:
        return 1 if failed else 0
    return None


def _check(resp: httpx.Response, doing: str) -> None:
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text[:300]
        raise SystemExit(f"robaudit: error: {doing} failed ({resp.status_code}): {detail}")


def _drive(client: httpx.Client, arms: list[Arm], evaluation: dict, presets: list[str], out: Display) -> None:
    """Poll the jobs; queue each model's evaluations as soon as its training succeeds."""
    while True:
        jobs = {j["id"]: j for j in client.get("/jobs", params={"limit": 1000}).json()["data"]}
        status = []
        for arm in arms:
            training = jobs.get(arm.training_id)
            if arm.checkpoint_id is None and arm.error is None and training and training["status"] in FINISHED:
                if training["status"] != "succeeded":
                    arm.error = f"training {training['status']}: {training['error']}"
                    out.say(f"{arm.label}: {arm.error}")
                    continue
                arm.checkpoint_id = training["output_checkpoint_id"]
                final = training["summary"].get("final", {})
                out.say(f"{arm.label}: trained (clean {pct(final.get('clean_acc'))}, PGD-20 "
                        f"{pct(final.get('pgd20_acc'))} on the monitor subset); queued {' + '.join(presets)}")
                for preset in presets:
                    body = {"checkpoint_id": arm.checkpoint_id, "preset": preset,
                            **{k: v for k, v in evaluation.items() if k not in ("preset",)},
                            "name": f"study {arm.label} ({preset})"}
                    resp = client.post("/evaluations", json=body)
                    _check(resp, f"queueing the {preset} evaluation of {arm.label}")
                    arm.evaluation_ids[preset] = resp.json()["id"]
            for preset, job_id in arm.evaluation_ids.items():
                job = jobs.get(job_id)
                if job and job["status"] in FINISHED:
                    if job["status"] != "succeeded" and not arm.error:
                        arm.error = f"{preset} evaluation {job['status']}: {job['error']}"
                        out.say(f"{arm.label}: {arm.error}")
            mine = [jobs.get(i) for i in [arm.training_id, *arm.evaluation_ids.values()]]
            running = [j for j in mine if j and j["status"] == "running"]
            if running:
                p = running[0]["progress"]
                frac = f"{100 * p['fraction']:.0f}%" if p.get("fraction") is not None else "…"
                status.append(f"{arm.label}: {running[0]['kind'][:5]} {frac}")
        if all(arm.error is not None or (arm.checkpoint_id is not None and
                                         all(jobs.get(i, {}).get("status") in FINISHED
                                             for i in arm.evaluation_ids.values())
                                         and len(arm.evaluation_ids) == len(presets)) for arm in arms):
            return
        finished = sum(1 for j in jobs.values() if j["status"] in FINISHED
                       and j["id"] in {i for a in arms for i in [a.training_id, *a.evaluation_ids.values()]})
        total = len(arms) * (1 + len(presets))
        out.update(f"{finished}/{total} jobs done | " + (" | ".join(status) or "waiting for the worker"))
        time.sleep(2.0)


def _print_conclusions(study: dict, out: Display) -> None:
    rows = study.get("ours", [])
    if rows:
        out.say("")
        out.say(f"{'model':<26} {'clean':>7} {'PGD-20':>7} {'PGD-100':>8} {'CW-100':>7} {'AA':>7} {'worst':>7}")
        for r in rows:
            name = f"{r['method']}" + (f" δ={r['delta']:g}" if r.get("delta") is not None and
                                      r["method"] == "feature-scatter" else "")
            out.say(f"{name:<26} {pct(r.get('clean')):>7} {pct(r.get('pgd20')):>7} {pct(r.get('pgd100')):>8} "
                    f"{pct(r.get('cw100')):>7} {pct(r.get('autoattack')):>7} {pct(r.get('worst_case')):>7}")
    for c in study.get("conclusions", []):
        out.say(f"- {c['question']} {c['text']}")


def _export(client: httpx.Client, report: dict, args, shared: dict, arms: list[Arm], started: float) -> None:
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    for fmt, name in (("html", "report.html"), ("csv", "report.csv"), ("json", "report.json")):
        resp = client.get(f"/reports/{report['id']}/export", params={"format": fmt})
        _check(resp, f"exporting the report as {fmt}")
        (target / name).write_bytes(resp.content)
    run = {
        "command": "robaudit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("robaudit")
        else " ".join(shlex.quote(a) for a in sys.argv),
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "machine": _machine(),
        "budget": {"train": shared["train"], "hyperparameters": {a.label: a.hyperparameters for a in arms},
                   "evaluate": shared["evaluate"]},
        "jobs": {a.label: {"training": a.training_id, "evaluations": a.evaluation_ids, "error": a.error}
                 for a in arms},
    }
    (target / "run.json").write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n")


def register_study(subparsers) -> None:
    p = subparsers.add_parser("study", help="run the label-smoothing study through the job queue and build its report",
                              description=__doc__.splitlines()[0])
    p.add_argument("name", choices=["label-smoothing"], help="which study")
    p.add_argument("--dataset", default="mnist10k")
    p.add_argument("--arch", default="smallcnn")
    p.add_argument("--preset", choices=["cifar10-paper"], default=None,
                   help="the paper's full CIFAR-10 recipe (GPU; CIFAR-10 in --data-dir)")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every model (default 5; recipe: 200)")
    p.add_argument("--deltas", default="0,0.1,0.3,0.5", help="label-smoothing factors for Feature Scattering")
    p.add_argument("--eps", type=float, default=None, help="training and evaluation eps in pixel units")
    p.add_argument("--n-train", type=int, default=None, help="training images per model (default: all)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--pgd-steps", type=int, default=None, help="PGD-AT attack steps (default: the method's)")
    p.add_argument("--eval-examples", type=int, default=500, help="test points for the per-epoch PGD-20 monitor")
    p.add_argument("--n-examples", type=int, default=None, help="test points per evaluation (default 500)")
    p.add_argument("--presets", default="paper,audit",
                   help="evaluation presets run on every model (default paper,audit; quick for a smoke run)")
    p.add_argument("--data-dir", default=None, help="torchvision datasets folder (CIFAR etc.)")
    p.add_argument("--service-dir", dest="data_dir_service", default=None,
                   help="where the embedded service keeps its data (default ./var)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-url", default=None, help="use a running service instead of an embedded one")
    p.add_argument("--token", default=None, help="API token for --api-url (or ROBAUDIT_API_TOKEN)")
    p.add_argument("--title", default=None)
    p.add_argument("--out", default=None, help="export the report (HTML, CSV, JSON) and run.json here")
    p.add_argument("--exit", action="store_true", help="exit when done instead of serving the report")
    p.set_defaults(func=run_study)
