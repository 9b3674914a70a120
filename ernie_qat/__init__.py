"""ernie-qat: quantization-aware fine-tuning of ERNIE models for INT8 CPU inference."""
import contextlib
import io
import zlib  # noqa: F401  -- must load before paddle, or zipfile inflation breaks (../shared/STACK.md #4)

from ernie_qat import env as _env

_env.configure()
# paddle prints an OpenMP advisory to stderr whenever OMP_NUM_THREADS > 1, which env sets on purpose.
with contextlib.redirect_stderr(io.StringIO()):
    import paddle  # noqa: F401

__version__ = "0.1.0"
