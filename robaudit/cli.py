"""The `robaudit` command: train and evaluate models, and (with the service extras) run the service.

Science subcommands live in this package; `serve`, `worker`, `study` and `demo`
are registered by the launchers through the ``robaudit.commands`` entry-point
group, so this package never imports them."""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from robaudit.errors import RobauditError
from robaudit.models.checkpoint import CheckpointError

SERVICE_INSTALL = "pip install 'robaudit[service]'"
COMMANDS_GROUP = "robaudit.commands"


def missing_extras(command: str, exc: ImportError) -> RobauditError | None:
    """The one-line error for a service command whose third-party dependencies are not installed.

    None when ``exc`` is not a missing third-party module (a robaudit module that fails to import
    is a bug, and is reported as one).
    """
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing is None or missing.split(".")[0] == "robaudit":
        return None
    return RobauditError(f"`robaudit {command}` needs the service extras ({missing} is not installed): "
                         f"{SERVICE_INSTALL}")


def _register_unavailable(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                          exc: ImportError) -> None:
    # The command still parses (any arguments, even --help), so running it says what is missing.
    error = missing_extras(name, exc) or RobauditError(f"`robaudit {name}` cannot be loaded: {exc}")
    p = sub.add_parser(name, help=f"(unavailable: {SERVICE_INSTALL})", add_help=False)
    p.set_defaults(unavailable=error)


def build_parser() -> argparse.ArgumentParser:
    from robaudit.evaluation.cli import register as register_evaluate
    from robaudit.training.cli import register as register_train

    parser = argparse.ArgumentParser(prog="robaudit", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_train(sub)
    register_evaluate(sub)
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # service extras missing: science commands still work
            _register_unavailable(sub, ep.name, exc)
        else:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    try:
        if getattr(args, "unavailable", None) is not None:
            raise args.unavailable
        if unknown:  # what parse_args() would say; known-args parsing only lets an unavailable command through
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        try:
            return int(args.func(args) or 0)
        except ModuleNotFoundError as exc:  # a service command that imports its extras only when it runs
            service_commands = {ep.name for ep in entry_points(group=COMMANDS_GROUP)}
            error = missing_extras(args.command, exc) if args.command in service_commands else None
            if error is None:
                raise
            raise error from None
    except (RobauditError, CheckpointError) as exc:
        print(f"robaudit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robaudit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
