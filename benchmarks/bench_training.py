"""Seconds per training iteration: Feature Scattering vs PGD-7 AT vs standard training.

Same model, same batch, same starting weights for every method; the methods take
turns (in a rotating order) so that load from other processes hits all of them
alike, and the median over the repeats is reported. Target: FS / PGD-7 <= 0.40.

    python benchmarks/bench_training.py --arch smallcnn --batch-size 128 --dataset-shape 1x28x28
    python benchmarks/bench_training.py --arch wideresnet --arch-kwargs '{"depth": 10, "widen_factor": 1}' \
        --dataset-shape 3x32x32 --batch-size 64
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robaudit.models import build_model
from robaudit.training.methods import feature_scatter_step, pgd_at_step, standard_step


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x32x32, got {text!r}") from None
    return c, h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="smallcnn")
    parser.add_argument("--arch-kwargs", type=json.loads, default={})
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset-shape", type=parse_shape, default=(1, 28, 28), metavar="CxHxW")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--eps", type=float, default=None, help="default 0.3 for 1 channel, else 8/255")
    parser.add_argument("--repeats", type=int, default=7, help="timed iterations per method")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c, h, w = args.dataset_shape
    eps = args.eps if args.eps is not None else (0.3 if c == 1 else 8 / 255)
    device = args.device
    x = torch.rand(args.batch_size, c, h, w, device=device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)

    base = build_model(args.arch, num_classes=args.num_classes, in_channels=c, mean=[0.5] * c, std=[0.5] * c,
                       **args.arch_kwargs).to(device)
    # A few plain steps first, so the logits (and so the OT problem) are not those of a fresh init.
    opt = torch.optim.SGD(base.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(base(x), y).backward()
        opt.step()

    methods = {
        "standard": lambda m, o: standard_step(m, o, x, y, label_smoothing=0.0),
        "PGD-7 AT": lambda m, o: pgd_at_step(m, o, x, y, eps=eps, alpha=eps / 4, steps=7, label_smoothing=0.0),
        "Feature Scattering": lambda m, o: feature_scatter_step(m, o, x, y, eps=eps, alpha=eps, steps=1,
                                                                label_smoothing=0.5, sinkhorn="early-stop"),
    }
    runs = {}
    for name in methods:
        model = copy.deepcopy(base).train()
        runs[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4))

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times = {name: [] for name in methods}
    names = list(methods)
    for name in names:  # warm-up: allocator, kernels, oneDNN primitives
        methods[name](*runs[name])
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync()
            tick = time.perf_counter()
            methods[name](*runs[name])
            sync()
            times[name].append(time.perf_counter() - tick)

    arch = args.arch + (f" {json.dumps(args.arch_kwargs)}" if args.arch_kwargs else "")
    print(f"arch {arch}, batch {args.batch_size}, input {c}x{h}x{w}, eps {eps:.4g}, device {device}, "
          f"threads {torch.get_num_threads()}, {args.repeats} timed iterations per method (interleaved)")
    print(f"{'method':<20} {'median s/iter':>14} {'min s/iter':>11} {'vs standard':>12}")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in names:
        print(f"{name:<20} {median[name]:>14.4f} {min(times[name]):>11.4f} {median[name] / median['standard']:>11.2f}x")
    ratio = median["Feature Scattering"] / median["PGD-7 AT"]
    print(f"FS / PGD-7 = {ratio:.3f} (target <= 0.40): {'OK' if ratio <= 0.40 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
