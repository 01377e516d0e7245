"""The speed levers: bf16 autocast, channels_last, torch.compile, auto batch size, and check C10's bf16 watch."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from helpers_eval import first_test_points, standard_model
from torch import nn

from robaudit import models
from robaudit.errors import RobauditError
from robaudit.evaluation import EvalSpec, Thresholds, accel, autobatch, build_spec, evaluate
from robaudit.evaluation.diagnostics import c10_gradients
from robaudit.evaluation.probes import dynamic_forward


def _check(results, cid):
    return next(c for c in results["diagnostics"]["checks"] if c["id"] == cid)


def _row(results, attack):
    return next(r for r in results["summary"] if r["attack"] == attack)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Auto batch sizes go to a per-test cache, never the user's ~/.cache."""
    monkeypatch.setenv("ROBAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class CancellingInput(nn.Module):
    """The model sees 1024 * (a*x - b*x) with a = 1 and b = 1 - 2**-10: exactly x in fp32.

    bf16 keeps 8 significant bits, so b rounds to 1 and the input term cancels to exactly zero: the
    model's output no longer depends on its input and the input gradient vanishes, while fp32 sees
    the ordinary network. A small difference of large weights is what bf16 cannot represent.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.a, self.b = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.a.weight.fill_(1.0)
            self.b.weight.fill_(1.0 - 2.0 ** -10)

    def forward(self, x):
        return self.model(1024.0 * (self.a(x) - self.b(x)))


# ---------------------------------------------------------------------------- specs and CLI
@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="fp16"), "unknown precision 'fp16'; choose one of: fp32, bf16"),
    (dict(batch_size="big"), "batch size must be a positive integer or 'auto'"),
    (dict(batch_size=0), "batch size must be at least 1"),
])
def test_build_spec_rejects_bad_levers(kwargs, message):
    with pytest.raises(RobauditError, match=message):
        build_spec(n_examples=10, **kwargs)


def test_levers_are_off_by_default_and_round_trip():
    plain = build_spec(n_examples=10)
    assert (plain.batch_size, plain.auto_batch_size, plain.precision, plain.channels_last, plain.compile) == \
        (500, False, "fp32", False, False)
    spec = build_spec(n_examples=10, batch_size="auto", precision="bf16", channels_last=True, compile=True)
    assert spec.auto_batch_size and spec.precision == "bf16" and spec.channels_last and spec.compile
    assert EvalSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    model = Tiny()
    assert accel.prepare_model(model, plain, "cpu") is model   # fp32 without options: untouched


# ---------------------------------------------------------------------------- bf16 and channels_last
def test_bf16_robust_accuracy_within_one_point_of_fp32():
    model = standard_model()
    x, y = first_test_points(200)
    common = dict(attacks="fgsm,pgd", eps="0.1", steps="20", n_examples=200, batch_size=200)
    fp32 = evaluate(model, x, y, build_spec(**common))
    bf16 = evaluate(model, x, y, build_spec(precision="bf16", **common))
    assert bf16["config"]["precision"] == "bf16" and "gradients_fp32" in bf16["probes"]
    assert "gradients_fp32" not in fp32["probes"]
    pgd32, pgd16 = _row(fp32, "pgd")["robust_accuracy"], _row(bf16, "pgd")["robust_accuracy"]
    worst32, worst16 = fp32["worst_case"][0]["robust_accuracy"], bf16["worst_case"][0]["robust_accuracy"]
    assert 0.2 < pgd32 < 0.9          # an eps where the comparison means something
    assert abs(pgd16 - pgd32) <= 0.01 and abs(worst16 - worst32) <= 0.01


def test_channels_last_gives_the_same_predictions_and_gradients():
    model = copy.deepcopy(standard_model())
    x, y = first_test_points(64)
    fast = accel.prepare_model(model, build_spec(n_examples=64, channels_last=True), "cpu")
    assert isinstance(fast, accel.Accelerated)
    reference = copy.deepcopy(standard_model())
    for net in (fast, reference):
        net.eval()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_fast, out_ref = fast(xa), reference(xb)
    assert out_fast.argmax(1).tolist() == out_ref.argmax(1).tolist()
    torch.testing.assert_close(out_fast, out_ref, atol=1e-4, rtol=1e-4)
    (g_fast,) = torch.autograd.grad(out_fast.logsumexp(1).sum(), xa)
    (g_ref,) = torch.autograd.grad(out_ref.logsumexp(1).sum(), xb)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- C10 under bf16
def test_c10_fails_when_bf16_zeroes_gradients_that_fp32_has():
    model = CancellingInput(standard_model())
    x, y = first_test_points(100)
    common = dict(attacks="fgsm", eps="0.1", n_examples=100, batch_size=100)
    fp32 = evaluate(model, x, y, build_spec(**common))
    assert _check(fp32, "C10")["status"] == "pass" and fp32["clean_accuracy"] > 0.9
    bf16 = evaluate(model, x, y, build_spec(precision="bf16", **common))
    c10 = _check(bf16, "C10")
    assert c10["status"] == "fail" and "--precision fp32" in c10["message"]
    assert c10["evidence"]["precision"] == "bf16" and c10["evidence"]["lost_to_precision"]
    assert c10["evidence"]["fp32_reference"]["clean_dlr_zero"] == 0


def test_c10_passes_a_healthy_model_in_bf16():
    x, y = first_test_points(100)
    results = evaluate(standard_model(), x, y, build_spec(attacks="fgsm", eps="0.1", n_examples=100,
                                                          batch_size=100, precision="bf16"))
    c10 = _check(results, "C10")
    # bf16 may round two top logits to one value now and then (a warning); it must never fail a healthy model.
    assert c10["status"] in ("pass", "warn"), c10
    assert max(c10["evidence"]["lost_to_precision"].values(), default=0) <= 2, c10


def _c10(bf16_zero: int, fp32_zero: int, n: int = 300):
    counts = {f"{at}_{loss}_{kind}": 0 for at in ("clean", "start") for loss in ("ce", "dlr")
              for kind in ("zero", "nonfinite")}
    probes = {"gradients": {"n": n, "start_n": n, **counts, "clean_dlr_zero": bf16_zero},
              "gradients_fp32": {"n": n, "start_n": n, **counts, "clean_dlr_zero": fp32_zero}}
    return c10_gradients(SimpleNamespace(results={"probes": probes, "config": {"precision": "bf16"}}), Thresholds())


def test_c10_bf16_thresholds():
    # A logit tie now and then (bf16 rounds two logits to one value): a warning; systematic loss: a fail.
    assert _c10(1, 0)["status"] == "warn"
    assert _c10(30, 0)["status"] == "fail"
    assert _c10(0, 0)["status"] == "pass"
    own = _c10(5, 5)   # the model's own zero gradients, in fp32 too: the ordinary masking verdict
    assert own["status"] == "fail" and "--precision" not in own["message"]


# ---------------------------------------------------------------------------- torch.compile
class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))

    def forward(self, x):
        return self.net(x)


def test_compile_failure_is_a_one_line_error(monkeypatch):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler here\nsecond line of a long trace")

    monkeypatch.setattr(accel, "COMPILE_BACKEND", broken_backend)
    x, _ = first_test_points(4)
    with pytest.raises(RobauditError, match="torch.compile failed") as info:
        accel.prepare_model(Tiny(), build_spec(n_examples=4, compile=True), "cpu", sample=x)
    assert "\n" not in str(info.value) and "no compiler here" in str(info.value)


def test_compile_matches_eager():
    # Needs a C++ compiler (Inductor's CPU backend); this machine has g++. About 10-20 s of compilation.
    model = Tiny().eval()
    x, _ = first_test_points(16)
    compiled = accel.prepare_model(model, build_spec(n_examples=16, compile=True), "cpu", sample=x)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_c, out_e = compiled(xa), model(xb)
    torch.testing.assert_close(out_c, out_e, atol=1e-5, rtol=1e-5)
    (g_c,) = torch.autograd.grad(out_c.logsumexp(1).sum(), xa)
    (g_e,) = torch.autograd.grad(out_e.logsumexp(1).sum(), xb)
    torch.testing.assert_close(g_c, g_e, atol=1e-5, rtol=1e-5)
    # Compiling a new graph calls torch.autograd.grad: check C12's probe must not take it for the model's.
    assert dynamic_forward(compiled, x[:3])["gradient_calls"] == {}


# ---------------------------------------------------------------------------- auto batch size
class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Tiny()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_autobatch_is_cached_per_model_device_and_precision(cache_dir):
    model = Counting()
    x, _ = first_test_points(32)
    path = cache_dir / "sizes.json"
    size = autobatch.find_batch_size(model, x, "cpu", cache_path=path, limit=32)
    assert size in (8, 16, 32) and model.calls > 0
    searched = model.calls
    assert autobatch.find_batch_size(model, x, "cpu", cache_path=path, limit=32) == size
    assert model.calls == searched   # the second call read the cache: no forward pass at all
    assert autobatch.find_batch_size(model, x, "cpu", cache_path=path, limit=4) == min(size, 4)
    assert model.calls == searched
    entry = json.loads(path.read_text())[autobatch.cache_key(model, x, "cpu")]
    assert entry["batch_size"] == size and entry["method"] == "throughput"

    bf16 = accel.prepare_model(model, build_spec(n_examples=32, precision="bf16"), "cpu")
    keys = {autobatch.cache_key(model, x, "cpu"), autobatch.cache_key(bf16, x, "cpu"),
            autobatch.cache_key(model, x, "meta"), autobatch.cache_key(model, x[:, :, :20], "cpu")}
    assert len(keys) == 4
    other_weights = Counting()
    with torch.no_grad():
        other_weights.inner.net[0].bias.add_(1.0)
    assert autobatch.cache_key(other_weights, x, "cpu") != autobatch.cache_key(model, x, "cpu")


def test_cuda_search_bisects_and_keeps_a_margin(monkeypatch):
    # No GPU here: the memory limit is simulated (a batch "fits" up to 1000 images) to test the search itself.
    tried = []

    def fits(model, sample, size, device):
        tried.append(size)
        return size <= 1000

    monkeypatch.setattr(autobatch, "_fits", fits)
    x, _ = first_test_points(2)
    size = autobatch._search_cuda(Tiny(), x, torch.device("cpu"), limit=8192)
    largest_fit = max(s for s in tried if s <= 1000)
    assert 1000 - largest_fit < autobatch.MIN_BATCH
    assert size == int(autobatch.SAFETY * largest_fit) // 8 * 8 and size % 8 == 0
    assert autobatch._search_cuda(Tiny(), x, torch.device("cpu"), limit=300) == 300   # the cap, no margin


def test_auto_batch_size_is_resolved_into_the_results_config(cache_dir):
    x, y = first_test_points(24)
    spec = build_spec(attacks="fgsm", eps="0.1", n_examples=24, batch_size="auto")
    results = evaluate(standard_model(), x, y, spec)
    config = results["config"]
    assert config["auto_batch_size"] and config["batch_size"] in (8, 16, 24)
    assert (cache_dir / "batch_sizes.json").is_file()


def test_cli_levers(tmp_path, capsys):
    from test_evaluation import _cli

    path = tmp_path / "model.safetensors"
    models.save_checkpoint(path, standard_model(), models.CheckpointMetadata(
        arch="smallcnn", num_classes=10, in_channels=1, mean=[0.0], std=[1.0], dataset="mnist10k"))
    out = tmp_path / "r.json"
    code = _cli(["evaluate", str(path), "--attacks", "fgsm", "--n-examples", "16", "--eps", "0.1", "--out", str(out),
                 "--no-progress", "--batch-size", "auto", "--precision", "bf16", "--channels-last"])
    assert code == 0
    config = json.loads(out.read_text())["config"]
    assert config["precision"] == "bf16" and config["channels_last"] and config["auto_batch_size"]
    assert "run with: bf16 autocast, channels_last, batch size" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _cli(["evaluate", str(path), "--out", str(out), "--precision", "fp16"])
    with pytest.raises(SystemExit):
        _cli(["evaluate", str(path), "--out", str(out), "--batch-size", "lots"])
