"""`robaudit push results.json`: store results made elsewhere in a running service.

The results of `robaudit.audit(...)` (saved with json.dump) or of `robaudit evaluate --out` become
an evaluation of the service, marked as imported, that comparisons and reports can include.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import httpx

from robaudit.errors import RobauditError
from robaudit.launch.client import api_client, pct

DEFAULT_URL = "http://127.0.0.1:8000"


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("ROBAUDIT_API_TOKEN")
    if token:
        return str(token)
    # A service started on this machine keeps its generated token in its data folder.
    token_file = Path(args.service_dir or os.environ.get("ROBAUDIT_DATA_DIR") or "./var") / "api_token"
    if token_file.is_file():
        return token_file.read_text().strip()
    raise RobauditError("no API token: give --token, set ROBAUDIT_API_TOKEN, or run where the service keeps "
                        f"its data (--service-dir; looked for {token_file})")


def push(args: argparse.Namespace) -> int:
    path = Path(args.results)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RobauditError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RobauditError(f"{path} is not a results JSON file: {exc}") from None
    body = {"results": results, "name": args.name or path.stem}
    with api_client(args.url.rstrip("/"), _token(args), timeout=120.0) as client:
        try:
            answer = client.post("/evaluations/import", json=body)
        except httpx.HTTPError as exc:
            raise RobauditError(f"cannot reach the service at {args.url}: {exc}") from None
    if answer.status_code != 201:
        try:
            detail = answer.json().get("detail")
        except ValueError:
            detail = answer.text[:300]
        raise RobauditError(f"the service refused the results (HTTP {answer.status_code}): {detail}")
    job = answer.json()
    summary = job.get("summary") or {}
    print(f"imported as evaluation {job['id']} ({job.get('name')}): clean {pct(summary.get('clean_accuracy'))}, "
          f"verdict: {summary.get('verdict') or '-'}")
    print(f"{args.url.rstrip('/')}/evaluations/{job['id']}")
    return 0


def register_push(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("push", help="store a results JSON made elsewhere in a running service",
                              description=(__doc__ or "").splitlines()[0])
    p.add_argument("results", help="results JSON (robaudit.audit() output saved with json.dump, or "
                                   "`robaudit evaluate --out`)")
    p.add_argument("--name", help="what to call the model in lists and reports (default: the file name)")
    p.add_argument("--url", default=os.environ.get("ROBAUDIT_URL", DEFAULT_URL),
                   help=f"the service (default {DEFAULT_URL}, or ROBAUDIT_URL)")
    p.add_argument("--token", help="API token (default: ROBAUDIT_API_TOKEN, or the service's data folder)")
    p.add_argument("--service-dir", help="a local service's data folder, to read its token (default ./var)")
    p.set_defaults(func=push)
