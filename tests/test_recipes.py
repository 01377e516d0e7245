"""The cifar10-paper recipe: the paper's full settings, runnable end to end (here on synthetic
CIFAR-format data, at tiny width, for one optimisation step)."""
from __future__ import annotations

import json

import pytest
import torch
from helpers_training import one_torch_thread  # noqa: F401  (fixture)
from test_data import skip_cifar_checksums, write_cifar10  # noqa: F401  (fixture and data writer)

import robaudit
from robaudit.cli import main
from robaudit.errors import RobauditError
from robaudit.evaluation import build_spec
from robaudit.models import read_metadata
from robaudit.recipes import get_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_recipe_carries_the_papers_settings():
    recipe = get_recipe("cifar10-paper")
    t = recipe.train
    assert (t["method"], t["dataset"], t["arch"], t["arch_kwargs"]) == \
        ("feature-scatter", "cifar10", "wideresnet", {"depth": 28, "widen_factor": 10})
    assert (t["epochs"], t["batch_size"], t["lr"], t["lr_milestones"]) == (200, 60, 0.1, [60, 90])
    assert (t["momentum"], t["weight_decay"], t["label_smoothing"]) == (0.9, 2e-4, 0.5)
    assert t["eps"] == pytest.approx(8 / 255)
    assert recipe.reference == {"clean": 89.98, "autoattack": 36.64, "pgd100": 68.6, "cw100": 60.6}
    spec = build_spec(**recipe.evaluate)
    assert spec.n_examples == 10000 and spec.batch_size == 80 and spec.eps == pytest.approx((8 / 255,))
    assert {"rs-fgsm", "pgd", "cw"} <= set(spec.attacks) and max(spec.steps) == 100 and spec.kappa == 50
    assert spec.restarts == 1
    with pytest.raises(RobauditError, match="unknown recipe"):
        get_recipe("cifar10-papr")


def test_recipe_trains_one_step_on_cifar_format_data(tmp_path, skip_cifar_checksums, capsys):
    write_cifar10(tmp_path / "data")
    out = tmp_path / "run"
    # The paper's recipe with only the size turned down: a depth-10, width-1 WRN, 8 images, one batch.
    code = main(["train", "--recipe", "cifar10-paper", "--arch-kwargs", '{"depth": 10, "widen_factor": 1}',
                 "--epochs", "1", "--n-train", "8", "--batch-size", "8", "--eval-examples", "2",
                 "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    meta = read_metadata(out / "model.safetensors")
    hp = meta.hyperparameters
    assert (meta.dataset, meta.arch, meta.mean, meta.method) == ("cifar10", "wideresnet", [0.5] * 3,
                                                                 "feature-scatter")
    assert (hp["label_smoothing"], hp["lr"], hp["lr_milestones"], hp["sinkhorn"]) == (0.5, 0.1, [60, 90],
                                                                                       "early-stop")
    assert (hp["momentum"], hp["weight_decay"], hp["steps"]) == (0.9, 2e-4, 1)
    assert hp["eps"] == pytest.approx(8 / 255) and hp["alpha"] == pytest.approx(8 / 255)
    assert (hp["batch_size"], hp["epochs"], meta.arch_kwargs) == (8, 1, {"depth": 10, "widen_factor": 1})
    assert len(summary["epochs"]) == 1 and summary["epochs"][0]["eval_examples"] == 2
    model = robaudit.load_model(out / "model.safetensors")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
