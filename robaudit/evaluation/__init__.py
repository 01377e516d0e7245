"""Evaluation: presets, the attack registry and its runners, the batch-by-batch engine, results, and
the gradient-masking diagnostics."""
from __future__ import annotations

from robaudit.evaluation.diagnostics import Thresholds, run_diagnostics
from robaudit.evaluation.engine import evaluate
from robaudit.evaluation.presets import ATTACKS, PRESETS, EvalSpec, build_spec
from robaudit.evaluation.progress import EvalProgress
from robaudit.evaluation.results import RESULTS_SCHEMA_VERSION, results_to_csv
from robaudit.evaluation.store import DirectoryStore, MemoryStore

__all__ = ["ATTACKS", "PRESETS", "RESULTS_SCHEMA_VERSION", "DirectoryStore", "EvalProgress", "EvalSpec",
           "MemoryStore", "Thresholds", "build_spec", "evaluate", "results_to_csv", "run_diagnostics"]
