"""The evaluation's speed levers side by side: PGD-20 throughput per lever, and bf16's effect on accuracy.

    python benchmarks/gpu_levers.py                                  # on the GPU if there is one
    python benchmarks/gpu_levers.py --device cpu --n 64 --batch-size 64 --repeats 2   # short CPU run

For each model (SmallCNN on 1x28x28, PreActResNet-18 on 3x32x32; random weights: throughput does not
depend on them), PGD-20 on ``--n`` random images in batches, in one process, for:

* baseline: fp32, ``--batch-size`` (500, the CLI's default);
* auto batch: fp32, the batch robaudit.evaluation.autobatch finds (searched afresh, not cached; at most
  ``--n``, as in an evaluation of ``--n`` points);
* channels_last, bf16 autocast, torch.compile: each alone, at the baseline batch size.

The PGD here is fixed work: every image takes all 20 steps (forward, cross-entropy, input gradient,
signed step, projection), so a ratio measures the lever, not how many points a model lets through
early (robaudit's own PGD drops fooled points, which would mix the two). The configurations are
interleaved repeat by repeat, so load changes on a shared machine hit all alike; each figure is the
best of ``--repeats``. torch.compile's compilation is timed separately and not counted.

Then the accuracy side of bf16: ``evaluate`` with PGD-20 (and FGSM, for the worst case) at
``--acc-eps`` on the first ``--acc-n`` mnist10k test digits, fp32 vs bf16, on ``--checkpoint`` or, without
one, the tests' standard SmallCNN (one epoch of plain training, about 20 s on a CPU). C10's status is
printed too, since it compares bf16's gradients with fp32's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import robaudit
from robaudit import models
from robaudit.evaluation import build_spec, evaluate
from robaudit.evaluation.accel import prepare_model
from robaudit.evaluation.autobatch import device_name, find_batch_size

MODELS = {"smallcnn": dict(in_channels=1, size=28, eps=0.3),
          "preactresnet18": dict(in_channels=3, size=32, eps=8 / 255)}
LEVERS = ("baseline", "auto batch", "channels_last", "bf16", "compile")


def build(arch: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    c = MODELS[arch]["in_channels"]
    return models.build_model(arch, num_classes=10, in_channels=c, mean=[0.5] * c, std=[0.25] * c).to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pgd_fixed_work(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> None:
    """PGD with every image taking every step (no early exit): alpha = eps/4, random start."""
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_adv).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + eps / 4 * grad.sign(), lower), upper)


def throughput(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, eps: float, steps: int,
               device: torch.device) -> float:
    """Images per second of PGD-``steps`` over all of x, in batches of ``batch``."""
    sync(device)
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        pgd_fixed_work(model, x[i:i + batch], y[i:i + batch], eps, steps)
    sync(device)
    return len(x) / (time.perf_counter() - start)


def bench_model(arch: str, device: torch.device, args: argparse.Namespace) -> None:
    info = MODELS[arch]
    shape = (info["in_channels"], info["size"], info["size"])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((args.n, *shape), generator=gen).to(device)
    y = torch.randint(0, 10, (args.n,), generator=gen).to(device)
    runs: dict[str, tuple[nn.Module, int]] = {}
    notes: dict[str, str] = {}
    for lever in LEVERS:
        if lever in args.skip:
            continue
        options = dict(channels_last=lever == "channels_last", precision="bf16" if lever == "bf16" else "fp32",
                       compile=lever == "compile")
        model = build(arch, device)   # a fresh copy: channels_last converts the model in place
        t0 = time.perf_counter()
        prepared = prepare_model(model, build_spec(n_examples=args.n, **options), device, sample=x[:2])
        batch = args.batch_size
        if lever == "compile":
            pgd_fixed_work(prepared, x[:batch], y[:batch], info["eps"], 1)  # compile the full-batch graph too
            notes[lever] = f"compilation {time.perf_counter() - t0:.1f} s, not counted"
        if lever == "auto batch":
            batch = find_batch_size(prepared, x, device, cache_path=None, limit=min(args.auto_limit, args.n))
            notes[lever] = f"found {batch} in {time.perf_counter() - t0:.1f} s"
        runs[lever] = (prepared, batch)
    best = dict.fromkeys(runs, 0.0)
    for _ in range(args.repeats):
        for lever, (model, batch) in runs.items():
            best[lever] = max(best[lever], throughput(model, x, y, batch, info["eps"], args.steps, device))
    print(f"\n{arch} {'x'.join(map(str, shape))}, {args.n} images, PGD-{args.steps}, {device_name(device)}, "
          f"best of {args.repeats}")
    print("| lever | batch | images/s | vs baseline | note |\n|---|---|---|---|---|")
    for lever, (_, batch) in runs.items():
        ratio = best[lever] / best["baseline"] if "baseline" in best else float("nan")
        print(f"| {lever} | {batch} | {best[lever]:.1f} | {ratio:.2f}× | {notes.get(lever, '')} |", flush=True)


def bf16_accuracy(device: torch.device, args: argparse.Namespace) -> None:
    if args.checkpoint:
        model = models.load_checkpoint(args.checkpoint, device=str(device))[0]
        name = args.checkpoint
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers_eval import standard_model

        model, name = standard_model().to(device), "the tests' standard SmallCNN (1 epoch, not robust)"
    x, y = robaudit.load_dataset("mnist10k", "test")
    print(f"\nbf16 vs fp32 robust accuracy: {name}, first {args.acc_n} mnist10k test digits, eps {args.acc_eps}")
    print("| precision | clean | PGD-20 | worst case (FGSM, PGD-20) | C10 | seconds |\n|---|---|---|---|---|---|")
    out = {}
    for precision in ("fp32", "bf16"):
        spec = build_spec(attacks="fgsm,pgd", eps=str(args.acc_eps), steps="20", n_examples=args.acc_n,
                          batch_size=args.batch_size, precision=precision)
        t0 = time.perf_counter()
        results = evaluate(model, x, y, spec)
        pgd_row = next(r for r in results["summary"] if r["attack"] == "pgd")
        c10 = next(c for c in results["diagnostics"]["checks"] if c["id"] == "C10")
        out[precision] = (pgd_row["robust_accuracy"], results["worst_case"][0]["robust_accuracy"])
        print(f"| {precision} | {100 * results['clean_accuracy']:.1f} % | {100 * out[precision][0]:.1f} % | "
              f"{100 * out[precision][1]:.1f} % | {c10['status']} | {time.perf_counter() - t0:.1f} |", flush=True)
        if precision != "fp32":
            lost = c10["evidence"]["lost_to_precision"]
            print(f"C10 under {precision}: {c10['message']} (lost to precision: {lost})")
    print(f"difference bf16 - fp32: PGD-20 {100 * (out['bf16'][0] - out['fp32'][0]):+.1f} pp, "
          f"worst case {100 * (out['bf16'][1] - out['fp32'][1]):+.1f} pp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="smallcnn,preactresnet18")
    parser.add_argument("--n", type=int, default=2000, help="images per throughput measurement")
    parser.add_argument("--batch-size", type=int, default=500, help="the baseline's batch (and the levers')")
    parser.add_argument("--auto-limit", type=int, default=8192, help="largest batch the auto search tries")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated levers to leave out, e.g. compile")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--checkpoint", help="trained model for the bf16 accuracy comparison")
    parser.add_argument("--acc-n", type=int, default=500, help="digits for the bf16 accuracy comparison (0: skip)")
    parser.add_argument("--acc-eps", type=float, default=0.1)
    args = parser.parse_args()
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device_name(device)}")
    for arch in filter(None, (a.strip() for a in args.models.split(","))):  # --models '': accuracy only
        bench_model(arch, device, args)
    if args.acc_n:
        bf16_accuracy(device, args)


if __name__ == "__main__":
    main()
