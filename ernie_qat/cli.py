"""Shared command-line plumbing: config options and user-error reporting."""
import argparse
import signal
import sys
from typing import Callable

from ernie_qat.config import load_config
from ernie_qat.errors import UserError


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML run configuration")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. -o train.learning_rate=3e-5 (repeatable)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def config_from_args(args: argparse.Namespace):
    return load_config(args.config, args.override)


def run(main: Callable[[], None]) -> None:
    """Run `main`; a `UserError` prints `error: ...` and exits with its code (2; 1 for network failures),
    no traceback. A file-size limit (ulimit -f) fails the write that exceeds it, like a full disk,
    instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
