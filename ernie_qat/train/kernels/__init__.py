"""The encoder's compiled CPU kernels (`encoder_ops.cc`): built on first use, then loaded from the cache.

`encoder_ops()` compiles the source with the machine's C++ compiler and OpenMP into
`cache_dir()/kernels/<source hash>` (about 15 s, once per source version, one process at a time; later
loads take about a second) and returns the module of Paddle custom operators `ernie_gelu`, `ernie_layer_norm`,
`ernie_softmax` and `ernie_dropout`. Where they cannot be built (no compiler, no OpenMP) it logs a
one-line warning once and returns None, and training runs on Paddle's own kernels; the build's output
(compiler errors, Paddle's traceback) goes to `build.log` in that folder and to the debug log.
"""
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import shlex
import shutil
import sysconfig
from pathlib import Path
from typing import Iterator, Optional

from ernie_qat.env import cache_dir, native_output_to

SOURCE = Path(__file__).with_name("encoder_ops.cc")
CXX_FLAGS = ["-O3", "-ffast-math", "-fopenmp"]


def _link_flags() -> list:
    """Link against the Intel OpenMP runtime Paddle's MKL runs on: one thread pool, not two fighting for the cores."""
    import paddle
    libs = Path(paddle.__file__).parent / "libs"
    if (libs / "libiomp5.so").exists():
        return [f"-L{libs}", "-liomp5", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]

logger = logging.getLogger(__name__)
UNAVAILABLE = "compiled CPU kernels unavailable (%s), training uses Paddle's slower kernels"


def _compiler() -> str:
    """The C++ compiler setuptools builds with: $CXX, else the one Python was built with (e.g. g++)."""
    return shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")[0]


@contextlib.contextmanager
def _output_to(log) -> Iterator[None]:
    """Send sys.stdout, sys.stderr and file descriptors 1 and 2 (a subprocess's output) to `log`, an open file."""
    try:
        with native_output_to(log.fileno()), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()


@functools.lru_cache(maxsize=None)
def encoder_ops() -> Optional[object]:
    """The loaded kernels module, or None if it cannot be built here (warned once)."""
    from paddle.utils.cpp_extension import load

    if shutil.which(_compiler()) is None:
        logger.warning(UNAVAILABLE, f"no C++ compiler found: {_compiler()}")
        return None
    link_flags = _link_flags()
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CXX_FLAGS + link_flags).encode()).hexdigest()[:12]
    build = cache_dir() / "kernels" / digest
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock, open(build / "build.log", "a", encoding="utf-8") as log:
        fcntl.flock(lock, fcntl.LOCK_EX)  # processes started together (data-parallel ranks) build it once
        log.truncate(0)
        try:
            with _output_to(log):
                return load(name="ernie_encoder_ops", sources=[str(SOURCE)], extra_cxx_cflags=CXX_FLAGS,
                            extra_ldflags=link_flags, build_directory=str(build))
        except Exception as error:  # a failed build (no OpenMP, a compiler error) surfaces as several exception types
            logger.debug("building %s failed: %s\n%s", SOURCE.name, error,
                         (build / "build.log").read_text(encoding="utf-8", errors="replace")[-4000:])
            logger.warning(UNAVAILABLE, f"the build with {_compiler()} failed; its output is in {build / 'build.log'}")
            return None
