"""Shared command-line plumbing: config options and user-error reporting."""
import argparse
import sys
from typing import Callable

from ernie_qat.config import ConfigError, load_config
from ernie_qat.data.loader import DataError
from ernie_qat.fetch import FetchError

USER_ERRORS = (ConfigError, DataError, FetchError)


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML run configuration")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. -o train.learning_rate=3e-5 (repeatable)")


def config_from_args(args: argparse.Namespace):
    return load_config(args.config, args.override)


def run(main: Callable[[], None]) -> None:
    """Run `main`; a user error prints `error: ...` and exits 2 (1 for network failures), no traceback."""
    from ernie_qat.deploy import DeployError
    from ernie_qat.export import ExportError
    from ernie_qat.models.classifier import ModelError
    from ernie_qat.train.trainer import RunExistsError
    try:
        main()
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except USER_ERRORS + (ModelError, RunExistsError, ExportError, DeployError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
