"""`robaudit evaluate CHECKPOINT ...`: run a preset or an attack list, write the results JSON, print a summary."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robaudit.errors import RobauditError

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from robaudit.evaluation.gallery import Gallery
    from robaudit.evaluation.progress import EvalProgress
    from robaudit.models import CheckpointMetadata


def _fail_under(text: str) -> float:
    from robaudit.evaluation.gate import parse_fail_under

    try:
        return parse_fail_under(text)
    except RobauditError as exc:  # argparse prints it as a usage error and exits 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    from robaudit.evaluation.gate import FAIL_ON
    from robaudit.evaluation.presets import ATTACKS, PRECISION_CHOICES, PRESETS
    from robaudit.norms import NORMS

    p = subparsers.add_parser(
        "evaluate", help="attack a checkpoint and audit it for gradient masking",
        description="Attack a checkpoint on the first --n-examples test points and write the results JSON "
                    "(docs/results-schema.md). Interrupted runs resume from --state-dir.")
    p.add_argument("checkpoint", help="model checkpoint: .safetensors from robaudit, or any state_dict (.pt, "
                                      ".safetensors) with --dataset and --preprocessing (docs/preprocessing.md)")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="quick: FGSM, PGD-20, CW-20; paper: Feature Scattering protocol + PGD/CW-100; "
                        "audit: paper + curves, restarts, AutoAttack, noise, transfer, every diagnostic "
                        "(default: quick unless --attacks is given)")
    p.add_argument("--attacks", help=f"comma-separated, replaces the preset's list: {', '.join(ATTACKS)}")
    p.add_argument("--norm", choices=NORMS, default="linf",
                   help="threat model: linf (default), l2 or l1. Under l2, FGSM is FGM and PGD/CW/transfer are "
                        "PGD-L2; under l1 only AutoAttack (APGD-L1 standard version, also stage by stage) and "
                        "random noise exist")
    p.add_argument("--eps", help="comma-separated budgets: L-inf in pixel units in [0, 1] ('8/255' works), L2 and "
                                 "L1 as distances between [0, 1] images (default: the dataset's for the norm: "
                                 "MNIST 0.3 / 2.0 / 10, CIFAR-10 8/255 / 0.5 / 12)")
    p.add_argument("--steps", help="comma-separated PGD/CW step counts to report (one run of the largest)")
    p.add_argument("--alpha", type=float, help="PGD/CW step size (default max(eps/4, 2.5*eps/steps))")
    p.add_argument("--restarts", type=int, help="PGD restarts for the restarts curve")
    p.add_argument("--dataset", help="default: the dataset in the checkpoint's metadata")
    p.add_argument("--n-examples", type=int, default=1000, help="evaluate the first N test points (default 1000)")
    p.add_argument("--aa-examples", type=int,
                   help="run AutoAttack on the first N points only (audit default 200; 0 = all points)")
    p.add_argument("--eot-draws", type=int, metavar="K",
                   help="forward passes averaged per EOT step and per accuracy of a randomized model (default 20)")
    p.add_argument("--no-auto-eot", dest="auto_eot", action="store_false",
                   help="do not add EOT-PGD and AutoAttack rand when the forward pass is found random (check C11)")
    p.add_argument("--gallery", type=int, metavar="N",
                   help="keep the adversarial examples of the first N points for the gallery (default 100; 0: none)")
    p.add_argument("--save-adversarial", metavar="PATH",
                   help="write the gallery's examples as .npz: index, clean, adversarial, labels, predictions, "
                        "attack, eps, step (docs/results-schema.md)")
    p.add_argument("--surrogate", help="checkpoint for the transfer attack (adds 'transfer' to the audit)")
    p.add_argument("--arch", help="architecture for checkpoints without robaudit metadata (default: recognised "
                                  "from the file's keys and shapes)")
    p.add_argument("--preprocessing", metavar="NAME",
                   help="input normalisation of a checkpoint without robaudit metadata: none, cifar-0.5, imagenet, "
                        "cifar10 (required for such files unless --mean and --std are given)")
    p.add_argument("--mean", help="comma-separated per-channel mean, for inputs in [0, 1] (with --std)")
    p.add_argument("--std", help="comma-separated per-channel std (with --mean)")
    p.add_argument("--input-range", choices=("0,1", "0,255"), default=None,
                   help="pixel range the network was trained on (default 0,1); with 0,255, --mean/--std are in "
                        "pixel units. The model still takes [0, 1] images")
    p.add_argument("--batch-size", type=_batch_size, default=500, metavar="N|auto",
                   help="points per batch (default 500); auto: the largest that fits the GPU's memory, or on CPU "
                        "the fastest, found once per model and device and cached in ~/.cache/robaudit")
    levers = p.add_argument_group("speed levers", "opt-in; the results record them in config")
    levers.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                        help="bf16: autocast the attacks' forward and backward passes (check C10 then compares "
                             "the input gradients with fp32 and fails if bf16 lost any)")
    levers.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and inputs")
    levers.add_argument("--compile", action="store_true",
                        help="torch.compile the model's forward (needs a C++ compiler on CPU, Triton on GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--state-dir", help="store finished batches here; rerunning with it resumes")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override a diagnostic threshold (repeatable), e.g. c14_warn_gap_pp=5")
    p.add_argument("--data-dir", help="where torchvision datasets live (not needed for mnist10k)")
    p.add_argument("--data", metavar="NPZ|ZIP",
                   help="your own test set: a .npz with x (uint8 HWC/CHW, or floats in [0, 1]) and y (labels), or "
                        "a .zip of class folders of PNG/JPEG images (optional classes.txt: the label order); "
                        "the checkpoint's dataset still sets the default eps")
    p.add_argument("--data-resize", type=int, metavar="PIXELS",
                   help="with a --data zip: resize each image's shorter side to this first (e.g. 256)")
    p.add_argument("--data-crop", type=int, metavar="PIXELS",
                   help="with a --data zip: then centre-crop to this square (e.g. 224)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing")
    p.add_argument("--out", required=True, help="results JSON path")
    p.add_argument("--csv", help="also write the summary as CSV")
    p.add_argument("--robustbench", metavar="PATH",
                   help="also write a RobustBench model-info JSON (docs/robustbench.md: the fields to fill in)")
    p.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    gate = p.add_argument_group(
        "CI gate", "exit status: 0 the gate passed (or none was set), 1 the gate failed, 2 usage or input error")
    gate.add_argument("--fail-under", type=_fail_under, metavar="ACC",
                      help="fail when the worst case over all points at the primary (first) eps is below ACC: "
                           "a fraction (0.4) or a percentage with %% (40%%)")
    gate.add_argument("--fail-on", choices=FAIL_ON,
                      help="suspected: fail when gradient masking is suspected (a check failed); "
                           "warn: also when any check warns")
    gate.add_argument("--junit", metavar="PATH", help="write a JUnit XML report (gate conditions and checks)")
    gate.add_argument("--summary-md", metavar="PATH", help="write a short Markdown summary for a CI comment")
    p.set_defaults(func=run)
    parser: argparse.ArgumentParser = p
    return parser


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise RobauditError(f"{flag} takes comma-separated numbers, e.g. 0.4914,0.4822,0.4465; got {text!r}") from None


def _load(path: str, device: str, arch: str | None, dataset: str | None, preprocessing: str | None = None,
          mean: str | None = None, std: str | None = None, *, input_range: str | None = None,
          surrogate: bool = False) -> tuple[nn.Module, CheckpointMetadata, dict[str, Any]]:
    from robaudit import models
    from robaudit.data import dataset_info
    from robaudit.digest import sha256_file
    from robaudit.models.checkpoint import ForeignFile, describe_foreign, onnx_metadata, read_shapes, sniff_format

    checkpoint = Path(path)
    if not checkpoint.is_file():
        raise RobauditError(f"checkpoint not found: {path}")
    foreign_meta: CheckpointMetadata | None = None   # None: the file's own robaudit metadata
    detected: str | None = None
    if models.read_metadata(checkpoint) is None:
        if dataset is None:
            raise RobauditError(f"{checkpoint.name} carries no robaudit metadata: pass --dataset and "
                                "--preprocessing (or --mean and --std)")
        data = dataset_info(dataset)
        given = ForeignFile(
            arch=arch, dataset=dataset, num_classes=data.num_classes, in_channels=data.in_channels,
            input_size=data.size, preprocessing=preprocessing, mean=_floats(mean, "--mean"),
            std=_floats(std, "--std"), input_range=_floats(input_range, "--input-range"))
        if sniff_format(checkpoint) == "onnx":   # a graph is its own architecture: nothing to recognise
            foreign_meta = onnx_metadata(checkpoint, given)
        else:
            shapes, original = read_shapes(checkpoint)
            described = describe_foreign(shapes, original, given, checkpoint.name)
            foreign_meta, detected = described.metadata, described.detected_arch
            if detected is not None:
                print(f"{checkpoint.name}: {described.message}; using {detected}", file=sys.stderr)
    elif not surrogate and (preprocessing is not None or mean is not None or std is not None
                            or input_range is not None):
        raise RobauditError(f"{checkpoint.name} states its own preprocessing in its robaudit metadata; "
                            "drop --preprocessing/--mean/--std/--input-range")
    model, meta = models.load_checkpoint(checkpoint, metadata=foreign_meta, device=device)
    return model, meta, {"path": str(checkpoint), "sha256": sha256_file(checkpoint), "metadata": asdict(meta),
                         "detected_arch": detected}


def _ci_cell(interval: list[float] | None) -> str:
    return "-" if not interval else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _ci_text(interval: list[float] | None) -> str:
    return "" if not interval else f" (95% CI {100 * interval[0]:.1f} to {100 * interval[1]:.1f} %)"


def _thresholds(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise RobauditError(f"--threshold needs NAME=VALUE, got {item!r}")
        overrides[name.strip()] = value.strip()
    return overrides


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _progress_bar(enabled: bool) -> tuple[Callable[[EvalProgress], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs; imported only when a bar is shown

    bar = tqdm(total=1000, unit="‰", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")

    def update(p: EvalProgress) -> None:
        target = int(1000 * p.done / max(p.total, 1e-9))
        bar.set_description_str(p.stage[:28].ljust(28))
        if p.eta_seconds is not None:
            minutes, seconds = divmod(int(p.eta_seconds), 60)
            bar.set_postfix_str(f"ETA {minutes}:{seconds:02d}")
        bar.update(max(0, target - bar.n))

    return update, bar.close


def _levers(config: dict[str, Any]) -> str:
    """The speed levers a run used ('' for a plain fp32 run): the precision matters when reading the numbers."""
    levers = []
    if config.get("precision", "fp32") != "fp32":
        levers.append(f"{config['precision']} autocast")
    if config.get("channels_last"):
        levers.append("channels_last")
    if config.get("compile"):
        levers.append("torch.compile")
    if config.get("auto_batch_size"):
        levers.append(f"batch size {config['batch_size']} (auto)")
    return ", ".join(levers)


def format_summary(results: dict[str, Any]) -> str:
    from robaudit.norms import label as norm_label

    lines = []
    ck = results.get("checkpoint")
    head = f"{Path(ck['path']).name} on " if ck else ""
    norm = results.get("norm") or results["config"].get("norm") or "linf"
    lines.append(f"{head}{results['dataset']}, {results['test_points']}; preset {results['config']['preset'] or '-'}"
                 f"; norm {norm_label(norm)}")
    clean_ci = _ci_text(results.get("clean_accuracy_ci95"))
    lines.append(f"clean accuracy {100 * results['clean_accuracy']:.2f} %{clean_ci}")
    for warning in results.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    levers = _levers(results["config"])
    if levers:
        lines.append(f"run with: {levers}")
    lines.append("")
    header = (f"{'attack':<22}{'eps':>8}{'steps':>7}{'restarts':>10}{'alpha':>9}{'robust acc':>12}{'95% CI':>16}"
              f"{'n':>7}")
    lines.append(header)
    lines.append("-" * len(header))

    def cell(value: object, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for row in results["summary"]:
        lines.append(f"{row['attack']:<22}{row['eps']:>8.4g}{cell(row['steps'], 'd'):>7}{row['restarts']:>10d}"
                     f"{cell(row['alpha'], '.4g'):>9}{100 * row['robust_accuracy']:>10.2f} %"
                     f"{_ci_cell(row.get('ci95')):>16}{row['n']:>7d}")
    for row in results["worst_case"]:
        label = "worst case" if row["n"] == results["n"] else f"worst case, first {row['n']}"
        lines.append(f"{label:<22}{row['eps']:>8.4g}{'':>7}{'':>10}{'':>9}"
                     f"{100 * row['robust_accuracy']:>10.2f} %{_ci_cell(row.get('ci95')):>16}{row['n']:>7d}")
    for gap in results.get("gaps", []):
        low, high = (100 * v for v in gap["ci95"])
        lines.append(f"PGD-20 minus the {gap['second']} at eps {gap['eps']:.4g}: {100 * gap['difference']:+.1f} pp "
                     f"(95% CI {low:+.1f} to {high:+.1f}, paired, {gap['n']} points)")
    diag = results["diagnostics"]
    lines.append("")
    lines.append(f"verdict: {diag['verdict']}")
    for check in diag["checks"]:
        if check["status"] != "skipped":
            lines.append(f"  [{check['status'].upper():4}] {check['id']:<4}{check['name']}: {check['message']}")
    skipped = [c["id"] for c in diag["checks"] if c["status"] == "skipped"]
    if skipped:
        lines.append(f"  skipped (results missing): {', '.join(skipped)}")
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"time: {results['timing']['total_seconds']:.1f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import robaudit
    from robaudit.data import dataset_info
    from robaudit.evaluation import DirectoryStore, build_spec, evaluate, results_to_csv
    from robaudit.evaluation.ci_report import junit_xml, summary_markdown
    from robaudit.evaluation.gallery import save_download
    from robaudit.evaluation.gate import GateSettings, check_gate
    from robaudit.evaluation.robustbench import model_info
    from robaudit.own_data import load_npz

    model, meta, info = _load(args.checkpoint, args.device, args.arch, args.dataset, args.preprocessing,
                              args.mean, args.std, input_range=args.input_range)
    dataset = args.dataset or meta.dataset
    if dataset is None:
        raise RobauditError("the checkpoint's metadata names no dataset: pass --dataset")
    size = meta.input_size or dataset_info(dataset).size
    spec = build_spec(args.preset, attacks=args.attacks, eps=args.eps, steps=args.steps, dataset=dataset,
                      norm=args.norm, input_dims=meta.in_channels * size * size, n_examples=args.n_examples,
                      surrogate=args.surrogate is not None, alpha=args.alpha,
                      restarts=args.restarts, batch_size=args.batch_size, seed=args.seed,
                      thresholds=_thresholds(args.threshold) or None, autoattack_examples=args.aa_examples,
                      precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                      eot_draws=args.eot_draws, auto_eot=args.auto_eot, gallery_examples=args.gallery)
    if args.save_adversarial and spec.gallery_examples == 0:
        raise RobauditError("--save-adversarial needs a gallery: drop --gallery 0")
    surrogate = surrogate_info = None
    if args.surrogate:
        surrogate, _, surrogate_info = _load(args.surrogate, args.device, args.arch, dataset, args.preprocessing,
                                             args.mean, args.std, surrogate=True)
    own = None
    if args.data:
        own = load_npz(args.data, channels=meta.in_channels, size=size, num_classes=meta.num_classes,
                       resize=args.data_resize, crop=args.data_crop)
        x, y = own.x, own.y
        spec = replace(spec, dataset=own.name)   # the results and their provenance name the file
    else:
        # Only the points the spec evaluates: for imagenet the rest is never decoded.
        x, y = robaudit.load_dataset(dataset, "test", data_dir=args.data_dir, download=args.download,
                                     limit=spec.n_examples)
    store = DirectoryStore(args.state_dir) if args.state_dir else None
    progress, close = _progress_bar(not args.no_progress)
    galleries: list[Gallery] = []
    try:
        results = evaluate(model, x, y, spec, surrogate=surrogate, store=store, progress=progress,
                           on_gallery=galleries.append)
    finally:
        close()
    results["checkpoint"] = info
    results["provenance"]["checkpoint_sha256"] = info["sha256"]
    if own is not None:
        results["test_points"] = f"the first {results['n']} of the {own.n} points in {own.name}"
        results["provenance"]["dataset"]["file_sha256"] = own.sha256
        results["provenance"]["dataset"]["file_points"] = own.n
    if surrogate_info is not None:
        results["surrogate"] = surrogate_info
    gate = check_gate(results, GateSettings(fail_under=args.fail_under, fail_on=args.fail_on))
    try:
        _write_atomic(Path(args.out), json.dumps(results, indent=1) + "\n")
        if args.csv:
            results_to_csv(results, args.csv)
        if args.robustbench:
            info = model_info(results, results["checkpoint"]["metadata"])
            _write_atomic(Path(args.robustbench), json.dumps(info, indent=1) + "\n")
        if args.junit:
            _write_atomic(Path(args.junit), junit_xml(results, gate))
        if args.summary_md:
            _write_atomic(Path(args.summary_md), summary_markdown(results, gate))
        if args.save_adversarial:
            save_download(galleries[0] if galleries else None, Path(args.save_adversarial), results["n"],
                          spec.gallery_examples)
    except OSError as exc:  # an unwritable output path is an input error (2), not a failed gate (1)
        raise RobauditError(f"cannot write {exc.filename or 'an output file'}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(format_summary(results))
        outputs = [p for p in (args.out, args.csv, args.robustbench, args.junit, args.summary_md,
                               args.save_adversarial) if p]
        print(f"results: {', '.join(outputs)}")
    if gate.conditions:
        # stderr, so --json's stdout stays one JSON document
        print(f"gate: {'passed' if gate.passed else 'FAILED'}", file=sys.stderr)
        for condition in gate.conditions:
            print(f"  [{'PASS' if condition.passed else 'FAIL'}] {condition.name}: {condition.message}",
                  file=sys.stderr)
    return 0 if gate.passed else 1
