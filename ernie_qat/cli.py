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


def int_at_least(low: int, name: str) -> Callable[[str], int]:
    """An argparse type: an integer >= `low`, called `name` in errors ("positive integer")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {name}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a {name}, got {value}")
        return value
    return parse


positive_int = int_at_least(1, "positive integer")
non_negative_int = int_at_least(0, "non-negative integer")


def percentage(text: str) -> float:
    """An argparse type: a number in [0, 100]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"expected a percentage in [0, 100], got {text!r}")
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
