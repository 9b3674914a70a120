"""Process set-up that must happen before paddle is imported.

Quiet imports (no glog INFO lines, no distutils warning), one cache directory for everything
the toolkit, PaddleNLP and Hugging Face libraries download, and CPU math-library threads matched
to the usable cores. Settings already in the user's environment always win.
"""
import os
import warnings
from pathlib import Path


def cache_dir() -> Path:
    """The project cache: `$ERNIE_QAT_HOME`, else `$XDG_CACHE_HOME/ernie-qat`, else `~/.cache/ernie-qat`."""
    if os.environ.get("ERNIE_QAT_HOME"):
        return Path(os.environ["ERNIE_QAT_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "ernie-qat"


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _is_amd_cpu() -> bool:
    try:
        return "AuthenticAMD" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


CPU_SETTINGS = ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")
_chosen_by_user = set()


def cpu_settings() -> str:
    """One line: the CPU math-library settings in force, and whether the user or the toolkit chose them."""
    parts = [f"{key}={os.environ[key]} ({'user' if key in _chosen_by_user else 'ernie-qat'})"
             for key in CPU_SETTINGS if key in os.environ]
    return f"CPU math: {', '.join(parts)}; {_usable_cores()} usable cores"


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
        "OMP_NUM_THREADS": str(_usable_cores()),
    }
    if _is_amd_cpu():
        defaults["MKL_DEBUG_CPU_TYPE"] = "5"  # MKL's fast AVX2 path, which it withholds from AMD CPUs
    return defaults


def configure() -> None:
    """Set environment defaults; call before the first `import paddle` (the package does)."""
    _chosen_by_user.update(key for key in CPU_SETTINGS if key in os.environ)
    for key, value in environment_defaults().items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(paddle|paddlenlp|paddleslim)(\.|$)")
