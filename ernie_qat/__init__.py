"""ernie-qat: quantization-aware fine-tuning of ERNIE models for INT8 CPU inference."""
import logging
import os
import zlib  # noqa: F401  -- must load before paddle, or zipfile inflation breaks (../shared/STACK.md #4)

from ernie_qat import env as _env


def _import_paddle() -> None:
    """Import paddle, leaving the host's root logger as it was and without paddle's OpenMP advisory.

    Importing paddle adds a handler to the root logger (paddle.distributed.utils.log_utils), which is taken
    back. paddle.base prints "WARNING: OMP_NUM_THREADS set to N, not 1 ... PLEASE USE OMP_NUM_THREADS WISELY"
    on import whenever OMP_NUM_THREADS > 1, as env sets it on purpose: the variable is held back while paddle
    imports and put back right after, before the OpenMP runtime and MKL read it (at their first parallel
    region; tests/test_env.py checks that the threads take effect). ERNIE_QAT_VERBOSE=1 lets the advisory show.
    """
    root, handlers, level = logging.root, list(logging.root.handlers), logging.root.level
    threads = None if _env.verbose() else os.environ.pop("OMP_NUM_THREADS", None)
    try:
        import paddle  # noqa: F401
    finally:
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = threads  # paddle set it to 1 meanwhile
        root.handlers[:] = handlers
        root.setLevel(level)


_env.configure()
_import_paddle()

__version__ = "0.1.0"
