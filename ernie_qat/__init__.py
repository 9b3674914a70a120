"""ernie-qat: quantization-aware fine-tuning of ERNIE models for INT8 CPU inference."""
import contextlib
import io
import logging
import re
import sys
import zlib  # noqa: F401  -- must load before paddle, or zipfile inflation breaks (../shared/STACK.md #4)

from ernie_qat import env as _env

# paddle.base prints this advisory to stderr whenever OMP_NUM_THREADS > 1, which env sets on purpose.
OMP_ADVISORY = re.compile(r"WARNING: OMP_NUM_THREADS set to \d+, not 1\..*\nPLEASE USE OMP_NUM_THREADS WISELY\.\n")


def _import_paddle() -> None:
    """Import paddle, leaving the host's logging and stderr as they were, minus paddle's OpenMP advisory.

    Importing paddle adds a handler to the root logger (paddle.distributed.utils.log_utils) and binds
    its own loggers' handlers to the sys.stderr of the moment; stderr is captured meanwhile, so those
    are pointed back at the real one and everything but the advisory is passed on.
    """
    root, handlers, level = logging.root, list(logging.root.handlers), logging.root.level
    stderr, captured = sys.stderr, io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import paddle  # noqa: F401
    finally:
        for logger in [root, *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):  # PlaceHolder entries have none
                if isinstance(handler, logging.StreamHandler) and handler.stream is captured:
                    handler.setStream(stderr)
        root.handlers[:] = handlers
        root.setLevel(level)
        stderr.write(OMP_ADVISORY.sub("", captured.getvalue()))


_env.configure()
_import_paddle()

__version__ = "0.1.0"
