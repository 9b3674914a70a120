"""Shared command-line plumbing: config options and user-error reporting."""
import argparse
import logging
import os
import signal
import sys
import warnings
from typing import Callable, Optional, Sequence

from ernie_qat import env
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


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """`parser.parse_args(argv)` with `-v/--verbose` added. The libraries are quietened when ernie_qat is imported,
    before the arguments are read, so -v runs the tool again from the start with ERNIE_QAT_VERBOSE=1."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show every library's messages and warnings (hidden by default; "
                             "the same as ERNIE_QAT_VERBOSE=1)")
    args = parser.parse_args(argv)
    if args.verbose and not env.verbose():
        sys.stdout.flush()
        sys.stderr.flush()
        arguments = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, sys.argv[0], *arguments],
                  {**env.environment_at_start(), env.VERBOSE: "1"})
    return args


def config_from_args(args: argparse.Namespace):
    return load_config(args.config, args.override)


class _ToStderr(logging.StreamHandler):
    """A handler writing to `sys.stderr` as it is when a record comes."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def show_toolkit_warnings() -> None:
    """The tools' set-up of the library's logger (the library sets up none) and of Python's warnings: each
    on stderr as one `warning: ...` line, without the source line that raised it."""
    warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
    toolkit = logging.getLogger("ernie_qat")
    if not any(isinstance(handler, _ToStderr) for handler in toolkit.handlers):
        handler = _ToStderr()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        toolkit.addHandler(handler)
        toolkit.propagate = False


def run(main: Callable[[], None]) -> None:
    """Run `main`; a `UserError` prints `error: ...` (its `prefix`) and exits with its code (2; 1 for network failures),
    no traceback. A file-size limit (ulimit -f) fails the write that exceeds it, like a full disk,
    instead of killing the process. A rank of a data-parallel run ends through `parallel.exit_rank`."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    show_toolkit_warnings()
    code = 0
    try:
        main()
    except UserError as exc:
        print(f"{exc.prefix}{exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    parallel = sys.modules.get("ernie_qat.train.parallel")  # imported (with paddle) only by commands that train
    if parallel is not None and parallel.started():
        parallel.exit_rank(code)
    if code:
        sys.exit(code)
