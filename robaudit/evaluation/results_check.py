"""Check a results JSON made elsewhere before it is stored and shown as an evaluation.

Results pushed to the service (`robaudit push`, POST /api/v1/evaluations/import) come from another
machine, so they are untrusted input: every field the pages, reports and exports read is checked
for its type and range here, and anything else that is not JSON-plain (NaN, huge nesting) is
refused. The checks follow docs/results-schema.md; each failure is one line naming the field.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Any

from robaudit.errors import RobauditError
from robaudit.evaluation.results import RESULTS_SCHEMA_VERSION

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
MAX_ROWS = 10_000
MAX_DEPTH = 12
VERDICT_STATUSES = ("pass", "warn", "fail", "skipped")


class ResultsError(RobauditError):
    """Results that cannot be imported, with the field that is wrong."""


def _fail(where: str, what: str) -> ResultsError:
    return ResultsError(f"results field {where}: {what}")


def _plain(value: Any, where: str, depth: int = 0) -> None:
    """JSON values only, finite numbers, bounded nesting."""
    if depth > MAX_DEPTH:
        raise _fail(where, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(where, f"must be a finite number, got {value}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(where, "object keys must be strings")
            _plain(item, f"{where}.{key[:40]}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]", depth + 1)
    elif not (value is None or isinstance(value, (str, bool, int, float))):
        raise _fail(where, f"is a {type(value).__name__}, not JSON")


def _int(data: Mapping[str, Any], key: str, where: str, lo: int, hi: int, *, optional: bool = False) -> int | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _fail(f"{where}{key}", f"must be an integer from {lo} to {hi}, got {value!r}"[:200])
    return value


def _number(data: Mapping[str, Any], key: str, where: str, lo: float, hi: float, *,
            optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise _fail(f"{where}{key}", f"must be a number from {lo:g} to {hi:g}, got {value!r}"[:200])
    return float(value)


def _name(data: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> None:
    value = data.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise _fail(f"{where}{key}", "must be a short name (letters, digits, '.', '_', ':', '+', '-'), "
                                     f"got {str(value)[:80]!r}")


def _text(data: Mapping[str, Any], key: str, where: str, limit: int = 2000) -> None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise _fail(f"{where}{key}", f"must be text of at most {limit} characters")


def _list(data: Mapping[str, Any], key: str, where: str, *, optional: bool = True) -> list[Any]:
    value = data.get(key)
    if value is None and optional:
        return []
    if not isinstance(value, list) or len(value) > MAX_ROWS:
        raise _fail(f"{where}{key}", f"must be a list of at most {MAX_ROWS} entries")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be an object, got {type(value).__name__}")
    return value


def _bits(text: Any, n: int, where: str) -> None:
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) != math.ceil(n / 8):
        raise _fail(where, f"must be a base64 bitset of {n} points ({math.ceil(n / 8)} bytes)")


def _rows(data: Mapping[str, Any], key: str, n: int) -> None:
    for i, row in enumerate(_list(data, key, "")):
        row = _object(row, f"{key}[{i}]")
        where = f"{key}[{i}]."
        if key == "summary":
            _name(row, "attack", where)
            _int(row, "steps", where, 0, 10**7, optional=True)
            _int(row, "restarts", where, 0, 10**6, optional=True)
        _number(row, "eps", where, 0.0, 1e6)
        _number(row, "robust_accuracy", where, 0.0, 1.0)
        _int(row, "n", where, 1, n)
        _text(row, "key", where, 300)


def _curves(curves: Mapping[str, Any]) -> None:
    for family in ("eps", "steps", "restarts"):
        entries = curves.get(family)
        if family == "restarts" and isinstance(entries, Mapping):   # one restarts curve per run
            entries = [entries]
        for i, entry in enumerate(_list({family: entries}, family, "curves.")):
            entry = _object(entry, f"curves.{family}[{i}]")
            _name(entry, "attack", f"curves.{family}[{i}].", optional=True)
            for j, point in enumerate(_list(entry, "points", f"curves.{family}[{i}].")):
                point = _object(point, f"curves.{family}[{i}].points[{j}]")
                _number(point, "robust_accuracy", f"curves.{family}[{i}].points[{j}].", 0.0, 1.0)


def _diagnostics(diag: Mapping[str, Any]) -> None:
    _text(diag, "verdict", "diagnostics.", 200)
    for i, reason in enumerate(_list(diag, "reasons", "diagnostics.")):
        if not isinstance(reason, str) or len(reason) > 2000:
            raise _fail(f"diagnostics.reasons[{i}]", "must be text of at most 2000 characters")
    for i, check in enumerate(_list(diag, "checks", "diagnostics.")):
        check = _object(check, f"diagnostics.checks[{i}]")
        where = f"diagnostics.checks[{i}]."
        _name(check, "id", where)
        _text(check, "name", where, 200)
        _text(check, "message", where)
        if check.get("status") not in VERDICT_STATUSES:
            raise _fail(f"{where}status", f"must be one of {', '.join(VERDICT_STATUSES)}")
        if check.get("evidence") is not None:
            _object(check["evidence"], f"{where}evidence")


def check_results(data: Any, *, max_points: int = 1_000_000) -> dict[str, Any]:
    """The results, unchanged, if every field the service reads is well formed; else ResultsError."""
    results = _object(data, "(top level)")
    _plain(results, "results")
    version = results.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise _fail("schema_version", f"must be {RESULTS_SCHEMA_VERSION} (this robaudit's results format), "
                                      f"got {version!r}")
    _name(results, "dataset", "")
    n = _int(results, "n", "", 1, max_points)
    assert n is not None
    _int(results, "num_classes", "", 2, 100_000)
    _number(results, "clean_accuracy", "", 0.0, 1.0)
    if not _list(results, "summary", "", optional=False):
        raise _fail("summary", "must list at least one attack row")
    _rows(results, "summary", n)
    _rows(results, "worst_case", n)
    _curves(_object(results.get("curves") or {}, "curves"))
    _diagnostics(_object(results.get("diagnostics") or {}, "diagnostics"))
    config = _object(results.get("config") or {}, "config")
    eps = config.get("eps")
    if eps is not None and not (isinstance(eps, list) and all(
            isinstance(e, (int, float)) and not isinstance(e, bool) and e >= 0 for e in eps)):
        raise _fail("config.eps", "must be a list of non-negative numbers")
    for i, note in enumerate(_list(results, "notes", "")):
        if not isinstance(note, str) or len(note) > 2000:
            raise _fail(f"notes[{i}]", "must be text of at most 2000 characters")
    per_sample = _object(results.get("per_sample") or {}, "per_sample")
    if per_sample:
        if per_sample.get("n", n) != n:
            raise _fail("per_sample.n", f"must equal n ({n})")
        if per_sample.get("clean") is not None:
            _bits(per_sample["clean"], n, "per_sample.clean")
        for key, text in _object(per_sample.get("bits") or {}, "per_sample.bits").items():
            _bits(text, n, f"per_sample.bits[{key[:60]!r}]")
    return dict(results)
