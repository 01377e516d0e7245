"""Named recipes: a full training configuration plus the evaluation protocol that goes with it.

``cifar10-paper`` is Feature Scattering exactly as the official code trains and evaluates it
(docs/references.md, sections 1 and 2): WRN-28-10, inputs normalised to
[-1, 1] (mean = std = 0.5, inside the model), eps = 8/255, one attack step of size eps, label
smoothing 0.5, SGD 0.1 / 0.9 / 2e-4, batch 60, 200 epochs, lr x 0.1 at epochs 60 and 90, crop +
flip; evaluated on all 10,000 test images with the repo's protocol (RS-FGSM, PGD-20 and CW-20
with step 2/255 and kappa = 50, no restarts) plus the 100-step attacks and AutoAttack.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robaudit.errors import RobauditError


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    train: dict[str, Any]
    evaluate: dict[str, Any]
    reference: dict[str, float] = field(default_factory=dict)   # published numbers, in %
    reference_source: str = ""


RECIPES: dict[str, Recipe] = {
    "cifar10-paper": Recipe(
        name="cifar10-paper",
        description="Feature Scattering on CIFAR-10 with the paper's full recipe (needs a GPU and "
                    "CIFAR-10 in --data-dir; about 200 epochs of WRN-28-10).",
        train={"method": "feature-scatter", "dataset": "cifar10", "arch": "wideresnet",
               "arch_kwargs": {"depth": 28, "widen_factor": 10}, "epochs": 200, "batch_size": 60,
               "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "lr_milestones": [60, 90],
               "eps": 8 / 255, "label_smoothing": 0.5, "sinkhorn": "early-stop", "eval_examples": 1000},
        # The paper preset's alpha is eps/4 = 2/255 here, the repo's step for PGD-20 and CW-20.
        evaluate={"preset": "paper", "dataset": "cifar10", "eps": [8 / 255], "n_examples": 10000,
                  "batch_size": 80},
        reference={"clean": 89.98, "autoattack": 36.64, "pgd100": 68.6, "cw100": 60.6},
        reference_source="clean and AutoAttack: the released checkpoint in the AutoAttack README and "
                         "RobustBench (ZhangWang2019Defense); PGD-100 and CW-100: the paper, as quoted "
                         "in its NeurIPS 2019 reviews",
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise RobauditError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None
