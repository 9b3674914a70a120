"""The encoder's compiled CPU kernels (`encoder_ops.cc`): built on first use, then loaded from the cache.

`encoder_ops()` compiles the source with the machine's C++ compiler and OpenMP into
`cache_dir()/kernels/<source hash>` (about 15 s, once per source version; later loads take about
a second) and returns the module of Paddle custom operators `ernie_gelu`, `ernie_layer_norm`,
`ernie_softmax` and `ernie_dropout`. Where they cannot be built (no compiler, no OpenMP) it warns once and returns
None, and training runs on Paddle's own kernels.
"""
import functools
import hashlib
import io
import contextlib
import logging
from pathlib import Path
from typing import Optional

from ernie_qat.env import cache_dir

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


@functools.lru_cache(maxsize=None)
def encoder_ops() -> Optional[object]:
    """The loaded kernels module, or None if it cannot be built here (warned once)."""
    from paddle.utils.cpp_extension import load

    link_flags = _link_flags()
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CXX_FLAGS + link_flags).encode()).hexdigest()[:12]
    build = cache_dir() / "kernels" / digest
    build.mkdir(parents=True, exist_ok=True)
    compiler_output = io.StringIO()
    try:
        with contextlib.redirect_stdout(compiler_output):
            return load(name="ernie_encoder_ops", sources=[str(SOURCE)], extra_cxx_cflags=CXX_FLAGS,
                        extra_ldflags=link_flags, build_directory=str(build))
    except Exception as error:  # a missing compiler or OpenMP surfaces as several exception types
        logger.warning("compiled CPU kernels unavailable, training uses Paddle's (slower) kernels: %s\n%s",
                       error, compiler_output.getvalue()[-2000:])
        return None
