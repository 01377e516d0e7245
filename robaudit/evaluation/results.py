"""The results JSON: schema version, per-sample bitsets, worst-case aggregation, CSV export.

Full schema: docs/results-schema.md. Everything per sample is a "stayed correct" bitset over the
evaluated test points (bit i = test point i, ``np.packbits(..., bitorder="little")``, base64), and
every robust accuracy is a mean over points of such a bitset. Clean-misclassified points are 0 in
every bitset, so they count as not robust everywhere.
"""
from __future__ import annotations

import base64
import csv
import io
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

RESULTS_SCHEMA_VERSION = 1
SUMMARY_COLUMNS = ("attack", "eps", "steps", "restarts", "alpha", "robust_accuracy", "n")


Bits = npt.NDArray[np.bool_]


def encode_bits(bits: npt.ArrayLike) -> str:
    packed = np.packbits(np.asarray(bits, dtype=bool), bitorder="little")
    return base64.b64encode(packed.tobytes()).decode("ascii")


def decode_bits(text: str, n: int) -> Bits:
    packed = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(packed, bitorder="little")[:n].astype(bool)


# Two eps values written with :.6g are the same eps when they agree to this relative tolerance.
EPS_RTOL = 1e-9


def same_eps(a: float, b: float) -> bool:
    return abs(a - b) <= EPS_RTOL * max(1.0, abs(b))


def within_eps(attack_eps: float, eps: float) -> bool:
    """An attack run at ``attack_eps`` counts towards the worst case at ``eps`` (its ball is inside)."""
    return attack_eps <= eps * (1 + EPS_RTOL)


def bit_key(attack: str, eps: float, steps: int | None = None, restarts: int = 1) -> str:
    """The stable name of one per-sample bitset: ``attack@eps=0.3/steps=20/restarts=1``."""
    return f"{attack}@eps={eps:.6g}/steps={'-' if steps is None else steps}/restarts={restarts}"


WORST_CASE = "worst-case"
# Bitsets that are not an attack's own summary rows are named ``<attack><suffix>``: the steps curve read
# off a long run, the nested eps curve, and the large-eps runs of check C2.
STEPS_CURVE, EPS_CURVE, LARGE_EPS = "-steps-curve", "-eps-curve", "-large-eps"


def worst_case_key(eps: float, first: int | None = None) -> str:
    """The name of a worst-case bitset: ``worst-case@eps=0.3``, or over the first m points ``.../first=200``."""
    return f"{WORST_CASE}@eps={eps:.6g}" + ("" if first is None else f"/first={first}")


@dataclass(frozen=True)
class BitKey:
    attack: str
    eps: float
    steps: int | None       # None for attacks without a step count (and for worst-case keys)
    restarts: int | None    # None where the key has none (worst-case keys)
    scope: int | None       # worst-case keys over the first m points: ``worst-case@eps=0.3/first=200``


_BIT_KEY = re.compile(r"^(?P<attack>[^@/]+)@eps=(?P<eps>[^/]+)(?:/steps=(?P<steps>[^/]+))?"
                      r"(?:/restarts=(?P<restarts>\d+))?(?:/first=(?P<first>\d+))?$")


def parse_bit_key(key: str) -> BitKey | None:
    """The parts of a bitset name made by ``bit_key`` (or a worst-case key); None if it is not one."""
    m = _BIT_KEY.match(key)
    if m is None:
        return None
    try:
        steps = m["steps"]
        return BitKey(attack=m["attack"], eps=float(m["eps"]),
                      steps=None if steps in (None, "-") else int(steps),
                      restarts=int(m["restarts"]) if m["restarts"] else None,
                      scope=int(m["first"]) if m["first"] else None)
    except ValueError:
        return None


def find_rows(results: Mapping[str, Any], attack: str, eps: float, steps: int | None = None,
              restarts: int = 1) -> list[dict[str, Any]]:
    """Every summary row of ``attack`` at ``eps`` (and ``steps`` when given) with ``restarts`` restarts."""
    return [dict(row) for row in results.get("summary", [])
            if row.get("attack") == attack and same_eps(float(row.get("eps", -1.0)), eps)
            and (steps is None or row.get("steps") == steps) and (row.get("restarts") or 1) == restarts]


def find_row(results: Mapping[str, Any], attack: str, eps: float, steps: int | None = None,
             restarts: int = 1) -> dict[str, Any] | None:
    """The summary row of ``attack`` at ``eps`` (and ``steps``/``restarts`` when given), if it ran."""
    rows = find_rows(results, attack, eps, steps, restarts)
    return rows[0] if rows else None


def worst_case(bitsets: Iterable[tuple[float, npt.ArrayLike]], clean: npt.ArrayLike, eps: float) -> Bits:
    """Robust at ``eps``: correct on the clean point and not fooled by any attack run at any eps' <= eps.

    A perturbation inside a smaller ball is inside the larger one, so a point fooled at a smaller eps
    is fooled at eps too. This is the per-point minimum over attacks (Carlini et al. 2019 sec. 5.6),
    never an average of per-attack accuracies.
    """
    robust = np.asarray(clean, dtype=bool).copy()
    for attack_eps, bits in bitsets:
        if within_eps(attack_eps, eps):
            robust &= np.asarray(bits, dtype=bool)
    return robust


def accuracy(bits: npt.ArrayLike) -> float:
    array = np.asarray(bits, dtype=bool)
    return float(array.mean()) if array.size else float("nan")


def results_to_csv(results: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> str:
    """The summary rows, then one worst-case row per eps, as CSV text (also written to ``path`` if given)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # The norm comes last so that the older columns keep their places; results without one are L-inf.
    writer.writerow((*SUMMARY_COLUMNS, "ci95_low", "ci95_high", "kind", "loss", "note", "norm"))
    n = results.get("n", "")
    norm = results.get("norm") or results.get("config", {}).get("norm") or "linf"
    writer.writerow(("clean", "", "", "", "", _fmt(results.get("clean_accuracy")), n,
                     *_ci(results.get("clean_accuracy_ci95")), "clean", "", "", ""))
    for row in results.get("summary", []):
        writer.writerow((*(_fmt(row.get(col)) for col in SUMMARY_COLUMNS), *_ci(row.get("ci95")), "attack",
                         row.get("loss") or "", row.get("note") or "", row.get("norm") or norm))
    for row in results.get("worst_case", []):
        writer.writerow(("worst-case", _fmt(row["eps"]), "", "", "", _fmt(row["robust_accuracy"]), row["n"],
                         *_ci(row.get("ci95")), "worst_case", "",
                         f"min over {len(row.get('attacks', []))} attack runs", row.get("norm") or norm))
    text = out.getvalue()
    if path is not None:
        with open(path, "w", newline="") as fh:
            fh.write(text)
    return text


def _ci(interval: object) -> tuple[str, str]:
    """The two CSV cells of a ``ci95`` (empty for results written before intervals existed)."""
    if isinstance(interval, list | tuple) and len(interval) == 2:
        return _fmt(float(interval[0])), _fmt(float(interval[1]))
    return "", ""


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
