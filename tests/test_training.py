"""Training methods, the trainer's resume/cancel contract, and the `robaudit train` command."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from helpers_training import mnist_model, one_torch_thread, tiny_config  # noqa: F401  (fixture)

import robaudit
from robaudit.errors import Cancelled, RobauditError
from robaudit.models import read_metadata
from robaudit.sinkhorn import cosine_cost, ot_distance
from robaudit.training import METHODS, TrainConfig, TrainProgress, train
from robaudit.training.cli import register
from robaudit.training.losses import smooth_labels, smoothed_cross_entropy, soft_cross_entropy
from robaudit.training.perturb import feature_scatter_perturb, model_mode, pgd_linf
from robaudit.training.schedule import lr_at, scaled_milestones
from robaudit.training.trainer import STATE_FILE, load_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mnist_batch():
    x, y = robaudit.load_dataset("mnist10k", split="test")
    return x[:64], y[:64]


# --- losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("delta", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_label_smoothing_targets(delta, num_classes):
    y = torch.tensor([0, 3, num_classes - 1])
    targets = smooth_labels(y, num_classes, delta)
    torch.testing.assert_close(targets.sum(1), torch.ones(3))
    torch.testing.assert_close(targets[torch.arange(3), y], torch.full((3,), 1 - delta))
    others = targets.clone()
    others[torch.arange(3), y] = float("nan")
    off = others[~others.isnan()]
    torch.testing.assert_close(off, torch.full_like(off, delta / (num_classes - 1)))


def test_soft_cross_entropy_reduces_to_cross_entropy():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2, 3, 4, 5])
    expected = F.cross_entropy(logits, y)
    torch.testing.assert_close(soft_cross_entropy(logits, smooth_labels(y, 10, 0.0)), expected)
    torch.testing.assert_close(smoothed_cross_entropy(logits, y, 0.0), expected)
    # delta = 0.5: the minimum is the entropy of the target, reached at softmax == target.
    target = smooth_labels(y, 10, 0.5)
    entropy = -(target * target.log()).sum(1).mean()
    torch.testing.assert_close(smoothed_cross_entropy(target.log(), y, 0.5), entropy)


# --- attacks used in training ----------------------------------------------------------------------

def attackable_model() -> torch.nn.Module:
    """SmallCNN with a random last layer: the TRADES init zeroes it, which makes every logit 0 and every
    input gradient 0 until the first update."""
    torch.manual_seed(0)
    model = mnist_model()
    torch.nn.init.normal_(model[1].classifier[-1].weight, std=0.1)
    return model


@pytest.mark.parametrize("eps", [0.3, 8 / 255])
def test_feature_scatter_perturbation_stays_in_ball_and_image_range(mnist_batch, eps):
    model = attackable_model()
    x, _ = mnist_batch
    torch.manual_seed(5)
    x_adv = feature_scatter_perturb(model, x, eps=eps, alpha=eps)
    torch.manual_seed(5)
    start = x + torch.empty_like(x).uniform_(-eps, eps)  # the same draw as the attack's random start
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # The step moved the start (the gradient is not zero) ...
    assert (x_adv != start.clamp(0, 1)).float().mean() > 0.3
    # ... and alpha = eps puts every coordinate whose step points the same way as its random offset on the
    # boundary of the ball (or of [0, 1]): about half of them.
    on_boundary = ((x_adv - x).abs() > eps - 1e-6) | (x_adv == 0) | (x_adv == 1)
    assert on_boundary.float().mean() > 0.5


def test_feature_scatter_attack_is_eval_mode_and_leaves_no_parameter_grads(mnist_batch):
    model = attackable_model()  # has dropout: a train-mode attack would not be repeatable
    model.train()
    x, _ = mnist_batch
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        runs.append(feature_scatter_perturb(model, x, eps=0.3, alpha=0.3))
    torch.testing.assert_close(runs[0], runs[1])
    torch.manual_seed(1)
    with model_mode(model, train=True):  # what a train-mode (dropout) attack would give: different
        start = x + torch.empty_like(x).uniform_(-0.3, 0.3)
        start.requires_grad_(True)
        grads = [torch.autograd.grad(ot_distance(cosine_cost(model(x), model(start))), start)[0] for _ in range(2)]
    assert not torch.equal(grads[0].sign(), grads[1].sign())
    assert model.training, "the attack must restore train mode"
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(scope="module")
def fitted_model(mnist_batch):
    """SmallCNN fitted to the 64-image batch (eval mode, Adam): logits that carry class signal."""
    torch.manual_seed(0)
    model = mnist_model().eval()
    x, y = mnist_batch
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(25):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95
    return model


def test_feature_scatter_step_ascends_the_ot_distance(mnist_batch, fitted_model):
    # One signed step should raise the OT distance over the random start it began from.
    x, _ = mnist_batch
    eps = 0.1
    torch.manual_seed(2)
    x_adv = feature_scatter_perturb(fitted_model, x, eps=eps, alpha=eps)
    torch.manual_seed(2)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    with torch.no_grad():
        clean = fitted_model(x)
        before = ot_distance(cosine_cost(clean, fitted_model(start)), mode="converge")
        after = ot_distance(cosine_cost(clean, fitted_model(x_adv)), mode="converge")
    assert after > 1.5 * before


def test_pgd_helper_stays_in_ball_and_breaks_an_undefended_model(mnist_batch, fitted_model):
    x, y = mnist_batch
    x_adv = pgd_linf(fitted_model, x, y, eps=0.3, alpha=0.075, steps=20)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        adv_acc = (fitted_model(x_adv).argmax(1) == y).float().mean()
    assert adv_acc < 0.2
    assert all(p.grad is None for p in fitted_model.parameters())


# --- schedule and config ------------------------------------------------------------------------

def test_paper_schedule_scales_to_short_runs():
    assert scaled_milestones(200) == [60, 90]
    assert scaled_milestones(5) == [2, 3]
    assert scaled_milestones(10) == [3, 5]
    assert scaled_milestones(1) == [1, 2]
    lrs = [lr_at(e, 0.1, scaled_milestones(5)) for e in range(5)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])
    assert lr_at(89, 0.1, [60, 90]) == pytest.approx(0.01) and lr_at(90, 0.1, [60, 90]) == pytest.approx(0.001)


def test_config_defaults_per_dataset_and_method():
    fs = TrainConfig(method="feature-scatter", dataset="cifar10", epochs=200).resolved()
    assert (fs.eps, fs.alpha, fs.steps, fs.label_smoothing, fs.sinkhorn) == (8 / 255, 8 / 255, 1, 0.5, "early-stop")
    assert (fs.lr, fs.momentum, fs.weight_decay, fs.lr_milestones) == (0.1, 0.9, 2e-4, [60, 90])
    pgd = TrainConfig(method="pgd-at", dataset="cifar10").resolved()
    assert (pgd.steps, pgd.alpha, pgd.label_smoothing) == (7, 2 / 255, 0.0)
    pgd_mnist = TrainConfig(method="pgd-at", dataset="mnist10k").resolved()
    assert (pgd_mnist.eps, pgd_mnist.steps, pgd_mnist.alpha) == (0.3, 10, 0.075)
    fast = TrainConfig(method="fast-at", dataset="cifar10").resolved()
    assert (fast.steps, fast.alpha) == (1, 1.25 * 8 / 255)
    assert TrainConfig(method="trades", dataset="cifar10").resolved().trades_beta == 6.0
    assert TrainConfig.from_dict(fs.to_dict()) == fs
    json.dumps(fs.to_dict())
    # The service resolves once when a job is queued and the worker resolves again: same result.
    for method in METHODS:
        once = TrainConfig(method=method, dataset="mnist10k", device="cpu").resolved()
        assert once.resolved() == once


@pytest.mark.parametrize("overrides, message", [
    ({"method": "madry"}, "unknown method 'madry'; choose one of: standard, pgd-at"),
    ({"method": "pgd-at", "sinkhorn": "converge"}, "sinkhorn do(es) not apply to method 'pgd-at'"),
    ({"method": "standard", "steps": 3}, "steps do(es) not apply"),
    ({"eps": 2.0}, "eps must be in (0, 1]"),
    ({"dataset": "tinyimagenet"}, "unknown dataset 'tinyimagenet'"),
    ({"arch": "vgg"}, "unknown architecture 'vgg'"),
    ({"method": "feature-scatter", "sinkhorn": "exact"}, "unknown Sinkhorn mode 'exact'"),
])
def test_bad_settings_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(RobauditError) as info:
        train(tiny_config(**overrides), tmp_path)
    assert message in str(info.value)
    assert not (tmp_path / STATE_FILE).exists()


def test_unknown_config_keys_are_rejected():
    with pytest.raises(RobauditError, match="unknown training option"):
        TrainConfig.from_dict({"method": "standard", "learning_rate": 0.1})


# --- every method learns ------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_lifts_smallcnn_above_chance_in_one_epoch(tmp_path, method):
    # One short epoch: 2,000 balanced images in batches of 32 (63 updates), eps 0.1 and 3-step inner
    # maximisations so that it runs in seconds; at eps 0.3 the robust methods need more updates to start.
    steps = {"steps": 3} if method in ("pgd-at", "trades") else {}
    config = tiny_config(method=method, n_train=2000, batch_size=32, lr=0.05, eps=0.1, eval_examples=50, **steps)
    result = train(config, tmp_path)
    (epoch,) = result.history
    assert epoch["clean_acc"] > 0.6, epoch
    assert epoch["eval_examples"] == 50 and 0.0 <= epoch["pgd20_acc"] <= epoch["eval_clean_acc"]
    assert {"epoch", "lr", "loss", "train_acc", "clean_acc", "pgd20_acc", "train_seconds"} <= set(epoch)


# --- run folder, checkpoint metadata, resume, cancel --------------------------------------------

def test_checkpoint_carries_full_metadata_and_loads(tmp_path):
    result = train(tiny_config(method="feature-scatter", sinkhorn="converge"), tmp_path)
    assert result.checkpoint == tmp_path / "model.safetensors"
    meta = read_metadata(result.checkpoint)
    assert (meta.arch, meta.dataset, meta.num_classes, meta.in_channels, meta.input_size) == (
        "smallcnn", "mnist10k", 10, 1, 28)
    assert (meta.mean, meta.std) == ([0.0], [1.0])
    assert meta.method == "feature-scatter" and meta.epoch == 1
    assert meta.robaudit_version == robaudit.__version__
    hp = meta.hyperparameters
    assert (hp["eps"], hp["alpha"], hp["steps"], hp["label_smoothing"], hp["sinkhorn"]) == (
        0.3, 0.3, 1, 0.5, "converge")
    assert {"lr", "momentum", "weight_decay", "lr_milestones", "batch_size", "seed", "n_train"} <= set(hp)
    assert "device" not in hp and "data_dir" not in hp
    assert meta.metrics["history"] == result.history and meta.metrics["final"] == result.history[-1]
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epochs"] == result.history

    model = robaudit.load_model(result.checkpoint)
    assert not model.training
    x, _ = robaudit.load_dataset("mnist10k")
    assert model(x[:4]).shape == (4, 10)


def test_resume_restores_optimizer_and_continues_at_the_next_epoch(tmp_path, monkeypatch):
    config = tiny_config(method="feature-scatter")
    train(config, tmp_path)
    saved = load_state(tmp_path / STATE_FILE)
    assert saved["epoch"] == 1
    saved_momentum = [s["momentum_buffer"] for s in saved["optimizer"]["state"].values()]
    assert saved_momentum and all(m.abs().sum() > 0 for m in saved_momentum)

    loaded = []
    original = torch.optim.SGD.load_state_dict

    def spy(self, state_dict):
        original(self, state_dict)
        loaded.append([self.state[p]["momentum_buffer"].clone() for g in self.param_groups for p in g["params"]])

    monkeypatch.setattr(torch.optim.SGD, "load_state_dict", spy)
    seen_epochs = []
    result = train(tiny_config(method="feature-scatter", epochs=2), tmp_path,
                   progress=lambda p: seen_epochs.append(p.epoch))
    (restored,) = loaded
    assert len(restored) == len(saved_momentum)
    for got, want in zip(restored, saved_momentum):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert result.resumed_from_epoch == 1
    assert set(seen_epochs) == {2}
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert read_metadata(result.checkpoint).epoch == 2


def test_resume_is_deterministic(tmp_path):
    straight = train(tiny_config(method="feature-scatter", epochs=2), tmp_path / "straight")
    train(tiny_config(method="feature-scatter", epochs=1), tmp_path / "split")
    resumed = train(tiny_config(method="feature-scatter", epochs=2), tmp_path / "split")
    a = robaudit.load_model(straight.checkpoint).state_dict()
    b = robaudit.load_model(resumed.checkpoint).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_resume_refuses_different_settings(tmp_path):
    train(tiny_config(method="standard"), tmp_path)
    with pytest.raises(RobauditError, match="holds a run with method='standard', not 'pgd-at'"):
        train(tiny_config(method="pgd-at", epochs=2), tmp_path)
    with pytest.raises(RobauditError, match="holds a run with lr=0.1, not 0.05"):
        train(tiny_config(method="standard", epochs=2, lr=0.05), tmp_path)


def test_resume_refuses_fewer_epochs_than_already_trained(tmp_path):
    train(tiny_config(method="standard", epochs=2), tmp_path)
    with pytest.raises(RobauditError, match="already holds 2 trained epochs"):
        train(tiny_config(method="standard", epochs=1), tmp_path)


def test_should_stop_cancels_and_keeps_the_last_finished_epoch(tmp_path):
    train(tiny_config(method="standard"), tmp_path)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2  # stop before the third batch of epoch 2

    progress: list[TrainProgress] = []
    with pytest.raises(Cancelled):
        train(tiny_config(method="standard", epochs=3), tmp_path, progress=progress.append,
              should_stop=should_stop)
    assert [p.batch for p in progress] == [1, 2] and progress[0].epoch == 2
    assert load_state(tmp_path / STATE_FILE)["epoch"] == 1
    assert json.loads((tmp_path / "history.json").read_text())["epochs"][-1]["epoch"] == 1


def test_progress_reports_batches_and_eta(tmp_path):
    progress: list[TrainProgress] = []
    train(tiny_config(method="standard", epochs=2), tmp_path, progress=progress.append)
    batches = progress[0].batches
    assert batches == 4
    per_epoch = [p for p in progress if p.epoch == 1]
    assert [p.batch for p in per_epoch] == [1, 2, 3, 4, 4]  # the last call follows the evaluation
    assert per_epoch[-1].history and per_epoch[-1].history[-1]["epoch"] == 1
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in progress)
    assert progress[-1].eta_seconds == 0.0


# --- the command --------------------------------------------------------------------------------

def parse_train(argv):
    parser = argparse.ArgumentParser(prog="robaudit")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["train", *argv])


def test_train_command_prints_epoch_lines_and_json(tmp_path, capsys):
    args = parse_train(["--method", "fast-at", "--dataset", "mnist10k", "--arch", "smallcnn", "--epochs", "1",
                        "--eps", "0.3", "--n-train", "128", "--batch-size", "64", "--eval-examples", "10",
                        "--lr-milestones", "none", "--device", "cpu", "--out", str(tmp_path), "--json"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["checkpoint"] == str(tmp_path / "model.safetensors")
    assert summary["config"]["lr_milestones"] == [] and summary["config"]["alpha"] == pytest.approx(0.375)
    assert [e["epoch"] for e in summary["epochs"]] == [1]
    assert "epoch 1: lr 0.1 " in err and "PGD-20 acc" in err

    # Without --json the epoch lines go to stdout; a second call with more epochs resumes.
    args = parse_train(["--method", "fast-at", "--epochs", "2", "--eps", "0.3", "--n-train", "128", "--batch-size",
                        "64", "--eval-examples", "10", "--lr-milestones", "none", "--device", "cpu",
                        "--out", str(tmp_path)])
    assert args.func(args) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0] == "resuming after epoch 1"
    assert out.splitlines()[1].startswith("epoch 2: lr 0.1 ")
    assert out.splitlines()[2].startswith(f"checkpoint: {tmp_path / 'model.safetensors'}")


def test_train_command_missing_data_is_one_line_user_error(tmp_path):
    from robaudit.errors import DatasetUnavailable

    args = parse_train(["--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"),
                        "--out", str(tmp_path / "run")])
    with pytest.raises(DatasetUnavailable) as info:
        args.func(args)
    assert "\n" not in str(info.value) and str(tmp_path / "nowhere") in str(info.value)
