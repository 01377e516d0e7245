"""`robaudit demo`: the whole service on one machine, from a fresh clone (`make demo`).

Starts the embedded service (API on 127.0.0.1:8000 + one worker, SQLite, data in ./var),
trains three SmallCNNs on the bundled mnist10k through the job queue (standard, PGD-AT, and
Feature Scattering with label smoothing 0.5 at eps = 0.3), audits each one, saves the
comparison report, prints clean and PGD-20 accuracy and the report's URL, and keeps
serving until Ctrl-C. Everything goes through the HTTP API, as a user's script would.

Budget: training is sized for about 10 minutes on 2 idle CPU cores. Each trained model is then
checked with PGD-20 on all 2,000 test digits (cheap), and audited with the audit preset (AutoAttack,
PGD/CW-100, restarts, curves, noise), the expensive part, on --n-examples test digits.
--quick is a tiny run for the tests.
"""
from __future__ import annotations

import argparse
import signal
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx

from robaudit.launch.client import FINISHED, Display, api_client, pct
from robaudit.launch.service import EmbeddedService, drive_embedded

MNIST10K_TEST_DIGITS = 2000
DEFAULT_AUDIT_EXAMPLES = 200   # AutoAttack (first 200 in the audit preset) then covers every point


@dataclass
class Plan:
    label: str
    method: str
    hyperparameters: dict
    training_id: int | None = None
    check_id: int | None = None          # PGD-20 on the whole test split
    evaluation_id: int | None = None     # the audit
    checkpoint_id: int | None = None
    check: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)


def plans(args) -> list[Plan]:
    """What to train: all 8,000 mnist10k training digits. PGD-AT costs about 11 forward-backward
    passes per image (10 steps), Feature Scattering about 2 (one step), standard 1."""
    if args.quick:
        tiny = {"epochs": args.epochs or 1, "n_train": 128, "eval_examples": 16, "batch_size": 64}
        return [Plan("standard", "standard", dict(tiny)),
                Plan("PGD-AT", "pgd-at", {**tiny, "eps": 0.3, "steps": 2, "alpha": 0.15}),
                Plan("Feature Scattering", "feature-scatter", {**tiny, "eps": 0.3, "label_smoothing": 0.5})]
    return [
        Plan("standard", "standard", {"epochs": args.epochs or 2, "eval_examples": 200}),
        # Madry-style PGD-AT with the science package's MNIST defaults (10 steps of eps/4).
        Plan("PGD-AT", "pgd-at", {"epochs": args.epochs or 5, "eps": 0.3, "eval_examples": 200}),
        Plan("Feature Scattering", "feature-scatter", {"epochs": args.epochs or 5, "eps": 0.3,
                                                       "label_smoothing": 0.5, "eval_examples": 200}),
    ]


