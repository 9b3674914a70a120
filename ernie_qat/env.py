"""Process set-up that must happen before paddle is imported.

Quiet imports (no glog INFO lines, no distutils warning; `ERNIE_QAT_VERBOSE=1` keeps them), one cache
directory for everything the toolkit, PaddleNLP and Hugging Face libraries download, and the CPU settings that make
training fast here (README, "Training speed"): math-library threads matched to the usable cores
(shared among the processes `paddle.distributed.launch` starts on this machine),
MKL's fast path on AMD CPUs, contiguous tensors instead of strided views
(`FLAGS_use_stride_kernel=0`: a training step 3.3 s instead of 4.0 s), and glibc malloc keeping
freed memory instead of returning it to the OS (no page faults per step: 4.0 s instead of 4.9 s).
Settings already in the user's environment always win, except `OMP_NUM_THREADS=1` in a process the launcher
started: importing paddle sets that in the launcher itself, whatever the user chose, and its processes inherit it.
"""
import contextlib
import ctypes
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator


VERBOSE = "ERNIE_QAT_VERBOSE"  # "1": every library's messages and warnings show (the tools' -v sets it)


def verbose() -> bool:
    """Whether the user asked to see every library's messages, which are hidden by default."""
    return os.environ.get(VERBOSE) == "1"


_environment_at_start: dict = {}


def environment_at_start() -> dict:
    """The process's environment as it was before `configure` set its defaults (to start a tool again with)."""
    return dict(_environment_at_start)


def cache_dir() -> Path:
    """The project cache: `$ERNIE_QAT_HOME`, else `$XDG_CACHE_HOME/ernie-qat`, else `~/.cache/ernie-qat`."""
    if os.environ.get("ERNIE_QAT_HOME"):
        return Path(os.environ["ERNIE_QAT_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "ernie-qat"


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _processes_on_this_machine() -> int:
    """The processes `paddle.distributed.launch` started on this machine (1 outside it): they share its cores."""
    return int(os.environ.get("PADDLE_LOCAL_SIZE") or os.environ.get("PADDLE_TRAINERS_NUM") or 1)


def _threads() -> int:
    """Math-library threads per process: the usable cores shared among this machine's processes, at least one."""
    return max(1, _usable_cores() // _processes_on_this_machine())


def _is_amd_cpu() -> bool:
    try:
        return "AuthenticAMD" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


CPU_SETTINGS = ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "FLAGS_use_stride_kernel")
_chosen_by_user = set()

# glibc mallopt parameters and the environment variables with which a user sets them instead.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = {"MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 1 << 30),  # keep up to 1 GiB of freed heap
                   "MALLOC_TOP_PAD_": (_M_TOP_PAD, 256 << 20),  # grow the heap 256 MiB at a time
                   "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 32 << 20)}  # heap, not mmap, below 32 MiB
_malloc_tuned = []


def cpu_settings() -> str:
    """One line: the CPU math-library settings in force, and whether the user or the toolkit chose them."""
    parts = [f"{key}={os.environ[key]} ({'user' if key in _chosen_by_user else 'ernie-qat'})"
             for key in CPU_SETTINGS if key in os.environ]
    user_malloc = any(key in os.environ for key in MALLOC_SETTINGS)
    malloc = "malloc: " + ("kept freed memory" if _malloc_tuned else "user settings" if user_malloc else "system defaults")
    processes = _processes_on_this_machine()
    shared = f" shared by {processes} processes" if processes > 1 else ""
    return f"CPU math: {', '.join(parts)}; {_usable_cores()} usable cores{shared}; {malloc}"


def environment_defaults() -> dict:
    """The variables `configure` sets when the user has not: quiet logs, caches, CPU threads."""
    cache = cache_dir()
    defaults = {
        "GLOG_minloglevel": "2",  # paddle's C++ INFO/WARNING lines
        "FLAGS_call_stack_level": "0",
        "PPNLP_HOME": str(cache / "paddlenlp"),
        "HF_HOME": str(cache / "huggingface"),
        "HF_DATASETS_CACHE": str(cache / "huggingface" / "datasets"),
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "HF_HUB_OFFLINE": "1",  # no hub is reachable here; fail fast instead of retrying
        "OMP_NUM_THREADS": str(_threads()),
        "FLAGS_use_stride_kernel": "0",  # strided views make reshape/scale copy element by element
    }
    if _is_amd_cpu():
        defaults["MKL_DEBUG_CPU_TYPE"] = "5"  # MKL's fast AVX2 path, which it withholds from AMD CPUs
    if verbose():
        del defaults["GLOG_minloglevel"]
    return defaults


def configure() -> None:
    """Set environment defaults; call before the first `import paddle` (the package does)."""
    _environment_at_start.update(os.environ)
    if _processes_on_this_machine() > 1 and os.environ.get("OMP_NUM_THREADS") == "1":
        del os.environ["OMP_NUM_THREADS"]  # the launcher's import of paddle set it (module docstring)
    _chosen_by_user.update(key for key in CPU_SETTINGS if key in os.environ)
    for key, value in environment_defaults().items():
        os.environ.setdefault(key, value)
    _tune_malloc()
    if verbose():
        return
    warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
    # Paddle 3's import warns that no ccache is installed, for building C++ extensions we do not build there
    warnings.filterwarnings("ignore", message="No ccache found", module=r"paddle(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(paddle|paddlenlp|paddleslim)(\.|$)")


def _tune_malloc() -> None:
    """Stop glibc from unmapping the activation buffers freed every step (a page fault per 4 KiB on reuse)."""
    if _malloc_tuned or not sys.platform.startswith("linux") or any(key in os.environ for key in MALLOC_SETTINGS):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    if all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.values()):
        _malloc_tuned.append(True)


@contextlib.contextmanager
def native_output_to(fd: int) -> Iterator[None]:
    """Within the block, file descriptors 1 and 2 (what C++ code and child processes write) go to the open
    file descriptor `fd`; Python's own buffers are flushed first, so nothing written before moves."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        for target, copy in zip((1, 2), saved):
            os.dup2(copy, target)
            os.close(copy)
