"""The threat models an evaluation can use: the L-inf, L2 and L1 balls around each test image.

One norm per evaluation (``EvalSpec.norm``); every results row, curve, worst case and large-eps run
says which. Budgets are distances between images with pixels in [0, 1]: L-inf is the largest pixel
change (8/255), L2 the Euclidean length of the perturbation (0.5), L1 the sum of the absolute pixel
changes (12). Default budgets per dataset and norm: robaudit.data, with their sources in
docs/references.md.
"""
from __future__ import annotations

import math

from robaudit.errors import RobauditError

NORMS = ("linf", "l2", "l1")
DEFAULT_NORM = "linf"
NORM_LABELS = {"linf": "L∞", "l2": "L2", "l1": "L1"}
NORM_ASCII = {"linf": "Linf", "l2": "L2", "l1": "L1"}


def check_norm(norm: str) -> str:
    """The norm's canonical name; accepts 'Linf', 'L2', 'l1', 'inf' ... case-insensitively."""
    text = str(norm).strip().lower()
    text = {"inf": "linf", "l-inf": "linf", "l_inf": "linf", "linfty": "linf"}.get(text, text)
    if text not in NORMS:
        raise RobauditError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return text


def diameter(norm: str, dims: int) -> float:
    """The largest distance between two images of ``dims`` pixels in [0, 1]: a budget this large
    reaches every image (1 for L-inf, sqrt(dims) for L2, dims for L1)."""
    if norm == "linf":
        return 1.0
    if norm == "l2":
        return math.sqrt(dims)
    return float(dims)


def large_eps(norm: str, dims: int) -> tuple[float, float]:
    """Check C2's two budgets: half the diameter (every image is within it of mid-grey, so it can be
    erased) and the whole diameter (unbounded: every image is reachable). L-inf: 0.5 and 1.0."""
    full = diameter(norm, dims)
    return (round(full / 2, 6), round(full, 6))


def label(norm: str | None) -> str:
    """How pages name the norm: L∞, L2, L1 (results without a norm are L-inf)."""
    return NORM_LABELS.get(norm or DEFAULT_NORM, str(norm))


def eps_text(norm: str | None, eps: float) -> str:
    """An eps as people write it under this norm: L-inf as k/255 when it is one, L2 and L1 as decimals."""
    if (norm or DEFAULT_NORM) == "linf":
        k = eps * 255
        if abs(k - round(k)) < 1e-6 and round(k) > 0:
            return f"{round(k)}/255"
    return f"{eps:g}"