def _fmt_eta(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _describe(job: dict | None) -> str:
    if job is None:
        return "waiting"
    status = job["status"]
    if status != "running":
        return status
    p = job["progress"]
    done = f"{100 * p['fraction']:.0f}%" if p["fraction"] is not None else "starting"
    return f"{job['kind'][:5]} {done} ETA {_fmt_eta(p['eta_seconds'])}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_demo(args: argparse.Namespace) -> int:
    # Ctrl-C and `kill` (or `docker stop`) both end in the cleanup, even when the shell
    # that started us ignored SIGINT (a background job).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    out = Display()
    return drive_embedded(out, lambda service: _demo(args, service, out), data_dir=args.data_dir, port=args.port,
                          worker_name="demo@localhost")


def _demo(args: argparse.Namespace, service: EmbeddedService, out: Display) -> int | None:
    """Train, check and audit the three models, save the report; an exit code only with --exit."""
    n_examples = args.n_examples or (16 if args.quick else DEFAULT_AUDIT_EXAMPLES)
    check_examples = 64 if args.quick else MNIST10K_TEST_DIGITS
    preset = "quick" if args.quick else "audit"
    with api_client(service.url, service.token, timeout=60.0) as client:
        out.say(f"robaudit demo: service on {service.url} (API docs {service.url}/docs, worker log "
                f"{service.worker_log})")
        todo = plans(args)
        for plan in todo:
            resp = client.post("/trainings", json={"method": plan.method, "dataset": "mnist10k", "arch": "smallcnn",
                                                   "hyperparameters": plan.hyperparameters,
                                                   "name": f"demo {plan.label}"})
            resp.raise_for_status()
            plan.training_id = resp.json()["id"]
        out.say(f"queued 3 trainings on mnist10k (jobs {', '.join(str(p.training_id) for p in todo)}); "
                f"each model is then checked with PGD-20 on {check_examples} test digits and audited with "
                f"the '{preset}' preset on the first {n_examples}")
        failed = _drive(client, todo, preset, n_examples, check_examples, out)
        report = client.post("/reports", json={"title": "Demo: standard vs PGD-AT vs Feature Scattering (mnist10k)",
                                               "evaluation_ids": [p.evaluation_id for p in todo
                                                                  if p.evaluation_id is not None]})
        report.raise_for_status()
        report = report.json()
    out.say("")
    out.say(f"eps = 0.3; clean and PGD-20 on {check_examples} test digits, the audit on the first {n_examples}")
    out.say(f"{'model':<20} {'clean':>7} {'PGD-20':>7} {'worst case':>11}  verdict")
    for plan in todo:
        c, s = plan.check.get("summary", {}), plan.result.get("summary", {})
        worst = (s.get("worst_case") or [{}])[-1].get("robust_accuracy")
        error = plan.check.get("error") or plan.result.get("error")
        out.say(f"{plan.label:<20} {pct(c.get('clean_accuracy')):>7} {pct(c.get('pgd20_accuracy')):>7} "
                f"{pct(worst):>11}  {s.get('verdict') or '-'}" + (f"   {error}" if error else ""))
    out.say(f"\nreport: {service.url}{report['url']}")
    out.say(f"read-only share link: {urljoin(service.url, report['share_url'])}")
    if args.exit:
        return 1 if failed else 0
    return None


def _outcome(job: dict | None) -> dict | None:
    """{"summary", "error"} of a finished job; None while it is missing, queued or running."""
    if job is None or job["status"] not in FINISHED:
        return None
    return {"summary": job["summary"], "error": job["error"]}


def _drive(client: httpx.Client, todo: list[Plan], preset: str, n_examples: int, check_examples: int,
           out: Display) -> bool:
    """Poll the jobs, queue each model's PGD-20 check and audit when its training finishes, until all is done."""
    failed = False
    while True:
        jobs = {j["id"]: j for j in client.get("/jobs", params={"limit": 1000}).json()["data"]}
        parts = []
        for plan in todo:
            training = jobs.get(plan.training_id)
            if plan.evaluation_id is None and training and training["status"] in FINISHED:
                if training["status"] != "succeeded":
                    plan.result = plan.check = {"error": f"training {training['status']}: {training['error']}"}
                    plan.evaluation_id = plan.check_id = -1
                    failed = True
                else:
                    plan.checkpoint_id = training["output_checkpoint_id"]
                    final = training["summary"].get("final", {})
                    out.say(f"{plan.label}: trained ({len(training['metrics'])} epochs, clean "
                            f"{pct(final.get('clean_acc'))}, checkpoint {plan.checkpoint_id}); queued its checks")
                    # The worker takes jobs in order: the cheap whole-test-set check comes back first.
                    resp = client.post("/evaluations", json={"checkpoint_id": plan.checkpoint_id, "attacks": ["pgd"],
                                                             "eps": [0.3], "steps": [20], "n_examples": check_examples,
                                                             "name": f"demo {plan.label}: PGD-20"})
                    resp.raise_for_status()
                    plan.check_id = resp.json()["id"]
                    resp = client.post("/evaluations", json={"checkpoint_id": plan.checkpoint_id, "preset": preset,
                                                             "n_examples": n_examples,
                                                             "name": f"demo {plan.label}"})
                    resp.raise_for_status()
                    plan.evaluation_id = resp.json()["id"]
            check = jobs.get(plan.check_id) if plan.check_id and plan.check_id > 0 else None
            if not plan.check and check is not None and (outcome := _outcome(check)):
                plan.check, s = outcome, outcome["summary"]
                failed |= check["status"] != "succeeded"
                out.say(f"{plan.label}: {check['status']} on {check_examples} test digits: clean "
                        f"{pct(s.get('clean_accuracy'))}, PGD-20 {pct(s.get('pgd20_accuracy'))}")
            evaluation = jobs.get(plan.evaluation_id) if plan.evaluation_id and plan.evaluation_id > 0 else None
            if not plan.result and evaluation is not None and (outcome := _outcome(evaluation)):
                plan.result, s = outcome, outcome["summary"]
                failed |= evaluation["status"] != "succeeded"
                out.say(f"{plan.label}: audit {evaluation['status']} (clean {pct(s.get('clean_accuracy'))}, "
                        f"PGD-20 {pct(s.get('pgd20_accuracy'))}, verdict {s.get('verdict')})")
            current = evaluation if check and check["status"] in FINISHED else check
            parts.append(f"{plan.label}: {_describe(current or training)}")
        if all(p.result and p.check for p in todo):
            for p in todo:
                if p.evaluation_id == -1:
                    p.evaluation_id = None
            return failed
        out.update(" | ".join(parts))
        time.sleep(1.0)


def register_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train and audit three models through the service, then serve the report",
                              description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny budget (seconds, not minutes); used by the tests")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=None, help="where the service keeps its data (default ./var)")
    p.add_argument("--n-examples", type=int, default=None,
                   help=f"test digits per audit (default {DEFAULT_AUDIT_EXAMPLES}; quick 16)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs for all three models (default: standard 2, PGD-AT 5, Feature Scattering 5)")
    p.add_argument("--exit", action="store_true", help="exit after printing the report instead of serving")
    p.set_defaults(func=run_demo)
