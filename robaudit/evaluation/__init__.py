"""Evaluation: presets, the attack registry and its runners, the batch-by-batch engine, results, and
the gradient-masking diagnostics.

The names below load on first use: readers of the results format (the API, the worker's prefork
parent) import ``robaudit.evaluation.results``, which needs numpy only, and must not load torch
through this package's engine.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robaudit.evaluation.diagnostics import Thresholds, run_diagnostics
    from robaudit.evaluation.engine import evaluate, evaluate_shard, merge, prepare
    from robaudit.evaluation.presets import ATTACKS, PRESETS, EvalSpec, build_spec
    from robaudit.evaluation.progress import EvalProgress
    from robaudit.evaluation.results import RESULTS_SCHEMA_VERSION, results_to_csv
    from robaudit.evaluation.shards import ShardOutcome, plan_shards
    from robaudit.evaluation.store import DirectoryStore, MemoryStore

_HOME = {
    "Thresholds": "diagnostics", "run_diagnostics": "diagnostics", "evaluate": "engine",
    "evaluate_shard": "engine", "merge": "engine", "prepare": "engine", "plan_shards": "shards",
    "ShardOutcome": "shards",
    "ATTACKS": "presets", "PRESETS": "presets", "EvalSpec": "presets", "build_spec": "presets",
    "RESULTS_SCHEMA_VERSION": "results", "results_to_csv": "results", "EvalProgress": "progress",
    "DirectoryStore": "store", "MemoryStore": "store",
}

__all__ = ["ATTACKS", "PRESETS", "RESULTS_SCHEMA_VERSION", "DirectoryStore", "EvalProgress", "EvalSpec",
           "MemoryStore", "ShardOutcome", "Thresholds", "build_spec", "evaluate", "evaluate_shard", "merge",
           "plan_shards", "prepare", "results_to_csv", "run_diagnostics"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
