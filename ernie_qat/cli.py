"""Shared command-line plumbing: config options and user-error reporting."""
import argparse
import sys
from typing import Callable

from ernie_qat.config import load_config
from ernie_qat.errors import UserError


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML run configuration")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. -o train.learning_rate=3e-5 (repeatable)")


def config_from_args(args: argparse.Namespace):
    return load_config(args.config, args.override)


def run(main: Callable[[], None]) -> None:
    """Run `main`; a `UserError` prints `error: ...` and exits with its code (2; 1 for network failures),
    no traceback."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
