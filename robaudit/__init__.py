"""robaudit: train and audit adversarially robust image classifiers.

Public Python API (see README, "Python API"):

    model = robaudit.load_model("runs/fs/model.safetensors")   # nn.Module, eval mode, inputs in [0, 1]
    x, y = robaudit.load_dataset("mnist10k", split="test")      # the images robaudit evaluates on
    results = robaudit.audit(model, x, y, preset="quick", eps=0.3)   # any nn.Module on [0, 1] inputs

The service lives in this package too (robaudit.backend, robaudit.worker, ...), and a Celery
worker's prefork parent must never load torch (it would break CUDA in the forked children). So
importing ``robaudit`` loads nothing heavy: the API's names load torch on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robaudit.errors import RobauditError

if TYPE_CHECKING:
    from robaudit.api import audit, load_dataset, load_model
    from robaudit.data import DATASETS

__version__ = "0.1.0"

_LAZY = {"load_model": "robaudit.api", "load_dataset": "robaudit.api", "audit": "robaudit.api",
         "DATASETS": "robaudit.data"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = ["DATASETS", "RobauditError", "__version__", "audit", "load_dataset", "load_model"]
