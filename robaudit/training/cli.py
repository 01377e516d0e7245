"""`robaudit train`: train one model with one method; resumes when --out already holds a run."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any, TextIO

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs: types-tqdm is not a dev dependency

from robaudit.data import DATASETS
from robaudit.recipes import RECIPES, get_recipe
from robaudit.sinkhorn import SINKHORN_MODES
from robaudit.training.config import TrainConfig
from robaudit.training.methods import METHODS
from robaudit.training.trainer import TrainProgress, train


def _milestones(text: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 60,90, got {text!r}") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"depth\": 16}'")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="adversarially train a model (Feature Scattering and baselines)",
        description="Train a model. Unset options take per-dataset / per-method defaults "
                    "(see robaudit/training/config.py); all eps/alpha are in [0, 1] pixel units. "
                    "If --out already holds a run, training resumes after its last finished epoch.")
    # Options left unset stay None here, so a --recipe can fill them and an explicit option wins.
    p.add_argument("--recipe", choices=list(RECIPES),
                   help="a named full recipe (cifar10-paper: the paper's WRN-28-10 CIFAR-10 run); "
                        "options given explicitly override it")
    p.add_argument("--method", help=f"one of: {', '.join(METHODS)} (default feature-scatter)")
    p.add_argument("--dataset", help=f"one of: {', '.join(DATASETS)} (default mnist10k)")
    p.add_argument("--arch", help="smallcnn (default), preactresnet18, wideresnet, wrn-28-10, ...")
    p.add_argument("--arch-kwargs", type=_json_object, metavar="JSON",
                   help="architecture options, e.g. '{\"depth\": 16, \"widen_factor\": 1}'")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (model.safetensors, state.pt, history.json)")
    p.add_argument("--epochs", type=int, help="default 5")
    p.add_argument("--batch-size", type=int, help="default 128")
    p.add_argument("--lr", type=float, help="initial learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, help="default 0.9")
    p.add_argument("--weight-decay", type=float, help="default 2e-4")
    p.add_argument("--lr-milestones", type=_milestones, metavar="E1,E2",
                   help="epochs (0-based) where lr is multiplied by 0.1; default: the paper's 60,90 of 200 "
                        "scaled to --epochs; 'none' for a constant lr")
    p.add_argument("--eps", type=float, help="perturbation budget (default 0.3 MNIST, 8/255 CIFAR/SVHN)")
    p.add_argument("--alpha", type=float, help="attack step size (default per method)")
    p.add_argument("--steps", type=int, help="attack steps (default per method)")
    p.add_argument("--label-smoothing", type=float, metavar="DELTA",
                   help="true class gets 1 - DELTA, others DELTA/(K-1) (default 0.5 feature-scatter, else 0)")
    p.add_argument("--trades-beta", type=float, help="TRADES robustness weight (default 6; 1 on MNIST)")
    p.add_argument("--sinkhorn", choices=list(SINKHORN_MODES),
                   help="Feature Scattering OT solver: official early stop (default) or run to convergence")
    p.add_argument("--seed", type=int, help="seeds torch, numpy and python's random (default 0)")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--data-dir", help="where torchvision datasets live (default ./data)")
    p.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    p.add_argument("--n-train", type=int, help="train on the first N training examples only")
    p.add_argument("--eval-examples", type=int,
                   help="PGD-20 is measured each epoch on this many first test points (default 500)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout at the end")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe's settings (if any), overridden by every option given on the command line."""
    base = dict(get_recipe(args.recipe).train) if getattr(args, "recipe", None) else {}
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if not args.download:
        given.pop("download", None)
    return TrainConfig.from_dict({**base, **given})


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def epoch_line(entry: dict[str, Any]) -> str:
    return (f"epoch {entry['epoch']}: lr {entry['lr']:g}  loss {entry['loss']:.4f}  "
            f"train acc {_fmt(entry['train_acc'])}  clean acc {_fmt(entry['clean_acc'])}  "
            f"PGD-20 acc {_fmt(entry['pgd20_acc'])} (n={entry['eval_examples']})  "
            f"[{entry['train_seconds']:.0f}s + {entry['eval_seconds']:.0f}s eval]")


class ProgressBar:
    """One tqdm bar per epoch on stderr, and one metrics line per finished epoch."""

    def __init__(self, lines_to: TextIO) -> None:
        self.bar: tqdm | None = None
        self.lines_to = lines_to
        self.printed = 0

    def __call__(self, p: TrainProgress) -> None:
        if self.bar is None:
            if self.printed == 0 and p.history and p.batch == 1:
                print(f"resuming after epoch {len(p.history)}", file=self.lines_to, flush=True)
            self.printed = len(p.history)
            self.bar = tqdm(total=p.batches, desc=f"epoch {p.epoch}/{p.epochs}", unit="batch",
                            file=sys.stderr, leave=False, dynamic_ncols=True)
        self.bar.n = p.batch
        eta = "?" if p.eta_seconds is None else f"{p.eta_seconds / 60:.1f}min"
        self.bar.set_postfix_str(f"loss {p.loss:.4f}, run ETA {eta}", refresh=True)
        if len(p.history) > self.printed:  # the epoch's evaluation is done
            self.close()
            print(epoch_line(p.history[-1]), file=self.lines_to, flush=True)
            self.printed = len(p.history)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    lines_to = sys.stderr if args.json else sys.stdout  # keep stdout pure JSON with --json
    bar = ProgressBar(lines_to)
    try:
        result = train(config, args.out, progress=bar)
    finally:
        bar.close()
    print(f"checkpoint: {result.checkpoint} ({result.seconds:.0f}s)", file=lines_to)
    if args.json:
        summary = {"checkpoint": str(result.checkpoint), "out_dir": str(result.out_dir),
                   "method": result.config.method, "config": result.config.to_dict(),
                   "resumed_from_epoch": result.resumed_from_epoch, "seconds": round(result.seconds, 3),
                   "epochs": result.history, "final": result.history[-1] if result.history else None}
        print(json.dumps(summary, indent=2))
    return 0

