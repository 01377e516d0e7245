"""Attack-engine benchmarks: same model, same images, one process, ratios against the obvious alternative.

    python benchmarks/bench_attacks.py --checkpoint runs/pgdat/model.safetensors --n 200 --aa-n 40
    python benchmarks/bench_attacks.py --only pgd,pgd-l2 --l2-eps 1.5

1. PGD-20 (alpha = eps/4) vs torchattacks.PGD with the same settings, with a random start (the
   two libraries draw different starts) and without (identical trajectories): throughput
   (image-steps per second) and robust accuracy.
1b. PGD-L2-20 (alpha = eps/4) vs torchattacks.PGDL2 with the same settings, random start: throughput
   and robust accuracy.
2. Steps curve 1..100 from one 100-step run vs separate runs of 1, 2, 5, 10, 20, 50, 100 steps.
3. Accuracy-vs-eps curve with nested reuse vs an independent PGD-20 run per eps.
4. AutoAttack standard as robaudit runs it (stage by stage, parameters detached) vs one
   pyautoattack.AutoAttack.run_standard_evaluation call: time and robust accuracy.

Times are CPU seconds of this process (``time.process_time``), which the other jobs on a shared
machine disturb much less than wall time; wall seconds are printed too. Each timing is the best of
``--repeats`` runs. Without --checkpoint a standard SmallCNN is trained for one epoch first.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import robaudit
from robaudit import models
from robaudit.attacks import pgd, run_autoattack
from robaudit.attacks.common import make_generator

STEPS_GRID = (1, 2, 5, 10, 20, 50, 100)
SECTIONS = ("pgd", "pgd-l2", "steps", "eps", "autoattack")


def timed(fn, repeats: int):
    best_cpu = best_wall = float("inf")
    result = None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return result, best_cpu, best_wall


def load_model(path: str | None) -> torch.nn.Module:
    if path:
        return models.load_checkpoint(path)[0]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers_eval import standard_model
    return standard_model()


def line(name: str, ours: tuple, theirs: tuple, extra: str = "") -> None:
    (_, c1, w1), (_, c2, w2) = ours, theirs
    print(f"{name:<40} ours {c1:7.2f} s cpu ({w1:6.2f} wall) | baseline {c2:7.2f} s cpu ({w2:6.2f} wall) | "
          f"cost ratio {c1 / c2:5.2f} (speed-up {c2 / c1:4.2f}x) {extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--n", type=int, default=200, help="test digits for the PGD benchmarks")
    parser.add_argument("--aa-n", type=int, default=40, help="test digits for the AutoAttack benchmark (0: skip)")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--l2-eps", type=float, default=1.5, help="radius of the PGD-L2 comparison")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        parser.error(f"unknown section(s) {', '.join(sorted(only - set(SECTIONS)))}; choose from {', '.join(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).eval()
    x_all, y_all = robaudit.load_dataset("mnist10k", "test")
    x, y = x_all[:args.n], y_all[:args.n]
    eps, alpha = args.eps, args.eps / 4
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    print(f"model {args.checkpoint or 'standard SmallCNN (1 epoch)'}; {args.n} digits, "
          f"clean {clean.float().mean():.3f}; "
          f"eps {eps}; torch threads {torch.get_num_threads()}; best of {args.repeats}")

    # 1. PGD-20 vs torchattacks
    import torchattacks

    def torchattacks_accuracy(random_start: bool):
        attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=20, random_start=random_start)

        def run():
            adv = attack(x, y)
            with torch.no_grad():
                return (model(adv).argmax(1) == y).float().mean().item()
        return run

    def our_accuracy(random_start: bool):
        def run():
            result = pgd(model, x, y, eps=eps, steps=20, alpha=alpha, random_start=random_start,
                         generator=make_generator(0) if random_start else None)
            return (clean & ~result.fooled_by()).float().mean().item()
        return run

    if "pgd" in only:
        a, b = timed(our_accuracy(True), args.repeats), timed(torchattacks_accuracy(True), args.repeats)
        line("PGD-20 (random start) vs torchattacks", a, b,
             f"| robust acc ours {a[0]:.3f} vs torchattacks {b[0]:.3f}; "
             f"throughput {args.n * 20 / a[1]:.0f} vs {args.n * 20 / b[1]:.0f} image-steps/cpu-s")

        # Same trajectories: without a random start both attacks take identical steps until a point is
        # first fooled, so ours (first adversarial iterate) can only find more.
        a, b = timed(our_accuracy(False), args.repeats), timed(torchattacks_accuracy(False), args.repeats)
        line("PGD-20 no random start vs torchattacks", a, b,
             f"| robust acc ours {a[0]:.3f} vs torchattacks {b[0]:.3f}")

    # 1b. PGD-L2-20 vs torchattacks.PGDL2, the same radius and step size, random starts in the L2 ball.
    if "pgd-l2" in only:
        l2_eps, l2_alpha = args.l2_eps, args.l2_eps / 4

        def torchattacks_l2():
            adv = torchattacks.PGDL2(model, eps=l2_eps, alpha=l2_alpha, steps=20, random_start=True)(x, y)
            with torch.no_grad():
                return (model(adv).argmax(1) == y).float().mean().item()

        def ours_l2():
            result = pgd(model, x, y, eps=l2_eps, steps=20, alpha=l2_alpha, norm="l2", generator=make_generator(0))
            return (clean & ~result.fooled_by()).float().mean().item()

        a, b = timed(ours_l2, args.repeats), timed(torchattacks_l2, args.repeats)
        line(f"PGD-L2-20 (eps {l2_eps:g}) vs torchattacks", a, b,
             f"| robust acc ours {a[0]:.3f} vs torchattacks {b[0]:.3f}; "
             f"throughput {args.n * 20 / a[1]:.0f} vs {args.n * 20 / b[1]:.0f} image-steps/cpu-s")

    # 2. steps curve
    if "steps" in only:
        steps_curve(model, x, y, clean, eps, alpha, args.repeats)
    if "eps" in only:
        eps_curve(model, x, y, clean, eps, args.repeats)
    if args.aa_n and "autoattack" in only:
        autoattack(model, x_all, y_all, eps, args.aa_n)


def steps_curve(model, x, y, clean, eps, alpha, repeats):
    def one_run():
        result = pgd(model, x, y, eps=eps, steps=100, alpha=alpha, generator=make_generator(0))
        return [(clean & ~result.fooled_by(k)).float().mean().item() for k in STEPS_GRID]

    def separate():
        return [(clean & ~pgd(model, x, y, eps=eps, steps=k, alpha=alpha, generator=make_generator(0)).fooled_by())
                .float().mean().item() for k in STEPS_GRID]

    a, b = timed(one_run, repeats), timed(separate, repeats)
    line("steps curve 1..100: one run vs 7", a, b, f"| identical curves: {a[0] == b[0]}")


def eps_curve(model, x, y, clean, eps, repeats):
    grid = [round(f * eps, 6) for f in (0.25, 0.5, 0.75, 1.0, 1.25)]

    def nested():
        robust, accs = clean.clone(), []
        for e in grid:
            idx = robust.nonzero().squeeze(1)
            result = pgd(model, x[idx], y[idx], eps=e, steps=20, generator=make_generator(0, e))
            robust[idx[result.fooled_by()]] = False
            accs.append(robust.float().mean().item())
        return accs

    def independent():
        accs = []
        for e in grid:
            idx = clean.nonzero().squeeze(1)
            result = pgd(model, x[idx], y[idx], eps=e, steps=20, generator=make_generator(0, e))
            accs.append((~result.fooled_by()).sum().item() / len(x))
        return accs

    b, a = timed(independent, repeats), timed(nested, repeats)
    line("eps curve (5 eps): nested vs indep.", a, b,
         f"| nested {[f'{v:.3f}' for v in a[0]]} vs independent {[f'{v:.3f}' for v in b[0]]}")


def autoattack(model, x_all, y_all, eps, aa_n):
    from pyautoattack import AutoAttack
    xa, ya = x_all[:aa_n], y_all[:aa_n]
    with torch.no_grad():
        keep = model(xa).argmax(1) == ya
    xs, ys = xa[keep], ya[keep]

    def robaudit_aa():
        flags, _ = run_autoattack(model, xs, ys, eps=eps, seed=0, batch_size=500)
        return flags["square"].sum().item() / aa_n

    def direct_aa():
        adversary = AutoAttack(model, version="standard", eps=eps, seed=0)
        with torch.random.fork_rng(devices=[]):
            _, y_adv = adversary.run_standard_evaluation(xs, ys, batch_size=500)
        return (y_adv == ys).sum().item() / aa_n

    a, b = timed(robaudit_aa, 1), timed(direct_aa, 1)
    line(f"AutoAttack standard ({aa_n} digits)", a, b, f"| robust acc robaudit {a[0]:.3f} vs pyautoattack {b[0]:.3f}")


if __name__ == "__main__":
    main()
