"""The `robaudit` command. Science subcommands live in this package; `serve`,
`worker` and `study` are registered by the service through the
``robaudit.commands`` entry-point group, so this package never imports them."""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from robaudit.errors import RobauditError
from robaudit.models.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    from robaudit.evaluation.cli import register as register_evaluate
    from robaudit.training.cli import register as register_train

    parser = argparse.ArgumentParser(prog="robaudit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_train(sub)
    register_evaluate(sub)
    for ep in sorted(entry_points(group="robaudit.commands"), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except ImportError as exc:  # service extras missing: science commands still work
            sub.add_parser(ep.name, help=f"(unavailable: {exc})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (RobauditError, CheckpointError) as exc:
        print(f"robaudit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robaudit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
